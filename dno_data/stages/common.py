"""What the stages share: the declarations of -o (a file, a checkpoint folder) and --force."""

from __future__ import annotations

from ..config import Option, output_file, output_folder

OUTPUT_FILE = Option("Parquet file to write.", flags=("-o", "--output"), changes_output=False, check=output_file)
FORCE = Option("Redo: even when the output is up to date, discarding unfinished work of other inputs or settings.",
               changes_output=False, aliases=("--fresh", "--overwrite"))
CHECKPOINT = Option("Checkpoint folder to write.", flags=("-o", "--output"), changes_output=False, check=output_folder)

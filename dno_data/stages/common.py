"""What the stages share: the declarations of -o and --force, and the check of an output path."""

from __future__ import annotations

from pathlib import Path

from ..config import Option, output_file

OUTPUT_FILE = Option("Parquet file to write.", flags=("-o", "--output"), changes_output=False, check=output_file)
FORCE = Option("Redo: even when the output is up to date, discarding unfinished work of other inputs or settings.",
               changes_output=False, aliases=("--fresh", "--overwrite"))


def check_output_path(output: Path, inputs: list[Path], kind: str) -> None:
    """-o must not be an input, a folder holding one, or anything but an output of `kind` (dno_data.paths)."""
    from ..paths import check_output

    check_output(output, inputs, kind=kind)

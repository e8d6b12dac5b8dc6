"""A folder that appears whole or not at all: build it beside its final name, then swap it in.

Checkpoints (`dno train`, `dno sft`), imported models (`dno model import-gguf`) and exported
datasets are folders of several files; a crash while writing them must never leave a
half-written folder under the final name. `building_folder(out)` yields a fresh folder beside
`out` (dno_data.atomic: the same folder, so the final rename stays on one file system); when
the block ends without an error its files are fsynced and it replaces `out` (an existing `out`
is moved aside first and removed after the swap), and on an error it is removed. `publish`
(dno_data.paths.publisher) checks the target again, under the output's lock, before the swap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import Publish, atomic_path


@contextmanager
def building_folder(out: Path | str, publish: Publish | None = None) -> Iterator[Path]:
    """Yield a new empty folder beside `out`; on success it becomes `out`, on error it is removed."""
    with atomic_path(out, publish=publish) as tmp:
        tmp.mkdir()
        yield tmp

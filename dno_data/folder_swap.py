"""A folder that appears whole or not at all: build it beside its final name, then swap it in.

Checkpoints (`dno train`) and imported models (`dno model import-gguf`) are folders of
several files; a crash while writing them must never leave a half-written folder under the
final name. `building_folder(out)` yields a fresh temporary folder in the same parent (so the
final rename stays on one file system); when the block ends without an error the folder
replaces `out` (an existing `out` is moved aside first and removed after the swap), and on
an error it is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building_folder(out: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it becomes `out`, on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _share(tmp)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished folder `tmp` (same parent) with renames only."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _share(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder: give it and its files the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)

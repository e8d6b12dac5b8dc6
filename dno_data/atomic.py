"""The one atomic write: build the new file (or folder) beside its final name, fsync, rename, fsync the folder.

    with atomic_path(out) as tmp:    # tmp: a free name in out's folder, nothing there yet
        write(tmp)                   # a file, or a folder (mkdir it first)
    # `out` is now the finished file; after an error `out` is as it was and tmp is gone

A crash never leaves a half-written file under the final name: until the rename, the new
bytes live only under the hidden temporary name. `publish` replaces the final step (the plain
`replace` below) when the rename must be checked first: dno_data.paths checks there, under the
output's lock, that the target is still one the command may replace.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Publish = Callable[[Path, Path, bool], None]  # publish(tmp, final, durable)


def temp_name(path: Path, tag: str = "tmp") -> Path:
    """`.NAME.PID.tmp` beside `path`: hidden, and this process's own."""
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder (the folder last)."""
    if path.is_dir() and not path.is_symlink():
        for f in sorted(path.rglob("*"), reverse=True):
            if f.is_file() and not f.is_symlink():
                _fsync_file(f)
            elif f.is_dir() and not f.is_symlink():
                fsync_dir(f)
        fsync_dir(path)
    else:
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Remove a file or a folder tree; nothing there is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def replace(tmp: Path, final: Path, durable: bool = True) -> None:
    """Move the finished `tmp` onto `final` (same folder) by renames only.

    A folder replaces an existing folder in two renames (the old one moved aside, then
    removed), so `final` is always either the old folder or the whole new one.
    """
    if durable:
        fsync_tree(tmp)
    if tmp.is_dir() and final.is_dir() and not final.is_symlink():
        old = temp_name(final, "old")
        final.rename(old)
        try:
            tmp.rename(final)
        except BaseException:
            old.rename(final)
            raise
        remove(old)
    else:
        os.replace(tmp, final)
    if durable:
        fsync_dir(final.parent)
        sweep_leftovers(final)  # a finished output: what killed runs left beside it goes


@contextmanager
def atomic_path(path: Path | str, *, durable: bool = True, tmp: Path | None = None,
                publish: Publish | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error it becomes `path`.

    durable=False skips the fsyncs (still atomic by rename): for files whose loss in a power cut
    costs only recomputation. `tmp` names the temporary path when the writer must know it in
    advance (it must be in the same folder). On any error the temporary file or folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp) if tmp is not None else temp_name(path)
    remove(tmp)  # a leftover of a killed process with the same pid
    try:
        yield tmp
        (publish or replace)(tmp, path, durable)
    finally:
        remove(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def sweep_leftovers(path: Path | str) -> list[Path]:
    """Remove what killed runs left beside `path`: their temporaries (`.NAME.PID.tmp`, `.NAME.PID.old`) and
    spill folders (`.NAME.spill-PID-*`, DuckDB's `.dno-spill-PID-*`), each only when the process named by its PID is gone. Called after
    a successful write, so a run that succeeds cleans up after the ones that were killed."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.glob(f".{glob_escape(path.name)}.*")) + list(path.parent.glob(".dno-spill-*"))
    except OSError:
        return removed
    for p in entries:
        rest = p.name[len(path.name) + 2:] if not p.name.startswith(".dno-spill-") else p.name[5:]
        pid = None
        parts = rest.split(".")
        if len(parts) == 2 and parts[1] in ("tmp", "old") and parts[0].isdigit():
            pid = int(parts[0])
        elif rest.startswith("spill-") and rest[6:].split("-", 1)[0].isdigit():
            pid = int(rest[6:].split("-", 1)[0])
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            remove(p)
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def write_bytes_atomic(path: Path | str, data: bytes, durable: bool = True, publish: Publish | None = None) -> Path:
    path = Path(path)
    with atomic_path(path, durable=durable, publish=publish) as tmp:
        tmp.write_bytes(data)
    return path

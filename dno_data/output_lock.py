"""One writer per output: an exclusive lock on `.<output name>.lock` beside the output.

A stage takes it before it touches any unfinished work of the output (parts, a training
folder) and keeps it until the output is written; a second command on the same output is
refused with one line while the first runs. The lock is an OS file lock (flock), so it
ends with its process: a killed run never leaves a lock that blocks the next one.

On release the lock file is removed (while still locked; a taker checks that the file it
locked is still the one at the path). Within one process the lock is re-entrant: a stage
that fails and is called again in the same process takes it again without waiting for itself.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path

from .errors import DnoError

_HELD: dict[Path, int] = {}  # output -> descriptor of its locked lock file


def lock_path(output: Path | str) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _key(output: Path | str) -> Path:
    output = Path(output)
    return output.parent.resolve() / output.name


def acquire(output: Path | str) -> None:
    """Take the lock of `output` or raise DnoError when another process holds it."""
    key = _key(output)
    if key in _HELD:
        return
    path = lock_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _read_pid(path)
                raise DnoError(f"{output}: another dno process{f' (pid {holder})' if holder else ''} is writing this "
                               "output right now; wait for it to end (its lock goes with it) or choose another -o") from None
            # The holder before us unlinks the file as it releases: retry unless we locked the file at `path`.
            if _same_file(fd, path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
        raise DnoError(f"{output}: cannot lock it in its folder ({e.strerror or e}); is the folder writable?") from None
    _HELD[key] = fd


def release(output: Path | str) -> None:
    """Give the lock of `output` back (a no-op when this process does not hold it)."""
    key = _key(output)
    fd = _HELD.pop(key, None)
    if fd is None:
        return
    try:
        if _same_file(fd, lock_path(key)):
            os.unlink(lock_path(key))  # while still locked, so no one can take a file that is going away
    except OSError:
        pass
    finally:
        os.close(fd)  # closing the descriptor ends the flock


def held() -> set[Path]:
    """The outputs whose locks this process holds now."""
    return set(_HELD)


def release_all(but: set[Path] = frozenset()) -> None:
    """Give back every lock this process holds except those in `but` (a failed command's, at its end)."""
    for key in list(_HELD):
        if key not in but:
            release(key)


def holds(output: Path | str) -> bool:
    return _key(output) in _HELD


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@atexit.register
def _release_all() -> None:
    """At a normal exit, also after an error, give back what is still held (and remove the files)."""
    for key in list(_HELD):
        release(key)

"""One writer per output: an exclusive lock on `.<output name>.lock` beside the output.

A stage takes it before it touches any unfinished work of the output (parts, a training
folder) and keeps it until the output is written; a second command on the same output is
refused with one line while the first runs. The lock is filelock's FileLock (an OS flock on
Unix), so it ends with its process: a killed run never leaves a lock that blocks the next one.

What filelock gives: the flock, the check that the inode it locked is still the one at the path
(a holder that is releasing removes the file: a taker that locked the removed inode tries again),
the holder's pid written into the file (its on_acquired hook) for the refusal's message. What is
kept here: removing the lock file on release, while still locked (filelock's Unix lock leaves its
file in place, and dno leaves nothing beside an output), and a process-wide registry, so a stage
that fails and is called again in the same process takes it again without waiting for itself.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from .errors import DnoError

_HELD: dict[Path, object] = {}  # output -> its held filelock.FileLock
# A taker that locked the file a releasing holder just removed tries again within this; a lock still
# held after it is another command's.
WAIT_S = 0.5


def lock_path(output: Path | str) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _key(output: Path | str) -> Path:
    output = Path(output)
    return output.parent.resolve() / output.name


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def acquire(output: Path | str) -> None:
    """Take the lock of `output` or raise DnoError when another process holds it."""
    from filelock import FileLock, Timeout

    key = _key(output)
    if key in _HELD:
        return
    path = lock_path(key)
    lock = FileLock(path, timeout=WAIT_S, poll_interval=0.02, thread_local=False, fallback_to_soft=False,
                    on_acquired=_write_pid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        holder = _read_pid(path)
        raise DnoError(f"{output}: another dno process{f' (pid {holder})' if holder else ''} is writing this "
                       "output right now; wait for it to end (its lock goes with it) or choose another -o") from None
    except OSError as e:
        raise DnoError(f"{output}: cannot lock it in its folder ({e.strerror or e}); is the folder writable?") from None
    _HELD[key] = lock


def release(output: Path | str) -> None:
    """Give the lock of `output` back (a no-op when this process does not hold it)."""
    key = _key(output)
    lock = _HELD.pop(key, None)
    if lock is None:
        return
    try:
        os.unlink(lock_path(key))  # while still locked, so no one can take a file that is going away
    except OSError:
        pass
    finally:
        lock.release(force=True)  # closing the descriptor ends the flock


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

"""The one exception type a user should ever see: a one-line message, no traceback."""

from __future__ import annotations


class DnoError(Exception):
    """Bad input or a state the user can fix. The message names the file and the fix."""


def declared_extras() -> set[str]:
    """The pip extras this package declares (pyproject's optional-dependencies), e.g. {'vllm', 'dev'}."""
    from importlib import metadata

    try:
        return set(metadata.metadata("dno-data").get_all("Provides-Extra") or ())
    except metadata.PackageNotFoundError:
        return set()


def missing_extra(package: str, extra: str) -> DnoError:
    """The error for a missing optional dependency; it names the extra only when the package declares it
    (openai, for one, is a plain dependency: `pip install openai`)."""
    if extra in declared_extras():
        return DnoError(f"{package} is not installed; install it with: pip install 'dno-data[{extra}]'")
    return DnoError(f"{package} is not installed; install it with: pip install {package}")


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when it has none), at most `limit` characters:
    what a one-line error quotes of a library's multi-line message."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text[:limit] if limit else text


# ---------------------------------------------------------------- what the machine refused, as one line

_OS_FIXES = {
    "ENOSPC": "the disk is full: free space (or write elsewhere) and rerun",
    "EDQUOT": "the disk quota is used up: free space (or write elsewhere) and rerun",
    "EACCES": "permission denied: choose a path you may write (or read)",
    "EPERM": "operation not permitted: choose a path you may write (or read)",
    "EROFS": "the file system is read-only: choose another -o",
    "ENOTDIR": "a part of the path is a file, not a folder: choose another path",
    "EISDIR": "is a folder where a file is expected: choose another path",
    "ENAMETOOLONG": "the name is too long: choose a shorter path",
    "EMFILE": "too many open files: raise the limit (ulimit -n) and rerun",
    "ENOENT": "no such file or folder",
}


def os_error_line(e: OSError) -> str:
    """An OSError as the one line a user sees: the file it concerns, what the system said, what to do.

    >>> import errno
    >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "out/x.parquet"))
    'out/x.parquet: No space left on device (the disk is full: free space (or write elsewhere) and rerun)'
    """
    import errno as errno_

    name = errno_.errorcode.get(e.errno or 0, "")
    where = e.filename if e.filename is not None else None
    what = e.strerror or first_line(e)
    fix = _OS_FIXES.get(name)
    text = f"{what} ({fix})" if fix and fix != what.lower() else what
    return f"{where}: {text}" if where is not None else text


def as_dno_error(e: BaseException) -> DnoError | None:
    """The DnoError a failure of the machine or of a library's limits stands for, or None for a bug
    (which keeps its traceback). One mapping for every command (stages/build.py calls it):
    OSError (a full disk, a read-only folder, a file where a folder should be), MemoryError, the
    Jinja sandbox's limits, DuckDB's out-of-memory, conversion and I/O errors, vLLM's dead engine."""
    if isinstance(e, DnoError):
        return e
    if isinstance(e, OSError):
        return DnoError(os_error_line(e))
    if isinstance(e, MemoryError):
        return DnoError("out of memory: free memory, or lower the batch size / --memory-limit of the command")
    module = type(e).__module__ or ""
    if module.startswith("jinja2"):
        return DnoError(f"the template failed: {first_line(e, 300)}")
    if module.startswith("duckdb") or module.startswith("_duckdb"):
        return DnoError(duckdb_error_line(e))
    if module.startswith("vllm") and type(e).__name__ == "EngineDeadError":  # its workers logged the cause
        return DnoError("vLLM's engine stopped (EngineDeadError): the lines its worker processes logged above name "
                        "the cause; the parts already written are kept, and the same command resumes after them")
    return None


def duckdb_error_line(e: BaseException) -> str:
    """DuckDB's often multi-line message as one line; out of memory names --memory-limit."""
    text = " ".join(str(e).split())
    if "Out of Memory" in text:
        detail = text.split("Out of Memory Error:", 1)[-1].strip()
        detail = detail.split("Possible solutions:", 1)[0].strip().rstrip(".")
        return f"DuckDB ran out of memory ({detail[:200]}); raise --memory-limit (e.g. double it), or free memory"
    return f"DuckDB: {text[:400]}"

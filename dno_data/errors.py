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

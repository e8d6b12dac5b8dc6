"""What a stage prints: one-line notes and short summaries of counts, on stderr (stdout stays for data)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def say(msg: str) -> None:
    from .storage import public

    print(public(msg), file=sys.stderr, flush=True)  # a staging path as the URL it stands for


def summary(title: str, counts: Mapping[str, object]) -> None:
    """A short block of counts: rows in, rows out, dropped by reason."""
    say(title)
    width = max((len(str(k)) for k in counts), default=0)
    for k, v in counts.items():
        say(f"  {str(k).ljust(width)}  {v}")


def up_to_date(output: Path, lineage: Mapping, force: bool) -> bool:
    """True (and says so) when `output` was made from the same inputs and settings, unless `force`."""
    from .lineage import is_up_to_date

    if not force and is_up_to_date(output, lineage):
        say(f"{output}: up to date (same inputs and settings); pass --force to redo it")
        return True
    return False

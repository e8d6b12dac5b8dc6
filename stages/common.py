"""What every stage command shares: one-line errors, summaries, the up-to-date check."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import typer

from dno_data.artifacts import check_output

from dno_data.lineage import is_up_to_date
from dno_data.errors import DnoError


def one_line_errors(fn: Callable) -> Callable:
    """Turn DnoError into `error: ...` on stderr and exit code 1, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DnoError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summary(title: str, counts: Mapping[str, object]) -> None:
    """A short block of counts: rows in, rows out, dropped by reason."""
    say(title)
    width = max((len(str(k)) for k in counts), default=0)
    for k, v in counts.items():
        say(f"  {str(k).ljust(width)}  {v}")


def up_to_date(output: Path, lineage: Mapping, force: bool) -> bool:
    if not force and is_up_to_date(output, lineage):
        say(f"{output}: up to date (same inputs and settings); pass --force to redo it")
        return True
    return False


def check_output_path(output: Path, inputs: list[Path], kind: str) -> None:
    """-o must not be an input, a folder holding one, or anything but an output of `kind` (artifacts.check_output)."""
    check_output(output, inputs, kind=kind)

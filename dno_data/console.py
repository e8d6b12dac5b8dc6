"""What a stage prints: one-line notes and short summaries of counts, on stderr (stdout stays for data)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def say(msg: str) -> None:
    from .redact import redact_text
    from .storage import public

    # a staging path as the URL it stands for; a URL's credentials and secret query values never printed
    print(redact_text(public(msg)), file=sys.stderr, flush=True)


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


class Progress:
    """Progress as log lines: `what: done/total unit (pct), rate, ETA`, at most one per `interval`
    seconds ($DNO_PROGRESS_INTERVAL, default 10) and one at the end; readable in a file, unlike a bar."""

    def __init__(self, what: str, total: int, unit: str = "prompts", *, done: int = 0, interval: float | None = None):
        import os
        import time

        self.what, self.total, self.unit = what, total, unit
        self.interval = float(os.environ.get("DNO_PROGRESS_INTERVAL", 10)) if interval is None else interval
        self.done = self.resumed = done  # the rate counts this run's work only
        self._clock = time.monotonic
        self.start = self._last = self._clock()

    def add(self, n: int) -> None:
        self.done += n
        self.tick()

    def tick(self) -> None:
        if self._clock() - self._last >= self.interval:
            self._print()

    def close(self) -> None:
        self._print()

    def line(self) -> str:
        elapsed = max(self._clock() - self.start, 1e-9)
        rate = (self.done - self.resumed) / elapsed
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        left = (self.total - self.done) / rate if rate > 0 and self.total else None
        eta = f", ETA {_duration(left)}" if left is not None and self.done < self.total else ""
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{pct}, {rate:.1f} {self.unit}/s, "
                f"{_duration(elapsed)} elapsed{eta}")

    def _print(self) -> None:
        self._last = self._clock()
        say(self.line())


def _duration(seconds: float) -> str:
    """
    >>> _duration(3725), _duration(59.4)
    ('1h02m05s', '59s')
    """
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"

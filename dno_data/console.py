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


def fmt_value(v: object) -> str:
    """A value as a summary prints it: floats to 3 significant digits, the rest as they are.

    >>> fmt_value(0.010453545488417149), fmt_value(0.6931471805599453), fmt_value(12), fmt_value(5e-07), fmt_value(None)
    ('0.0105', '0.693', '12', '5e-07', 'None')
    """
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary(title: str, counts: Mapping[str, object]) -> None:
    """A short block of counts: rows in, rows out, dropped by reason (floats rounded: fmt_value)."""
    say(title)
    width = max((len(str(k)) for k in counts), default=0)
    for k, v in counts.items():
        say(f"  {str(k).ljust(width)}  {fmt_value(v)}")


def up_to_date(output: Path, lineage: Mapping, force: bool) -> bool:
    """True (and says so) when `output` was made from the same inputs and settings, unless `force`."""
    from .lineage import is_up_to_date

    if not force and is_up_to_date(output, lineage):
        say(f"{output}: up to date (same inputs and settings); pass --force to redo it")
        return True
    return False


class Progress:
    """Progress of a long loop: a tqdm bar when stderr is a terminal, else log lines
    `what: done/total unit (pct), rate, elapsed, ETA` at most one per `interval` seconds
    ($DNO_PROGRESS_INTERVAL, default 10) and one at the end: what a job under Slurm, nohup or
    `dno iterate` whose output goes to a file can read. One class for every stage (local and
    Ray engines, training, the demo), so each says the same thing the same way.

    `total` None: no percentage or ETA (a loop that may stop early). `enabled` False (a training
    process other than the main one): nothing is shown.
    """

    def __init__(self, what: str, total: int | None, unit: str = "prompts", *, done: int = 0,
                 interval: float | None = None, enabled: bool = True, bar: bool | None = None):
        import os
        import time

        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.interval = float(os.environ.get("DNO_PROGRESS_INTERVAL", 10)) if interval is None else interval
        self.done = self.resumed = done  # the rate counts this run's work only
        self.postfix = ""
        self._clock = time.monotonic
        self.start = self._last = self._clock()
        self._bar = None
        if enabled and (sys.stderr.isatty() if bar is None else bar):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=what, unit=unit, file=sys.stderr,
                             dynamic_ncols=True)

    def add(self, n: int) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """`done` items finished in all (resumed ones included)."""
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        self.tick()

    def note(self, text: str) -> None:
        """A short figure shown after the counts (e.g. `loss 0.4123`)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def tick(self) -> None:
        if self._bar is None and self.enabled and self._clock() - self._last >= self.interval:
            self._print()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled:
            self._print()

    def line(self) -> str:
        elapsed = max(self._clock() - self.start, 1e-9)
        rate = (self.done - self.resumed) / elapsed
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        left = (self.total - self.done) / rate if rate > 0 and self.total else None
        eta = f", ETA {_duration(left)}" if left is not None and self.done < self.total else ""
        of = f"/{self.total:,}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return (f"{self.what}: {self.done:,}{of} {self.unit}{pct}, {rate:.1f} {self.unit}/s, "
                f"{_duration(elapsed)} elapsed{eta}{extra}")

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

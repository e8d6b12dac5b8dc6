"""`dno report RUN [RUN...]`: one self-contained HTML page (plus its PNGs) of what DNO did.

    dno report runs/demo                                   # runs/demo/report.html + report-*.png
    dno report runs/a runs/b -o compare.html --metric lc_winrate

Win-rate against the teacher, LC win-rate, accuracy and mean score per iteration with bootstrap
95 % intervals, the best iterate (and whether its lead is within noise), pair types, length
drift, judge position bias / failures / calls / cost, training curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, as_tuple, at_least, one_of, opt
from ..errors import DnoError

from ..stats import DEFAULT_RESAMPLES, METRICS


@dataclass(frozen=True, kw_only=True)
class ReportConfig(Config):
    """Write an HTML report of one or more runs: results with intervals, best iterate, pairs, judge, training."""

    runs: tuple[Path, ...] = opt("Run folders (runs/NAME); several are compared.", argument=True,
                                 normalize=as_tuple)
    output: Path | None = opt("HTML file to write (default: RUN/report.html); the PNGs go beside it.", None,
                              flags=("-o", "--output"), changes_output=False)
    metric: str = opt(f"Metric that names the best iterate: {' | '.join(METRICS)}.", "winrate", check=one_of(*METRICS))
    resamples: int = opt("Bootstrap resamples for the 95 % intervals.", DEFAULT_RESAMPLES, check=at_least(10))
    seed: int = opt("Seed of the bootstrap.", 0)
    cache: Path | None = opt("Judge cache (SQLite) for tokens and cost; default RUN/cache/*.sqlite, else the judge "
                             "default ($DNO_CACHE or ~/.cache/dno/judge.sqlite).", None)
    prices: Path | None = opt("Price table JSON overriding the shipped one.", None)


    def validate(self) -> None:
        if not self.runs:
            raise DnoError("pass at least one run folder")

    def default_output(self):
        """RUN/report.html of the first run (a URL for a run on object storage)."""
        from ..storage import join

        return join(self.runs[0], "report.html")


def run(cfg: ReportConfig) -> Path:
    """Write the HTML page (and its PNGs beside it) and return its path."""
    from ..console import say, summary
    from ..report import write_report

    output = cfg.output or cfg.default_output()
    rep = write_report(list(cfg.runs), output, metric=cfg.metric, resamples=cfg.resamples, seed=cfg.seed,
                       cache=cfg.cache, prices=cfg.prices)
    for d in rep.runs:
        counts = {}
        for r in d.results:
            fields = [f"win-rate {r.winrate.fmt(100, 1, ' %')}" if r.winrate else None,
                      f"LC {r.lc_winrate.fmt(100, 1, ' %')}" if r.lc_winrate else None,
                      f"accuracy {r.accuracy.fmt(100, 1, ' %')}" if r.accuracy else "accuracy n/a",
                      f"score {r.score.fmt(1, 2)}" if r.score else None]
            counts[f"iteration {r.iteration}"] = ", ".join(f for f in fields if f)
        summary(f"report {d.path}", counts or {"evaluated checkpoints": 0})
    if rep.best is not None:
        say(rep.best.sentence())
    say(f"written: {rep.html_path} ({len(rep.pngs)} plots beside it)")
    return rep.html_path


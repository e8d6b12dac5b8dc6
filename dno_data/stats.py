"""Uncertainty and length control for held-out results (numpy only).

The percentile bootstrap is written here rather than taken from scipy.stats.bootstrap: it is a few
lines of numpy (resample, take quantiles, in bounded-memory chunks), and scipy would be a ~40 MB
compiled dependency for them. tests/test_stats.py checks the intervals against the textbook case and
against scipy.stats.bootstrap's percentile method (scipy is a test dependency only).

- `bootstrap_ci`: a seeded percentile bootstrap interval of a statistic over eval rows.
- `paired_bootstrap`: the difference of two checkpoints on the same prompts, resampling prompts.
- `lc_winrate`: AlpacaEval 2's length-controlled win-rate, computed here (its
  "length_controlled_minimal" model): a logistic regression of the win on
  tanh(Δlen / std(Δlen)) plus an intercept, Δlen = len(policy) − len(teacher) in characters;
  the LC win-rate is the model's predicted win at Δlen = 0, i.e. σ(intercept). Ties (0.5) and
  soft wins enter as fractional targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported by the functions that use it: the constants load without it
    import numpy as np

DEFAULT_RESAMPLES = 2000
# The metrics the report (and compare) give per iteration, and their labels.
METRICS = ("winrate", "lc_winrate", "accuracy", "score")
METRIC_LABELS = {"winrate": "win-rate vs teacher", "lc_winrate": "LC win-rate", "accuracy": "accuracy",
                 "score": "mean score"}


@dataclass(frozen=True)
class Interval:
    value: float  # the statistic on the data
    low: float
    high: float
    n: int

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    def fmt(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """
        >>> Interval(0.5, 0.4, 0.6, 10).fmt(100, unit=" %")
        '50.0 % [40.0, 60.0]'
        """
        f = f"{{:.{digits}f}}"
        return f"{f.format(self.value * scale)}{unit} [{f.format(self.low * scale)}, {f.format(self.high * scale)}]"


def _boot_means(x: np.ndarray, resamples: int, rng) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of x, drawn in chunks of a few million indices."""
    import numpy as np

    per_chunk = max(1, 4_000_000 // max(1, x.size))
    out = []
    for start in range(0, resamples, per_chunk):
        k = min(per_chunk, resamples - start)
        out.append(x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1))
    return np.concatenate(out)


def _clean(values: Sequence[float | None]) -> np.ndarray:
    import numpy as np

    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[~np.isnan(x)]


def bootstrap_ci(values: Sequence[float | None], stat: Callable[[np.ndarray], float] | None = None, *,
                 resamples: int = DEFAULT_RESAMPLES, level: float = 0.95, seed: int = 0) -> Interval | None:
    """Percentile bootstrap interval of stat(values); None values are left out; None if nothing is left.

    >>> iv = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    >>> iv.value, iv.low <= 0.7 <= iv.high, iv.n
    (0.7, True, 10)
    >>> bootstrap_ci([None]) is None
    True
    """
    import numpy as np

    stat = np.mean if stat is None else stat
    x = _clean(values)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    if stat is np.mean:
        boots = _boot_means(x, resamples, rng)
    else:
        boots = np.array([stat(x[rng.integers(0, x.size, size=x.size)]) for _ in range(resamples)])
    a = (1 - level) / 2
    return Interval(float(stat(x)), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), int(x.size))


@dataclass(frozen=True)
class PairedDiff:
    diff: Interval  # mean(a) - mean(b) over the shared keys
    p_not_better: float  # share of resamples where a is not better than b (a one-sided bootstrap p-value)

    @property
    def within_noise(self) -> bool:
        return self.diff.low <= 0.0


def paired_bootstrap(a: dict, b: dict, *, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                     seed: int = 0) -> PairedDiff | None:
    """a, b: {key: value} (e.g. prompt_id -> win) of two checkpoints; the keys both have, resampled together.

    >>> d = paired_bootstrap({i: 1.0 for i in range(50)}, {i: float(i % 2) for i in range(50)})
    >>> round(d.diff.value, 2), d.within_noise
    (0.5, False)
    """
    import numpy as np

    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    if not keys:
        return None
    d = np.asarray([a[k] - b[k] for k in keys], dtype=float)
    boots = _boot_means(d, resamples, np.random.default_rng(seed))
    alpha = (1 - level) / 2
    iv = Interval(float(d.mean()), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)), int(d.size))
    return PairedDiff(iv, float(np.mean(boots <= 0.0)))


# ---------------------------------------------------------------- length-controlled win-rate

def _sigmoid(z):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-z))


def length_feature(len_policy: np.ndarray, len_teacher: np.ndarray) -> np.ndarray:
    """tanh of the length difference over its standard deviation (AlpacaEval's `std_delta_len`)."""
    import numpy as np

    delta = np.asarray(len_policy, dtype=float) - np.asarray(len_teacher, dtype=float)
    sd = delta.std(ddof=1) if delta.size > 1 else 0.0
    return np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """(intercept, slope) of P(y=1) = σ(b0 + b1·x) for targets y in [0, 1], by Newton's method.

    A small L2 penalty (on both terms) keeps the fit finite when the length separates wins
    from losses perfectly.
    """
    import numpy as np

    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    n = len(y)
    for _ in range(iterations):
        p = _sigmoid(X @ beta)
        grad = X.T @ (p - y) / n + l2 * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X / n + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


@dataclass(frozen=True)
class LengthControlled:
    lc_winrate: float  # predicted win at zero length difference
    raw_winrate: float
    intercept: float
    length_slope: float  # > 0: the judge prefers the longer answer
    n: int


def lc_winrate(wins: Sequence[float], len_policy: Sequence[float], len_teacher: Sequence[float]) -> LengthControlled | None:
    """AlpacaEval-2-style length-controlled win-rate of the policy against the teacher.

    >>> r = lc_winrate([1, 0, 1, 0], [10, 10, 10, 10], [10, 10, 10, 10])
    >>> round(r.lc_winrate, 3), r.raw_winrate
    (0.5, 0.5)
    """
    import numpy as np

    w, lp, lt = (np.asarray(v, dtype=float) for v in (wins, len_policy, len_teacher))
    keep = ~(np.isnan(w) | np.isnan(lp) | np.isnan(lt))
    w, lp, lt = w[keep], lp[keep], lt[keep]
    if w.size == 0:
        return None
    b0, b1 = fit_logistic(length_feature(lp, lt), w)
    return LengthControlled(float(_sigmoid(b0)), float(w.mean()), float(b0), float(b1), int(w.size))


def lc_winrate_ci(wins, len_policy, len_teacher, *, resamples: int = 500, level: float = 0.95,
                  seed: int = 0) -> tuple[LengthControlled, Interval] | None:
    """The LC win-rate with a bootstrap interval (rows resampled, the regression refitted)."""
    import numpy as np

    w, lp, lt = (np.asarray(v, dtype=float) for v in (wins, len_policy, len_teacher))
    keep = ~(np.isnan(w) | np.isnan(lp) | np.isnan(lt))
    w, lp, lt = w[keep], lp[keep], lt[keep]
    point = lc_winrate(w, lp, lt)
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        i = rng.integers(0, w.size, size=w.size)
        boots.append(_sigmoid(fit_logistic(length_feature(lp[i], lt[i]), w[i], iterations=25)[0]))
    a = (1 - level) / 2
    return point, Interval(point.lc_winrate, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), point.n)

"""Judges that call a user's Python function (`python:module:function`), in this process.

  score     fn(messages, response[, reference][, truncated]) -> float, or a dict with `score`
            (and `correct`, `raw_output`)
  pairwise  fn(messages, a, b[, reference][, truncated]) -> P(a > b), or a dict with `prob_a_wins`

The value must be an int or a float: a string ("5") or a bool is an unparseable row. An
exception, or SystemExit, is an error row naming it.

A function that accepts `truncated` is told whether the response stopped at the length limit
(pairwise: a tuple for a and b).

The built-in oracles (oracles.py) are score functions of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

from ..callables import accepts, code_hash, load_callable
from ..errors import DnoError
from ..ids import stable_hash
from .base import Group, SyncJudge, failure
from .parsing import as_score


class PointwiseJudge(SyncJudge):
    """Scores each candidate on its own: fn(messages, response, reference=...) -> float | dict."""

    kind = "score"

    def __init__(self, spec: str, fn: Callable, identity: str):
        self.spec, self.fn = spec, fn
        self.judge_id = stable_hash("judge", spec, "score", identity)
        self._ref = accepts(fn, "reference")
        self._trunc = accepts(fn, "truncated")

    def judge(self, group: Group) -> list[dict]:
        rows = []
        for position, c in enumerate(group.candidates):
            try:
                kw = {"reference": group.reference} if self._ref else {}
                if self._trunc:
                    kw["truncated"] = c.truncated
                out = self.fn(group.messages, c.response, **kw)
            except (Exception, SystemExit) as e:  # a user's judge failing (even by sys.exit) is data, not a crash
                rows.append(self.make_row(group, c.sample_id, None, position, **failure(e)))
                continue
            values = out if isinstance(out, dict) else {"score": out}
            score = as_score(values.get("score"))
            raw = values.get("raw_output")
            if score is None:
                rows.append(self.make_row(group, c.sample_id, None, position, status="unparseable",
                                          error=f"score {values.get('score')!r} is not a number", raw_output=raw))
            else:
                correct = values.get("correct")
                rows.append(self.make_row(group, c.sample_id, None, position, score=score,
                                          correct=None if correct is None else bool(correct), raw_output=raw))
        return rows


class PairwiseJudge(SyncJudge):
    """Compares two candidates: fn(messages, a, b, reference=...) -> P(a > b).

    With both_orders (the default) every pair is asked as (a, b) and (b, a), so position
    bias cancels in the win-rates and can be measured from the rows.
    """

    kind = "pair"

    def __init__(self, spec: str, fn: Callable, identity: str, both_orders: bool = True):
        self.spec, self.fn, self.both_orders = spec, fn, both_orders
        self.judge_id = stable_hash("judge", spec, "pair", both_orders, identity)
        self._ref = accepts(fn, "reference")
        self._trunc = accepts(fn, "truncated")

    def judge(self, group: Group) -> list[dict]:
        rows = []
        for x, y in combinations(group.candidates, 2):
            orders = [(x, y, 0), (y, x, 1)] if self.both_orders else [(x, y, 0)]
            for a, b, position in orders:
                try:
                    kw = {"reference": group.reference} if self._ref else {}
                    if self._trunc:
                        kw["truncated"] = (a.truncated, b.truncated)
                    out = self.fn(group.messages, a.response, b.response, **kw)
                except (Exception, SystemExit) as e:
                    rows.append(self.make_row(group, a.sample_id, b.sample_id, position, **failure(e)))
                    continue
                values = out if isinstance(out, dict) else {"prob_a_wins": out}
                p = as_score(values.get("prob_a_wins"))
                raw = values.get("raw_output")
                if p is None:
                    rows.append(self.make_row(group, a.sample_id, b.sample_id, position, status="unparseable",
                                          error=f"P(a>b) {values.get('prob_a_wins')!r} is not a number", raw_output=raw))
                elif not 0.0 <= p <= 1.0:
                    rows.append(self.make_row(group, a.sample_id, b.sample_id, position, status="error",
                                          error=f"P(a>b) = {p} is outside [0, 1]", raw_output=raw))
                else:
                    rows.append(self.make_row(group, a.sample_id, b.sample_id, position, prob_a_wins=p, raw_output=raw))
        return rows


def python_judge(spec: str, mode: str | None, both_orders: bool = True, **_) -> SyncJudge:
    """`python:module:function` in `score` (the default) or `pairwise` mode."""
    if mode in ("rubric", "single"):
        raise DnoError(f"--mode {mode} is for openai:MODEL judges")
    fn = load_callable(spec.removeprefix("python:"), "--judge")
    if mode == "pairwise":
        return PairwiseJudge(spec, fn, code_hash(fn), both_orders=both_orders)
    return PointwiseJudge(spec, fn, code_hash(fn))

"""Preference oracles behind one narrow interface.

A judge turns a prompt and its candidate group into judgment rows (schema `judgments`).
Kinds:
  openai:MODEL             an OpenAI-compatible chat model, rubric or pairwise (api_judges.py)
  reward:PATH              a local sequence-classification reward model (reward_judge.py)
  oracle:NAME              built-in verifiable oracles (`exact`; `addition` for the demo;
                           `constraints` for the instruction-following task, ifeval_task.py)
  python:module:function   a user's pointwise scorer  fn(messages, response[, reference]) -> float
                           or, with mode="pairwise", fn(messages, a, b[, reference]) -> P(a > b)
A failure (exception, unparseable or out-of-range output) is a row with a status, never a
silent tie or preference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from .callables import accepts, code_hash, load_callable
from .errors import DnoError
from .ids import stable_hash
from .judge_parsing import as_number


@dataclass(frozen=True)
class Candidate:
    sample_id: str
    response: str
    source: str  # policy | teacher


@dataclass(frozen=True)
class Group:
    prompt_id: str
    messages: list[dict]
    reference: str | None
    candidates: list[Candidate]


class Judge(ABC):
    spec: str
    judge_id: str
    kind: str  # "score" | "pair"

    @abstractmethod
    def judge(self, group: Group) -> list[dict]:
        """Judgment rows for every candidate (kind=score) or ordered pair (kind=pair)."""

    def judge_batch(self, groups: list[Group]) -> list[dict]:
        """Rows for several groups; judges that batch (a reward model) override this."""
        return [row for g in groups for row in self.judge(g)]

    def _row(self, group: Group, a: str, b: str | None, position: int, **values) -> dict:
        row = {
            "judgment_id": stable_hash("judgment", group.prompt_id, self.judge_id, a, b, position),
            "prompt_id": group.prompt_id,
            "judge_id": self.judge_id,
            "judge": self.spec,
            "kind": self.kind if b is None else "pair",
            "sample_id_a": a,
            "sample_id_b": b,
            "position": position,
            "score": None,
            "prob_a_wins": None,
            "correct": None,
            "status": "ok",
            "error": None,
            "raw_output": None,
            "justification": None,
            "call_key": None,
            "cached": None,
        }
        row.update(values)
        return row


def _failure(e: BaseException) -> dict:
    return {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}


class PointwiseJudge(Judge):
    """Scores each candidate on its own: fn(messages, response, reference=...) -> float | dict."""

    kind = "score"

    def __init__(self, spec: str, fn: Callable, identity: str):
        self.spec, self.fn = spec, fn
        self.judge_id = stable_hash("judge", spec, "score", identity)
        self._ref = accepts(fn, "reference")

    def judge(self, group: Group) -> list[dict]:
        rows = []
        for position, c in enumerate(group.candidates):
            try:
                out = self.fn(group.messages, c.response, reference=group.reference) if self._ref else self.fn(
                    group.messages, c.response
                )
            except Exception as e:  # a user's judge failing is data, not a crash
                rows.append(self._row(group, c.sample_id, None, position, **_failure(e)))
                continue
            values = out if isinstance(out, dict) else {"score": out}
            score = as_number(values.get("score"))
            raw = values.get("raw_output")
            if score is None:
                rows.append(self._row(group, c.sample_id, None, position, status="unparseable",
                                      error=f"score {values.get('score')!r} is not a number", raw_output=raw))
            else:
                correct = values.get("correct")
                rows.append(self._row(group, c.sample_id, None, position, score=score,
                                      correct=None if correct is None else bool(correct), raw_output=raw))
        return rows


class PairwiseJudge(Judge):
    """Compares two candidates: fn(messages, a, b, reference=...) -> P(a > b).

    With both_orders (the default) every pair is asked as (a, b) and (b, a), so position
    bias cancels in the win-rates and can be measured from the rows.
    """

    kind = "pair"

    def __init__(self, spec: str, fn: Callable, identity: str, both_orders: bool = True):
        self.spec, self.fn, self.both_orders = spec, fn, both_orders
        self.judge_id = stable_hash("judge", spec, "pair", both_orders, identity)
        self._ref = accepts(fn, "reference")

    def judge(self, group: Group) -> list[dict]:
        rows = []
        for x, y in combinations(group.candidates, 2):
            orders = [(x, y, 0), (y, x, 1)] if self.both_orders else [(x, y, 0)]
            for a, b, position in orders:
                try:
                    kw = {"reference": group.reference} if self._ref else {}
                    out = self.fn(group.messages, a.response, b.response, **kw)
                except Exception as e:
                    rows.append(self._row(group, a.sample_id, b.sample_id, position, **_failure(e)))
                    continue
                values = out if isinstance(out, dict) else {"prob_a_wins": out}
                p = as_number(values.get("prob_a_wins"))
                raw = values.get("raw_output")
                if p is None:
                    rows.append(self._row(group, a.sample_id, b.sample_id, position, status="unparseable",
                                          error=f"P(a>b) {values.get('prob_a_wins')!r} is not a number", raw_output=raw))
                elif not 0.0 <= p <= 1.0:
                    rows.append(self._row(group, a.sample_id, b.sample_id, position, status="error",
                                          error=f"P(a>b) = {p} is outside [0, 1]", raw_output=raw))
                else:
                    rows.append(self._row(group, a.sample_id, b.sample_id, position, prob_a_wins=p, raw_output=raw))
        return rows


# ---------------------------------------------------------------- built-in verifiable oracles

def _normalize_answer(text: str) -> str:
    return " ".join(str(text).split()).strip().rstrip(".").lower()


def exact_match(messages, response: str, reference: str | None = None) -> dict:
    """6 when the answer equals the reference (whitespace and case folded), else 1.

    >>> exact_match([], " Paris. ", reference="paris")["score"]
    6.0
    """
    if reference is None:
        raise ValueError("oracle:exact needs a reference answer; import prompts with --reference-column")
    ok = _normalize_answer(response) == _normalize_answer(reference)
    return {"score": 6.0 if ok else 1.0, "correct": ok}


def _addition(messages, response: str, reference: str | None = None) -> dict:
    from .demo_task import score

    if reference is None:
        raise ValueError("oracle:addition needs the reference sum")
    s = score(response, reference)
    return {"score": s, "correct": s >= 6.0}


def _constraints(messages, response: str, reference: str | None = None) -> dict:
    from .ifeval_task import constraint_score

    if reference is None:
        raise ValueError("oracle:constraints needs the constraints (JSON) in the reference column")
    score, ok = constraint_score(response, reference)
    return {"score": score, "correct": ok}


ORACLES: dict[str, Callable] = {"exact": exact_match, "addition": _addition, "constraints": _constraints}

MODES = ("score", "pairwise", "rubric")


def make_judge(spec: str, mode: str | None = None, both_orders: bool = True, **api_options) -> Judge:
    """A judge from its spec. api_options go to openai judges (template, system, temperature,
    max_tokens, logprobs, seed) and reward judges (batch_size, max_length)."""
    if mode is not None and mode not in MODES:
        raise DnoError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if spec.startswith("openai:"):
        from .api_judges import OpenAIJudge

        keys = ("template", "system", "temperature", "max_tokens", "logprobs", "seed")
        return OpenAIJudge(spec, mode or "rubric", both_orders=both_orders,
                           **{k: v for k, v in api_options.items() if k in keys and v is not None})
    if spec.startswith("reward:"):
        from .reward_judge import RewardModelJudge

        if mode not in (None, "score"):
            raise DnoError(f"--judge {spec}: a reward model scores answers; drop --mode")
        keys = ("batch_size", "max_length")
        return RewardModelJudge(spec, **{k: v for k, v in api_options.items() if k in keys and v is not None})
    if mode == "rubric":
        raise DnoError("--mode rubric is for openai:MODEL judges")
    mode = mode or "score"
    if spec.startswith("oracle:"):
        name = spec.removeprefix("oracle:")
        if name not in ORACLES:
            raise DnoError(f"--judge {spec!r}: unknown oracle; built-in: {', '.join('oracle:' + k for k in ORACLES)}")
        if mode != "score":
            raise DnoError(f"--judge {spec}: built-in oracles score answers; use --mode score")
        return PointwiseJudge(spec, ORACLES[name], identity="builtin-v1")
    if spec.startswith("python:"):
        fn = load_callable(spec.removeprefix("python:"), "--judge")
        if mode == "pairwise":
            return PairwiseJudge(spec, fn, code_hash(fn), both_orders=both_orders)
        return PointwiseJudge(spec, fn, code_hash(fn))
    raise DnoError(f"--judge {spec!r}: expected oracle:NAME ({', '.join(ORACLES)}), python:module:function, "
                   "openai:MODEL or reward:PATH")

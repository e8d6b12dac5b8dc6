"""Built-in verifiable oracles (`oracle:NAME`): score functions run as pointwise judges.

Each is a `module:function` with the python-judge shape fn(messages, response, reference=None)
-> {"score", "correct"}, imported only when used. A task's oracle is one function in its module
plus one line here.
"""

from __future__ import annotations

from ..callables import load_callable
from ..errors import DnoError
from .python_fn import PointwiseJudge

ORACLES: dict[str, str] = {
    "exact": "dno_data.judges.oracles:exact_match",
    "addition": "dno_data.tasks.addition:oracle",  # the demo's graded addition check
    "constraints": "dno_data.tasks.constraints:oracle",  # instruction-following constraints (JSON reference)
    "partial-sums": "dno_data.tasks.partial_sums:oracle",  # 3-digit sums, partial credit per digit, no reference
}

IDENTITY = "builtin-v1"  # bump when an oracle's scoring changes: it is part of the judge_id


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


def oracle_judge(spec: str, mode: str | None, both_orders: bool = True, **_) -> PointwiseJudge:
    """`oracle:NAME`, a score judge."""
    if mode in ("rubric", "single"):
        raise DnoError(f"--mode {mode} is for openai:MODEL judges")
    mode = mode or "score"
    name = spec.removeprefix("oracle:")
    if name not in ORACLES:
        raise DnoError(f"--judge {spec!r}: unknown oracle; built-in: {', '.join('oracle:' + k for k in ORACLES)}")
    if mode != "score":
        raise DnoError(f"--judge {spec}: built-in oracles score answers; use --mode score")
    return PointwiseJudge(spec, load_callable(ORACLES[name], "--judge"), identity=IDENTITY)

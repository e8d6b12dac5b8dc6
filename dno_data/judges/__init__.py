"""Preference oracles behind one narrow interface: a judge turns a prompt and its candidate
group into judgment rows (schema `judgments`).

  openai:MODEL             an OpenAI-compatible chat model: rubric, pairwise or    openai_chat.py
                           single-answer grading (1..10, MT-Bench's form)
  reward:PATH              a sequence-classification reward model: a folder,      reward_model.py
                           or a Hugging Face Hub id (org/name[@REVISION])
  oracle:NAME              built-in verifiable oracles (exact, addition,           oracles.py
                           constraints)
  python:module:function   a user's scorer fn(messages, response[, reference])    python_fn.py
                           -> float, or with --mode pairwise fn(messages, a, b[, reference]) -> P(a > b)

base.py states the data types and the two protocols (SyncJudge, RequestJudge); run.py runs a
judge over candidate groups; parsing.py reads judge answers. This module is the registry: a
spec's prefix names the factory, imported only when used. Concrete modules never import it.
A new kind of judge is one module plus one line in JUDGES.
"""

from __future__ import annotations

import importlib

from ..errors import DnoError
from .base import Candidate, Group, Judge, Planned, RequestJudge, SyncJudge

__all__ = ["JUDGES", "MODES", "Candidate", "Group", "Judge", "Planned", "RequestJudge", "SyncJudge", "make_judge",
           "spec_help"]

# spec prefix -> ("module:factory", the spec's form in help texts); factory(spec, mode, both_orders, **options) -> Judge
JUDGES: dict[str, tuple[str, str]] = {
    "openai": ("dno_data.judges.openai_chat:openai_judge", "openai:MODEL"),
    "reward": ("dno_data.judges.reward_model:reward_judge", "reward:PATH (or a Hub id)"),
    "oracle": ("dno_data.judges.oracles:oracle_judge", "oracle:NAME"),
    "python": ("dno_data.judges.python_fn:python_judge", "python:module:function"),
}

MODES = ("score", "pairwise", "rubric", "single")


def make_judge(spec: str, mode: str | None = None, both_orders: bool = True, **options) -> Judge:
    """A judge from its spec. `options` go to the factory, which takes what its kind uses:
    openai judges (template, system, temperature, max_tokens, logprobs, seed), reward judges
    (batch_size, max_length)."""
    if mode is not None and mode not in MODES:
        raise DnoError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    prefix, sep, _ = spec.partition(":")
    if not sep or prefix not in JUDGES:
        raise DnoError(f"--judge {spec!r}: expected {spec_help(' or ')}")
    module, _, factory = JUDGES[prefix][0].partition(":")
    return getattr(importlib.import_module(module), factory)(spec, mode, both_orders, **options)


def spec_help(sep: str = " | ") -> str:
    """Every judge spec, from the registry (the oracles by name): the help texts' list."""
    from .oracles import ORACLES

    forms = [f"oracle:{name}" for name in ORACLES] if "oracle" in JUDGES else []
    return sep.join(f for k, (_, form) in JUDGES.items() for f in (forms if k == "oracle" else [form]))

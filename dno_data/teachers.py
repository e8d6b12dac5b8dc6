"""Teacher ("gold") responses: one per prompt from a stronger source.

Specs:
  reference                the prompt's `reference` column
  python:module:function   fn(messages) -> str (also given reference=... if it accepts it)
"""

from __future__ import annotations

from collections.abc import Callable

from .callables import accepts, code_hash, load_callable
from .errors import DnoError
from .ids import stable_hash


class Teacher:
    def __init__(self, spec: str):
        self.spec = spec
        if spec == "reference":
            self._fn: Callable | None = None
            self.teacher_id = stable_hash("teacher", "reference")
        elif spec.startswith("python:"):
            self._fn = load_callable(spec.removeprefix("python:"), "--teacher")
            self.teacher_id = stable_hash("teacher", spec, code_hash(self._fn))
        else:
            raise DnoError(f"--teacher {spec!r}: expected 'reference' or 'python:module:function'")
        self._pass_reference = self._fn is not None and accepts(self._fn, "reference")

    def check_prompts(self, rows: list[dict], path) -> None:
        """Fail before any work starts when `reference` is the teacher and answers are missing."""
        if self._fn is None:
            missing = sum(r.get("reference") is None for r in rows)
            if missing:
                raise DnoError(f"{path}: {missing} prompt(s) without a reference answer for --teacher reference; "
                               "import the prompts with --reference-column")

    def respond(self, messages: list[dict], reference: str | None) -> str:
        if self._fn is None:
            if reference is None:
                raise DnoError("--teacher reference: a prompt has no reference answer; import prompts with --reference-column")
            return reference
        out = self._fn(messages, reference=reference) if self._pass_reference else self._fn(messages)
        if not isinstance(out, str):
            raise DnoError(f"--teacher {self.spec}: returned {type(out).__name__}, expected str")
        return out

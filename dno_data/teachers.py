"""Teacher ("gold") responses: one per prompt from a stronger source.

Specs:
  reference                the prompt's `reference` column
  python:module:function   fn(messages) -> str (also given reference=... if it accepts it); a
                           function that raises stops the stage with one line naming it and the prompt
  openai:MODEL             an OpenAI-compatible chat model (the paper: GPT-4-Turbo), one request per
                           prompt through dno_data.openai_api.runner (async, bounded, retried;
                           cached when a cache is given); `TeacherApi` holds the server and decoding settings
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .callables import accepts, code_hash, load_callable
from .errors import DnoError, first_line
from .ids import stable_hash


@dataclass(frozen=True)
class TeacherApi:
    """How an openai:MODEL teacher is called (the server itself is in `settings`, a dno_data.openai_api.runner.ApiSettings)."""

    settings: object = None  # ApiSettings; None: the defaults (OPENAI_BASE_URL or api.openai.com)
    temperature: float = 0.0
    max_tokens: int = 1024
    cache: Path | None = None  # SQLite cache of calls; None: no cache (resume works by parts)


class Teacher:
    def __init__(self, spec: str, api: TeacherApi | None = None):
        self.spec = spec
        self._model = None
        if spec.startswith("openai:"):
            self._model = spec.removeprefix("openai:")
            if not self._model:
                raise DnoError("--teacher openai:MODEL needs a model name, e.g. openai:gpt-4-turbo")
            from .openai_api.runner import ApiSettings, check_api

            self._api = api or TeacherApi()
            self._settings = self._api.settings or ApiSettings()
            check_api(self._settings)
            self._fn = None
            self._params = {"temperature": self._api.temperature, "max_tokens": self._api.max_tokens}
            self.teacher_id = stable_hash("teacher", "openai", self._model, self._params)
            self._pass_reference = False
            return
        if spec == "reference":
            self._fn: Callable | None = None
            self.teacher_id = stable_hash("teacher", "reference")
        elif spec.startswith("python:"):
            self._fn = load_callable(spec.removeprefix("python:"), "--teacher")
            self.teacher_id = stable_hash("teacher", spec, code_hash(self._fn))
        else:
            raise DnoError(f"--teacher {spec!r}: expected 'reference', 'python:module:function' or 'openai:MODEL'")
        self._pass_reference = self._fn is not None and accepts(self._fn, "reference")

    @property
    def runs_code(self) -> bool:
        """True for a teacher that answers by code in this process (reference, python:); False for
        an API one (openai:), whose calls go through the caller's call cache."""
        return self._model is None

    def check_prompts(self, rows: list[dict], path) -> None:
        """Fail before any work starts when `reference` is the teacher and answers are missing."""
        if self._fn is None and self._model is None:
            missing = sum(r.get("reference") is None for r in rows)
            if missing:
                raise DnoError(f"{path}: {missing} prompt(s) without a reference answer for --teacher reference; "
                               "import the prompts with --reference-column")

    def respond(self, messages: list[dict], reference: str | None) -> str:
        if self._model is not None:
            from .ids import prompt_id

            return self.respond_many([{"messages": messages, "reference": reference,
                                       "prompt_id": prompt_id(messages)}])[0]
        if self._fn is None:
            if reference is None:
                raise DnoError("--teacher reference: a prompt has no reference answer; import prompts with --reference-column")
            return reference
        try:
            out = self._fn(messages, reference=reference) if self._pass_reference else self._fn(messages)
        except (Exception, SystemExit) as e:  # a teacher's answer is a sample, which has no status: stop, naming it
            from .ids import prompt_id

            raise DnoError(f"--teacher {self.spec}: raised {type(e).__name__}: {first_line(e, 200)} for prompt "
                           f"{prompt_id(messages)}; "
                           f"fix the function and rerun") from None
        if not isinstance(out, str):
            raise DnoError(f"--teacher {self.spec}: returned {type(out).__name__}, expected str")
        return out

    def respond_many(self, rows: list[dict]) -> list[str]:
        """One answer per prompt row (messages, reference); openai teachers answer concurrently."""
        if self._model is None:
            return [self.respond(r["messages"], r.get("reference")) for r in rows]
        from .openai_api.runner import Call, answer_all

        calls = [Call(stable_hash("teacher-call", self._model, self._params, r["messages"]), self._model,
                      self._params, (lambda m=r["messages"]: [dict(x) for x in m])) for r in rows]
        prompt_of = {c.key: r["prompt_id"] for r, c in zip(rows, calls)}
        results = answer_all(self._settings, calls, self._api.cache,
                             what=lambda c: f"--teacher {self.spec}: the request for prompt {prompt_of[c.key]}")
        out = []
        for r, c in zip(rows, calls):
            got = results[c.key]
            if not got.content:
                raise DnoError(f"--teacher {self.spec}: an empty answer for prompt {r['prompt_id']} "
                               f"(finish_reason {got.finish_reason}); check the model and --teacher-max-new-tokens")
            out.append(got.content)
        return out

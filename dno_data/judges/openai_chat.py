"""Judges that are OpenAI-compatible chat models (OpenAI, a local `vllm serve`, ...).

  --mode rubric    the paper's DNO-Prct annotation: all candidates of a prompt in one call,
                   each scored on an additive 6-point rubric with a short justification; the
                   candidates are shuffled with a seed derived from the prompt id, and the
                   shown position of each is recorded in `position`.
  --mode pairwise  one call per pair and per order, (a, b) and (b, a), so position bias
                   cancels in the win-rates and is measured; P(a > b) from the verdict token's
                   logprobs when the server returns them, else from the verdict.
  --mode single    MT-Bench's single-answer grading: one call per answer, graded alone on 1..10
                   after a short justification, against the prompt's reference answer when it has
                   one (math and reasoning questions); in a conversation, the last turn's answer
                   is graded with the earlier turns as context. The answer must hold exactly one
                   `[[N]]` rating (parsing.parse_grade); anything else is an unparseable row.

The request (model, rendered template, decoding parameters) is the cache key.

Templates (shipped or `--template FILE`) are rendered in Jinja's sandbox
(ImmutableSandboxedEnvironment): a template reaches its variables, not Python. The texts it
is given are fenced: `<response ...>`, `<question>`, `<reference>` and their closing tags inside the
conversation, a reference or a candidate are escaped (`&lt;response ...`), so a policy cannot forge
the structure the judge reads. A candidate that stopped at the length limit is marked:
`candidates[i].truncated` (rubric), `a_truncated` / `b_truncated` (pairwise), `truncated` (single).
The single template's variables: instruction, answer, truncated, reference (None: none), multi_turn.
"""

from __future__ import annotations

import random
import re
from importlib import resources
from itertools import combinations
from pathlib import Path

from ..errors import DnoError, first_line
from ..ids import stable_hash
from ..openai_api.call_cache import CachedCall
from ..openai_api.runner import Call, describe_failure
from .base import Group, Planned, RequestJudge
from .parsing import is_refusal, parse_grade, parse_rubric, parse_verdict, verdict_probability

API_MODES = ("rubric", "pairwise", "single")
GRADES = (1.0, 10.0)  # --mode single: the scale of a grade


def load_template(mode: str, path: Path | None):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if path is not None:
        if not Path(path).is_file():
            raise DnoError(f"--template {path}: no such file")
        text = Path(path).read_text()
    else:
        text = resources.files("dno_data").joinpath("templates", f"{mode}.jinja").read_text()
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return text, env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise DnoError(f"--template {path}: line {e.lineno}: {e.message}") from None


_TAG = re.compile(r"<(/?\s*(?:response|question|reference)\b)", re.I)


def fence(text: str) -> str:
    """Text as data inside the judge prompt: the tags that delimit it are escaped.

    >>> fence('ok</response> <Response id="id2"> </ question> <reference>')
    'ok&lt;/response> &lt;Response id="id2"> &lt;/ question> &lt;reference>'
    """
    return _TAG.sub(r"&lt;\1", text)


def instruction_of(messages: list[dict]) -> str:
    """The conversation as the judge sees it: the user's text, or a transcript of several turns."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in turns)


class OpenAIJudge(RequestJudge):
    def __init__(self, spec: str, mode: str, *, template: Path | None = None, system: str | None = None,
                 temperature: float = 0.0, max_tokens: int | None = None, logprobs: bool = True,
                 both_orders: bool = True, seed: int = 0):
        if mode not in API_MODES:
            raise DnoError(f"--mode {mode!r}: an openai judge takes {' or '.join(API_MODES)}")
        self.spec, self.mode, self.model = spec, mode, spec.removeprefix("openai:")
        if not self.model:
            raise DnoError("--judge openai:MODEL needs a model name, e.g. openai:gpt-4o")
        self.kind = "pair" if mode == "pairwise" else "score"
        self.template_text, self.template = load_template(mode, template)
        self._template_path = template
        self._render_check()
        self.system, self.both_orders, self.seed = system, both_orders, seed
        self.params = {"temperature": temperature,
                       "max_tokens": max_tokens or (4 if mode == "pairwise" else None)}
        if mode == "pairwise" and logprobs:
            self.params.update(logprobs=True, top_logprobs=5)
        # What every request of this judge shares; with the prompt and the shown candidates it is the cache key.
        self.request_id = stable_hash("request", self.model, mode, self.template_text, system, self.params, length=32)
        self.judge_id = stable_hash("judge", spec, self.request_id, both_orders, seed)

    def _render_check(self) -> None:
        """Render the template once with placeholder values: an unknown variable is a DnoError now,
        before any work folder exists, not a traceback in the middle of the stage."""

        values = {"rubric": {"candidates": [{"id": "id1", "text": "x", "truncated": True}]},
                  "pairwise": {"a": "x", "b": "y", "a_truncated": True, "b_truncated": False},
                  "single": {"answer": "x", "truncated": True, "reference": "r", "multi_turn": True}}[self.mode]
        self._render(instruction="q", **values)

    def _render(self, **values) -> str:
        """The template rendered; any failure (an unknown variable, the sandbox's limits such as
        `range(10**7)`, an unsafe attribute) is one DnoError naming the template."""
        try:
            return self.template.render(**values)
        except Exception as e:  # jinja2.TemplateError, SecurityError, OverflowError (range), TypeError...
            where = f"--template {self._template_path}" if self._template_path else f"the {self.mode} template"
            raise DnoError(f"{where}: {type(e).__name__}: {first_line(e, 300)}") from None

    # ------------------------------------------------------------ planning
    def _messages(self, text: str) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": text}]

    def _call(self, instruction: str, shown: list, render, reference: str | None = None) -> Call:
        # What the template is given: the fenced texts, and the truncation marks (only where set, so
        # the key of an unmarked group is what it always was); a single grade's reference answer.
        texts = [[fence(c.response), True] if c.truncated else fence(c.response) for c in shown]
        parts = (instruction, texts) if reference is None else (instruction, texts, reference)
        key = stable_hash("chat", self.request_id, *parts, length=32)
        return Call(key, self.model, self.params, lambda: self._messages(render()))

    def plan(self, group: Group) -> list[Planned]:
        """The calls for a group; their messages are rendered only if a call is not cached."""
        instruction = fence(instruction_of(group.messages))
        if self.mode == "rubric":
            shown = list(group.candidates)
            random.Random(stable_hash("shuffle", group.prompt_id, self.seed)).shuffle(shown)
            render = lambda: self._render(  # noqa: E731
                instruction=instruction, candidates=[{"id": f"id{i + 1}", "text": fence(c.response), "truncated": c.truncated}
                                                     for i, c in enumerate(shown)])
            return [Planned(self._call(instruction, shown, render), shown, 0)]
        if self.mode == "single":
            reference = fence(group.reference) if group.reference else None
            multi_turn = sum(m["role"] == "user" for m in group.messages) > 1
            return [Planned(self._call(instruction, [c], lambda c=c: self._render(
                instruction=instruction, answer=fence(c.response), truncated=c.truncated, reference=reference,
                multi_turn=multi_turn), reference), [c], 0) for c in group.candidates]
        out = []
        for x, y in combinations(group.candidates, 2):
            for a, b, pos in ([(x, y, 0), (y, x, 1)] if self.both_orders else [(x, y, 0)]):
                render = lambda a=a, b=b: self._render(  # noqa: E731
                    instruction=instruction, a=fence(a.response), b=fence(b.response),
                    a_truncated=a.truncated, b_truncated=b.truncated)
                out.append(Planned(self._call(instruction, [a, b], render), [a, b], pos))
        return out

    # ------------------------------------------------------------ rows
    def rows(self, group: Group, planned: list[Planned], results: dict, hits: set[str]) -> list[dict]:
        out = []
        for p in planned:
            res = results.get(p.call.key)
            extra = {"call_key": p.call.key, "cached": p.call.key in hits}
            if self.mode == "rubric":
                out += self._rubric_rows(group, p, res, extra)
            elif self.mode == "single":
                out.append(self._grade_row(group, p, res, extra))
            else:
                out.append(self._pair_row(group, p, res, extra))
        return out

    def _rubric_rows(self, group, p: Planned, res, extra) -> list[dict]:
        ids = [f"id{i + 1}" for i in range(len(p.shown))]
        if not isinstance(res, CachedCall):
            return [self.make_row(group, c.sample_id, None, i, status="error", error=describe_failure(res), **extra)
                    for i, c in enumerate(p.shown)]
        # A truncated answer is not read in part: the scores it kept may not be the judge's last word,
        # and the ones it lost are always the last shown (a position-dependent gap).
        parsed = {} if res.finish_reason == "length" else parse_rubric(res.content, ids) or {}
        rows = []
        for i, (c, cid) in enumerate(zip(p.shown, ids)):
            base = {"raw_output": res.content, **extra}
            score = parsed[cid][0] if cid in parsed else None
            if score is not None and 0 <= score <= 6:
                rows.append(self.make_row(group, c.sample_id, None, i, score=score, justification=parsed[cid][1], **base))
            else:
                why = f"no score for {cid}" if score is None else f"score {score:g} for {cid} is outside 0..6"
                rows.append(self.make_row(group, c.sample_id, None, i, **_unreadable(res, why), **base))
        return rows

    def _grade_row(self, group, p: Planned, res, extra) -> dict:
        c = p.shown[0]
        if not isinstance(res, CachedCall):
            return self.make_row(group, c.sample_id, None, 0, status="error", error=describe_failure(res), **extra)
        base = {"raw_output": res.content, **extra}
        # a truncated answer may have lost its rating, or hold the example's before its own: never read in part
        parsed = None if res.finish_reason == "length" else parse_grade(res.content)
        lo, hi = GRADES
        if parsed is not None and lo <= parsed[0] <= hi:
            return self.make_row(group, c.sample_id, None, 0, score=parsed[0], justification=parsed[1], **base)
        why = ("no rating written [[N]] (exactly one)" if parsed is None
               else f"rating {parsed[0]:g} is outside {lo:g}..{hi:g}")
        return self.make_row(group, c.sample_id, None, 0, **_unreadable(res, why), **base)

    def _pair_row(self, group, p: Planned, res, extra) -> dict:
        a, b = p.shown
        if not isinstance(res, CachedCall):
            return self.make_row(group, a.sample_id, b.sample_id, p.position, status="error", error=describe_failure(res), **extra)
        # The logprobs speak only for an answer that is a verdict: 'A' ranked 2nd under an answer
        # such as "2+" is no verdict (weak judges do this), and must not become P(A) = 1.
        verdict = parse_verdict(res.content)
        prob = verdict_probability(res.logprobs[0]) if verdict is not None and res.logprobs else None
        if prob is None and verdict is not None:
            prob = 1.0 if verdict == "A" else 0.0
        if prob is None:
            return self.make_row(group, a.sample_id, b.sample_id, p.position, raw_output=res.content,
                             **_unreadable(res, "no verdict A or B"), **extra)
        return self.make_row(group, a.sample_id, b.sample_id, p.position, prob_a_wins=prob, raw_output=res.content, **extra)


def _unreadable(res: CachedCall, why: str) -> dict:
    if res.finish_reason == "length":
        return {"status": "unparseable", "error": f"{why} (answer truncated: finish_reason=length)"}
    if is_refusal(res.content):
        return {"status": "refused", "error": why}
    return {"status": "unparseable", "error": why}


def openai_judge(spec: str, mode: str | None, both_orders: bool = True, **options) -> OpenAIJudge:
    """`openai:MODEL`; options: template, system, temperature, max_tokens, logprobs, seed."""
    keys = ("template", "system", "temperature", "max_tokens", "logprobs", "seed")
    return OpenAIJudge(spec, mode or "rubric", both_orders=both_orders,
                       **{k: v for k, v in options.items() if k in keys and v is not None})


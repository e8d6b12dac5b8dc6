"""The judges' data types and their two protocols.

  SyncJudge     answers in this process: `judge(group)` / `judge_batch(groups)` -> rows
                (built-in oracles, python callables, reward models)
  RequestJudge  plans API calls for a group (`plan`), and turns the answers into rows (`rows`);
                dno_data.judges.run drives the calls through dno_data.openai_api
                (OpenAI-compatible chat judges)

The runner dispatches on these types (isinstance), never on which attributes a judge has.
A failure (exception, unparseable or out-of-range output) is a row with a status, never a
silent tie or preference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ids import stable_hash

if TYPE_CHECKING:
    from ..openai_api.call_cache import CachedCall
    from ..openai_api.runner import Call


@dataclass(frozen=True)
class Candidate:
    sample_id: str
    response: str
    source: str  # policy | teacher
    truncated: bool = False  # stopped at the length limit (samples.finish_reason == 'length'), not by EOS


@dataclass(frozen=True)
class Group:
    prompt_id: str
    messages: list[dict]
    reference: str | None
    candidates: list[Candidate]


class Judge(ABC):
    """What every judge has: its spec, an id that hashes what decides its answers, and its kind."""

    spec: str
    judge_id: str
    kind: str  # "score" | "pair"

    def make_row(self, group: Group, a: str, b: str | None, position: int, **values) -> dict:
        """A `judgments` row for candidate a (score) or the ordered pair (a, b); `values` fill it."""
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


class SyncJudge(Judge):
    """A judge that answers in this process."""

    @abstractmethod
    def judge(self, group: Group) -> list[dict]:
        """Judgment rows for every candidate (kind=score) or ordered pair (kind=pair)."""

    def judge_batch(self, groups: list[Group]) -> list[dict]:
        """Rows for several groups; judges that batch (a reward model) override this."""
        return [row for g in groups for row in self.judge(g)]


@dataclass(frozen=True)
class Planned:
    """One API call a RequestJudge needs for a group, and how its answer maps back to candidates."""

    call: Call
    shown: list  # candidates in the order shown
    position: int  # pairwise: 0 = (a, b) as given, 1 = swapped


class RequestJudge(Judge):
    """A judge that plans API calls for a group and turns their answers into rows."""

    model: str  # the served model (costs are looked up by it)
    params: dict  # decoding parameters every call shares

    @abstractmethod
    def plan(self, group: Group) -> list[Planned]:
        """The calls for a group; their messages are rendered only if a call is not cached."""

    @abstractmethod
    def rows(self, group: Group, planned: list[Planned], results: dict[str, CachedCall | BaseException],
             hits: set[str]) -> list[dict]:
        """Rows from the answers (`results` by call key: an answer, or the exception of a call that
        failed for good); `hits` are the keys answered from the cache."""


def failure(e: BaseException) -> dict:
    """The values of a row for a judge that raised."""
    return {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}

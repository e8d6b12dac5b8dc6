"""Run a judge over every prompt's candidate group, in resumable parts."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
from tqdm.auto import tqdm

from .artifacts import Parts
from .judges import Candidate, Group, Judge


def groups_of(samples: pa.Table) -> list[Group]:
    """One group per prompt: its policy samples and teacher answers, in sample order."""
    groups: dict[str, Group] = {}
    for r in samples.select(["prompt_id", "messages", "reference", "sample_id", "response", "source"]).to_pylist():
        g = groups.get(r["prompt_id"])
        if g is None:
            g = groups[r["prompt_id"]] = Group(r["prompt_id"], r["messages"], r["reference"], [])
        g.candidates.append(Candidate(r["sample_id"], r["response"], r["source"]))
    return list(groups.values())


def judge_groups(groups: list[Group], judge: Judge, parts: Parts, prompts_per_part: int) -> Counter:
    counts: Counter = Counter()
    units = [groups[i:i + prompts_per_part] for i in range(0, len(groups), prompts_per_part)]
    todo = [u for u in range(len(units)) if not parts.done(u)]
    counts["parts_resumed"] = len(units) - len(todo)
    for u in tqdm(todo, desc="judge", unit="part", disable=None):
        rows = [row for g in units[u] for row in judge.judge(g)]
        parts.write(u, rows)
    return counts

"""Run a judge over every prompt's candidate group, in resumable parts.

Local judges (oracles, python callables, reward models) run batch by batch. API judges run
asynchronously: several parts are in flight at once so the request pool stays full, every
answer goes to the cache as it arrives, and each part is written when its prompts are done.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pyarrow as pa
from tqdm.auto import tqdm

from .artifacts import Parts
from .judges import Candidate, Group, Judge


def groups_of(samples: pa.Table) -> list[Group]:
    """One group per prompt: its policy samples and teacher answers, in sample order.

    Column by column: the messages of a prompt are converted once, not once per sample.
    """
    pids = samples["prompt_id"].to_pylist()
    first: dict[str, int] = {}
    for i, pid in enumerate(pids):
        first.setdefault(pid, i)
    idx = pa.array(list(first.values()), pa.int64())
    messages = samples["messages"].take(idx).to_pylist()
    references = samples["reference"].take(idx).to_pylist()
    groups = {pid: Group(pid, m, r, []) for pid, m, r in zip(first, messages, references)}
    for pid, sid, resp, src in zip(pids, samples["sample_id"].to_pylist(), samples["response"].to_pylist(),
                                   samples["source"].to_pylist()):
        groups[pid].candidates.append(Candidate(sid, resp, src))
    return list(groups.values())


def is_api_judge(judge: Judge) -> bool:
    return hasattr(judge, "plan")


def judge_groups(groups: list[Group], judge: Judge, parts: Parts, prompts_per_part: int, runner=None) -> Counter:
    counts: Counter = Counter()
    units, todo = parts.split(groups, prompts_per_part)
    counts["parts_resumed"] = len(units) - len(todo)
    if is_api_judge(judge):
        asyncio.run(_judge_api(judge, units, todo, parts, runner))
        return counts
    for u in tqdm(todo, desc="judge", unit="part", disable=None):
        parts.write(u, judge.judge_batch(units[u]))
    return counts


async def _judge_api(judge, units, todo, parts: Parts, runner) -> None:
    from .api_judges import judge_groups_api

    calls_per_part = max(1, sum(len(judge.plan(g)) for g in units[todo[0]])) if todo else 1
    window = asyncio.Semaphore(max(2, -(-2 * runner.settings.concurrency // calls_per_part) + 1))
    bar = tqdm(total=len(todo), desc="judge", unit="part", disable=None)

    async def one(u: int) -> None:
        async with window:
            rows = await judge_groups_api(judge, units[u], runner)
            parts.write(u, rows)
            bar.update()

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(u) for u in todo))
    finally:
        runner.stats.wall_seconds = time.perf_counter() - t0
        bar.close()
        await runner.aclose()


def judge_all(judge: Judge, groups: list[Group], runner_factory=None) -> list[dict]:
    """All rows for a few groups at once (used by `dno eval`). An API judge gets a fresh
    runner from `runner_factory` (its HTTP client lives in this call's event loop)."""
    if not is_api_judge(judge):
        return judge.judge_batch(groups)
    from .api import run_with_runner
    from .api_judges import judge_groups_api

    return run_with_runner(runner_factory, lambda runner: judge_groups_api(judge, groups, runner))

"""Run a judge over every prompt's candidate group, in resumable parts.

A SyncJudge runs part by part. A RequestJudge runs asynchronously, and its parts are decoupled
from the request pool: a new part is started whenever fewer calls than --concurrency are
waiting for a request slot, whatever the parts already started are doing (a call in a retry's
backoff holds back only its own part). Every answer goes to the call cache as it arrives, and
each part is written when all its calls are in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..console import Progress
from ..parts import Parts
from .base import Candidate, Group, Judge, RequestJudge, SyncJudge


def groups_of(samples: pa.Table) -> list[Group]:
    """One group per prompt: its policy samples and teacher answers, in sample order; a sample
    that stopped at the length limit is a `truncated` candidate.

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
    for pid, sid, resp, src, finish in zip(pids, samples["sample_id"].to_pylist(), samples["response"].to_pylist(),
                                           samples["source"].to_pylist(), samples["finish_reason"].to_pylist()):
        groups[pid].candidates.append(Candidate(sid, resp, src, truncated=finish == "length"))
    return list(groups.values())


def failed_calls(output: Path) -> int:
    """Rows of an existing judgments file whose API call failed for good (status error with a
    call key): rerunning the same command asks those calls again; paid answers come from the cache."""
    try:
        table = pq.read_table(output, columns=["status", "call_key"])
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return 0
    return sum(s == "error" and k is not None
               for s, k in zip(table["status"].to_pylist(), table["call_key"].to_pylist()))


def not_ok_rows(output: Path) -> tuple[Counter, set[str]]:
    """Of an existing judgments file: the count of rows by status, and the call keys of the rows
    that are not ok (error, unparseable, refused); empty when there is no readable file."""
    try:
        table = pq.read_table(output, columns=["status", "call_key"])
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return Counter(), set()
    status = table["status"].to_pylist()
    return Counter(status), {k for s, k in zip(status, table["call_key"].to_pylist()) if s != "ok" and k is not None}


def failure_classes(statuses, errors) -> Counter:
    """The not-ok rows by why they failed: an error row by its exception's class (`APITimeoutError`,
    `RateLimitError`, from the row's `error` text), other rows by their status (unparseable, refused)."""
    out: Counter = Counter()
    for status, error in zip(statuses, errors):
        if status == "ok":
            continue
        if status == "error" and error:
            head = str(error).split(":", 1)[0].split()
            out[head[0] if head and head[0].isidentifier() else "error"] += 1
        else:
            out[status] += 1
    return out


def describe_failures(classes: Counter) -> str:
    """`1250 failed: 1200 APITimeoutError, 50 RateLimitError` (most frequent first)."""
    total = sum(classes.values())
    return f"{total} failed: " + ", ".join(f"{n} {c}" for c, n in classes.most_common())


def file_failure_classes(output: Path) -> Counter:
    """failure_classes of an existing judgments file (empty when it cannot be read)."""
    try:
        table = pq.read_table(output, columns=["status", "error"])
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return Counter()
    return failure_classes(table["status"].to_pylist(), table["error"].to_pylist())


class RetryingCache:
    """The call cache of a runner that asks `keys` again: their cached answers (unparseable or
    refused ones) are not read, and each new answer replaces the old one. Every other key
    goes to the cache unchanged."""

    def __init__(self, scoped, keys: set[str]):
        self.scoped, self.keys = scoped, set(keys)

    def get_many(self, keys):
        return self.scoped.get_many([k for k in keys if k not in self.keys])

    def claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        retry = [k for k in keys if k in self.keys]
        mine, theirs = self.scoped.claim([k for k in keys if k not in self.keys])
        return retry + mine, theirs

    def put(self, key: str, model: str, call) -> None:
        if key in self.keys:
            from ..openai_api.call_cache import scoped_key

            # the cache's connection autocommits; the new answer is stored next
            self.scoped.cache.db.execute("DELETE FROM calls WHERE key = ?", (scoped_key(self.scoped.endpoint, key),))
            self.keys.discard(key)
        self.scoped.put(key, model, call)

    def release(self, keys) -> None:
        self.scoped.release([k for k in keys if k not in self.keys])


def judge_groups(groups: list[Group], judge: Judge, parts: Parts, prompts_per_part: int, runner=None) -> Counter:
    """Judge the groups not yet in `parts`, writing one part per `prompts_per_part` prompts.
    A RequestJudge needs `runner` (a dno_data.openai_api.runner.CallRunner); it is closed after."""
    counts: Counter = Counter()
    units, todo = parts.split(groups, prompts_per_part)
    counts["parts_resumed"] = len(units) - len(todo)
    progress = Progress("judge", len(groups), "prompts", done=_resumed(units, todo))
    if isinstance(judge, RequestJudge):
        asyncio.run(_judge_requests(judge, units, todo, parts, runner, progress))
        return counts
    _require_sync(judge)
    for u in todo:
        parts.write(u, judge.judge_batch(units[u]))
        progress.add(len(units[u]))
    progress.close()
    return counts


def _resumed(units, todo) -> int:
    from ..engines import resumed_items

    return resumed_items(units, todo)


def judge_groups_batch(groups: list[Group], judge: RequestJudge, parts: Parts, prompts_per_part: int, batch) -> Counter:
    """judge_groups through the Batch API (`batch`, a dno_data.openai_api.batch.BatchCalls): every
    call of the parts not yet written is planned, the cache answers what it holds, the rest goes
    out as batches; a part is written as soon as every call of it is answered or failed."""
    counts: Counter = Counter()
    units, todo = parts.split(groups, prompts_per_part)
    counts["parts_resumed"] = len(units) - len(todo)
    planned = {u: [judge.plan(g) for g in units[u]] for u in todo}
    left = dict.fromkeys(todo)

    def write_ready(results: dict, hits: set) -> None:
        for u in list(left):
            if all(p.call.key in results for ps in planned[u] for p in ps):
                parts.write(u, [row for g, ps in zip(units[u], planned[u]) for row in judge.rows(g, ps, results, hits)])
                del left[u]

    batch.run([p.call for u in todo for ps in planned[u] for p in ps], on_results=write_ready)
    if left:  # every call has an answer or a failure once the batches are collected
        from ..errors import DnoError

        raise DnoError(f"{len(left)} parts have calls without a batch answer; rerun the same command to resume")
    return counts


async def judge_requests(judge: RequestJudge, groups: list[Group], runner) -> list[dict]:
    """Rows for `groups`: plan their calls, run them (cache first), turn the answers into rows."""
    planned = [judge.plan(g) for g in groups]
    calls = [p.call for ps in planned for p in ps]
    results, hits = await runner.run(calls)
    return [row for g, ps in zip(groups, planned) for row in judge.rows(g, ps, results, hits)]


async def _judge_requests(judge: RequestJudge, units, todo, parts: Parts, runner, progress: Progress) -> None:
    backlog = max(1, runner.settings.concurrency)  # calls queued for a slot before another part starts

    async def one(u: int) -> None:
        rows = await judge_requests(judge, units[u], runner)
        parts.write(u, rows)
        progress.add(len(units[u]))

    t0 = time.perf_counter()
    tasks = []
    try:
        for u in todo:
            while runner.waiting >= backlog:
                await asyncio.sleep(0.005)
            tasks.append(asyncio.ensure_future(one(u)))
            await asyncio.sleep(0)  # the part plans and queues its calls (runner.waiting counts them)
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    finally:
        runner.stats.wall_seconds = time.perf_counter() - t0
        progress.close()
        await runner.aclose()


def judge_all(judge: Judge, groups: list[Group], runner_factory=None) -> list[dict]:
    """All rows for a few groups at once (used by `dno eval`). A RequestJudge gets a fresh
    runner from `runner_factory` (its HTTP client lives in this call's event loop)."""
    if isinstance(judge, RequestJudge):
        from ..openai_api.runner import run_with_runner

        return run_with_runner(runner_factory, lambda runner: judge_requests(judge, groups, runner))
    _require_sync(judge)
    return judge.judge_batch(groups)


def _require_sync(judge: Judge) -> None:
    if not isinstance(judge, SyncJudge):
        raise TypeError(f"{type(judge).__name__} is neither a SyncJudge nor a RequestJudge")


# --engine ray: the same judge_batch on Ray actors (dno_data/engines/ray.py)


def make_judge_from(settings):
    """A Ray worker's state: the judge built from its settings (a JudgeSettings), once per worker."""
    return settings.make()


def judge_unit(judge: SyncJudge, groups: list[Group]) -> list[dict]:
    return judge.judge_batch(groups)


def judge_groups_ray(groups: list[Group], settings, parts: Parts, prompts_per_part: int, engine) -> Counter:
    """judge_groups for a judge that runs a model or code (SyncJudge), its parts on Ray actors that
    each build the judge from `settings`; this process checks and writes each part."""
    from ..engines import check_unit_rows, resumed_items
    from ..engines.ray import run_units

    counts: Counter = Counter()
    units, todo = parts.split(groups, prompts_per_part)
    counts["parts_resumed"] = len(units) - len(todo)
    progress = Progress("judge", len(groups), "prompts", done=resumed_items(units, todo))

    def on_result(u: int, rows: list[dict]) -> None:
        check_unit_rows(rows, {g.prompt_id for g in units[u]}, u)
        parts.write(u, rows)
        progress.add(len(units[u]))

    counts.update(run_units([(u, units[u]) for u in todo], setup=partial(make_judge_from, settings), work=judge_unit,
                            on_result=on_result, what="dno judge", on_progress=progress.tick, **engine.resources()))
    progress.close()
    return counts

"""`dno judge SAMPLES -o judgments.parquet --judge SPEC`: the preference oracle over each prompt's candidates.

    dno judge iter-01/samples.parquet -o iter-01/judgments.parquet --judge oracle:addition
    dno judge samples.parquet -o judgments.parquet --judge openai:gpt-4o --mode rubric --concurrency 32
    dno judge samples.parquet -o judgments.parquet --judge openai:judge --base-url http://127.0.0.1:8000/v1 \
        --mode pairwise --cache runs/r1/cache/judge.sqlite
    dno judge samples.parquet -o judgments.parquet --judge openai:gpt-4o --dry-run       # calls, tokens, cost
    dno judge samples.parquet -o judgments.parquet --judge openai:gpt-4o --batch         # Batch API: half price, <= 24 h
    dno judge samples.parquet -o judgments.parquet --judge reward:models/rm --batch-size 32
    dno judge samples.parquet -o judgments.parquet --judge python:my_judges:prefer --mode pairwise
    dno judge samples.parquet -o judgments.parquet --judge reward:models/rm --engine ray --workers 4 --gpus-per-worker 1

Judges: openai:MODEL (rubric: all candidates in one call, the paper's 6-point annotation;
pairwise: both orders), reward:PATH (sequence-classification reward model), oracle:NAME (the
built-in verifiable oracles, listed by `dno judge --help`), python:module:function. Failures are
rows with a status. API answers are cached by server and request content (SQLite, shared across
runs and processes) as they arrive: a rerun after a crash, or another run asking the same, pays
again only for the calls that were in flight at the kill (at most --concurrency). Rerunning the
same command asks again the calls that failed (rows with status error); paid answers are never
asked again, unless --retry-failed: it asks again every row that is not ok, unparseable and
refused answers too, past the cache (the new answers replace the cached ones).

--batch sends the calls the cache does not answer through the OpenAI Batch API (half price,
answered within 24 hours; dno_data/openai_api/batch.py): the batch ids are recorded in the output's
work folder (OUTPUT.parts/batches.json) as they are made, so a killed run, rerun with the same
command, polls the same batches and submits nothing twice; the answers fill the call cache, and
failed or expired requests are rows with status error (rerun to ask them again).

When more than --max-failure-rate (default 0.1) of the rows are not ok, the file is written and
the command exits 1 with the counts by status, so `dno iterate` / `just iterate` stop there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, above, at_least, group, in_range, opt, replace
from ..config.groups import Api, Engine, JudgeSettings
from .common import FORCE, OUTPUT_FILE


@dataclass(frozen=True, kw_only=True)
class JudgeConfig(Config):
    """Judge every prompt's candidates with a preference oracle."""

    samples: Path = opt("samples.parquet (from `dno sample`).", argument=True)
    output: Path = OUTPUT_FILE.field(help="judgments.parquet to write.")
    # the judge: --judge SPEC, its mode (default per kind: rubric for openai, score for python, oracle, reward), ...
    judge: JudgeSettings = group(JudgeSettings)
    prompts_per_part: int = opt("Prompts per resumable part.", 64, check=at_least(1))
    api: Api = group(Api)  # openai judges; the cache defaults to $DNO_CACHE or ~/.cache/dno/judge.sqlite
    prices: Path | None = opt("JSON price table: {model: (USD per 1M input tokens, USD per 1M output tokens)}.", None,
                              changes_output=False)
    dry_run: bool = opt("Print calls, tokens and cost (at the batch price with --batch); call nothing.", False,
                        changes_output=False)
    batch: bool = opt("openai judges: send the calls through the OpenAI Batch API (half price, answered within 24 h); "
                      "the batch ids are recorded in the output's work folder, and a rerun of a killed run resumes "
                      "them.", False, changes_output=False)
    batch_poll: float = opt("--batch: the longest wait in seconds between two polls of a batch (the wait doubles "
                            "from 1 s).", 60.0, changes_output=False, check=above(0))
    max_failure_rate: float = opt("Exit 1 (after writing the file) when more than this share of the judgments are not ok "
                                  "(error, unparseable, refused...); rerun to ask the failed calls again.", 0.1,
                                  changes_output=False, check=in_range(0.0, 1.0))
    retry_failed: bool = opt("Ask again the calls of every row that is not ok, unparseable and refused answers too, "
                             "past their cached answers (which the new ones replace); a python, oracle or reward "
                             "judge judges those prompts again.", False, changes_output=False)
    engine: Engine = group(Engine)
    force: bool = FORCE.field(False)


def _runner(cfg: JudgeConfig, work_dir: Path):
    """The calls' runner: a CallRunner, or with --batch the Batch API's, recording in `work_dir`."""
    if cfg.batch:
        from ..openai_api.batch import BatchCalls
        from ..openai_api.call_cache import CallCache, default_cache_path

        cache = None if cfg.api.no_cache else CallCache(cfg.api.cache or default_cache_path())
        return BatchCalls(cfg.api.settings(), cache, work_dir, poll_max=cfg.batch_poll)
    from ..openai_api.runner import make_runner

    return make_runner(cfg.api.settings(), cfg.api.cache, cfg.api.no_cache)


def run(cfg: JudgeConfig) -> Path:
    """Write cfg.output (resuming finished parts; paid answers come from the call cache) and return its path."""
    from collections import Counter

    from ..artifacts import read_artifact
    from ..console import summary, up_to_date
    from ..errors import DnoError
    from ..judges.base import RequestJudge
    from ..hub import hub_lineage
    from ..judges.run import (RetryingCache, describe_failures, failed_calls, failure_classes, file_failure_classes,
                              groups_of, judge_groups, judge_groups_batch, judge_groups_ray, not_ok_rows)
    from ..lineage import make_lineage
    from ..parts import Parts
    from ..paths import check_output

    samples = read_artifact(cfg.samples, "samples")
    if len(samples) == 0:
        raise DnoError(f"{cfg.samples}: no samples to judge; rerun `dno sample`")
    check_output(cfg.output, [cfg.samples], kind="judgments")
    judge = cfg.judge.make()
    if isinstance(judge, RequestJudge):
        from ..openai_api.costs import load_prices

        load_prices(cfg.prices)  # a wrong price table is refused now, not after every call was paid for
    if cfg.engine.ray and isinstance(judge, RequestJudge):
        raise DnoError(f"--judge {cfg.judge.spec}: an API judge runs in this process (its limit is the provider's "
                       "rate, and its call cache is on this disk); --engine ray is for reward:, python: and "
                       "oracle: judges")
    if cfg.batch and not isinstance(judge, RequestJudge):
        raise DnoError(f"--batch: the Batch API is for openai: judges; --judge {cfg.judge.spec} runs here")
    lineage = make_lineage("judge", [cfg.samples], cfg, judge_id=judge.judge_id,
                           **hub_lineage(judge))  # a reward:ID judge: its repository and commit
    groups = groups_of(samples)
    if cfg.dry_run:
        _dry_run(cfg, judge, groups)
        return cfg.output
    before, retry_keys = not_ok_rows(cfg.output) if cfg.retry_failed else (None, set())
    retry = cfg.retry_failed and sum(n for s, n in before.items() if s != "ok") > 0
    if not retry and not failed_calls(cfg.output) and up_to_date(cfg.output, lineage, cfg.force):  # failed calls: ask again
        _check_failure_rate(cfg, not_ok_rows(cfg.output)[0], file_failure_classes(cfg.output))
        return cfg.output
    if isinstance(judge, RequestJudge):  # a missing key or package: an error before the work folder exists
        from ..openai_api.runner import check_api

        check_api(cfg.api.settings())
    parts = Parts(cfg.output, lineage, "judgments", fresh=cfg.force)
    if not cfg.batch:
        _refuse_unfinished_batches(parts.dir)
    runner = _runner(cfg, parts.dir) if isinstance(judge, RequestJudge) else None
    if retry_keys and runner is not None and runner.cache is not None:
        runner.cache = RetryingCache(runner.cache, retry_keys)
    if cfg.engine.ray:
        hub = getattr(judge, "hub", None)  # a reward:ID judge: the workers load the commit resolved here
        settings = replace(cfg.judge, judge=f"reward:{hub['repo_id']}@{hub['commit']}") if hub else cfg.judge
        counts = judge_groups_ray(groups, settings, parts, cfg.prompts_per_part, cfg.engine)
    elif cfg.batch:
        counts = judge_groups_batch(groups, judge, parts, cfg.prompts_per_part, runner)
    else:
        counts = judge_groups(groups, judge, parts, cfg.prompts_per_part, runner)
    table = parts.finish(lineage)
    status = Counter(table["status"].to_pylist())
    classes = failure_classes(table["status"].to_pylist(), table["error"].to_pylist())
    report = {"prompts": len(groups), "samples": len(samples), "judgments": len(table),
              **{f"status {k}": v for k, v in sorted(status.items())},
              **({"why": describe_failures(classes)} if classes else {}), **{k: v for k, v in counts.items() if v}}
    if runner is not None:
        report.update(_api_report(cfg, judge, runner, table))
    summary(f"judgments -> {cfg.output}", report)
    _check_failure_rate(cfg, status, classes)
    return cfg.output


def _refuse_unfinished_batches(work_dir: Path) -> None:
    """A run without --batch on an output whose batches were started and not collected would pay again
    for their requests."""
    from ..errors import DnoError
    from ..openai_api.batch import unfinished

    started = unfinished(work_dir)
    if started:
        n = sum(len(r["keys"]) for r in started)
        ids = ", ".join(str(r["batch_id"]) for r in started[:3]) + (" ..." if len(started) > 3 else "")
        raise DnoError(f"{work_dir}: {n:,} requests are in batches not collected yet ({ids}); rerun with --batch to "
                       f"collect them, or delete {work_dir} to discard this unfinished work (those batches still "
                       "run, and are billed)")


def _check_failure_rate(cfg: JudgeConfig, status, classes=None) -> None:
    """Too many failed judgments stop the loop (`dno iterate` stops on a failing stage): the file
    is written, the counts are on the error line."""
    from ..errors import DnoError

    total, failed = sum(status.values()), sum(n for s, n in status.items() if s != "ok")
    if total and failed / total > cfg.max_failure_rate:
        from ..judges.run import describe_failures

        counts = describe_failures(classes) if classes else ", ".join(f"{s} {n}" for s, n in sorted(status.items()))
        raise DnoError(f"{cfg.output}: {failed} of {total} judgments ({failed / total:.0%}) failed, more than "
                       f"--max-failure-rate {cfg.max_failure_rate:g} ({counts}); rerun the same command to ask "
                       f"the failed calls again (--retry-failed also re-asks unparseable and refused answers)")


def _api_report(cfg: JudgeConfig, judge, runner, table) -> dict:
    from ..openai_api.costs import cost_usd, fmt_cost, load_prices

    st = runner.stats
    prices = load_prices(cfg.prices, batch=cfg.batch)
    price = " (batch price)" if cfg.batch else ""
    out = {"calls made": st.calls, "cache hits": st.cache_hits, "calls failed for good": _failed_for_good(st.failures),
           "input tokens": st.input_tokens, "of which prefix-cached": st.cached_tokens, "output tokens": st.output_tokens,
           "cost of this run" + price: fmt_cost(cost_usd(judge.model, st.input_tokens, st.output_tokens, prices,
                                                         st.cached_tokens), judge.model),
           "without prefix reuse": fmt_cost(cost_usd(judge.model, st.input_tokens, st.output_tokens, prices),
                                            judge.model)}
    if st.waited_for_other_process:
        out["answered by a concurrent process"] = st.waited_for_other_process
    if st.calls and st.wall_seconds:
        out["calls / s"] = f"{st.calls / st.wall_seconds:.1f}"
    if judge.kind == "pair":
        ok = [p for p, s in zip(table["prob_a_wins"].to_pylist(), table["status"].to_pylist()) if s == "ok"]
        if ok:
            out["position bias: P(first shown wins)"] = f"{sum(ok) / len(ok):.3f}"
    return out


def _failed_for_good(failures) -> str | int:
    """`0`, or `1250 (1200 APITimeoutError, 50 RateLimitError)`: the calls that failed after their retries, by
    the error's class."""
    total = sum(failures.values())
    if not total:
        return 0
    return f"{total} (" + ", ".join(f"{n} {c}" for c, n in failures.most_common()) + ")"


def _dry_run(cfg: JudgeConfig, judge, groups) -> None:
    from ..console import say, summary
    from ..judges.base import RequestJudge

    if not isinstance(judge, RequestJudge):  # (--batch with such a judge was refused before)
        say(f"dry run: {len(groups)} prompts for the local judge {cfg.judge.spec}; no API calls, no cost")
        return
    from ..openai_api.call_cache import CallCache, default_cache_path
    from ..openai_api.costs import cost_usd, fmt_cost, load_prices, reused_prefix_tokens
    from ..openai_api.runner import ApiSettings, endpoint_of

    calls = {p.call.key: (p.call, len(p.shown)) for g in groups for p in judge.plan(g)}
    cached = set()
    if not cfg.api.no_cache:
        cache = CallCache(cfg.api.cache or default_cache_path())
        cached = set(cache.scoped(endpoint_of(ApiSettings(cfg.api.base_url))).get_many(calls))
        cache.close()
    todo = [v for k, v in calls.items() if k not in cached]
    tin = sum(c.est_tokens - int(c.params.get("max_tokens") or 0) for c, _ in todo)
    per_call_out = judge.params.get("max_tokens")
    tout = sum(per_call_out or 80 * n for _, n in todo)  # rubric: ~80 tokens of justification + score each
    # the calls in the order they are sent: the input an earlier call's prefix covers is billed at the cached price
    reused = sum(reused_prefix_tokens("".join(m["content"] for m in c.messages) for c, _ in todo))
    prices = load_prices(cfg.prices, batch=cfg.batch)
    summary(f"dry run: {cfg.judge.spec} ({judge.mode}) over {cfg.samples}", {
        "prompts": len(groups), "calls": len(calls), "cached": len(cached), "to call": len(todo),
        "estimated input tokens": tin, "of which a reused prefix": reused, "estimated output tokens": tout,
        "estimated cost" + (" (batch price)" if cfg.batch else ""):
            fmt_cost(cost_usd(judge.model, tin, tout, prices, reused), judge.model),
        "without prefix reuse": fmt_cost(cost_usd(judge.model, tin, tout, prices), judge.model),
    })


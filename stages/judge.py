"""`dno judge SAMPLES -o judgments.parquet --judge SPEC`: the preference oracle over each prompt's candidates.

    dno judge iter-01/samples.parquet -o iter-01/judgments.parquet --judge oracle:addition
    dno judge samples.parquet -o judgments.parquet --judge openai:gpt-4o --mode rubric --concurrency 32
    dno judge samples.parquet -o judgments.parquet --judge openai:judge --base-url http://127.0.0.1:8000/v1 \
        --mode pairwise --cache runs/r1/cache/judge.sqlite
    dno judge samples.parquet -o judgments.parquet --judge openai:gpt-4o --dry-run       # calls, tokens, cost
    dno judge samples.parquet -o judgments.parquet --judge reward:models/rm --batch-size 32
    dno judge samples.parquet -o judgments.parquet --judge python:my_judges:prefer --mode pairwise

Judges: openai:MODEL (rubric: all candidates in one call, the paper's 6-point annotation;
pairwise: both orders), reward:PATH (sequence-classification reward model), oracle:exact,
oracle:addition, oracle:constraints, python:module:function. Failures are rows with a status.
API answers are cached by server and request content (SQLite, shared across runs and processes)
as they arrive: a rerun after a crash, or another run asking the same, pays again only for the
calls that were in flight at the kill (at most --concurrency). Rerunning the same command asks
again the calls that failed (rows with status error); paid answers are never asked again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.artifacts import Parts, make_lineage, read_artifact
from dno_data.cli_utils import check_output_path, one_line_errors, say, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.judges import make_judge
from dno_data.judges.base import RequestJudge
from dno_data.judges.run import failed_calls, groups_of, judge_groups


@dataclass(frozen=True)
class JudgeConfig:
    samples: Path
    output: Path
    judge: str  # openai:MODEL | reward:PATH | oracle:NAME | python:module:function
    mode: str | None = None  # rubric | pairwise (openai); score | pairwise (python); default per kind
    both_orders: bool = True  # pairwise: ask (a, b) and (b, a) to cancel and measure position bias
    prompts_per_part: int = 64  # prompts per resumable part
    # openai judges
    base_url: str | None = None  # default: $OPENAI_BASE_URL, else api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable with the key (the key is never written)
    concurrency: int = 16  # requests in flight
    rpm: float | None = None  # requests per minute
    tpm: float | None = None  # tokens per minute
    timeout: float = 60.0  # seconds per request attempt
    max_retries: int = 6  # retries on 429 / 5xx / timeouts (exponential backoff with jitter, Retry-After)
    cache: Path | None = None  # SQLite cache; default $DNO_CACHE or ~/.cache/dno/judge.sqlite
    no_cache: bool = False
    template: Path | None = None  # your Jinja template (default: the shipped rubric / pairwise one)
    system_prompt: str | None = None
    temperature: float = 0.0
    max_tokens: int | None = None
    logprobs: bool = True  # pairwise: P(a > b) from the verdict token's logprobs when available
    seed: int = 0  # candidate shuffling (rubric)
    prices: Path | None = None  # JSON {model: [usd_per_1M_input, usd_per_1M_output]}
    dry_run: bool = False
    # reward judges
    batch_size: int = 16
    force: bool = False
    fresh: bool = False


def _judge(cfg: JudgeConfig):
    return make_judge(cfg.judge, cfg.mode, cfg.both_orders, template=cfg.template, system=cfg.system_prompt,
                      temperature=cfg.temperature, max_tokens=cfg.max_tokens, logprobs=cfg.logprobs, seed=cfg.seed,
                      batch_size=cfg.batch_size)


def _runner(cfg: JudgeConfig):
    from dno_data.openai_api.runner import ApiSettings, make_runner

    settings = ApiSettings(cfg.base_url, cfg.api_key_env, cfg.concurrency, cfg.rpm, cfg.tpm, cfg.timeout, cfg.max_retries)
    return make_runner(settings, cfg.cache, cfg.no_cache)


def run(cfg: JudgeConfig) -> Path:
    samples = read_artifact(cfg.samples, "samples")
    if len(samples) == 0:
        raise DnoError(f"{cfg.samples}: no samples to judge; rerun `dno sample`")
    check_output_path(cfg.output, [cfg.samples])
    if cfg.concurrency < 1 or cfg.prompts_per_part < 1:
        raise DnoError("--concurrency and --prompts-per-part must be at least 1")
    judge = _judge(cfg)
    lineage = make_lineage("judge", [cfg.samples], {**cfg.__dict__, "judge_id": judge.judge_id})
    groups = groups_of(samples)
    if cfg.dry_run:
        _dry_run(cfg, judge, groups)
        return cfg.output
    if not failed_calls(cfg.output) and up_to_date(cfg.output, lineage, cfg.force):  # failed calls: ask again
        return cfg.output
    runner = _runner(cfg) if isinstance(judge, RequestJudge) else None
    parts = Parts(cfg.output, lineage, "judgments", fresh=cfg.fresh)
    counts = judge_groups(groups, judge, parts, cfg.prompts_per_part, runner)
    table = parts.finish(lineage)
    status = Counter(table["status"].to_pylist())
    report = {"prompts": len(groups), "samples": len(samples), "judgments": len(table),
              **{f"status {k}": v for k, v in sorted(status.items())}, **{k: v for k, v in counts.items() if v}}
    if runner is not None:
        report.update(_api_report(cfg, judge, runner, table))
    summary(f"judgments -> {cfg.output}", report)
    return cfg.output


def _api_report(cfg: JudgeConfig, judge, runner, table) -> dict:
    from dno_data.openai_api.costs import cost_usd, fmt_cost, load_prices

    st = runner.stats
    out = {"calls made": st.calls, "cache hits": st.cache_hits, "calls failed for good": sum(st.failures.values()),
           "input tokens": st.input_tokens, "output tokens": st.output_tokens,
           "cost of this run": fmt_cost(cost_usd(judge.model, st.input_tokens, st.output_tokens, load_prices(cfg.prices)),
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


def _dry_run(cfg: JudgeConfig, judge, groups) -> None:
    if not isinstance(judge, RequestJudge):
        say(f"dry run: {len(groups)} prompts for the local judge {cfg.judge}; no API calls, no cost")
        return
    from dno_data.openai_api.call_cache import CallCache, default_cache_path
    from dno_data.openai_api.costs import cost_usd, fmt_cost, load_prices
    from dno_data.openai_api.runner import ApiSettings, endpoint_of

    calls = {p.call.key: (p.call, len(p.shown)) for g in groups for p in judge.plan(g)}
    cached = set()
    if not cfg.no_cache:
        cache = CallCache(cfg.cache or default_cache_path())
        cached = set(cache.scoped(endpoint_of(ApiSettings(cfg.base_url))).get_many(calls))
        cache.close()
    todo = [v for k, v in calls.items() if k not in cached]
    tin = sum(c.est_tokens - int(c.params.get("max_tokens") or 0) for c, _ in todo)
    per_call_out = judge.params.get("max_tokens")
    tout = sum(per_call_out or 80 * n for _, n in todo)  # rubric: ~80 tokens of justification + score each
    summary(f"dry run: {cfg.judge} ({judge.mode}) over {cfg.samples}", {
        "prompts": len(groups), "calls": len(calls), "cached": len(cached), "to call": len(todo),
        "estimated input tokens": tin, "estimated output tokens": tout,
        "estimated cost": fmt_cost(cost_usd(judge.model, tin, tout, load_prices(cfg.prices)), judge.model),
    })


@one_line_errors
def command(
    samples: Annotated[Path, typer.Argument(help="samples.parquet (from `dno sample`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="judgments.parquet to write.")],
    judge: Annotated[str, typer.Option(help="openai:MODEL | reward:PATH | oracle:exact | oracle:addition | python:module:function.")],
    mode: Annotated[Optional[str], typer.Option(help="openai: rubric|pairwise; python: score|pairwise.")] = None,
    both_orders: Annotated[bool, typer.Option(help="Pairwise: judge (a,b) and (b,a).")] = True,
    prompts_per_part: Annotated[int, typer.Option(help="Prompts per resumable part.")] = 64,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Name of the environment variable holding the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 16,
    rpm: Annotated[Optional[float], typer.Option(help="Requests-per-minute limit.")] = None,
    tpm: Annotated[Optional[float], typer.Option(help="Tokens-per-minute limit.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request attempt.")] = 60.0,
    max_retries: Annotated[int, typer.Option(help="Retries on 429/5xx/timeouts (backoff with jitter, Retry-After).")] = 6,
    cache: Annotated[Optional[Path], typer.Option(help="Judge cache (SQLite); default $DNO_CACHE or ~/.cache/dno/judge.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option(help="Do not read or write the cache.")] = False,
    template: Annotated[Optional[Path], typer.Option(help="Jinja template of the judge prompt.")] = None,
    system_prompt: Annotated[Optional[str], typer.Option(help="System message for the judge.")] = None,
    temperature: Annotated[float, typer.Option(help="Judge sampling temperature.")] = 0.0,
    max_tokens: Annotated[Optional[int], typer.Option(help="Longest judge answer.")] = None,
    logprobs: Annotated[bool, typer.Option(help="Pairwise: P from the verdict token's logprobs.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the rubric's candidate shuffling.")] = 0,
    prices: Annotated[Optional[Path], typer.Option(help="JSON price table {model: [usd/1M in, usd/1M out]}.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print calls, tokens and cost; call nothing.")] = False,
    batch_size: Annotated[int, typer.Option(help="Reward model: candidates per forward pass.")] = 16,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard unfinished parts of a different run.")] = False,
):
    """Judge every prompt's candidates with a preference oracle."""
    run(JudgeConfig(samples, output, judge, mode, both_orders, prompts_per_part, base_url, api_key_env, concurrency,
                    rpm, tpm, timeout, max_retries, cache, no_cache, template, system_prompt, temperature, max_tokens,
                    logprobs, seed, prices, dry_run, batch_size, force, fresh))

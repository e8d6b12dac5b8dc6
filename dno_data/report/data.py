"""What a run did, collected: per-iteration results with bootstrap intervals, judge costs, train logs,
and the best iterate (whether its lead is within noise)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..duckdb_sql import load_sql, query_polars
from ..errors import DnoError
from ..paths import check_input
from ..queries import open_run_all_views, run_query
from ..stats import DEFAULT_RESAMPLES, METRIC_LABELS, METRICS, Interval, bootstrap_ci, lc_winrate_ci, paired_bootstrap
from ..training.options import RECORDS_SUFFIX
PER_PROMPT = {"winrate": "win", "accuracy": "correct", "score": "score"}  # metrics a paired bootstrap can compare
TABLE_QUERIES = ("winrate", "pair_types", "length_drift", "position_bias", "failures", "intransitive_cycles",
                 "judge_agreement", "judge_calls")


@dataclass
class IterationResult:
    run: str
    iteration: int
    model: str
    prompts: int
    judged_ok: int
    empty_teacher: int
    winrate: Interval | None = None
    lc_winrate: Interval | None = None
    length_slope: float | None = None
    accuracy: Interval | None = None
    score: Interval | None = None
    per_prompt: dict = field(default_factory=dict)  # "win" | "correct" | "score" -> {(prompt_id, turn): value}
    # multi-turn evals: turn -> {"winrate" | "accuracy" | "score": Interval | None}; empty for one turn
    turns: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.run} iteration {self.iteration}"


@dataclass
class RunData:
    path: Path
    name: str
    results: list[IterationResult]
    tables: dict  # canned query name -> polars DataFrame
    train_logs: dict  # iteration -> list of train_log.jsonl rows
    costs: list[dict]  # per iteration and judge model: tokens and cost of the calls made


@dataclass
class Best:
    metric: str
    best: IterationResult
    interval: Interval
    runner_up: IterationResult | None
    runner_up_interval: Interval | None
    within_noise: bool | None
    how: str  # how "within noise" was decided

    def sentence(self) -> str:
        unit = "" if self.metric == "score" else " %"
        scale = 1 if self.metric == "score" else 100
        digits = 2 if self.metric == "score" else 1
        text = (f"Best iterate by {METRIC_LABELS[self.metric]}: {self.best.label} ({self.best.model}), "
                f"{self.interval.fmt(scale, digits, unit)}.")
        if self.runner_up is None:
            return text + " No other checkpoint was evaluated."
        other = f"{self.runner_up.label} ({self.runner_up_interval.fmt(scale, digits, unit)})"
        if self.within_noise:
            return text + f" The difference to the next, {other}, is within noise ({self.how}): either could ship."
        return text + f" It is ahead of the next, {other}, beyond noise ({self.how})."


# ---------------------------------------------------------------- collecting

def collect_run(run: Path, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, cache: Path | None = None,
                prices: Path | None = None) -> RunData:
    run = Path(run)
    con = open_run_all_views(run)
    name = run.resolve().name
    tables = {q: run_query(None, q, con=con) for q in TABLE_QUERIES}
    evals = eval_rows(query_polars(con, load_sql("report_eval_rows")))
    results = [_iteration_result(name, run, t, evals.filter(evals["iteration"] == t), resamples, seed)
               for t in sorted(set(evals["iteration"].to_list()))]
    calls = query_polars(con, load_sql("report_paid_calls"))
    return RunData(run, name, results, tables, read_train_logs(run), judge_costs(run, calls, cache, prices))


def eval_rows(df):
    """The evals view's rows with a `turn` (1 where the file had none: one turn), in a fixed order."""
    import polars as pl

    if df.height == 0:
        return df
    turn = pl.col("turn").fill_null(1) if "turn" in df.columns else pl.lit(1)
    return df.with_columns(turn.cast(pl.Int64).alias("turn")).sort(["iteration", "prompt_id", "turn"])


def _short_model(model: str, run_dir: Path) -> str:
    """A checkpoint inside the run's parent folder is named relative to it (demo/iter-01/checkpoint)."""
    try:
        return str(Path(model).resolve().relative_to(run_dir.resolve().parent))
    except (ValueError, OSError):
        return model


def _iteration_result(run: str, run_dir: Path, t: int, df, resamples: int, seed: int) -> IterationResult:
    rows = df.to_dicts()
    ok = [r for r in rows if r["status"] == "ok"]
    with_teacher = [r for r in ok if r["win"] is not None and (r["teacher_response"] or "").strip()]
    graded = [r for r in ok if r["correct"] is not None]
    scored = [r for r in ok if r["policy_score"] is not None]
    res = IterationResult(run, t, _short_model(rows[0]["model"], run_dir), len({r["prompt_id"] for r in rows}), len(ok),
                          sum(1 for r in ok if r["teacher_response"] is not None and not r["teacher_response"].strip()))
    res.per_prompt = {"win": {(r["prompt_id"], r["turn"]): r["win"] for r in with_teacher},
                      "correct": {(r["prompt_id"], r["turn"]): float(r["correct"]) for r in graded},
                      "score": {(r["prompt_id"], r["turn"]): r["policy_score"] for r in scored}}
    res.winrate = bootstrap_ci([r["win"] for r in with_teacher], resamples=resamples, seed=seed)
    res.accuracy = bootstrap_ci([float(r["correct"]) for r in graded], resamples=resamples, seed=seed)
    res.score = bootstrap_ci([r["policy_score"] for r in scored], resamples=resamples, seed=seed)
    turns = sorted({r["turn"] for r in rows})
    for turn in turns if len(turns) > 1 else ():
        res.turns[turn] = {
            "winrate": bootstrap_ci([r["win"] for r in with_teacher if r["turn"] == turn], resamples=resamples,
                                    seed=seed),
            "accuracy": bootstrap_ci([float(r["correct"]) for r in graded if r["turn"] == turn], resamples=resamples,
                                     seed=seed),
            "score": bootstrap_ci([r["policy_score"] for r in scored if r["turn"] == turn], resamples=resamples,
                                  seed=seed)}
    if len(with_teacher) >= 2:
        lc = lc_winrate_ci([r["win"] for r in with_teacher], [len(r["response"]) for r in with_teacher],
                           [len(r["teacher_response"]) for r in with_teacher],
                           resamples=max(50, resamples // 4), seed=seed)
        if lc is not None:
            res.lc_winrate, res.length_slope = lc[1], lc[0].length_slope
    return res


def read_train_logs(run: Path) -> dict[int, list[dict]]:
    out = {}
    logs = {log.parent.parent: log for log in Path(run).glob("iter-*/checkpoint/train_log.jsonl")}  # an older dno's
    logs.update({log.parent.parent: log for log in Path(run).glob(f"iter-*/checkpoint{RECORDS_SUFFIX}/train_log.jsonl")})
    for folder, log in sorted(logs.items()):
        try:
            t = int(folder.name.split("-", 1)[1])
            out[t] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        except ValueError:
            raise DnoError(f"{log}: not a train log (JSON lines); rerun dno train") from None
    return out


def find_cache(run: Path, cache: Path | None) -> Path | None:
    if cache is not None:
        cache = Path(cache)
        if cache.is_dir():
            cache = cache / "judge.sqlite"
        if not cache.is_file():
            raise DnoError(f"--cache {cache}: no such judge cache")
        return cache
    found = sorted(Path(run).glob("cache/*.sqlite"))
    if found:
        return found[0]
    from ..openai_api.call_cache import default_cache_path  # where `dno judge` caches without --cache

    return default_cache_path() if default_cache_path().is_file() else None


def judge_costs(run: Path, calls, cache: Path | None, prices: Path | None) -> list[dict]:
    """Tokens and cost of the calls a run made (cached rows were paid earlier), read from the judge cache."""
    from ..openai_api.costs import cost_usd, load_prices

    if calls.height == 0:
        return []
    path = find_cache(run, cache)
    groups: dict[tuple, list[str]] = {}
    for r in calls.to_dicts():
        groups.setdefault((r["iteration"], r["judge"]), []).append(r["call_key"])
    usage: dict[str, tuple] = {}
    if path is not None:
        check_input(path, "judge cache")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            keys = [k for ks in groups.values() for k in ks]
            # a cache written before cached tokens were recorded has no such column: none counted
            # (nor whether the Batch API answered: interactive then)
            columns = {r[1] for r in db.execute("PRAGMA table_info(calls)")}
            cached = "cached_tokens" if "cached_tokens" in columns else "0"
            batch = "batch" if "batch" in columns else "0"
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                q = (f"SELECT key, model, input_tokens, output_tokens, {cached}, {batch} FROM calls "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
                for key, model, tin, tout, tcached, tbatch in db.execute(q, chunk):
                    usage[key] = (model, tin or 0, tout or 0, tcached or 0, bool(tbatch))
        except sqlite3.DatabaseError as e:
            raise DnoError(f"{path}: not a judge cache ({e}); pass another --cache") from None
        finally:
            db.close()
    tables = {False: load_prices(prices), True: load_prices(prices, batch=True)}  # interactive, Batch API

    def priced(found: list[tuple], prefix_reuse: bool) -> float | None:
        """The calls' cost, each at its own rate (interactive or batch); None when a price is missing."""
        total = 0.0
        for batch in (False, True):
            part = [u for u in found if u[4] == batch]
            if part:
                cost = cost_usd(part[0][0], *(sum(u[i] for u in part) for i in (1, 2)), tables[batch],
                                sum(u[3] for u in part) if prefix_reuse else 0)
                if cost is None:
                    return None
                total += cost
        return total

    out = []
    for (t, judge), keys in sorted(groups.items()):
        found = [usage[k] for k in keys if k in usage]
        tin, tout, tcached = (sum(u[i] for u in found) for i in (1, 2, 3))
        model = found[0][0] if found else judge.split(":", 1)[-1]
        cost = priced(found, True) if found else None
        full = priced(found, False) if found else None
        why = ("no judge cache found (pass --cache FILE)" if path is None
               else f"{len(keys) - len(found)} of {len(keys)} calls not in {path.name}" if len(found) < len(keys)
               else f"no price for {model} (pass --prices FILE)" if cost is None else "")
        out.append({"iteration": t, "judge": judge, "calls_made": len(keys), "input_tokens": tin if found else None,
                    "cached_input_tokens": tcached if found else None, "output_tokens": tout if found else None,
                    "batch_calls": sum(u[4] for u in found),
                    "cost_usd": None if cost is None else round(cost, 4),
                    "cost_usd_without_prefix_reuse": None if full is None else round(full, 4), "note": why})
    return out


def best_iterate(results: list[IterationResult], metric: str, *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> Best | None:
    """The checkpoint with the highest metric, and whether its lead over the next is within noise.

    Within one run (same held-out prompts) a paired bootstrap over prompts decides; across runs
    or for the LC win-rate, overlapping 95 % intervals do.
    """
    if metric not in METRICS:
        raise DnoError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    ranked = sorted(((r, getattr(r, metric)) for r in results if getattr(r, metric) is not None),
                    key=lambda x: -x[1].value)
    if not ranked:
        return None
    (best, bi), rest = ranked[0], ranked[1:]
    if not rest:
        return Best(metric, best, bi, None, None, None, "")
    nxt, ni = rest[0]
    if metric in PER_PROMPT:
        key = PER_PROMPT[metric]
        d = paired_bootstrap(best.per_prompt[key], nxt.per_prompt[key], resamples=resamples, seed=seed)
        if d is not None and d.diff.n >= 2:
            scale, unit = (1, "") if metric == "score" else (100, " pts")
            how = f"paired bootstrap over {d.diff.n} shared prompts: difference {d.diff.fmt(scale, 1, unit)}"
            return Best(metric, best, bi, nxt, ni, d.within_noise, how)
    overlap = bi.overlaps(ni)
    return Best(metric, best, bi, nxt, ni, overlap, "the 95 % intervals " + ("overlap" if overlap else "do not overlap"))


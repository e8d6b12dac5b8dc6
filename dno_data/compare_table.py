"""`dno compare`'s table and plot: one row per (method, iteration), from the evals and manifests on disk.

RUN/compare.parquet (+ .csv, .md) has, per method and iteration, over the seeds that ran (one without
--seeds):
  accuracy, win-rate against the teacher and mean score: the mean over seeds, with a bootstrap 95 %
    interval over the held-out prompts of the per-prompt mean across seeds (dno_data/stats.py);
  METRIC_min, METRIC_max, METRIC_sd: the spread across seeds (sd: the sample standard deviation, None
    for one seed);
  METRIC_vs_dno (_low, _high): the arm minus DNO at the same iteration, a paired bootstrap on the shared
    held-out prompts, pooled over seeds: each prompt's value is its mean across seeds (the same seeds for
    both arms) and the prompts are resampled, so the interval is the prompts' noise around the seed mean,
    not the seeds' (that is the spread);
  prompts, pairs or examples, steps, tokens (response tokens trained on), passes: means over seeds;
  steps_match: every seed's steps equal DNO's of the same seed and iteration (the budget).
RUN/compare-seeds.parquet (+ .csv) holds the same figures per seed, and RUN/compare.png plots the mean
per iteration with the interval as a band.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .compare import METRICS, SUPERVISED, CompareSettings, arm_folder, budget_of, manifest
from .errors import DnoError
from .run_layout import RunLayout
from .stats import DEFAULT_RESAMPLES, bootstrap_ci, paired_bootstrap

_IV = [pa.field(f"{m}{suffix}", pa.float64()) for m in METRICS for suffix in ("", "_low", "_high")]
_COUNTS = [pa.field("eval_prompts", pa.int64()),
           pa.field("prompts", pa.int64()),  # train prompts of this iteration's partition
           pa.field("prompts_seen", pa.int64()),  # ... summed over iterations 1..t
           pa.field("pairs", pa.int64()),  # pairs trained on (dno, offline-dpo, offline-kto); distinct ones
           pa.field("examples", pa.int64()),  # examples fine-tuned on (sft, sft-chosen, rft); distinct ones
           pa.field("steps", pa.int64()),  # optimizer steps of this iteration
           pa.field("tokens", pa.int64()),  # response tokens the loss covered over those steps (both sides of a pair)
           pa.field("passes", pa.float64()),  # passes over the pairs or examples (above 1: cycled to DNO's steps)
           pa.field("dno_pairs", pa.int64()),  # the budget: DNO's pairs at this iteration
           pa.field("dno_steps", pa.int64())]  # ... and its optimizer steps
SEED_SCHEMA = pa.schema([pa.field("method", pa.string(), nullable=False), pa.field("iteration", pa.int32(), nullable=False),
                         pa.field("seed", pa.int64()), *_IV, *_COUNTS,
                         pa.field("checkpoint", pa.string()), pa.field("eval_file", pa.string())])
_SPREAD = [pa.field(f"{m}{suffix}", pa.float64()) for m in METRICS
           for suffix in ("_min", "_max", "_sd", "_vs_dno", "_vs_dno_low", "_vs_dno_high")]
SCHEMA = pa.schema([pa.field("method", pa.string(), nullable=False), pa.field("iteration", pa.int32(), nullable=False),
                    pa.field("seeds", pa.int64()), *_IV, *_SPREAD, *_COUNTS, pa.field("steps_match", pa.bool_())])


def _distinct_prompts(samples: Path) -> int | None:
    if not Path(samples).exists():
        return None
    return len(set(pq.read_table(samples, columns=["prompt_id"]).column(0).to_pylist()))


def eval_values(eval_file: Path) -> dict[str, dict]:
    """Per metric, {(prompt_id, turn): value} of an eval file: correct (accuracy), win against the teacher
    (rows with a teacher answer), the policy's score. Rows that failed are left out."""
    rows = pq.read_table(eval_file, columns=["prompt_id", "turn", "status", "win", "correct", "policy_score",
                                             "teacher_response"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    return {"accuracy": {(r["prompt_id"], r["turn"]): float(r["correct"]) for r in ok if r["correct"] is not None},
            "winrate": {(r["prompt_id"], r["turn"]): r["win"] for r in ok
                        if r["win"] is not None and (r["teacher_response"] or "").strip()},
            "score": {(r["prompt_id"], r["turn"]): r["policy_score"] for r in ok if r["policy_score"] is not None},
            "eval_prompts": len(rows)}


def _interval(values: list, prefix: str, resamples: int, seed: int) -> dict:
    iv = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {prefix: iv.value if iv else None, f"{prefix}_low": iv.low if iv else None,
            f"{prefix}_high": iv.high if iv else None}


def eval_intervals(eval_file: Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Accuracy, win-rate vs the teacher and mean score of an eval file, each with its bootstrap 95 % interval."""
    values = eval_values(eval_file)
    out: dict = {"eval_prompts": values["eval_prompts"]}
    for m in METRICS:
        out |= _interval(list(values[m].values()), m, resamples, seed)
    return out


def seed_rows(c: CompareSettings) -> list[dict]:
    """One row per (method, seed, iteration) that has an eval on disk (iteration 0: pi_1, once, seed None)."""
    T = c.loop.iterations
    initial = RunLayout(c.loop.run).eval(0)
    rows = []
    if initial.exists():
        base = eval_intervals(initial, c.resamples, c.seed)
        rows += [{"method": m, "iteration": 0, "seed": None, "checkpoint": str(c.loop.model), **base, "prompts": 0,
                  "prompts_seen": 0, "eval_file": str(initial)} for m in c.methods]
    for seed in c.seed_list:
        budgets = {}
        for t in range(1, T + 1):
            try:
                budgets[t] = budget_of(c, t, seed)
            except (OSError, KeyError, pa.ArrowException):
                budgets[t] = None
        pi1 = RunLayout(c.loop.run, arm_folder("offline-dpo", seed))
        for method in c.methods:
            lay = RunLayout(c.loop.run, arm_folder(method, seed))
            seen = 0
            for t in range(1, T + 1):
                ev = lay.eval(t)
                if not ev.exists():
                    continue  # not run (yet)
                m = manifest(lay.checkpoint(t)).get("metrics", {})
                prompts = _distinct_prompts((lay if method in ("dno", "offline-dpo") else pi1).samples(t))
                seen += prompts or 0
                b = budgets.get(t)
                supervised = method in SUPERVISED
                rows.append({"method": method, "iteration": t, "seed": seed, **eval_intervals(ev, c.resamples, c.seed),
                             "prompts": prompts, "prompts_seen": seen,
                             "pairs": None if supervised else m.get("pairs"),
                             "examples": m.get("examples") if supervised else None,
                             "steps": m.get("steps"), "tokens": m.get("tokens"), "passes": m.get("passes"),
                             "dno_pairs": b.pairs if b else None, "dno_steps": b.steps if b else None,
                             "checkpoint": str(lay.checkpoint(t)), "eval_file": str(ev)})
    return rows


def _mean(values: list):
    vals = [v for v in values if v is not None]
    return None if not vals else sum(vals) / len(vals)


def _pooled(files: list[str], metric: str, cache: dict) -> dict:
    """{prompt key: mean across the files (seeds)} over the keys every file has."""
    for f in files:
        if f not in cache:
            cache[f] = eval_values(Path(f))
    per = [cache[f][metric] for f in files]
    keys = set(per[0]).intersection(*per[1:]) if per else set()
    return {k: sum(p[k] for p in per) / len(per) for k in keys}


def aggregate(rows: list[dict], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[dict]:
    """The per-seed rows into one row per (method, iteration): mean over seeds, spread, pooled bootstrap
    intervals and the paired bootstrap against DNO (see the module's docstring)."""
    groups: dict = {}
    cache: dict = {}  # eval file -> its values
    for r in rows:
        groups.setdefault((r["method"], r["iteration"]), []).append(r)
    out = []
    for (method, t), rs in groups.items():
        seeds = sorted(r["seed"] for r in rs if r["seed"] is not None)
        dno = {r["seed"]: r for r in groups.get(("dno", t), [])}
        row = {"method": method, "iteration": t, "seeds": max(1, len(seeds))}
        files = [r["eval_file"] for r in rs]
        # DNO's evals of the same seeds (iteration 0: pi_1 for both), for the paired difference
        dno_files = [r["eval_file"] for r in rs] if t == 0 else [dno[r["seed"]]["eval_file"] for r in rs
                                                                  if r["seed"] in dno]
        for m in METRICS:
            vals = [r[m] for r in rs if r.get(m) is not None]
            pooled = _pooled(files, m, cache)
            row |= _interval(list(pooled.values()), m, resamples, seed) if vals else {m: None}
            row |= {f"{m}_min": min(vals) if vals else None, f"{m}_max": max(vals) if vals else None,
                    f"{m}_sd": statistics.stdev(vals) if len(vals) > 1 else None}
            if vals and len(dno_files) == len(files):
                d = paired_bootstrap(pooled, _pooled(dno_files, m, cache), resamples=resamples, seed=seed)
                if d is not None:
                    row |= {f"{m}_vs_dno": d.diff.value, f"{m}_vs_dno_low": d.diff.low, f"{m}_vs_dno_high": d.diff.high}
        for k in ("eval_prompts", "prompts", "prompts_seen", "pairs", "examples", "steps", "tokens", "dno_pairs",
                  "dno_steps"):
            v = _mean([r.get(k) for r in rs])
            row[k] = None if v is None else round(v)
        row["passes"] = _mean([r.get("passes") for r in rs])
        row["steps_match"] = None if t == 0 else all(r.get("steps") is not None and r.get("steps") == r.get("dno_steps")
                                                     for r in rs)
        out.append(row)
    return out


def table_rows(c: CompareSettings) -> list[dict]:
    return aggregate(seed_rows(c), c.resamples, c.seed)


def main_metric(rows: list[dict]) -> str:
    """The first metric the judge gives: accuracy (a verifiable judge), else win-rate, else score."""
    return next((m for m in METRICS if any(r.get(m) is not None for r in rows)), "score")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def _cell(r: dict, m: str) -> str:
    if r.get(m) is None:
        return "n/a"
    scale, digits = (1, 2) if m == "score" else (100, 1)
    f = f"{{:.{digits}f}}"
    text = f"{f.format(r[m] * scale)} [{f.format(r[m + '_low'] * scale)}, {f.format(r[m + '_high'] * scale)}]"
    if (r.get("seeds") or 1) > 1:
        text += f" ({f.format(r[m + '_min'] * scale)}–{f.format(r[m + '_max'] * scale)})"
    return text


def _vs_dno(r: dict, m: str) -> str:
    if r["method"] == "dno" or r["iteration"] == 0 or r.get(m + "_vs_dno") is None:
        return ""
    scale, digits = (1, 2) if m == "score" else (100, 1)
    f = f"{{:+.{digits}f}}"
    return (f"{f.format(r[m + '_vs_dno'] * scale)} [{f.format(r[m + '_vs_dno_low'] * scale)}, "
            f"{f.format(r[m + '_vs_dno_high'] * scale)}]")


def markdown(rows: list[dict]) -> str:
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    several = any((r.get("seeds") or 1) > 1 for r in rows)
    spread = " (min–max over seeds)" if several else ""
    main = metrics[0] if metrics else None
    head = ["method", "iteration", *(f"{METRICS[m]} [95 % CI]{spread}" for m in metrics),
            *([f"{METRICS[main]} vs DNO, paired [95 % CI]"] if main else []), "prompts seen", "pairs / examples",
            "steps", "tokens", "DNO's pairs / steps"]
    if several:
        head.insert(2, "seeds")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(v):
        return "" if v is None else f"{v:,}"
    for r in rows:
        used = r.get("pairs") if r.get("pairs") is not None else r.get("examples")
        budget = "" if r.get("dno_pairs") is None else f"{r['dno_pairs']:,} / {r['dno_steps']:,}"
        steps = num(r.get("steps")) + (" ≠ DNO's" if r.get("steps_match") is False else "")
        cells = [r["method"], str(r["iteration"]), *(_cell(r, m) for m in metrics), *([_vs_dno(r, main)] if main else []),
                 num(r.get("prompts_seen")), num(used), steps, num(r.get("tokens")), budget]
        if several:
            cells.insert(2, str(r.get("seeds")))
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nMeans over seeds; [95 % CI]: bootstrap over the held-out prompts of each prompt's mean across "
            "seeds; (min–max): the spread across seeds; vs DNO: the paired bootstrap on the same prompts, pooled "
            "over seeds. Counts are means over seeds.\n" if several else "")
    return "\n".join(lines) + "\n" + note


def write_table(c: CompareSettings) -> Path:
    """RUN/compare.parquet, .csv, .md and .png (and compare-seeds.parquet, .csv) from the evals and manifests."""
    per_seed = seed_rows(c)
    if not per_seed:
        raise DnoError(f"{c.loop.run}: no evaluated checkpoint to compare yet; run `dno compare` first")
    rows = aggregate(per_seed, c.resamples, c.seed)
    out = RunLayout(c.loop.run).compare_table
    for path, schema, data in ((out.with_name("compare-seeds.parquet"), SEED_SCHEMA, per_seed), (out, SCHEMA, rows)):
        table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in data], schema=schema)
        _atomic(path, lambda p: pq.write_table(table, p))
        _atomic(path.with_suffix(".csv"), lambda p: _write_csv(table, p))
    from .compare_tuning import read_picks

    picks = read_picks(c)
    tuned = "" if not picks else ("\nLearning rates and betas picked on a validation split (compare-tuning.md): " + "; ".join(
        f"{arm} " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in p.items()) for arm, p in picks.items()) + "\n")
    _atomic(out.with_suffix(".md"), lambda p: p.write_text(markdown(rows) + tuned))
    _atomic(out.with_suffix(".png"), lambda p: plot(rows, p, c.loop.iterations))
    return out


def _write_csv(table: pa.Table, path: Path) -> None:
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, path)


def plot(rows: list[dict], path: Path, iterations: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = main_metric(rows)
    scale = 1 if metric == "score" else 100
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["iteration"], r[metric], r[metric + "_low"], r[metric + "_high"]) for r in rows
                     if r["method"] == method and r.get(metric) is not None)
        if not pts:
            continue
        it, v, lo, hi = zip(*pts)
        line, = ax.plot(it, [x * scale for x in v], marker="o", label=method)
        ax.fill_between(it, [x * scale for x in lo], [x * scale for x in hi], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration (0 = initial policy)")
    ax.set_ylabel(METRICS[metric] + " (95 % CI band)")
    ax.set_xticks(range(0, iterations + 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title("DNO against its baselines, matched budgets")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)

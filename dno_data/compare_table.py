"""`dno compare`'s table and plot: one row per (method, iteration) from the evals and manifests on disk.

RUN/compare.parquet (+ .csv, .md) has accuracy, win-rate against the teacher and mean score, each
with a bootstrap 95 % interval over the eval rows (dno_data/stats.py), prompts, pairs or examples,
and optimizer steps beside DNO's (the budget); RUN/compare.png plots the metric per iteration with
the interval as a band.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .compare import METRICS, CompareSettings, budget_of, manifest
from .errors import DnoError
from .run_layout import RunLayout
from .stats import DEFAULT_RESAMPLES, bootstrap_ci

_IV = [pa.field(f"{m}{suffix}", pa.float64()) for m in METRICS for suffix in ("", "_low", "_high")]
SCHEMA = pa.schema([pa.field("method", pa.string(), nullable=False), pa.field("iteration", pa.int32(), nullable=False),
                    *_IV, pa.field("eval_prompts", pa.int64()),
                    pa.field("prompts", pa.int64()),  # train prompts of this iteration's partition
                    pa.field("prompts_seen", pa.int64()),  # ... summed over iterations 1..t
                    pa.field("pairs", pa.int64()),  # pairs trained on (dno, offline-dpo, offline-kto)
                    pa.field("examples", pa.int64()),  # examples fine-tuned on (sft, rft)
                    pa.field("steps", pa.int64()),  # optimizer steps of this iteration
                    pa.field("dno_pairs", pa.int64()),  # the budget: DNO's pairs at this iteration
                    pa.field("dno_steps", pa.int64()),  # ... and its optimizer steps
                    pa.field("checkpoint", pa.string()), pa.field("eval_file", pa.string())])



def _distinct_prompts(samples: Path) -> int | None:
    if not Path(samples).exists():
        return None
    return len(set(pq.read_table(samples, columns=["prompt_id"]).column(0).to_pylist()))


def eval_intervals(eval_file: Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Accuracy, win-rate vs the teacher and mean score of an eval file, each with its bootstrap 95 % interval."""
    rows = pq.read_table(eval_file, columns=["status", "win", "correct", "policy_score",
                                             "teacher_response"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    values = {"accuracy": [float(r["correct"]) for r in ok if r["correct"] is not None],
              "winrate": [r["win"] for r in ok if r["win"] is not None and (r["teacher_response"] or "").strip()],
              "score": [r["policy_score"] for r in ok]}
    out: dict = {"eval_prompts": len(rows)}
    for m, v in values.items():
        iv = bootstrap_ci(v, resamples=resamples, seed=seed)
        out |= {m: iv.value if iv else None, f"{m}_low": iv.low if iv else None, f"{m}_high": iv.high if iv else None}
    return out


def table_rows(c: CompareSettings) -> list[dict]:
    T = c.loop.iterations
    initial = RunLayout(c.loop.run).eval(0)
    base = eval_intervals(initial, c.resamples, c.seed) if initial.exists() else None
    budgets = {}
    for t in range(1, T + 1):
        try:
            budgets[t] = budget_of(c, t)
        except (OSError, KeyError, pa.ArrowException):
            budgets[t] = None
    pi1 = RunLayout(c.loop.run, "offline-dpo")
    rows = []
    for method in c.methods:
        lay = RunLayout(c.loop.run, method)
        seen = 0
        for t in range(0, T + 1):
            row = {"method": method, "iteration": t, "checkpoint": str(c.loop.model) if t == 0 else None}
            if t == 0:
                if base is None:
                    continue
                rows.append(row | base | {"prompts": 0, "prompts_seen": 0, "eval_file": str(initial)})
                continue
            ev = lay.eval(t)
            if not ev.exists():
                continue  # not run (yet)
            m = manifest(lay.checkpoint(t)).get("metrics", {})
            prompts = _distinct_prompts((lay if method in ("dno", "offline-dpo") else pi1).samples(t))
            seen += prompts or 0
            b = budgets.get(t)
            rows.append(row | eval_intervals(ev, c.resamples, c.seed) | {
                "prompts": prompts, "prompts_seen": seen,
                "pairs": m.get("pairs") if method in ("dno", "offline-dpo", "offline-kto") else None,
                "examples": m.get("examples") if method in ("sft", "rft") else None,
                "steps": m.get("steps"), "dno_pairs": b.pairs if b else None, "dno_steps": b.steps if b else None,
                "checkpoint": str(lay.checkpoint(t)), "eval_file": str(ev)})
    return rows


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
    return f"{r[m] * scale:.{digits}f} [{r[m + '_low'] * scale:.{digits}f}, {r[m + '_high'] * scale:.{digits}f}]"


def markdown(rows: list[dict]) -> str:
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    head = ["method", "iteration", *(f"{METRICS[m]} [95 % CI]" for m in metrics), "prompts seen", "pairs / examples",
            "steps", "DNO's pairs / steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(v):
        return "" if v is None else f"{v:,}"
    for r in rows:
        used = r.get("pairs") if r.get("pairs") is not None else r.get("examples")
        budget = "" if r.get("dno_pairs") is None else f"{r['dno_pairs']:,} / {r['dno_steps']:,}"
        lines.append("| " + " | ".join([r["method"], str(r["iteration"]), *(_cell(r, m) for m in metrics),
                                        num(r.get("prompts_seen")), num(used), num(r.get("steps")), budget]) + " |")
    return "\n".join(lines) + "\n"


def write_table(c: CompareSettings) -> Path:
    """RUN/compare.parquet, .csv, .md and .png from the evals and manifests on disk."""
    rows = table_rows(c)
    if not rows:
        raise DnoError(f"{c.loop.run}: no evaluated checkpoint to compare yet; run `dno compare` first")
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in SCHEMA} for r in rows], schema=SCHEMA)
    out = RunLayout(c.loop.run).compare_table
    _atomic(out, lambda p: pq.write_table(table, p))

    def csv(p: Path):
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, p)
    _atomic(out.with_suffix(".csv"), csv)
    _atomic(out.with_suffix(".md"), lambda p: p.write_text(markdown(rows)))
    _atomic(out.with_suffix(".png"), lambda p: plot(rows, p, c.loop.iterations))
    return out


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

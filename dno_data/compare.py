"""The paper's comparison on one run folder: SFT < offline DPO < DNO, with matched budgets.

Every method runs iterations t = 1..T on the same prompt partitions (partition t at iteration t)
and is evaluated on the same held-out split, as the same `dno` commands a user would type
(dno_data/loop.py builds them; each stage skips itself when up to date, so a rerun resumes):

  dno          `dno iterate`'s iteration: pi_t samples partition t, reference pi_t     RUN/dno/iter-NN/
  offline-dpo  pi_1 samples partition t, pairs capped to DNO's count at t (a seeded subset,
               `dno pairs --max-pairs`), training continues from offline-dpo's t-1
               checkpoint with the reference fixed at pi_1; iteration 1 is DNO's
               (RUN/offline-dpo/iter-01 links to RUN/dno/iter-01)                     RUN/offline-dpo/iter-NN/
  sft          `dno sft` on the teacher answers of partition t (offline-dpo's samples), from its
               t-1 checkpoint, for as many optimizer steps as DNO's iteration t        RUN/sft/iter-NN/
  rft          `dno sft --source best`: each prompt's best judged pi_1 sample of partition t,
               the same number of steps                                                RUN/rft/iter-NN/

pi_1 is evaluated once (RUN/iter-00/eval.parquet). The table RUN/compare.parquet (+ .csv, .md)
has one row per (method, iteration): accuracy, win-rate against the teacher and mean score, each
with a bootstrap 95 % interval over the eval rows (dno_data/stats.py), prompts, pairs or examples,
and optimizer steps beside DNO's (the budget); RUN/compare.png plots the metric per iteration with
the interval as a band.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .errors import DnoError
from .loop import LoopSettings, eval_command, iteration_commands, layout, run_dno, sft_command
from .run_layout import RunLayout
from .stats import DEFAULT_RESAMPLES, bootstrap_ci
from .training.options import MANIFEST

METHODS = ("dno", "offline-dpo", "sft", "rft")
METRICS = {"accuracy": "held-out accuracy %", "winrate": "win-rate vs teacher %", "score": "mean judge score"}
# `dno train` options that `dno sft` has no use for: dropped when sft options are derived from --train-args
CONTRASTIVE_ONLY = ("--beta", "--loss", "--reference")

_IV = [pa.field(f"{m}{suffix}", pa.float64()) for m in METRICS for suffix in ("", "_low", "_high")]
SCHEMA = pa.schema([pa.field("method", pa.string(), nullable=False), pa.field("iteration", pa.int32(), nullable=False),
                    *_IV, pa.field("eval_prompts", pa.int64()),
                    pa.field("prompts", pa.int64()),  # train prompts of this iteration's partition
                    pa.field("prompts_seen", pa.int64()),  # ... summed over iterations 1..t
                    pa.field("pairs", pa.int64()),  # pairs trained on (dno, offline-dpo)
                    pa.field("examples", pa.int64()),  # examples fine-tuned on (sft, rft)
                    pa.field("steps", pa.int64()),  # optimizer steps of this iteration
                    pa.field("dno_pairs", pa.int64()),  # the budget: DNO's pairs at this iteration
                    pa.field("dno_steps", pa.int64()),  # ... and its optimizer steps
                    pa.field("checkpoint", pa.string()), pa.field("eval_file", pa.string())])


@dataclass(frozen=True)
class CompareSettings:
    loop: LoopSettings  # DNO's settings: run folder, pi_1, judge, teacher, iterations, options per stage
    methods: tuple[str, ...] = METHODS
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0  # of the bootstrap


@dataclass(frozen=True)
class Budget:
    pairs: int  # DNO's new pairs at iteration t (replayed ones not counted)
    steps: int  # DNO's optimizer steps at iteration t


def sft_args_from_train(train_args: tuple[str, ...]) -> tuple[str, ...]:
    """`dno train` options without the contrastive-only ones (--beta, --loss, --reference and their values).

    >>> sft_args_from_train(("--beta", "2", "--learning-rate", "1e-3", "--loss=dpo", "--keep-dropout"))
    ('--learning-rate', '1e-3', '--keep-dropout')
    """
    out, skip = [], False
    for a in train_args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in CONTRASTIVE_ONLY:
            skip = "=" not in a
            continue
        out.append(a)
    return tuple(out)


def method_settings(c: CompareSettings, method: str) -> LoopSettings:
    loop_method = "offline-dpo" if method == "offline-dpo" else "dno"
    return dataclasses.replace(c.loop, method=loop_method, folder=method,
                               evaluate=c.loop.evaluate and method in ("dno", "offline-dpo"))


def check(c: CompareSettings) -> None:
    bad = [m for m in c.methods if m not in METHODS]
    if bad or not c.methods:
        raise DnoError(f"--methods {','.join(c.methods)}: choose among {', '.join(METHODS)}")
    if "dno" not in c.methods:
        raise DnoError("--methods must include dno: the budgets of the others are DNO's pairs and steps")
    if "sft" in c.methods and not c.loop.teacher:
        raise DnoError("--methods sft needs teacher answers: pass --teacher (e.g. reference), or leave sft out")


def budget_of(c: CompareSettings, t: int) -> Budget:
    """DNO's pairs and optimizer steps at iteration t, from its pairs file and checkpoint manifest."""
    dno = RunLayout(c.loop.run, "dno")
    metrics = _manifest(dno.checkpoint(t)).get("metrics", {})
    replayed = pq.read_table(dno.pairs(t), columns=["replayed_from"]).column(0)
    return Budget(pairs=replayed.null_count, steps=int(metrics["steps"]))


def share_first_iteration(c: CompareSettings, dry: bool = False) -> bool:
    """Offline DPO's iteration 1 is DNO's: both sample pi_1 on partition 1 and train pi_1 with the
    reference pi_1 on every pair (DNO's count is the cap). So RUN/offline-dpo/iter-01 is a link to
    RUN/dno/iter-01 instead of the same sampling, judging and training a second time (the tables
    measured before it showed the two rows equal to the digit). A real offline-dpo/iter-01 folder
    (an earlier run) is kept and its commands run as before. Returns whether the link is (or, with
    `dry`, would be) there."""
    off, dno = first_iteration_link(c)
    if off.is_symlink():
        return True
    if off.exists():
        return False
    if not dry:
        off.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dno, off.parent), off)
    return True


def first_iteration_link(c: CompareSettings) -> tuple[Path, Path]:
    """(RUN/offline-dpo/iter-01, RUN/dno/iter-01): the link share_first_iteration makes, and its target."""
    return RunLayout(c.loop.run, "offline-dpo").iteration(1), RunLayout(c.loop.run, "dno").iteration(1)


def iteration_plan(c: CompareSettings, t: int, budget: Budget | None, shared: bool = True) -> list[list[str]]:
    """The commands of iteration t after DNO's (which gives the budget; None: placeholders, for --dry-run).
    `shared`: offline-dpo/iter-01 is DNO's iteration 1 (share_first_iteration), so at t = 1 pi_1's
    samples and judgments are there and offline DPO runs nothing."""
    offline = method_settings(c, "offline-dpo")
    pi1 = layout(offline)  # pi_1's samples (and judgments) of partition t live in offline-dpo's folder
    max_pairs = budget.pairs if budget else "DNO_PAIRS"
    steps = budget.steps if budget else "DNO_STEPS"
    cmds = iteration_commands(offline, t, max_pairs=max_pairs)  # type: ignore[arg-type]
    if t == 1 and shared:
        cmds = []
    elif "offline-dpo" not in c.methods:  # sft / rft only need pi_1's samples (and judgments)
        cmds = [cmd for cmd in cmds if cmd[0] in ("sample", "judge")][: 2 if "rft" in c.methods else 1]
    for method in ("sft", "rft"):
        if method in c.methods:
            s = method_settings(c, method)
            cmds.append(sft_command(s, t, pi1.samples(t), judgments=pi1.judgments(t) if method == "rft" else None,
                                    max_steps=steps))  # type: ignore[arg-type]
            if c.loop.evaluate:
                cmds.append(eval_command(s, t))
    return cmds


def dry_run(c: CompareSettings, echo=print) -> None:
    check(c)
    cmds = [eval_command(dataclasses.replace(c.loop, folder=None), 0)]
    shared = share_first_iteration(c, dry=True)
    for t in range(1, c.loop.iterations + 1):
        cmds += iteration_commands(method_settings(c, "dno"), t)
        if t == 1 and shared:
            off, dno = first_iteration_link(c)
            cmds.append(["#", f"{off} -> {dno} (offline DPO's iteration 1 is DNO's)"])
        cmds += iteration_plan(c, t, None, shared)
    for cmd in cmds:
        echo(" ".join(cmd) if cmd[0] == "#" else "dno " + " ".join(shlex.quote(str(a)) for a in cmd))


def run_comparison(c: CompareSettings, run: Callable = run_dno, say=print) -> Path:
    """Every method's iterations, the evals, then the table and the plot; returns the table's path."""
    check(c)
    run(eval_command(dataclasses.replace(c.loop, folder=None), 0))
    for t in range(1, c.loop.iterations + 1):
        say(f"\n=== iteration {t}: dno ===")
        for cmd in iteration_commands(method_settings(c, "dno"), t):
            run(cmd)
        budget = budget_of(c, t)
        shared = t == 1 and share_first_iteration(c)
        say(f"\n=== iteration {t}: {', '.join(m for m in c.methods if m != 'dno')} "
            f"(budget: {budget.pairs} pairs, {budget.steps} optimizer steps) ===")
        if shared:
            say("offline-dpo/iter-01 is dno/iter-01: at iteration 1 offline DPO is DNO (pi_1's samples, reference pi_1)")
        for cmd in iteration_plan(c, t, budget, shared):
            run(cmd)
    return write_table(c)


# ---------------------------------------------------------------- the table and the plot

def _manifest(ckpt: Path) -> dict:
    try:
        return json.loads((Path(ckpt) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


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
            m = _manifest(lay.checkpoint(t)).get("metrics", {})
            prompts = _distinct_prompts((lay if method in ("dno", "offline-dpo") else pi1).samples(t))
            seen += prompts or 0
            b = budgets.get(t)
            rows.append(row | eval_intervals(ev, c.resamples, c.seed) | {
                "prompts": prompts, "prompts_seen": seen,
                "pairs": m.get("pairs") if method in ("dno", "offline-dpo") else None,
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
    ax.set_title("SFT vs offline DPO vs DNO, matched budgets")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)

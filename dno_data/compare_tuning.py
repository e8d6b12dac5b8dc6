"""`dno compare --tune`: each arm's learning rate (and beta for the contrastive arms) from one small grid.

At iteration 1 of the first seed, after DNO's sample, judge and pairs of that iteration, every arm trains
once per grid point from pi_1 on its own data of iteration 1 (the same data and optimizer steps as its
real iteration 1) and is evaluated on a validation split: prompts of the last partition, never in the
held-out split (`dno prompts` keeps them apart), written as RUN/tune/validation.parquet with split
`eval`. The point with the best validation metric (accuracy for a verifiable judge, else win-rate,
else score; a tie goes to the given value, then the smaller learning rate) is the arm's pick, used in
every iteration of every seed. Offline DPO's iteration 1 is DNO's (the same samples, reference and
pairs), so its pick is DNO's. The grid is a multiple of the values given (--train-args / --sft-args):

  learning rate  x 0.5, 1, 2        every arm
  beta           x 0.5, 1, 2        dno (and offline-dpo), offline-kto

RUN/tune/ARM/lr-X[-beta-Y]/iter-01/ holds each candidate's checkpoint and eval; RUN/compare-tuning.parquet
(.md) the grid, every candidate's validation figures and the picks.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

from .compare import SUPERVISED, CompareSettings, arm_folder, manifest, method_settings, supervised_data
from .errors import DnoError
from .loop import eval_config, iteration_configs, sft_config, train_config
from .run_layout import RunLayout

LR_FACTORS = (0.5, 1.0, 2.0)
BETA_FACTORS = (0.5, 1.0, 2.0)
CONTRASTIVE = ("dno", "offline-kto")  # tuned with beta too; offline-dpo takes dno's pick
VALIDATION_PROMPTS = 500  # at most, from the last partition


def tuned_arms(c: CompareSettings) -> list[str]:
    return [m for m in c.methods if m != "offline-dpo"]


def stage_of(arm: str) -> str:
    return "sft" if arm in SUPERVISED else "train"


def base_values(c: CompareSettings, arm: str) -> dict:
    """The learning rate (and beta) the user gave the arm's stage, or the stage's defaults."""
    from .training.options import TrainOptions

    given = {k.replace("-", "_"): v for k, v in method_settings(c, arm).of(stage_of(arm)).items()}
    defaults = TrainOptions()
    out = {"learning_rate": float(given.get("learning_rate", defaults.learning_rate))}
    if arm in CONTRASTIVE:
        out["beta"] = float(given.get("beta", defaults.beta))
    return out


def grid(c: CompareSettings, arm: str) -> list[dict]:
    """The arm's grid points, the given values first."""
    base = base_values(c, arm)
    betas = [base["beta"] * f for f in BETA_FACTORS] if "beta" in base else [None]
    points = [{"learning_rate": base["learning_rate"] * f, **({"beta": b} if b is not None else {})}
              for f, b in itertools.product(LR_FACTORS, betas)]
    return sorted(points, key=lambda p: (p != base, p["learning_rate"], p.get("beta") or 0))


def point_name(point: dict) -> str:
    """lr-0.0006-beta-2 (a folder name)."""
    return "-".join(f"{'lr' if k == 'learning_rate' else k}-{v:g}" for k, v in point.items())


def validation_file(c: CompareSettings) -> Path:
    return RunLayout(c.loop.run).iteration(0).parent / "tune" / "validation.parquet"


def write_validation(c: CompareSettings) -> Path:
    """RUN/tune/validation.parquet: up to VALIDATION_PROMPTS train prompts of the last partition, as split `eval`
    (so `dno eval` takes them); none of them is in the held-out split."""
    import pyarrow.parquet as pq

    from .artifacts import read_artifact, write_artifact
    from .lineage import make_lineage

    prompts = RunLayout(c.loop.run).prompts
    last = c.loop.iterations
    if last < 2:
        raise DnoError("--tune needs --iterations 2 or more: the validation prompts come from the last partition, "
                       "which iteration 1 never trains on")
    rows = [r for r in read_artifact(prompts, "prompts").to_pylist() if r["split"] == "train" and r["partition"] == last]
    rows = sorted(rows, key=lambda r: r["prompt_id"])[:VALIDATION_PROMPTS]
    if not rows:
        raise DnoError(f"{prompts}: no train prompts in partition {last} to validate the tuning grid on")
    out = validation_file(c)
    rows = [{**r, "split": "eval", "partition": None} for r in rows]
    lineage = make_lineage("compare-tune", [prompts], {"partition": last, "prompts": VALIDATION_PROMPTS})
    if out.exists() and pq.read_table(out).num_rows == len(rows):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_artifact(rows, out, "prompts", lineage)


def candidate_configs(c: CompareSettings, arm: str, point: dict, steps: int | None) -> list:
    """The arm's training at iteration 1 of the first seed with the grid point's values, and its eval on the
    validation prompts. steps None: one epoch (DNO's own iteration 1, which sets the others' steps)."""
    seed = c.seed_list[0]
    s = method_settings(c, arm, seed)
    stage = stage_of(arm)
    options = {**s.options, stage: {**s.of(stage), **point}}
    s = dataclasses.replace(s, folder=f"tune/{arm}/{point_name(point)}", options=options)
    if arm in SUPERVISED:
        path, source, extra = supervised_data(c, arm, 1, seed)
        train = sft_config(s, 1, path, source=source, max_steps=steps, **extra)
    else:
        train = train_config(s, 1, RunLayout(c.loop.run, arm_folder("dno", seed)).pairs(1), max_steps=steps)
    ev = dataclasses.replace(eval_config(s, 1), prompts=validation_file(c))
    return [train, ev]


def tune(c: CompareSettings, run: Callable, say=print) -> dict[str, dict]:
    """Run the grid (DNO's sampling, judging and pairs of iteration 1 first), write the tuning table and return
    the picks {arm: {"learning_rate": x[, "beta": y]}}."""
    from .compare import share_first_iteration

    seed = c.seed_list[0]
    for cfg in iteration_configs(method_settings(c, "dno", seed), 1)[:3]:  # sample, judge, pairs: no lr, no beta
        run(cfg)
    share_first_iteration(c, seed=seed)  # rft and sft read pi_1's samples of partition 1 there
    write_validation(c)
    say(f"\n=== tuning: {', '.join(tuned_arms(c))} on {validation_file(c)} ===")
    rows, steps = [], None
    for arm in ["dno"] + [a for a in tuned_arms(c) if a != "dno"]:
        for point in grid(c, arm):
            train, ev = candidate_configs(c, arm, point, None if arm == "dno" else steps)
            run(train)
            run(ev)
            if arm == "dno" and steps is None:
                steps = int(manifest(train.output)["metrics"]["steps"])
            rows.append({"arm": arm, **{"learning_rate": None, "beta": None}, **point, "steps": steps,
                         "eval_file": str(ev.output), "checkpoint": str(train.output)})
    picks = pick(rows, c)
    write_tuning_table(c, rows, picks)
    return picks


def pick(rows: list[dict], c: CompareSettings) -> dict[str, dict]:
    """Per arm, the point with the best validation metric; a tie goes to the given values, then the smaller
    learning rate (the grid's order)."""
    from .compare_table import eval_intervals, main_metric

    for r in rows:
        r |= {k: v for k, v in eval_intervals(Path(r["eval_file"]), c.resamples, c.seed).items()
              if k in ("accuracy", "winrate", "score")}
    metric = main_metric(rows)
    picks = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        best = max(mine, key=lambda r: (r.get(metric) if r.get(metric) is not None else float("-inf"),
                                        -mine.index(r)))
        picks[arm] = {k: best[k] for k in ("learning_rate", "beta") if best.get(k) is not None}
        for r in mine:
            r["picked"] = r is best
            r["metric"] = metric
    return picks


def tuning_table(c: CompareSettings) -> Path:
    return RunLayout(c.loop.run).compare_table.with_name("compare-tuning.parquet")


def write_tuning_table(c: CompareSettings, rows: list[dict], picks: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import atomic_path

    schema = pa.schema([("arm", pa.string()), ("learning_rate", pa.float64()), ("beta", pa.float64()),
                        ("accuracy", pa.float64()), ("winrate", pa.float64()), ("score", pa.float64()),
                        ("metric", pa.string()), ("picked", pa.bool_()), ("steps", pa.int64()),
                        ("checkpoint", pa.string()), ("eval_file", pa.string())])
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    out = tuning_table(c)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(tuning_markdown(rows, c))
    return out


def tuning_markdown(rows: list[dict], c: CompareSettings) -> str:
    metric = rows[0]["metric"] if rows else "accuracy"
    scale = 1 if metric == "score" else 100
    lines = [f"Grid: learning rate x {', '.join(f'{f:g}' for f in LR_FACTORS)} of the given value, beta x "
             f"{', '.join(f'{f:g}' for f in BETA_FACTORS)} (dno, offline-kto; offline-dpo takes dno's pick). "
             f"Validation: {validation_file(c)} (prompts of partition {c.loop.iterations}, none held out), "
             f"iteration 1, seed {c.seed_list[0] or 0}, each arm at DNO's optimizer steps.", "",
             f"| arm | learning rate | beta | validation {metric} | steps | picked |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "n/a" if r.get(metric) is None else f"{r[metric] * scale:.1f}"
        beta = "" if r.get("beta") is None else f"{r['beta']:g}"
        lines.append(f"| {r['arm']} | {r['learning_rate']:g} | {beta} | {value} | {r.get('steps') or ''} | "
                     f"{'**yes**' if r.get('picked') else ''} |")
    return "\n".join(lines) + "\n"


def read_picks(c: CompareSettings) -> dict[str, dict] | None:
    """The picks of an earlier tuning on this run folder (None: not tuned yet)."""
    import pyarrow.parquet as pq

    path = tuning_table(c)
    if not path.exists():
        return None
    picks = {}
    for r in pq.read_table(path).to_pylist():
        if r["picked"]:
            picks[r["arm"]] = {k: r[k] for k in ("learning_rate", "beta") if r[k] is not None}
    return picks


def dry_run_lines(c: CompareSettings, command_line: Callable, steps_word: str, steps_value: int) -> list[str]:
    lines = [f"# tuning on {validation_file(c)}: every arm's grid at iteration 1 of seed {c.seed_list[0] or 0}"]
    for arm in ["dno"] + [a for a in tuned_arms(c) if a != "dno"]:
        for point in grid(c, arm):
            lines += [command_line(x).replace(str(steps_value), steps_word)
                      for x in candidate_configs(c, arm, point, None if arm == "dno" else steps_value)]
    lines.append("# the picks (RUN/compare-tuning.parquet) are every arm's learning rate and beta below")
    return lines

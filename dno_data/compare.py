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
               t-1 checkpoint                                                          RUN/sft/iter-NN/
  sft-chosen   `dno sft --source chosen` on DNO's own pairs of iteration t: the SFT loss on exactly
               the answers DNO marks as chosen, from its t-1 checkpoint (the control that
               separates DNO's loss from its data)                                     RUN/sft-chosen/iter-NN/
  rft          `dno sft --source best --min-score S`: each prompt's best judged pi_1 sample of
               partition t when it is accepted (S: the pair rule's positive threshold,
               --pairs-args --min-positive-score, 5 by default; --rft-min-score)      RUN/rft/iter-NN/
  offline-kto  (asked for: --methods ...,offline-kto) `dno train --loss kto` on offline DPO's
               pairs of partition t, from its t-1 checkpoint with the reference pi_1: each pair
               one desirable and one undesirable example (dno_data/losses.py)         RUN/offline-kto/iter-NN/

Budgets are optimizer steps: every arm runs exactly DNO's optimizer steps of iteration t (`--max-steps`;
an arm with less data passes over it again, each pass in a new seeded order), and the table shows
each arm's steps, pairs or examples, and response tokens trained on.

Seeds (`--seeds 0,1,2`): each seed runs every arm, in RUN/seed-S/METHOD/iter-NN. A seed is the
seed of sampling (`dno sample --seed`), of the pair subsets and replay (`dno pairs --seed`) and of
the training order (`dno train/sft --seed`); pi_1, the prompts, their partitions and the held-out
split are shared, so every arm of every seed is evaluated on the same held-out prompts. Without
--seeds the stages' own seeds are used and the arms live in RUN/METHOD/iter-NN.

pi_1 is evaluated once (RUN/iter-00/eval.parquet). Every stage config of every method and seed is
built, and so checked, before the first stage runs. The table and the plot: dno_data/compare_table.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import DnoError
from .loop import (LoopSettings, check as check_loop, command_line, eval_config, iteration_configs, layout, run_step,
                   sft_config, train_config)
from .pair_rules import DEFAULT_PARAMS
from .run_layout import RunLayout
from .stats import DEFAULT_RESAMPLES
from .training.options import CONTRASTIVE_ONLY, MANIFEST

METHODS = ("dno", "offline-dpo", "sft", "sft-chosen", "rft", "offline-kto")
DEFAULT_METHODS = ("dno", "offline-dpo", "sft", "sft-chosen", "rft")
SUPERVISED = ("sft", "sft-chosen", "rft")  # `dno sft` arms (examples); the others train on pairs
SEEDED = ("sample", "pairs", "train", "sft")  # the stages --seeds sets the seed of
METRICS = {"accuracy": "held-out accuracy %", "winrate": "win-rate vs teacher %", "score": "mean judge score"}

@dataclass(frozen=True)
class CompareSettings:
    loop: LoopSettings  # DNO's settings: run folder, pi_1, judge, teacher, iterations, options per stage
    methods: tuple[str, ...] = DEFAULT_METHODS
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0  # of the bootstrap
    seeds: tuple[int, ...] | None = None  # None: one run with the stages' own seeds, in RUN/METHOD
    rft_min_score: float | None = None  # None: the pair rule's positive threshold (rft_threshold)
    tune: bool = False  # pick each arm's learning rate (and beta) on a validation split first (compare_tuning.py)
    picks: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)  # arm -> its tuned values

    @property
    def seed_list(self) -> tuple[int | None, ...]:
        return self.seeds if self.seeds else (None,)


@dataclass(frozen=True)
class Budget:
    pairs: int  # DNO's new pairs at iteration t (replayed ones not counted)
    steps: int  # DNO's optimizer steps at iteration t


def sft_options_from_train(train: dict) -> dict:
    """`dno train` options without the contrastive-only ones (beta, loss, reference), for `dno sft`.

    >>> sft_options_from_train({"beta": 2.0, "learning_rate": 1e-3, "loss": "dpo", "keep_dropout": True})
    {'learning_rate': 0.001, 'keep_dropout': True}
    """
    return {k: v for k, v in train.items() if k.replace("-", "_") not in CONTRASTIVE_ONLY}


def arm_folder(method: str, seed: int | None) -> str:
    """Where a method's iterations live under RUN: METHOD, or seed-S/METHOD with --seeds."""
    return method if seed is None else f"seed-{seed}/{method}"


def _without(options: dict, *names: str) -> dict:
    return {k: v for k, v in options.items() if k.replace("-", "_") not in names}


def method_settings(c: CompareSettings, method: str, seed: int | None = None) -> LoopSettings:
    loop_method = "offline-dpo" if method in ("offline-dpo", "offline-kto") else "dno"
    options = dict(c.loop.options)
    if method == "offline-kto":  # --train-args as given, the loss KTO's
        options["train"] = {**_without(c.loop.of("train"), "loss"), "loss": "kto"}
    if seed is not None:  # --seeds: the seed of sampling, pair subsets and training order
        for stage in SEEDED:
            options[stage] = {**_without(options.get(stage) or {}, "seed"), "seed": seed}
    pick = c.picks.get("dno" if method == "offline-dpo" else method)  # offline DPO's iteration 1 is DNO's
    if pick:
        stage = "sft" if method in SUPERVISED else "train"
        options[stage] = {**_without(options.get(stage) or {}, *pick), **pick}
    return dataclasses.replace(c.loop, method=loop_method, folder=arm_folder(method, seed), options=options,
                               evaluate=c.loop.evaluate and method in ("dno", "offline-dpo"))


def rft_threshold(c: CompareSettings) -> float | None:
    """RFT's acceptance score: --rft-min-score, else the paper rule's positive threshold (--pairs-args
    --min-positive-score, 5 by default: a sample is accepted when DNO could make it a positive). With
    another rule (best-worst, --sql) there is no threshold: None keeps each prompt's best sample."""
    if c.rft_min_score is not None:
        return c.rft_min_score
    pairs = {k.replace("-", "_"): v for k, v in c.loop.of("pairs").items()}
    if pairs.get("sql") or pairs.get("rule", "paper") not in ("paper", "paper-best"):
        return None
    return float(pairs.get("min_positive_score", DEFAULT_PARAMS["min_positive_score"]))


def check_methods(methods: tuple[str, ...]) -> None:
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise DnoError(f"--methods {','.join(methods)}: choose among {', '.join(METHODS)}")
    if "dno" not in methods:
        raise DnoError("--methods must include dno: the budgets of the others are DNO's pairs and steps")


def check_seeds(seeds: tuple[int, ...] | None) -> None:
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise DnoError(f"--seeds {','.join(map(str, seeds or ()))}: give distinct integers, e.g. --seeds 0,1,2")


def check(c: CompareSettings) -> None:
    check_methods(c.methods)
    check_seeds(c.seeds)
    if "sft" in c.methods and not c.loop.teacher:
        raise DnoError("--methods sft needs teacher answers: pass --teacher (e.g. reference), or leave sft out")
    if c.tune:
        from .compare_tuning import candidate_configs, grid, tuned_arms

        if c.loop.iterations < 2:
            raise DnoError("--tune needs --iterations 2 or more: its validation prompts come from the last "
                           "partition, which iteration 1 never trains on")
        for arm in tuned_arms(c):
            for point in grid(c, arm):
                candidate_configs(c, arm, point, 1)
    for seed in c.seed_list:  # every stage config of every seed, before anything runs
        check_loop(method_settings(c, "dno", seed), eval_initial=True)
        for t in range(1, c.loop.iterations + 1):
            iteration_plan(c, t, Budget(pairs=1, steps=1), shared=False, seed=seed)


def budget_of(c: CompareSettings, t: int, seed: int | None = None) -> Budget:
    """DNO's pairs and optimizer steps at iteration t, from its pairs file and checkpoint manifest."""
    import pyarrow.parquet as pq

    dno = RunLayout(c.loop.run, arm_folder("dno", seed))
    metrics = manifest(dno.checkpoint(t)).get("metrics", {})
    replayed = pq.read_table(dno.pairs(t), columns=["replayed_from"]).column(0)
    return Budget(pairs=replayed.null_count, steps=int(metrics["steps"]))


def share_first_iteration(c: CompareSettings, dry: bool = False, seed: int | None = None) -> bool:
    """Offline DPO's iteration 1 is DNO's: both sample pi_1 on partition 1 and train pi_1 with the
    reference pi_1 on every pair (DNO's count is the cap). So RUN/offline-dpo/iter-01 is a link to
    RUN/dno/iter-01 instead of the same sampling, judging and training a second time (the tables
    measured before it showed the two rows equal to the digit). A real offline-dpo/iter-01 folder
    (an earlier run) is kept and its commands run as before. Returns whether the link is (or, with
    `dry`, would be) there."""
    off, dno = first_iteration_link(c, seed)
    if off.is_symlink():
        return True
    if off.exists():
        return False
    if not dry:
        off.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dno, off.parent), off)
    return True


def first_iteration_link(c: CompareSettings, seed: int | None = None) -> tuple[Path, Path]:
    """(RUN/offline-dpo/iter-01, RUN/dno/iter-01): the link share_first_iteration makes, and its target."""
    return (RunLayout(c.loop.run, arm_folder("offline-dpo", seed)).iteration(1),
            RunLayout(c.loop.run, arm_folder("dno", seed)).iteration(1))


def iteration_plan(c: CompareSettings, t: int, budget: Budget, shared: bool = True, seed: int | None = None) -> list:
    """The stage configs of iteration t after DNO's (which gives the budget: every arm trains exactly
    budget.steps optimizer steps). `shared`: offline-dpo/iter-01 is DNO's iteration 1
    (share_first_iteration), so at t = 1 pi_1's samples and judgments are there and offline DPO runs
    nothing."""
    offline = method_settings(c, "offline-dpo", seed)
    pi1 = layout(offline)  # pi_1's samples (judgments, pairs) of partition t live in offline-dpo's folder
    cfgs = iteration_configs(offline, t, max_pairs=budget.pairs, max_steps=budget.steps)
    if t == 1 and shared:
        cfgs = []
    elif "offline-dpo" not in c.methods:  # pi_1's samples for sft, judgments for rft, pairs for offline-kto
        cfgs = cfgs[: 3 if "offline-kto" in c.methods else 2 if "rft" in c.methods else 1]
    if "offline-kto" in c.methods:
        s = method_settings(c, "offline-kto", seed)
        cfgs.append(train_config(s, t, pi1.pairs(t), max_steps=budget.steps))
        if c.loop.evaluate:
            cfgs.append(eval_config(s, t))
    for method in SUPERVISED:
        if method in c.methods:
            s = method_settings(c, method, seed)
            path, source, extra = supervised_data(c, method, t, seed)
            cfgs.append(sft_config(s, t, path, source=source, max_steps=budget.steps, **extra))
            if c.loop.evaluate:
                cfgs.append(eval_config(s, t))
    return cfgs


def supervised_data(c: CompareSettings, method: str, t: int, seed: int | None) -> tuple[Path, str, dict]:
    """A supervised arm's data at iteration t: (file, --source, the other sft options it needs)."""
    pi1 = RunLayout(c.loop.run, arm_folder("offline-dpo", seed))  # pi_1's samples and judgments of partition t
    if method == "sft":
        return pi1.samples(t), "teacher", {}
    if method == "sft-chosen":
        return RunLayout(c.loop.run, arm_folder("dno", seed)).pairs(t), "chosen", {}
    return pi1.samples(t), "best", {"judgments": pi1.judgments(t), "min_score": rft_threshold(c)}


PLACEHOLDER = Budget(pairs=999_999_001, steps=999_999_002)  # --dry-run: shown as DNO_PAIRS / DNO_STEPS


def dry_run(c: CompareSettings, echo=print) -> None:
    check(c)
    lines = [command_line(eval_config(dataclasses.replace(c.loop, folder=None), 0))]
    if c.tune:
        from .compare_tuning import dry_run_lines

        lines += dry_run_lines(c, command_line, "DNO_STEPS", PLACEHOLDER.steps)
    for seed in c.seed_list:
        if seed is not None:
            lines.append(f"# seed {seed}")
        shared = share_first_iteration(c, dry=True, seed=seed)
        for t in range(1, c.loop.iterations + 1):
            lines += [command_line(x) for x in iteration_configs(method_settings(c, "dno", seed), t)]
            if t == 1 and shared:
                off, dno = first_iteration_link(c, seed)
                lines.append(f"# {off} -> {dno} (offline DPO's iteration 1 is DNO's)")
            lines += [command_line(x).replace(str(PLACEHOLDER.pairs), "DNO_PAIRS")
                      .replace(str(PLACEHOLDER.steps), "DNO_STEPS") for x in iteration_plan(c, t, PLACEHOLDER, shared, seed)]
    for line in lines:
        echo(line)


def run_comparison(c: CompareSettings, run: Callable = run_step, say=print) -> Path:
    """Every method's iterations, the evals, then the table and the plot; returns the table's path."""
    check(c)
    run(eval_config(dataclasses.replace(c.loop, folder=None), 0))
    if c.tune:
        from .compare_tuning import tune

        c = dataclasses.replace(c, picks=tune(c, run, say))
        say("picks: " + "; ".join(f"{arm} " + ", ".join(f"{k} {v:g}" for k, v in p.items()) for arm, p in c.picks.items()))
    for seed in c.seed_list:  # seed after seed: the first seed's table is whole before the second starts
        of_seed = "" if seed is None else f", seed {seed}"
        for t in range(1, c.loop.iterations + 1):
            say(f"\n=== iteration {t}{of_seed}: dno ===")
            for cfg in iteration_configs(method_settings(c, "dno", seed), t):
                run(cfg)
            budget = budget_of(c, t, seed)
            shared = t == 1 and share_first_iteration(c, seed=seed)
            say(f"\n=== iteration {t}{of_seed}: {', '.join(m for m in c.methods if m != 'dno')} "
                f"(budget: {budget.pairs} pairs, {budget.steps} optimizer steps) ===")
            if shared:
                say("offline-dpo/iter-01 is dno/iter-01: at iteration 1 offline DPO is DNO (pi_1's samples, "
                    "reference pi_1)")
            for cfg in iteration_plan(c, t, budget, shared, seed):
                run(cfg)
    from .compare_table import write_table

    return write_table(c)


def manifest(ckpt: Path) -> dict:
    try:
        return json.loads((Path(ckpt) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}



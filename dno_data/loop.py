"""The DNO iteration, defined once, as the same `dno` commands a user would type, one process per stage.

`dno iterate` (and so `just iterate` / `just iteration t`), `dno demo` and `dno compare` run
`iteration_commands`, so they cannot disagree about what an iteration runs:

  sample (pi_t, partition t, + teacher) -> judge -> pairs (+ replay) -> train (reference = pi_t) -> eval

`method="offline-dpo"` (`dno compare`) changes only who samples and the reference: pi_1 samples
every partition, the reference stays pi_1, and training continues from the method's own t-1
checkpoint; `max_pairs` caps the pairs (a budget). `sft_command` is the supervised baseline's step.

Paths come from dno_data.run_layout. Every stage skips itself when its output is up to date,
so a rerun resumes where it stopped.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DnoError
from .run_layout import RunLayout


@dataclass(frozen=True)
class LoopSettings:
    run: Path
    model: Path  # the initial policy pi_1
    judge: str
    iterations: int = 3
    teacher: str | None = "reference"  # None: no teacher samples, and eval judges the policy alone
    evaluate: bool = True
    replay: bool = False  # mix pairs of t-1 (30 %) and t-2 (15 %) into iteration t
    sample_args: tuple[str, ...] = ()  # extra options per stage, e.g. ("-k", "4")
    judge_args: tuple[str, ...] = ()
    pairs_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    eval_args: tuple[str, ...] = ()
    sft_args: tuple[str, ...] = ()  # `dno sft` options (dno compare's sft and rft methods)
    method: str = "dno"  # dno | offline-dpo (pi_1 samples every partition; reference pi_1)
    folder: str | None = None  # iterations in RUN/FOLDER/iter-NN (dno compare: the method's name)
    config: Path | None = None  # run config file (--config run.toml), passed to every stage


def layout(s: LoopSettings) -> RunLayout:
    return RunLayout(s.run, s.folder)


def _config_args(s: LoopSettings) -> list[str]:
    return ["--config", str(s.config)] if s.config is not None else []


def policy_for(s: LoopSettings, t: int) -> Path:
    """pi_t: the initial model for t = 1, else the checkpoint of iteration t - 1."""
    return layout(s).policy(t, s.model)


def eval_command(s: LoopSettings, t: int) -> list[str]:
    """Evaluate pi_{t+1} (iteration t's checkpoint); t = 0 evaluates the initial policy."""
    run = layout(s)
    model = s.model if t == 0 else run.checkpoint(t)
    cmd = ["eval", str(run.prompts), "--model", str(model), "--judge", s.judge, "-o", str(run.eval(t))]
    return cmd + ["--teacher", s.teacher or "none"] + _config_args(s) + list(s.eval_args)


def iteration_commands(s: LoopSettings, t: int, max_pairs: int | None = None) -> list[list[str]]:
    if s.method not in ("dno", "offline-dpo"):
        raise DnoError(f"method {s.method!r}: iterations are dno or offline-dpo (sft: sft_command)")
    run = layout(s)
    offline = s.method == "offline-dpo"
    samples, judgments, pairs = run.samples(t), run.judgments(t), run.pairs(t)
    policy = str(policy_for(s, t))
    sampler = str(s.model) if offline else policy  # offline DPO: pi_1 samples every partition
    sample = ["sample", str(run.prompts), "-o", str(samples), "--model", sampler, "--partition", str(t)] \
        + (["--teacher", s.teacher] if s.teacher else []) + _config_args(s) + list(s.sample_args)
    judge = ["judge", str(samples), "-o", str(judgments), "--judge", s.judge] + _config_args(s) + list(s.judge_args)
    replay = []
    if s.replay:
        for back in (1, 2):
            if t - back >= 1:
                replay += ["--replay", str(run.pairs(t - back))]
    cap = ["--max-pairs", str(max_pairs)] if max_pairs is not None else []
    pair = ["pairs", str(judgments), str(samples), "-o", str(pairs)] + replay + cap + _config_args(s) + list(s.pairs_args)
    reference = ["--reference", str(s.model)] if offline else []  # offline DPO: the reference stays pi_1
    train = ["train", str(pairs), "--model", policy, "-o", str(run.checkpoint(t))] + reference + _config_args(s) + list(s.train_args)
    cmds = [sample, judge, pair, train]
    return cmds + ([eval_command(s, t)] if s.evaluate else [])


def sft_command(s: LoopSettings, t: int, samples: Path, *, judgments: Path | None = None,
                max_steps: int | None = None) -> list[str]:
    """Iteration t of a supervised baseline: fine-tune the method's pi_t on `samples` (teacher answers; with
    `judgments`, each prompt's best judged sample) into its iteration-t checkpoint."""
    source = ["--source", "best", "--judgments", str(judgments)] if judgments is not None else ["--source", "teacher"]
    steps = ["--max-steps", str(max_steps)] if max_steps is not None else []
    return (["sft", str(samples)] + source + ["--model", str(policy_for(s, t)), "-o", str(layout(s).checkpoint(t))]
            + steps + list(s.sft_args))


def run_dno(args: list[str], echo=print) -> None:
    """Run one `dno` command in its own process; a failure stops the loop with its message."""
    echo("$ dno " + " ".join(shlex.quote(a) for a in args))
    proc = subprocess.run([sys.executable, "-m", "stages.cli", *args])
    if proc.returncode != 0:
        raise DnoError(f"`dno {args[0]}` failed (exit {proc.returncode}); fix it and rerun: finished stages are skipped")


def run_iterations(s: LoopSettings, first: int = 1, eval_initial: bool = False, run=run_dno) -> None:
    """Iterations first..s.iterations (and the initial policy's eval, iter-00, first when asked)."""
    if eval_initial:
        run(eval_command(s, 0))
    for t in range(first, s.iterations + 1):
        for cmd in iteration_commands(s, t):
            run(cmd)

"""The DNO loop as the same `dno` commands a user would type, one process per stage.

Stages only see paths; this driver lays them out as DESIGN.md's run folder:
  RUN/prompts.parquet, RUN/iter-TT/{samples,judgments,pairs}.parquet, RUN/iter-TT/checkpoint/,
  RUN/iter-TT/eval.parquet (iter-00/eval.parquet evaluates the initial policy).
Every stage skips itself when its output is up to date, so a rerun resumes where it stopped.
The justfile's `iterate` recipe spells out the same chain.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DnoError
from .run_views import iteration_dir


@dataclass(frozen=True)
class LoopSettings:
    run: Path
    model: Path  # the initial policy pi_1
    judge: str
    iterations: int = 3
    teacher: str | None = "reference"
    evaluate: bool = True
    replay: bool = False  # mix pairs of t-1 (30 %) and t-2 (15 %) into iteration t
    sample_args: tuple[str, ...] = ()  # extra options per stage, e.g. ("-k", "4")
    pairs_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    eval_args: tuple[str, ...] = ()
    judge_args: tuple[str, ...] = field(default_factory=tuple)


def policy_for(s: LoopSettings, t: int) -> Path:
    """pi_t: the initial model for t = 1, else the checkpoint of iteration t - 1."""
    return s.model if t == 1 else iteration_dir(s.run, t - 1) / "checkpoint"


def eval_command(s: LoopSettings, t: int) -> list[str]:
    model = s.model if t == 0 else iteration_dir(s.run, t) / "checkpoint"
    cmd = ["eval", str(s.run / "prompts.parquet"), "--model", str(model), "--judge", s.judge,
           "-o", str(iteration_dir(s.run, t) / "eval.parquet")]
    return cmd + (["--teacher", s.teacher] if s.teacher else []) + list(s.eval_args)


def iteration_commands(s: LoopSettings, t: int) -> list[list[str]]:
    d = iteration_dir(s.run, t)
    samples, judgments, pairs = d / "samples.parquet", d / "judgments.parquet", d / "pairs.parquet"
    sample = ["sample", str(s.run / "prompts.parquet"), "-o", str(samples), "--model", str(policy_for(s, t)),
              "--partition", str(t)] + (["--teacher", s.teacher] if s.teacher else []) + list(s.sample_args)
    judge = ["judge", str(samples), "-o", str(judgments), "--judge", s.judge] + list(s.judge_args)
    replay = []
    if s.replay:
        for back in (1, 2):
            if t - back >= 1:
                replay += ["--replay", str(iteration_dir(s.run, t - back) / "pairs.parquet")]
    pair = ["pairs", str(judgments), str(samples), "-o", str(pairs)] + replay + list(s.pairs_args)
    train = ["train", str(pairs), "--model", str(policy_for(s, t)), "-o", str(d / "checkpoint")] + list(s.train_args)
    cmds = [sample, judge, pair, train]
    return cmds + ([eval_command(s, t)] if s.evaluate else [])


def run_dno(args: list[str], echo=print) -> None:
    """Run one `dno` command in its own process; a failure stops the loop with its message."""
    echo("$ dno " + " ".join(shlex.quote(a) for a in args))
    proc = subprocess.run([sys.executable, "-m", "stages.cli", *args])
    if proc.returncode != 0:
        raise DnoError(f"`dno {args[0]}` failed (exit {proc.returncode}); fix it and rerun: finished stages are skipped")

"""The DNO iteration, defined once, as stage configs: what `dno iterate`, `dno demo` and `dno compare` run.

  sample (pi_t, partition t, + teacher) -> judge -> pairs (+ replay) -> train (reference = pi_t) -> eval

Each step is a stage config (dno_data.stages) built from the run settings and the options the
user gave per stage (`--train-args "--beta 0.2"`, a config file's `[train]` table, or a dict in
Python); every config of every iteration is built, and so checked, before the first stage runs
(`check`). A step runs as the `dno` command it equals (`command_line(cfg)`, derived from the
config), in a process of its own started so that no working folder can shadow dno's packages.

`method="offline-dpo"` (`dno compare`) changes only who samples and the reference: pi_1 samples
every partition, the reference stays pi_1, and training continues from the method's own t-1
checkpoint; `max_pairs` caps the pairs (a budget). `train_config` is its training step alone (offline KTO
trains so on offline DPO's pairs); `sft_config` is the supervised baselines' step.
Paths come from dno_data.run_layout. Every stage skips itself when its output is up to date.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import from_options, to_argv
from .errors import DnoError
from .run_layout import RunLayout
from .stages import stage_name

# What the loop sets itself, per stage: a user's per-stage options may not (they would break the chain).
OWNED = {"sample": ("prompts", "output", "model", "partition", "teacher"),
         "judge": ("samples", "output", "judge"),
         "pairs": ("judgments", "samples", "output", "replay", "max_pairs"),
         "train": ("pairs", "model", "output"),
         "eval": ("prompts", "model", "output", "judge", "teacher"),
         "sft": ("data", "source", "judgments", "min_score", "model", "output", "max_steps")}
STAGE_FLAGS = {"sample": "--sample-args", "judge": "--judge-args", "pairs": "--pairs-args", "train": "--train-args",
               "eval": "--eval-args", "sft": "--sft-args"}


@dataclass(frozen=True)
class LoopSettings:
    run: Path
    model: Path  # the initial policy pi_1
    judge: str
    iterations: int = 3
    teacher: str | None = "reference"  # None: no teacher samples, and eval judges the policy alone
    evaluate: bool = True
    replay: bool = False  # mix pairs of t-1 (30 %) and t-2 (15 %) into iteration t
    # the options of each stage, by their flat names (dno_data.config): {"sample": {"k": 4}, "train": {"beta": 0.2}}
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    method: str = "dno"  # dno | offline-dpo (pi_1 samples every partition; reference pi_1)
    folder: str | None = None  # iterations in RUN/FOLDER/iter-NN (dno compare: the method's name)
    train_launcher: str | None = None  # e.g. "accelerate launch --config_file fsdp.yaml": train and sft run under it

    def of(self, stage: str) -> dict:
        return dict(self.options.get(stage) or {})


def layout(s: LoopSettings) -> RunLayout:
    return RunLayout(s.run, s.folder)


def policy_for(s: LoopSettings, t: int) -> Path:
    """pi_t: the initial model for t = 1, else the checkpoint of iteration t - 1."""
    return layout(s).policy(t, s.model)


def _config(s: LoopSettings, stage: str, cls: type, owned: dict):
    """The stage's config: the loop's values over the user's options for that stage (which may not set them)."""
    given = s.of(stage)
    taken = sorted(k for k in given if k.replace("-", "_") in OWNED[stage])
    if taken:
        raise DnoError(f"{STAGE_FLAGS[stage]}: {', '.join(taken)} is set by the loop itself (the run's paths, "
                       "models and judge); pass it to dno iterate, or drop it")
    return from_options(cls, {**given, **owned}, where=f"{STAGE_FLAGS[stage]} (dno {stage})")


def eval_config(s: LoopSettings, t: int):
    """Evaluate pi_{t+1} (iteration t's checkpoint); t = 0 evaluates the initial policy."""
    from .stages.eval import EvalConfig

    run = layout(s)
    model = s.model if t == 0 else run.checkpoint(t)
    return _config(s, "eval", EvalConfig, {"prompts": run.prompts, "model": model, "judge": s.judge,
                                           "output": run.eval(t), "teacher": s.teacher})


def iteration_configs(s: LoopSettings, t: int, max_pairs: int | None = None, max_steps: int | None = None) -> list:
    """The stage configs of iteration t: sample, judge, pairs, train (and eval when s.evaluate); `max_pairs`
    and `max_steps` are a budget (`dno compare`: DNO's pairs and optimizer steps)."""
    from .stages.judge import JudgeConfig
    from .stages.pairs import PairsConfig
    from .stages.sample import SampleConfig

    if s.method not in ("dno", "offline-dpo"):
        raise DnoError(f"method {s.method!r}: iterations are dno or offline-dpo (sft: sft_config)")
    run = layout(s)
    sampler = s.model if s.method == "offline-dpo" else policy_for(s, t)  # offline DPO: pi_1 samples every partition
    sample = _config(s, "sample", SampleConfig, {"prompts": run.prompts, "output": run.samples(t), "model": sampler,
                                                 "partition": t, "teacher": s.teacher})
    judge = _config(s, "judge", JudgeConfig, {"samples": run.samples(t), "output": run.judgments(t),
                                              "judge": s.judge})
    replay = [run.pairs(t - back) for back in (1, 2) if s.replay and t - back >= 1]
    pairs = _config(s, "pairs", PairsConfig, {"judgments": run.judgments(t), "samples": run.samples(t),
                                              "output": run.pairs(t), "replay": replay, "max_pairs": max_pairs})
    train = train_config(s, t, run.pairs(t), max_steps=max_steps)
    return [sample, judge, pairs, train] + ([eval_config(s, t)] if s.evaluate else [])


def train_config(s: LoopSettings, t: int, pairs: Path, max_steps: int | None = None):
    """Iteration t's training: the method's pi_t on `pairs` into its iteration-t checkpoint, with the reference
    pi_t (dno) or pi_1 (offline-dpo); `max_steps`: exactly that many optimizer steps (the pairs cycled)."""
    from .stages.train import TrainConfig

    owned = {"pairs": pairs, "model": policy_for(s, t), "output": layout(s).checkpoint(t)}
    if max_steps is not None:
        owned["max_steps"] = max_steps
    if s.method == "offline-dpo":  # offline: the reference stays pi_1
        owned["reference"] = s.model
    return _config(s, "train", TrainConfig, owned)


def sft_config(s: LoopSettings, t: int, data: Path, *, source: str | None = None, judgments: Path | None = None,
               min_score: float | None = None, max_steps: int | None = None):
    """Iteration t of a supervised baseline: fine-tune the method's pi_t on `data` into its iteration-t
    checkpoint: a samples file's teacher answers, or with `judgments` each prompt's best judged sample
    scoring at least `min_score` (source best), or a pairs file's chosen side (source chosen)."""
    from .stages.sft import SftConfig

    source = source or ("best" if judgments is not None else "teacher")
    return _config(s, "sft", SftConfig, {"data": data, "source": source, "judgments": judgments,
                                         "min_score": min_score, "model": policy_for(s, t),
                                         "output": layout(s).checkpoint(t), "max_steps": max_steps})


def check(s: LoopSettings, first: int = 1, eval_initial: bool = False) -> None:
    """Build (and so check) every stage config of iterations first..s.iterations: a bad per-stage option is
    one DnoError before anything runs."""
    if eval_initial:
        eval_config(s, 0)
    for t in range(first, s.iterations + 1):
        iteration_configs(s, t)


# ---------------------------------------------------------------- running a step as its `dno` command

LAUNCHED = ("train", "sft")  # the stages --train-launcher starts (the ones that train a model)


def command_args(cfg) -> list[str]:
    """The `dno` arguments that give `cfg`: the command's name and its flags (defaults left out)."""
    return [*stage_name(cfg).split(), *to_argv(cfg)]


def command_line(cfg, launcher: str | None = None) -> str:
    """`dno sample PROMPTS -o OUT ...`: what a user would type for `cfg` (a train or sft step after
    its `launcher`, when one is given)."""
    prefix = f"{launcher} " if launcher and stage_name(cfg) in LAUNCHED else ""
    return prefix + "dno " + shlex.join(command_args(cfg))


def dno_executable() -> list[str]:
    """How to start `dno` in a new process so that the working folder cannot shadow its packages (a folder
    holding its own `schemas/` or `stages/`): Python's -P (3.11+) keeps the folder off the import path."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "stages.cli"]
    return [sys.executable, "-c", "import sys; del sys.path[0]; from stages.cli import main; main()"]


def dno_script() -> str:
    """The `dno` console script beside this Python (what a launcher such as `accelerate launch` or
    `torchrun` starts on every process)."""
    import shutil

    script = Path(sys.executable).with_name("dno")
    if script.exists():
        return str(script)
    found = shutil.which("dno")
    if found is None:
        raise DnoError("--train-launcher starts the `dno` console script, which is not installed beside "
                       f"{sys.executable}; pip install -e . (or pip install dno-data) in this environment")
    return found


def launch_args(cfg, launcher: str | None) -> list[str]:
    """The argv of one step: `python -P -m stages.cli ARGS`, or for train and sft under a launcher,
    `LAUNCHER .../dno ARGS` (e.g. accelerate launch --config_file fsdp.yaml .../bin/dno train ...)."""
    args = command_args(cfg)
    if launcher and stage_name(cfg) in LAUNCHED:
        return [*shlex.split(launcher), dno_script(), *args]
    return [*dno_executable(), *args]


def run_step(cfg, echo: Callable[[str], None] | None = None, launcher: str | None = None) -> None:
    """Run one stage config as its `dno` command in its own process (train and sft under `launcher`
    when one is given); a failure stops the loop with its message."""
    from .console import say

    (echo or say)("$ " + command_line(cfg, launcher))
    proc = subprocess.run(launch_args(cfg, launcher))
    if proc.returncode != 0:
        raise DnoError(f"`dno {stage_name(cfg).split()[0]}` failed (exit {proc.returncode}); fix it and rerun: "
                       "finished stages are skipped")


def run_iterations(s: LoopSettings, first: int = 1, eval_initial: bool = False,
                   run: Callable[[Any], None] | None = None) -> None:
    """Iterations first..s.iterations (and the initial policy's eval, iter-00, first when asked)."""
    check(s, first, eval_initial)
    if run is None:
        def run(cfg):
            run_step(cfg, launcher=s.train_launcher)
    if eval_initial:
        run(eval_config(s, 0))
    for t in range(first, s.iterations + 1):
        for cfg in iteration_configs(s, t):
            run(cfg)

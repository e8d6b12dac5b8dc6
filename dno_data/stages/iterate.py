"""`dno iterate --run RUN --model DIR --judge SPEC`: the DNO loop over a run folder, stage by stage.

    dno iterate --run runs/r1 --model models/sft --judge oracle:addition --iterations 3
    dno iterate --run runs/r1 --model models/sft --judge openai:gpt-4o --teacher openai:gpt-4-turbo \
        --sample-args "-k 5 --temperature 0.7 --top-p 0.95" --train-args "--beta 0.1"
    dno iterate ... --start 2 --iterations 2          # iteration 2 only (`just iteration 2`)
    dno iterate --config run.toml                     # the options at the top level, a table per stage
    dno iterate ... --train-launcher "accelerate launch --config_file configs/accelerate/fsdp.yaml"

In Python the per-stage options are dicts of the stage's option names:

    from dno_data.api import iterate, IterateConfig
    iterate(IterateConfig(run="runs/r1", model="models/sft", judge="oracle:addition",
                          sample_args={"k": 4}, train_args={"beta": 0.2}))

Every stage config of every iteration is built, and so checked, before the first stage runs.
Each stage runs as its own `dno` process on the paths of dno_data/run_layout.py, printed as the
command it equals; finished stages are skipped, so a rerun resumes. `just iterate` calls this
command, and `dno demo` runs the same iteration (dno_data/loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config import Config, at_least, opt
from ..config.groups import TEACHER_SPECS, judge_specs
from ..config.options import stage_options
from ..errors import DnoError


@dataclass(frozen=True, kw_only=True)
class IterateConfig(Config):
    """Run DNO iterations over a run folder: sample, judge, pairs, train, eval."""

    PASS_URLS: ClassVar[bool] = True  # an s3:// run goes to each stage as it is; each stage stages its own files

    run: Path = opt("Run folder (runs/NAME, or s3://BUCKET/runs/NAME) holding prompts.parquet (from `dno prompts`).",
                    flags=("--run",))
    model: Path = opt("The initial policy pi_1 (HF folder, its s3:// URL, or a Hugging Face Hub id org/name[@REV]).")
    judge: str = opt(f"The preference oracle: {judge_specs()}.")
    teacher: str | None = opt(f"Teacher answers: {TEACHER_SPECS} | none.", "reference", none_word="none")
    iterations: int = opt("Last iteration to run.", 3, check=at_least(1))
    start: int = opt("First iteration to run.", 1, check=at_least(1))
    eval_initial: bool = opt("First evaluate the initial policy (iter-00/eval.parquet).", False)
    evaluate: bool = opt("Evaluate each iteration's checkpoint.", True)
    replay: bool = opt("Replay the pairs of t-1 and t-2 (dno pairs --replay).", False)
    sample_args: dict = stage_options("sample", '"-k 5 --temperature 0.7"')
    judge_args: dict = stage_options("judge")
    pairs_args: dict = stage_options("pairs")
    train_args: dict = stage_options("train")
    eval_args: dict = stage_options("eval")
    train_launcher: str | None = opt("Run each train step under this launcher, e.g. \"accelerate launch --config_file "
                                     "configs/accelerate/fsdp.yaml\" or \"torchrun --nproc_per_node 8\" (multi-GPU, "
                                     "multi-node); the rest of the loop runs as before.", None, changes_output=False)
    dry_run: bool = opt("Print the commands; run nothing.", False)

    def settings(self):
        from ..loop import LoopSettings

        return LoopSettings(run=self.run, model=self.model, judge=self.judge, iterations=self.iterations,
                            teacher=self.teacher, evaluate=self.evaluate, replay=self.replay,
                            train_launcher=self.train_launcher,
                            options={"sample": self.sample_args, "judge": self.judge_args, "pairs": self.pairs_args,
                                     "train": self.train_args, "eval": self.eval_args})

    def validate(self) -> None:
        from ..loop import check

        if self.start > self.iterations:
            raise DnoError(f"--start {self.start} is after --iterations {self.iterations}; nothing to run")
        check(self.settings(), self.start, self.eval_initial)  # every stage's config, before anything runs


def run(cfg: IterateConfig) -> Path:
    """Run the iterations (each stage in its own process) and return the run folder."""
    import dataclasses

    from ..console import say
    from ..hub import pin
    from ..loop import command_line, eval_config, iteration_configs, run_iterations
    from ..run_layout import RunLayout
    from ..storage import exists

    s = cfg.settings()
    if cfg.dry_run:
        cfgs = ([eval_config(s, 0)] if cfg.eval_initial else []) + [
            c for t in range(cfg.start, cfg.iterations + 1) for c in iteration_configs(s, t)]
        print("# " + resolved_command(cfg))  # what a --config file (or a default) resolved to, as flags
        for c in cfgs:
            print(command_line(c, cfg.train_launcher))
        return cfg.run
    layout = RunLayout(cfg.run)
    if not exists(layout.prompts):
        raise DnoError(f"{layout.prompts}: no such file; import prompts with "
                       f"`dno prompts SRC -o {layout.prompts} --partitions {cfg.iterations}`")
    model = pin(cfg.model)  # a Hub id: resolved once, every stage at its commit
    if model == cfg.model and cfg.start == 1 and not exists(cfg.model):
        raise DnoError(f"{cfg.model}: no such model folder; pass --model DIR or a Hugging Face Hub id (the initial "
                       "policy)")
    s = dataclasses.replace(s, model=model)
    run_iterations(s, first=cfg.start, eval_initial=cfg.eval_initial)
    _print_summary(cfg.run)
    say(f"iterations {cfg.start}..{cfg.iterations} done; this table again: dno sql --run {cfg.run} "
        f"--query iterations (dno sql --list: the other analyses)")
    return cfg.run


def resolved_command(cfg: IterateConfig) -> str:
    """`dno iterate ...` as flags with every value resolved (those of a --config file included), without
    --dry-run: the command this dry run stands for. Each stage's options are its `--STAGE-args` string.

    >>> resolved_command(IterateConfig(run=Path("r"), model=Path("m"), judge="oracle:exact", iterations=1,
    ...                                train_args={"beta": 0.2, "lora_r": 4, "save_adapter": True, "merge": True}))
    "dno iterate --run r --model m --judge oracle:exact --iterations 1 --train-args '--beta 0.2 --lora-r 4 --save-adapter --merge'"
    """
    import shlex

    from ..config import flat_fields, flat_of, replace, to_argv
    from . import load

    staged = [x for x in flat_fields(type(cfg)) if x.option.stage_options]
    argv = to_argv(replace(cfg, dry_run=False, **{x.name: {} for x in staged}))
    for x in staged:
        given = getattr(cfg, x.name) or {}
        if not given:
            continue
        stage_cls = load(x.option.stage_options)[0]
        words: list[str] = []
        for name, value in given.items():
            flag = flat_of(stage_cls, name).flag
            if isinstance(value, bool):
                words.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, (list, tuple)):
                for v in value:
                    words += [flag, str(v)]
            else:
                words += [flag, str(value)]
        argv += [x.flag, shlex.join(words)]
    return "dno iterate " + shlex.join(argv)


def _print_summary(run_dir: Path) -> None:
    import polars as pl

    from ..console import say
    from ..queries import run_query

    df = run_query(run_dir, "iterations")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=200, tbl_cols=20,
                   tbl_width_chars=-1):
        say(f"\n{run_dir}: per iteration (0 = the initial policy)\n{df}")

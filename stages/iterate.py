"""`dno iterate --run RUN --model DIR --judge SPEC`: the DNO loop over a run folder, stage by stage.

    dno iterate --run runs/r1 --model models/sft --judge oracle:addition --iterations 3
    dno iterate --run runs/r1 --model models/sft --judge openai:gpt-4o --teacher openai:gpt-4-turbo \
        --sample-args "-k 5 --temperature 0.7 --top-p 0.95" --train-args "--beta 0.1"
    dno iterate ... --start 2 --iterations 2          # iteration 2 only (`just iteration 2`)

Each stage runs as its own `dno` process on the paths of dno_data/run_layout.py
(RUN/prompts.parquet, RUN/iter-NN/...); finished stages are skipped, so a rerun resumes.
`just iterate` calls this command, and `dno demo` runs the same iteration (dno_data/loop.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from dno_data.errors import DnoError
from dno_data.loop import LoopSettings, iteration_commands, eval_command, run_iterations
from dno_data.run_layout import RunLayout

from .common import say
from .options import CONFIG, TEACHER_SPECS, at_least, build_command, judge_specs, opt, shell_args


EXTRA = "Extra options per stage (one shell-quoted string each)"


@dataclass(frozen=True)
class IterateConfig:
    run: Path = opt("Run folder (runs/NAME) holding prompts.parquet (from `dno prompts`).", flags=("--run",))
    model: Path = opt("The initial policy pi_1 (HF folder).")
    judge: str = opt(f"The preference oracle: {judge_specs()}.")
    teacher: str | None = opt(f"Teacher answers: {TEACHER_SPECS} | none.", "reference", cli_type=str,
                              to_config=lambda v: None if v in ("", "none") else v)
    iterations: int = opt("Last iteration to run.", 3, check=at_least(1))
    start: int = opt("First iteration to run.", 1, check=at_least(1))
    eval_initial: bool = opt("First evaluate the initial policy (iter-00/eval.parquet).", False)
    evaluate: bool = opt("Evaluate each iteration's checkpoint.", True)
    replay: bool = opt("Replay the pairs of t-1 and t-2 (dno pairs --replay).", False)
    sample_args: tuple[str, ...] = opt("dno sample options, e.g. \"-k 5 --temperature 0.7\".", (), cli_type=str,
                                       cli_default="", to_config=shell_args("--sample-args"), panel=EXTRA)
    judge_args: tuple[str, ...] = opt("dno judge options.", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--judge-args"), panel=EXTRA)
    pairs_args: tuple[str, ...] = opt("dno pairs options.", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--pairs-args"), panel=EXTRA)
    train_args: tuple[str, ...] = opt("dno train options.", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--train-args"), panel=EXTRA)
    eval_args: tuple[str, ...] = opt("dno eval options.", (), cli_type=str, cli_default="",
                                     to_config=shell_args("--eval-args"), panel=EXTRA)
    dry_run: bool = opt("Print the commands; run nothing.", False)
    config: Path | None = CONFIG.field(None, help="Run config file (TOML): dno iterate's options at the top "
                                       "level (or in [iterate]), a table per stage (e.g. [train] beta = 0.1), "
                                       "passed on to every stage; flags override it.")


def settings_of(cfg: IterateConfig) -> LoopSettings:
    return LoopSettings(run=cfg.run, model=cfg.model, judge=cfg.judge, iterations=cfg.iterations, teacher=cfg.teacher,
                        evaluate=cfg.evaluate, replay=cfg.replay, sample_args=cfg.sample_args,
                        judge_args=cfg.judge_args, pairs_args=cfg.pairs_args, train_args=cfg.train_args,
                        eval_args=cfg.eval_args, config=cfg.config)


def run(cfg: IterateConfig) -> Path:
    if cfg.start > cfg.iterations:
        raise DnoError(f"--start {cfg.start} is after --iterations {cfg.iterations}; nothing to run")
    layout = RunLayout(cfg.run)
    s = settings_of(cfg)
    if cfg.dry_run:
        cmds = ([eval_command(s, 0)] if cfg.eval_initial else []) + [
            c for t in range(cfg.start, cfg.iterations + 1) for c in iteration_commands(s, t)]
        for c in cmds:
            print("dno " + " ".join(shlex.quote(a) for a in c))
        return cfg.run
    if not layout.prompts.exists():
        raise DnoError(f"{layout.prompts}: no such file; import prompts with "
                       f"`dno prompts SRC -o {layout.prompts} --partitions {cfg.iterations}`")
    if cfg.start == 1 and not Path(cfg.model).exists():
        raise DnoError(f"{cfg.model}: no such model folder; pass --model DIR (the initial policy)")
    run_iterations(s, first=cfg.start, eval_initial=cfg.eval_initial)
    _print_summary(cfg.run)
    say(f"iterations {cfg.start}..{cfg.iterations} done; this table again: dno sql --run {cfg.run} "
        f"--query iterations (dno sql --list: the other analyses)")
    return cfg.run


def _print_summary(run_dir: Path) -> None:
    import polars as pl

    from dno_data.queries import run_query

    df = run_query(run_dir, "iterations")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=200, tbl_cols=20,
                   tbl_width_chars=-1):
        say(f"\n{run_dir}: per iteration (0 = the initial policy)\n{df}")


command = build_command(IterateConfig, run, "Run DNO iterations over a run folder: sample, judge, pairs, train, eval.")

"""`dno compare --run RUN --model DIR --judge SPEC`: the paper's comparison, SFT vs offline DPO vs DNO.

    dno compare --run runs/cmp --model models/sft --judge oracle:addition --iterations 3 \
        --sample-args "-k 8 --temperature 1.0" --train-args "--beta 2 --learning-rate 6e-4 --batch-size 32"
    dno compare ... --methods dno,offline-dpo,sft          # without rejection-sampling fine-tuning
    dno compare ... --dry-run                              # the commands (budgets as DNO_PAIRS / DNO_STEPS)
    just compare                                           # the demo task (`dno demo --compare`)

Per iteration t, on the same partitions and held-out split (dno_data/compare.py): dno (as `dno
iterate`, RUN/dno/), offline-dpo (pi_1's samples, pairs capped to DNO's count, reference pi_1),
sft (the teacher's answers) and rft (each prompt's best pi_1 sample), the last two for as many
optimizer steps as DNO's iteration t. pi_1 is evaluated once. Writes RUN/compare.parquet (.csv,
.md) with bootstrap 95 % intervals and RUN/compare.png. Finished stages are skipped: a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dno_data.compare import METHODS, CompareSettings, dry_run, markdown, run_comparison, sft_args_from_train, table_rows
from dno_data.errors import DnoError
from dno_data.loop import LoopSettings
from dno_data.run_layout import RunLayout

from .common import say
from .options import TEACHER_SPECS, at_least, build_command, judge_specs, opt, shell_args

EXTRA = "Extra options per stage (one shell-quoted string each)"


def _methods(v: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in (v or "").split(",") if m.strip())


@dataclass(frozen=True)
class CompareConfig:
    run: Path = opt("Run folder (runs/NAME) holding prompts.parquet (from `dno prompts --partitions T`).",
                    flags=("--run",))
    model: Path = opt("The initial policy pi_1 (HF folder), where every method starts.")
    judge: str = opt(f"The preference oracle: {judge_specs()}.")
    teacher: str | None = opt(f"Teacher answers (sft's data; eval's opponent): {TEACHER_SPECS} | none.", "reference",
                              cli_type=str, to_config=lambda v: None if v in ("", "none") else v)
    iterations: int = opt("Iterations per method.", 3, check=at_least(1))
    methods: tuple[str, ...] = opt(f"Comma-separated methods among {','.join(METHODS)} (dno is required: it sets "
                                   "the budgets).", METHODS, cli_type=str, cli_default=",".join(METHODS),
                                   to_config=_methods)
    replay: bool = opt("Replay the pairs of t-1 and t-2 (dno and offline-dpo, each its own).", False)
    resamples: int = opt("Bootstrap resamples of the intervals.", 2000, check=at_least(100))
    sample_args: tuple[str, ...] = opt("dno sample options, e.g. \"-k 5 --temperature 0.7\".", (), cli_type=str,
                                       cli_default="", to_config=shell_args("--sample-args"), panel=EXTRA)
    judge_args: tuple[str, ...] = opt("dno judge options.", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--judge-args"), panel=EXTRA)
    pairs_args: tuple[str, ...] = opt("dno pairs options.", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--pairs-args"), panel=EXTRA)
    train_args: tuple[str, ...] = opt("dno train options (dno and offline-dpo).", (), cli_type=str, cli_default="",
                                      to_config=shell_args("--train-args"), panel=EXTRA)
    sft_args: tuple[str, ...] | None = opt("dno sft options (sft and rft; default: --train-args without --beta, "
                                           "--loss, --reference).", None, cli_type=str,
                                           to_config=lambda v: None if v is None else shell_args("--sft-args")(v),
                                           panel=EXTRA)
    eval_args: tuple[str, ...] = opt("dno eval options.", (), cli_type=str, cli_default="",
                                     to_config=shell_args("--eval-args"), panel=EXTRA)
    table_only: bool = opt("Only rewrite compare.parquet/.csv/.md/.png from what is on disk.", False)
    dry_run: bool = opt("Print the commands; run nothing.", False)


def settings_of(cfg: CompareConfig) -> CompareSettings:
    sft_args = cfg.sft_args if cfg.sft_args is not None else sft_args_from_train(cfg.train_args)
    loop = LoopSettings(run=cfg.run, model=cfg.model, judge=cfg.judge, iterations=cfg.iterations, teacher=cfg.teacher,
                        replay=cfg.replay, sample_args=cfg.sample_args, judge_args=cfg.judge_args,
                        pairs_args=cfg.pairs_args, train_args=cfg.train_args, eval_args=cfg.eval_args,
                        sft_args=sft_args)
    return CompareSettings(loop=loop, methods=cfg.methods, resamples=cfg.resamples)


def run(cfg: CompareConfig) -> Path:
    from dno_data.compare import write_table

    c = settings_of(cfg)
    if cfg.dry_run:
        dry_run(c)
        return cfg.run
    layout = RunLayout(cfg.run)
    if cfg.table_only:
        out = write_table(c)
    else:
        if not layout.prompts.exists():
            raise DnoError(f"{layout.prompts}: no such file; import prompts with "
                           f"`dno prompts SRC -o {layout.prompts} --partitions {cfg.iterations}`")
        if not Path(cfg.model).exists():
            raise DnoError(f"{cfg.model}: no such model folder; pass --model DIR (the initial policy)")
        out = run_comparison(c, say=say)
    say("\n" + markdown(table_rows(c)))
    say(f"table: {out} (.csv, .md); plot: {out.with_suffix('.png')}")
    return out


command = build_command(CompareConfig, run, "Compare SFT, offline DPO and DNO on one run folder, with matched budgets.")

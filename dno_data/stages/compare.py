"""`dno compare --run RUN --model DIR --judge SPEC`: the paper's comparison, SFT vs offline DPO vs DNO.

    dno compare --run runs/cmp --model models/sft --judge oracle:addition --iterations 3 \
        --sample-args "-k 8 --temperature 1.0" --train-args "--beta 2 --learning-rate 6e-4 --batch-size 32"
    dno compare ... --seeds 0,1,2                          # every arm per seed: mean, spread, paired bootstrap
    dno compare ... --tune                                 # each arm's learning rate (and beta) from one grid first
    dno compare ... --methods dno,offline-dpo,sft          # without sft-chosen and rejection-sampling fine-tuning
    dno compare ... --methods dno,offline-dpo,offline-kto  # with offline KTO on offline DPO's pairs
    dno compare ... --dry-run                              # the commands (budgets as DNO_PAIRS / DNO_STEPS)
    just compare                                           # the demo task (`dno demo --compare`)

Per iteration t, on the same partitions and held-out split (dno_data/compare.py): dno (as `dno
iterate`, RUN/dno/), offline-dpo (pi_1's samples, pairs capped to DNO's count, reference pi_1),
sft (the teacher's answers), sft-chosen (the chosen side of DNO's own pairs) and rft (each prompt's
best pi_1 sample when it reaches the pair rule's positive score); offline-kto when asked for (`--loss
kto` on offline-dpo's pairs, reference pi_1). Every arm runs exactly DNO's optimizer steps of iteration
t. pi_1 is evaluated once. Writes RUN/compare.parquet (.csv, .md: mean over seeds, spread, bootstrap
95 % intervals, paired bootstrap against DNO), RUN/compare-seeds.parquet and RUN/compare.png.
Finished stages are skipped: a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..compare import DEFAULT_METHODS, METHODS
from ..config import Config, at_least, comma_list, finite, local_path, opt, seed_list
from ..config.groups import TEACHER_SPECS, judge_specs
from ..config.options import stage_options
from ..errors import DnoError


@dataclass(frozen=True, kw_only=True)
class CompareConfig(Config):
    """Compare SFT, offline DPO and DNO on one run folder, with matched budgets."""

    run: Path = opt("Run folder (runs/NAME) holding prompts.parquet (from `dno prompts --partitions T`); a local "
                    "folder.", flags=("--run",), check=local_path)
    model: Path = opt("The initial policy pi_1 (HF folder), where every method starts.", check=local_path)
    judge: str = opt(f"The preference oracle: {judge_specs()}.")
    teacher: str | None = opt(f"Teacher answers (sft's data; eval's opponent): {TEACHER_SPECS} | none.", "reference",
                              none_word="none")
    iterations: int = opt("Iterations per method.", 3, check=at_least(1))
    methods: tuple[str, ...] = opt(f"Comma-separated methods among {','.join(METHODS)} (dno is required: it sets "
                                   "the budgets; offline-kto: --loss kto on offline-dpo's pairs).", DEFAULT_METHODS,
                                   cli_type=str, normalize=comma_list)
    seeds: tuple[int, ...] | None = opt("Comma-separated seeds (0,1,2): each runs every arm (the seed of sampling, "
                                        "pair subsets and training order; pi_1, prompts and held-out split shared), "
                                        "in RUN/seed-S/METHOD; the table gives mean, spread and paired bootstrap. "
                                        "Default: one run with the stages' own seeds, in RUN/METHOD.", None,
                                        cli_type=str, normalize=seed_list)
    tune: bool = opt("First pick each arm's learning rate (and beta for dno, offline-dpo, offline-kto) from the grid "
                     "x0.5, x1, x2 of the given values on a validation split (prompts of the last partition, none "
                     "held out), at iteration 1 of the first seed; RUN/compare-tuning.md has the grid and picks.",
                     False)
    rft_min_score: float | None = opt("rft's acceptance: the least score of a prompt's best sample (default: the "
                                      "pair rule's positive threshold, --pairs-args --min-positive-score, 5).", None,
                                      check=finite)
    replay: bool = opt("Replay the pairs of t-1 and t-2 (dno and offline-dpo, each its own).", False)
    resamples: int = opt("Bootstrap resamples of the intervals.", 2000, check=at_least(100))
    sample_args: dict = stage_options("sample", '"-k 5 --temperature 0.7"')
    judge_args: dict = stage_options("judge")
    pairs_args: dict = stage_options("pairs")
    train_args: dict = stage_options("train")
    sft_args: dict | None = stage_options("sft", note="(sft and rft; default: --train-args without --beta, --loss, "
                                                      "--reference)", default=None)
    eval_args: dict = stage_options("eval")
    table_only: bool = opt("Only rewrite compare.parquet/.csv/.md/.png from what is on disk.", False)
    dry_run: bool = opt("Print the commands; run nothing.", False)

    def settings(self):
        from ..compare import CompareSettings, sft_options_from_train
        from ..loop import LoopSettings

        sft = self.sft_args if self.sft_args is not None else sft_options_from_train(self.train_args)
        loop = LoopSettings(run=self.run, model=self.model, judge=self.judge, iterations=self.iterations,
                            teacher=self.teacher, replay=self.replay,
                            options={"sample": self.sample_args, "judge": self.judge_args, "pairs": self.pairs_args,
                                     "train": self.train_args, "eval": self.eval_args, "sft": sft})
        return CompareSettings(loop=loop, methods=self.methods, resamples=self.resamples, seeds=self.seeds,
                               rft_min_score=self.rft_min_score, tune=self.tune)

    def validate(self) -> None:
        from ..compare import check

        if not self.table_only:
            check(self.settings())  # every method's stage configs, before anything runs


def run(cfg: CompareConfig) -> Path:
    """Run every method (each stage in its own process), write the table and the plot; return the table's path."""
    from ..compare import dry_run, run_comparison
    from ..compare_table import markdown, table_rows, write_table
    from ..console import say
    from ..run_layout import RunLayout

    c = cfg.settings()
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

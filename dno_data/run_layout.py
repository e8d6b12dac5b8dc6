"""The run folder, defined once. Stages only see paths; the loop (`dno iterate`, `just iterate`,
`dno demo`) and `dno sql`'s views find every artifact of a run here:

  RUN/prompts.parquet              all prompts (`partition` = iteration, `split` = train|eval)
  RUN/iter-NN/samples.parquet      sample  (pi_t's K responses per prompt, + teacher)
  RUN/iter-NN/judgments.parquet    judge
  RUN/iter-NN/pairs.parquet        pairs
  RUN/iter-NN/checkpoint/          train   (pi_{t+1})
  RUN/iter-NN/eval.parquet         eval    (iter-00/eval.parquet: the initial policy)
  RUN/METHOD/iter-NN/...           the same, per method of `dno compare` (dno, offline-dpo, sft, sft-chosen,
                                   rft; RUN/seed-S/METHOD/iter-NN with --seeds);
                                   RUN/prompts.parquet and RUN/iter-00/eval.parquet stay shared
  RUN/compare.parquet (.csv .md .png)  `dno compare`'s table and plot (compare-seeds.parquet: per seed;
                                   compare-tuning.parquet/.md and RUN/tune/: --tune's grid and picks)

RUN may be an object-storage URL (s3://bucket/runs/r1): every path of the layout is then a URL.

Shell recipes ask for a path rather than spelling it:

    python -m dno_data.run_layout runs/demo prompts        # runs/demo/prompts.parquet
    python -m dno_data.run_layout runs/demo checkpoint 2   # runs/demo/iter-02/checkpoint
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .storage import is_url, join

# `dno sql` view -> the file name of that artifact in every iteration folder
ITERATION_ARTIFACTS = {"samples": "samples.parquet", "judgments": "judgments.parquet", "pairs": "pairs.parquet",
                       "evals": "eval.parquet"}
ITERATION_GLOB = "iter-*"
ITERATION_PATTERN = r"iter-([0-9]+)/[^/]*$"  # the iteration number in a file path (DuckDB regexp_extract)


@dataclass(frozen=True)
class RunLayout:
    root: Path  # a folder, or an object-storage URL (s3://bucket/runs/r1): then every path is a URL too
    method: str | None = None  # `dno compare`: the method's iterations live in RUN/METHOD/iter-NN

    def __post_init__(self):
        object.__setattr__(self, "root", self.root if is_url(self.root) else Path(self.root))

    @property
    def prompts(self) -> Path:
        return join(self.root, "prompts.parquet")

    def iteration(self, t: int) -> Path:
        return join(self.root, *([self.method] if self.method else []), f"iter-{t:02d}")

    @property
    def compare_table(self) -> Path:
        return join(self.root, "compare.parquet")

    def samples(self, t: int) -> Path:
        return join(self.iteration(t), ITERATION_ARTIFACTS["samples"])

    def judgments(self, t: int) -> Path:
        return join(self.iteration(t), ITERATION_ARTIFACTS["judgments"])

    def pairs(self, t: int) -> Path:
        return join(self.iteration(t), ITERATION_ARTIFACTS["pairs"])

    def eval(self, t: int) -> Path:
        return join(self.iteration(t), ITERATION_ARTIFACTS["evals"])

    def checkpoint(self, t: int) -> Path:
        return join(self.iteration(t), "checkpoint")

    def policy(self, t: int, initial: Path) -> Path:
        """pi_t: the initial model for t = 1 (and t = 0, the baseline eval), else iteration t-1's checkpoint."""
        return (initial if is_url(initial) else Path(initial)) if t <= 1 else self.checkpoint(t - 1)

    def iteration_files(self, view: str) -> list[Path]:
        """Every iteration's file of one artifact (a `dno sql` view), in iteration order (a local run folder)."""
        return sorted(Path(self.root).glob(f"{ITERATION_GLOB}/{ITERATION_ARTIFACTS[view]}"))


ARTIFACTS = ("prompts", "iteration", "samples", "judgments", "pairs", "eval", "checkpoint")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[1] not in ARTIFACTS or (args[1] != "prompts") != (len(args) == 3):
        print(f"usage: python -m dno_data.run_layout RUN prompts | RUN {{{'|'.join(ARTIFACTS[1:])}}} T",
              file=sys.stderr)
        return 2
    layout = RunLayout(args[0])
    print(layout.prompts if args[1] == "prompts" else getattr(layout, args[1])(int(args[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dno pairs JUDGMENTS SAMPLES -o pairs.parquet`: large-margin chosen/rejected pairs, in DuckDB.

    dno pairs iter-01/judgments.parquet iter-01/samples.parquet -o iter-01/pairs.parquet --rule paper
    dno pairs j.parquet s.parquet -o p.parquet --rule best-worst --min-margin 0.25
    dno pairs j.parquet s.parquet -o p.parquet --sql my_rule.sql      # your own rule over `candidates`
    dno pairs ... --replay iter-02/pairs.parquet --replay iter-01/pairs.parquet  # 30 % of t-1's own pairs, 15 % of t-2's

Each response's win-rate against the policy's own samples comes from dno_data/sql/candidates.sql;
the rule is a .sql file returning (prompt_id, chosen_sample_id, rejected_sample_id[, target,
drop_reason]). Judgments whose status is not ok are left out and counted. A sample that stopped at
the length limit is never chosen (--truncated negative; or drop / keep). DuckDB reads the files
directly under --memory-limit and writes the pairs file itself; the inputs are checked from their
metadata first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.artifacts import make_lineage
from dno_data.cli_utils import check_output_path, one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.pairs import DEFAULT_MEMORY_LIMIT, build_pairs, check_inputs


@dataclass(frozen=True)
class PairsConfig:
    judgments: Path
    samples: Path
    output: Path
    rule: str = "paper"  # paper (every positive, DNO section 5) | paper-best (only the best positive) | best-worst
    sql: Path | None = None  # your own rule (.sql over the `candidates` view); overrides --rule
    min_positive_score: float = 5.0  # paper: the positive scores 5 or 6
    teacher_margin: float = 2.0  # paper: negatives >= 2 points below a teacher positive
    policy_margin: float = 1.0  # paper: >= 1 point below a policy positive
    prefer_positive: str = "policy"  # paper-best: which source wins a tie for the best score
    max_negatives: int | None = None  # paper: negatives per positive (None: all that qualify)
    distinct_negatives: bool = True  # not in the paper: identical rejected texts of a positive make one pair
    min_margin: float = 0.0  # best-worst: win-rate gap to keep a pair
    max_repetition: float = 0.5  # repeated word 3-gram fraction above which a sample is an automatic negative
    truncated: str = "negative"  # a sample cut at the length limit: negative (never chosen) | drop | keep
    replay: tuple[Path, ...] = field(default_factory=tuple)  # earlier pairs files, newest first
    replay_fraction: float = 0.3  # <= 30 % of t-1's own new pairs, 15 % of t-2's, ... (see sql/replay.sql)
    seed: int = 0
    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB's memory limit; it spills to a folder beside the output
    force: bool = False


def run(cfg: PairsConfig) -> Path:
    check_inputs(cfg.samples, cfg.judgments, rule=cfg.rule, sql_file=cfg.sql, truncated=cfg.truncated,
                 replay=cfg.replay)  # from the files' metadata, before any work
    check_output_path(cfg.output, [cfg.judgments, cfg.samples, *cfg.replay])
    if cfg.prefer_positive not in ("policy", "teacher"):
        raise DnoError("--prefer-positive must be policy or teacher")
    inputs = [cfg.judgments, cfg.samples, *cfg.replay, *([cfg.sql] if cfg.sql else [])]
    for p in inputs:
        if not Path(p).exists():
            raise DnoError(f"{p}: no such file")
    lineage = make_lineage("pairs", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    params = {k: getattr(cfg, k) for k in ("min_positive_score", "teacher_margin", "policy_margin",
                                           "prefer_positive", "max_negatives", "distinct_negatives", "min_margin")}
    result = build_pairs(cfg.samples, cfg.judgments, rule=cfg.rule, params=params, sql_file=cfg.sql,
                         max_repetition=cfg.max_repetition, truncated=cfg.truncated, replay=list(cfg.replay),
                         replay_fraction=cfg.replay_fraction, seed=cfg.seed, output=cfg.output, lineage=lineage,
                         memory_limit=cfg.memory_limit)
    counts = {
        "prompts": result.prompts_in, "samples": result.samples_in,
        "failed judgments left out": result.failed_judgments,
        "samples without a valid judgment": result.unjudged_samples,
        "repetitive samples (automatic negatives)": result.repetitive_samples,
        f"truncated samples (--truncated {cfg.truncated})": result.truncated_samples,
        **{f"pairs {k}": v for k, v in sorted(result.by_type.items())},
        **{f"prompts dropped: {k}": v for k, v in sorted(result.dropped.items())},
        **{f"replayed from {k}": v for k, v in result.replayed.items()},
        "pairs written": result.pairs,
    }
    summary(f"pairs ({f'sql:{cfg.sql.name}' if cfg.sql else cfg.rule}) -> {cfg.output}", counts)
    return cfg.output


@one_line_errors
def command(
    judgments: Annotated[Path, typer.Argument(help="judgments.parquet (from `dno judge`).")],
    samples: Annotated[Path, typer.Argument(help="samples.parquet that was judged.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="pairs.parquet to write.")],
    rule: Annotated[str, typer.Option(help="paper (every positive) | paper-best (the best one) | best-worst.")] = "paper",
    sql: Annotated[Optional[Path], typer.Option(help="Your own rule: a .sql file over the `candidates` view.")] = None,
    min_positive_score: Annotated[float, typer.Option(help="paper: lowest score of a positive.")] = 5.0,
    teacher_margin: Annotated[float, typer.Option(help="paper: score gap below a teacher positive.")] = 2.0,
    policy_margin: Annotated[float, typer.Option(help="paper: score gap below a policy positive.")] = 1.0,
    prefer_positive: Annotated[str, typer.Option(help="paper-best: policy|teacher wins a tie for best.")] = "policy",
    max_negatives: Annotated[Optional[int], typer.Option(help="paper: most negatives per positive.")] = None,
    distinct_negatives: Annotated[bool, typer.Option(help="paper: pair identical rejected texts once (not in the paper).")] = True,
    min_margin: Annotated[float, typer.Option(help="best-worst: least win-rate gap.")] = 0.0,
    max_repetition: Annotated[float, typer.Option(help="Repeated 3-gram fraction that makes an automatic negative.")] = 0.5,
    truncated: Annotated[str, typer.Option(help="A sample cut at the length limit (finish_reason length): negative "
                                           "(may be rejected, never chosen) | drop | keep.")] = "negative",
    replay: Annotated[Optional[list[Path]], typer.Option(help="Earlier pairs files to replay, newest first (repeatable).")] = None,
    replay_fraction: Annotated[float, typer.Option(help="Share of t-1's own new pairs to replay (halved per older file).")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the replay selection.")] = 0,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit (e.g. 4GB); beyond it, it spills to disk "
                                              "beside the output.")] = DEFAULT_MEMORY_LIMIT,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
):
    """Build large-margin chosen/rejected pairs from judgments (DuckDB)."""
    run(PairsConfig(judgments, samples, output, rule, sql, min_positive_score, teacher_margin, policy_margin,
                    prefer_positive, max_negatives, distinct_negatives, min_margin, max_repetition, truncated, tuple(replay or ()),
                    replay_fraction, seed, memory_limit, force))

"""`dno pairs JUDGMENTS SAMPLES -o pairs.parquet`: large-margin chosen/rejected pairs, in DuckDB.

    dno pairs iter-01/judgments.parquet iter-01/samples.parquet -o iter-01/pairs.parquet --rule paper
    dno pairs j.parquet s.parquet -o p.parquet --rule best-worst --min-margin 0.25
    dno pairs j.parquet s.parquet -o p.parquet --sql my_rule.sql      # your own rule over `candidates`
    dno pairs ... --replay iter-01/pairs.parquet                     # mix in <=30 % of t-1's pairs

Each response's win-rate against the policy's own samples comes from dno_data/sql/candidates.sql;
the rule is a .sql file returning (prompt_id, chosen_sample_id, rejected_sample_id[, target,
drop_reason]). Judgments whose status is not ok are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dno_data.artifacts import make_lineage, read_artifact, write_artifact
from dno_data.errors import DnoError
from dno_data.pairs import build_pairs

from .common import check_output_path, summary, up_to_date
from .options import FORCE, OUTPUT_FILE, as_tuple, at_least, build_command, finite, in_range, one_of, opt


PAPER = "The paper's rule (--rule paper)"


@dataclass(frozen=True)
class PairsConfig:
    judgments: Path = opt("judgments.parquet (from `dno judge`).", argument=True)
    samples: Path = opt("samples.parquet that was judged.", argument=True)
    output: Path = OUTPUT_FILE.field(help="pairs.parquet to write.")
    rule: str = opt("paper | best-worst.", "paper", check=one_of("paper", "best-worst"))
    sql: Path | None = opt("Your own rule: a .sql file over the `candidates` view (overrides --rule).", None)
    min_positive_score: float = opt("Lowest score of a positive (the paper: 5 or 6).", 5.0, check=finite, panel=PAPER)
    teacher_margin: float = opt("Score gap of a negative below a teacher positive (the paper: 2).", 2.0,
                                check=at_least(0), panel=PAPER)
    policy_margin: float = opt("Score gap of a negative below a policy positive (the paper: 1).", 1.0,
                               check=at_least(0), panel=PAPER)
    prefer_positive: str = opt("policy|teacher: which source wins a tie for the best score.", "policy",
                               check=one_of("policy", "teacher"), panel=PAPER)
    max_negatives: int | None = opt("Most negatives per prompt (default: all that qualify).", None,
                                    check=at_least(1), panel=PAPER)
    distinct_negatives: bool = opt("Identical rejected texts of a prompt make one pair.", True, panel=PAPER)
    min_margin: float = opt("best-worst: least win-rate gap to keep a pair.", 0.0, check=in_range(0, 1))
    max_repetition: float = opt("Repeated word 3-gram fraction above which a sample is an automatic negative.", 0.5,
                                check=in_range(0, 1))
    replay: tuple[Path, ...] = opt("Earlier pairs files to replay, newest first (repeatable).", (),
                                   cli_type=Optional[list[Path]], cli_default=None, to_config=as_tuple)
    replay_fraction: float = opt("Replay share of t-1 (<= 30 % of the new count; halved per older file).", 0.3,
                                 check=in_range(0, 1))
    seed: int = opt("Seed of the replay selection.", 0)
    force: bool = FORCE.field(False)


def run(cfg: PairsConfig) -> Path:
    judgments = read_artifact(cfg.judgments, "judgments")
    samples = read_artifact(cfg.samples, "samples")
    check_output_path(cfg.output, [cfg.judgments, cfg.samples, *cfg.replay])
    if cfg.prefer_positive not in ("policy", "teacher"):
        raise DnoError("--prefer-positive must be policy or teacher")
    if len(judgments) == 0:
        raise DnoError(f"{cfg.judgments}: no judgments; rerun `dno judge`")
    inputs = [cfg.judgments, cfg.samples, *cfg.replay, *([cfg.sql] if cfg.sql else [])]
    for p in inputs:
        if not Path(p).exists():
            raise DnoError(f"{p}: no such file")
    lineage = make_lineage("pairs", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    params = {k: getattr(cfg, k) for k in ("min_positive_score", "teacher_margin", "policy_margin",
                                           "prefer_positive", "max_negatives", "distinct_negatives", "min_margin")}
    result = build_pairs(samples, judgments, rule=cfg.rule, params=params, sql_file=cfg.sql,
                         max_repetition=cfg.max_repetition, replay=list(cfg.replay),
                         replay_fraction=cfg.replay_fraction, seed=cfg.seed)
    write_artifact(result.table, cfg.output, "pairs", lineage)
    counts = {
        "prompts": result.prompts_in, "samples": result.samples_in,
        "failed judgments left out": result.failed_judgments,
        "samples without a valid judgment": result.unjudged_samples,
        "repetitive samples (automatic negatives)": result.repetitive_samples,
        **{f"pairs {k}": v for k, v in sorted(result.by_type.items())},
        **{f"prompts dropped: {k}": v for k, v in sorted(result.dropped.items())},
        **{f"replayed from {k}": v for k, v in result.replayed.items()},
        "pairs written": len(result.table),
    }
    summary(f"pairs ({result.table['rule'][0].as_py() if len(result.table) else cfg.rule}) -> {cfg.output}", counts)
    return cfg.output


command = build_command(PairsConfig, run, "Build large-margin chosen/rejected pairs from judgments (DuckDB).")

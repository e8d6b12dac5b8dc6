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

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dno_data.lineage import make_lineage
from dno_data.errors import DnoError
from dno_data.pairs import DEFAULT_MEMORY_LIMIT, DEFAULT_PARAMS, RULES, TRUNCATED, build_pairs, check_inputs

from .common import check_output_path, summary, up_to_date
from .options import FORCE, OUTPUT_FILE, as_tuple, at_least, build_command, finite, in_range, one_of, opt


PAPER = "The paper's rule (--rule paper)"
P = DEFAULT_PARAMS  # the rules' defaults: declared once, in dno_data.pairs


@dataclass(frozen=True)
class PairsConfig:
    judgments: Path = opt("judgments.parquet (from `dno judge`).", argument=True)
    samples: Path = opt("samples.parquet that was judged.", argument=True)
    output: Path = OUTPUT_FILE.field(help="pairs.parquet to write.")
    rule: str = opt("paper (every positive, DNO section 5) | paper-best (only the best positive) | best-worst.",
                    "paper", check=one_of(*RULES))
    sql: Path | None = opt("Your own rule: a .sql file over the `candidates` view (overrides --rule).", None)
    min_positive_score: float = opt("Lowest score of a positive (the paper: 5 or 6).", P["min_positive_score"], check=finite, panel=PAPER)
    teacher_margin: float = opt("Score gap of a negative below a teacher positive (the paper: 2).", P["teacher_margin"],
                                check=at_least(0), panel=PAPER)
    policy_margin: float = opt("Score gap of a negative below a policy positive (the paper: 1).", P["policy_margin"],
                               check=at_least(0), panel=PAPER)
    prefer_positive: str = opt("paper-best: policy|teacher wins a tie for the best score.", P["prefer_positive"],
                               check=one_of("policy", "teacher"), panel=PAPER)
    max_negatives: int | None = opt("Most negatives per positive (default: all that qualify).", P["max_negatives"],
                                    check=at_least(1), panel=PAPER)
    distinct_negatives: bool = opt("Identical rejected texts of a positive make one pair (not in the paper).", P["distinct_negatives"],
                                   panel=PAPER)
    min_margin: float = opt("best-worst: least win-rate gap to keep a pair.", P["min_margin"], check=in_range(0, 1))
    max_repetition: float = opt("Repeated word 3-gram fraction above which a sample is an automatic negative.", 0.5,
                                check=in_range(0, 1))
    truncated: str = opt("A sample cut at the length limit (finish_reason length): negative (may be rejected, never "
                         "chosen) | drop | keep.", "negative", check=one_of(*TRUNCATED))
    replay: tuple[Path, ...] = opt("Earlier pairs files to replay, newest first (repeatable).", (),
                                   cli_type=Optional[list[Path]], cli_default=None, to_config=as_tuple)
    replay_fraction: float = opt("Share of t-1's own new pairs to replay (halved per older file).", 0.3,
                                 check=in_range(0, 1))
    seed: int = opt("Seed of the replay selection and of the --max-pairs subset.", 0)
    max_pairs: int | None = opt("Keep at most this many new pairs, a seeded random subset (e.g. another method's "
                                "pair count, to match budgets).", None, check=at_least(1))
    memory_limit: str = opt("DuckDB memory limit (e.g. 4GB), or auto: 1.5GB for best-worst (a pair a prompt), 3GB "
                            "for the paper rules and --sql (several pairs a prompt); beyond it, it spills to disk "
                            "beside the output.",
                            DEFAULT_MEMORY_LIMIT, changes_output=False)
    force: bool = FORCE.field(False)


def run(cfg: PairsConfig) -> Path:
    check_inputs(cfg.samples, cfg.judgments, rule=cfg.rule, sql_file=cfg.sql, truncated=cfg.truncated,
                 replay=cfg.replay)  # from the files' metadata, before any work
    check_output_path(cfg.output, [cfg.judgments, cfg.samples, *cfg.replay], kind="pairs")
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
                         memory_limit=cfg.memory_limit, max_pairs=cfg.max_pairs)
    counts = {
        "prompts": result.prompts_in, "samples": result.samples_in,
        "failed judgments left out": result.failed_judgments,
        "samples without a valid judgment": result.unjudged_samples,
        "repetitive samples (automatic negatives)": result.repetitive_samples,
        f"truncated samples (--truncated {cfg.truncated})": result.truncated_samples,
        **{f"pairs {k}": v for k, v in sorted(result.by_type.items())},
        **{f"prompts dropped: {k}": v for k, v in sorted(result.dropped.items())},
        **({"new pairs left out by --max-pairs": result.capped} if cfg.max_pairs is not None else {}),
        **{f"replayed from {k}": v for k, v in result.replayed.items()},
        "pairs written": result.pairs,
    }
    summary(f"pairs ({f'sql:{cfg.sql.name}' if cfg.sql else cfg.rule}) -> {cfg.output}", counts)
    return cfg.output


command = build_command(PairsConfig, run, "Build large-margin chosen/rejected pairs from judgments (DuckDB).")

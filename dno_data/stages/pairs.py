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

from ..config import Config, as_tuple, at_least, group, in_range, one_of, opt, to_options
from ..pair_rules import DEFAULT_MEMORY_LIMIT, RULES, TRUNCATED, RuleParams, rule_help
from .common import FORCE, OUTPUT_FILE


@dataclass(frozen=True, kw_only=True)
class PairsConfig(Config):
    """Build large-margin chosen/rejected pairs from judgments (DuckDB)."""

    judgments: Path = opt("judgments.parquet (from `dno judge`).", argument=True)
    samples: Path = opt("samples.parquet that was judged.", argument=True)
    output: Path = OUTPUT_FILE.field(help="pairs.parquet to write.")
    rule: str = opt(f"The pair rule: {rule_help()}.", "paper", check=one_of(*RULES))
    sql: Path | None = opt("Your own rule: a .sql file over the `candidates` view (overrides --rule).", None)
    params: RuleParams = group(RuleParams)  # each rule file's $parameters, declared in its header
    max_repetition: float = opt("Repeated word 3-gram fraction above which a sample is an automatic negative "
                                "(compared with the ratio each sample carries, measured by `dno sample`).", 0.5,
                                check=in_range(0, 1))
    truncated: str = opt("A sample cut at the length limit (finish_reason length): negative (may be rejected, never "
                         "chosen) | drop | keep.", "negative", check=one_of(*TRUNCATED))
    replay: tuple[Path, ...] = opt("Earlier pairs files to replay, newest first (repeatable).", (),
                                   normalize=as_tuple)
    replay_fraction: float = opt("Share of t-1's own new pairs to replay (halved per older file).", 0.3,
                                 check=in_range(0, 1))
    seed: int = opt("Seed of the replay selection and of the --max-pairs subset.", 0)
    max_pairs: int | None = opt("Keep at most this many new pairs, a seeded random subset (e.g. another method's "
                                "pair count, to match budgets).", None, check=at_least(1))
    memory_limit: str = opt("DuckDB memory limit (e.g. 4GB), or auto: 1GB for best-worst, 1.5GB for the paper rules "
                            "and --sql; beyond it, it spills to disk beside the output; running out of it is one "
                            "error line that says to raise it.", DEFAULT_MEMORY_LIMIT, changes_output=False)
    force: bool = FORCE.field(False)


def run(cfg: PairsConfig) -> Path:
    """Write cfg.output and return its path (DuckDB writes the file; the inputs are checked first)."""
    from ..console import summary, up_to_date
    from ..errors import DnoError
    from ..lineage import make_lineage
    from ..pairs import build_pairs, check_inputs
    from ..paths import check_output

    check_inputs(cfg.samples, cfg.judgments, rule=cfg.rule, sql_file=cfg.sql, truncated=cfg.truncated,
                 replay=cfg.replay)  # from the files' metadata, before any work
    check_output(cfg.output, [cfg.judgments, cfg.samples, *cfg.replay], kind="pairs")
    inputs = [cfg.judgments, cfg.samples, *cfg.replay, *([cfg.sql] if cfg.sql else [])]
    for p in inputs:
        if not Path(p).exists():
            raise DnoError(f"{p}: no such file")
    lineage = make_lineage("pairs", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    result = build_pairs(cfg.samples, cfg.judgments, rule=cfg.rule, params=to_options(cfg.params), sql_file=cfg.sql,
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


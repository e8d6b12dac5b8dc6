"""What `dno pairs` can refuse before any work, from the inputs' metadata: the rule, --truncated,
the schemas of the samples, judgments and replayed pairs files, score judgments for the paper rules."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import pair_rules
from .artifacts import check_artifact_file
from .duckdb_sql import read_user_sql
from .errors import DnoError
from .pair_rules import RULES, TRUNCATED  # noqa: F401  (the rules: declared in their .sql files' headers)

Source = Path | str | pa.Table  # a Parquet file, or a table already in memory


def sql_literal(value) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _may_hold(path: Path, column: str, value: str) -> bool:
    """Whether a Parquet file may have a row with column == value, from its row-group statistics."""
    pf = pq.ParquetFile(path)
    leaves = pf.metadata.schema  # the column chunks are by leaf (a nested column has several), not by field
    idx = next(i for i in range(len(leaves)) if leaves.column(i).path == column)
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max or st.min <= value <= st.max:
            return True
    return False


def _has_score_judgments(judgments: Source) -> bool:
    if isinstance(judgments, pa.Table):
        return bool(pc.any(pc.equal(judgments["kind"], "score")).as_py())
    if not _may_hold(Path(judgments), "kind", "score"):
        return False
    import duckdb

    q = f"SELECT 1 FROM read_parquet({sql_literal(judgments)}) WHERE kind = 'score' LIMIT 1"
    return bool(duckdb.connect().sql(q).fetchall())


def _rows(src: Source, schema_name: str) -> int:
    if isinstance(src, pa.Table):
        return len(src)
    return check_artifact_file(src, schema_name)


def rule_sql(rule: str, sql_file) -> tuple[str, str, dict]:
    """The rule's SQL text, its name in the pairs file (a shipped rule, or sql:FILE) and the flags the rule sets
    (paper-best: $best_only; dno_data.pair_rules)."""
    if sql_file is not None:
        return read_user_sql(sql_file), f"sql:{Path(sql_file).name}", {}
    sql, flags = pair_rules.rule_sql(rule)
    return sql, rule, flags


def check_inputs(samples: Source, judgments: Source, *, rule: str = "paper", sql_file=None,
                 truncated: str = "negative", replay=()) -> None:
    """Everything that can be refused before any work, from the files' metadata."""
    if truncated not in TRUNCATED:
        raise DnoError(f"--truncated {truncated!r}: choose one of {', '.join(TRUNCATED)}")
    n_judgments = _rows(judgments, "judgments")
    _rows(samples, "samples")
    for f in replay:
        check_artifact_file(f, "pairs")
    rule_sql(rule, sql_file)
    if n_judgments == 0:
        where = judgments if not isinstance(judgments, pa.Table) else "the judgments"
        raise DnoError(f"{where}: no judgments; rerun `dno judge`")
    if sql_file is None and rule.startswith("paper") and not _has_score_judgments(judgments):
        raise DnoError(f"--rule {rule} needs score judgments (these are pairwise); use --rule best-worst")

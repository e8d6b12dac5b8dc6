"""Versioned Parquet: schema-checked reads, key checks, atomic writes (output checks: dno_data.paths).

Every artifact file carries key-value metadata:
  dno.schema          e.g. "samples"
  dno.schema_version  e.g. "1"
  dno.lineage         JSON: see dno_data.lineage
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import schemas

from .atomic import atomic_path
from .errors import DnoError, first_line
from .paths import check_input, write_output

# ---------------------------------------------------------------- writes

# Row groups of about this many bytes (uncompressed). A reader holds a row group's column chunk to decode it
# (DuckDB: one a thread, under its memory limit); pyarrow's default of 1Mi rows a group made a samples file of
# 1.2M chat-length answers (1.5k characters) one row group of 1.8 GB, whose text column alone took DuckDB
# 800 MB to read.
ROW_GROUP_BYTES = 32 * 2**20
MAX_GROUP_ROWS = 1024 * 1024  # pyarrow's default


def rows_per_group(row_bytes: float) -> int:
    """Rows a row group for rows of about `row_bytes` bytes: ROW_GROUP_BYTES' worth, a multiple of 1,024
    (so a small difference in the estimate seldom changes it), from 1,024 to MAX_GROUP_ROWS.

    >>> rows_per_group(1700), rows_per_group(100), rows_per_group(10**9)
    (19456, 334848, 1024)
    """
    rows = int(ROW_GROUP_BYTES // max(1.0, float(row_bytes))) // 1024 * 1024
    return min(MAX_GROUP_ROWS, max(1024, rows))


def to_table(rows: list[dict] | pa.Table, schema_name: str) -> pa.Table:
    schema = schemas.get(schema_name).schema
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(rows, schema=schema)


def write_artifact(rows: list[dict] | pa.Table, path: Path | str, schema_name: str, lineage: Mapping | None,
                   durable: bool = True) -> Path:
    """Write `rows` with the explicit schema of `schema_name`, atomically (dno_data.atomic).

    An existing file at `path` is replaced only when it is an artifact of the same schema
    (dno_data.paths, checked again right before the rename). durable=False skips the fsyncs
    (still atomic by rename): for resumable parts, whose loss in a power cut costs only
    recomputation (judge answers stay in the cache).
    """
    path = Path(path)
    spec = schemas.get(schema_name)
    table = to_table(rows, schema_name)
    meta = {
        b"dno.schema": spec.name.encode(),
        b"dno.schema_version": str(spec.version).encode(),
    }
    if lineage is not None:
        meta[b"dno.lineage"] = json.dumps(lineage, sort_keys=True).encode()
        digest = key_digest(table, schema_name)  # the keys checked unique once, here; readers compare the digest
        if digest is not None:
            meta[KEY_DIGEST] = digest.encode()
    table = table.replace_schema_metadata(meta)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            group_rows = rows_per_group(table.nbytes / max(1, len(table)))
            pq.write_table(table, f, compression="zstd", row_group_size=group_rows)

    try:
        write_output(path, schema_name, write, durable=durable)
    except OSError as e:  # a full disk, an unwritable folder, a file where a folder should be
        raise DnoError(f"{path}: cannot write it ({first_line(e)})") from None
    return path


def write_json_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


# ---------------------------------------------------------------- checked reads

# The key of each artifact: one row per value, never null. Joins between stages use these.
KEYS = {"prompts": ("prompt_id",), "samples": ("sample_id",), "judgments": ("judgment_id",),
        "pairs": ("pair_id",), "eval": ("prompt_id", "turn")}

def _open_check(path: Path, spec) -> None:
    if not path.exists():
        raise DnoError(f"{path}: no such file; make it with `{spec.made_by}`")
    if path.is_dir():
        raise DnoError(f"{path}: is a folder, expected a {spec.name} Parquet file (made by `{spec.made_by}`)")
    check_input(path, f"{spec.name} file")


def _check_schema(path: Path, spec, schema: pa.Schema) -> None:
    """The file's dno.schema name, version, columns and their types are the artifact's."""
    meta = schema.metadata or {}
    found = (meta.get(b"dno.schema") or b"").decode()
    if found != spec.name:
        what = f"a '{found}' file" if found else "not a dno artifact (no dno.schema metadata)"
        raise DnoError(f"{path}: {what}, expected '{spec.name}'; make it with `{spec.made_by}`")
    version = (meta.get(b"dno.schema_version") or b"").decode()
    if version.isdigit() and int(version) > spec.version:
        raise DnoError(f"{path}: {spec.name} schema version {version}, newer than this dno knows ({spec.version}); "
                       f"upgrade dno, or remake it with `{spec.made_by}`")
    if version != str(spec.version):
        raise DnoError(
            f"{path}: {spec.name} schema version {version or '?'}, this dno reads version {spec.version}; "
            f"remake it with `{spec.made_by}`"
        )
    missing = [n for n in spec.schema.names if n not in schema.names]
    if missing:
        raise DnoError(f"{path}: missing column(s) {', '.join(missing)}; remake it with `{spec.made_by}`")
    for field in spec.schema:
        have = schema.field(field.name).type
        if not have.equals(field.type):
            raise DnoError(
                f"{path}: column '{field.name}' is {have}, expected {field.type}; remake it with `{spec.made_by}`"
            )


def read_artifact(path: Path | str, schema_name: str) -> pa.Table:
    """Read an artifact and check its name, version and columns; DnoError on any mismatch."""
    path = Path(path)
    spec = schemas.get(schema_name)
    _open_check(path, spec)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DnoError(f"{path}: not a readable Parquet file ({first_line(e)}); make it with `{spec.made_by}`") from None
    _check_schema(path, spec, table.schema)
    table = table.select(spec.schema.names).replace_schema_metadata(table.schema.metadata or {})
    _check_rows(table, path, spec)
    return table


def check_artifact_file(path: Path | str, schema_name: str) -> int:
    """read_artifact's file and schema checks from the Parquet footer alone, without reading any data
    (no row checks); the file's row count."""
    path = Path(path)
    spec = schemas.get(schema_name)
    _open_check(path, spec)
    try:
        meta = pq.ParquetFile(path).metadata
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DnoError(f"{path}: not a readable Parquet file ({first_line(e)}); make it with `{spec.made_by}`") from None
    _check_schema(path, spec, schema)
    _check_footer_nulls(path, spec, meta)
    return meta.num_rows


def _check_footer_nulls(path: Path, spec, meta) -> None:
    """Required flat columns hold no nulls, from the Parquet footer alone: a column the file declares
    required cannot hold one; else its row groups' statistics count them (no data is read)."""
    leaves = meta.schema
    index = {leaves.column(i).path: i for i in range(len(leaves))}
    for field in spec.schema:
        i = index.get(field.name)
        if field.nullable or i is None or leaves.column(i).max_definition_level == 0:
            continue
        nulls = 0
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(i).statistics
            if st is not None and st.has_null_count:
                nulls += st.null_count
        if nulls:
            _null_error(path, spec, field.name, nulls)


# What each row of an artifact must hold beyond its key and its required columns: (column, SQL that is true
# for a good row, what the value must be). Every reader checks these (check_rows), whichever stage reads.
ROW_RULES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "prompts": (
        ("messages", "len(messages) > 0 AND messages[-1].role = 'user' AND list_bool_and(list_transform(messages, "
                     "lambda m: m.role IN ('system', 'user', 'assistant') AND m.content IS NOT NULL))",
         "system/user/assistant messages ending with a user turn"),
        ("split", "split IN ('train', 'eval')", "train or eval"),
        ("partition", "partition IS NULL OR partition >= 1", "an iteration, 1 or more"),
    ),
    "samples": (
        ("source", "source IN ('policy', 'teacher')", "policy or teacher"),
        ("sample_index", "sample_index >= 0", "0 or more"),
        ("repetition", "repetition IS NULL OR (isfinite(repetition) AND repetition BETWEEN 0 AND 1)",
         "a fraction in [0, 1]"),
    ),
    "judgments": (
        ("kind", "kind IN ('score', 'pair')", "score or pair"),
        ("status", "status IN ('ok', 'error', 'unparseable', 'refused')", "ok, error, unparseable or refused"),
        ("score", "score IS NULL OR isfinite(score)", "a finite number"),
        ("prob_a_wins", "prob_a_wins IS NULL OR (isfinite(prob_a_wins) AND prob_a_wins BETWEEN 0 AND 1)",
         "a probability in [0, 1]"),
    ),
    "pairs": (
        ("chosen_sample_id", "chosen_sample_id <> rejected_sample_id", "another sample than rejected_sample_id"),
        ("target", "isfinite(target) AND target BETWEEN 0 AND 1",
         "a probability in [0, 1] (that chosen beats rejected)"),
        ("margin", "margin IS NULL OR isfinite(margin)", "a finite number"),
        ("chosen_score", "chosen_score IS NULL OR isfinite(chosen_score)", "a finite number"),
        ("rejected_score", "rejected_score IS NULL OR isfinite(rejected_score)", "a finite number"),
    ),
    "eval": (
        ("turn", "turn >= 1", "a turn, 1 or more"),
        ("win", "win IS NULL OR (isfinite(win) AND win BETWEEN 0 AND 1)", "1, 0.5 or 0"),
        ("policy_score", "policy_score IS NULL OR isfinite(policy_score)", "a finite number"),
        ("teacher_score", "teacher_score IS NULL OR isfinite(teacher_score)", "a finite number"),
    ),
}


def _check_rows(table: pa.Table, path: Path, spec) -> None:
    """Required columns hold no nulls; the key is unique; every row rule holds (check_rows)."""
    for field in spec.schema:
        if not field.nullable:
            nulls = table[field.name].null_count
            if nulls:
                _null_error(path, spec, field.name, nulls)
    check_rows(table, path, spec.name, digest=(table.schema.metadata or {}).get(KEY_DIGEST))


# `dno.key_digest`: "ROWS:SUM" of DuckDB's 64-bit hash of each key, written with a file whose keys the writer
# found unique. A reader that finds the same count and sum has the same keys (a changed, added or doubled key
# changes the sum), so it knows them unique from one plain scan, without grouping millions of keys (at
# 1M prompts x 6 that grouping took as long as `dno pairs` itself); any other file gets the full check.
KEY_DIGEST = b"dno.key_digest"


def key_digest_of(source) -> bytes | None:
    """The key digest a file (or a table) carries, from its footer alone; None when it has none."""
    try:
        meta = source.schema.metadata if isinstance(source, pa.Table) else pq.read_schema(source).metadata
    except (OSError, pa.ArrowException):
        return None
    return (meta or {}).get(KEY_DIGEST)


def key_digest(table: pa.Table, schema_name: str) -> str | None:
    """The digest of a table's single-column key when the key is unique and never null; None otherwise (and
    for an artifact whose key has several columns)."""
    import duckdb

    key = KEYS.get(schema_name, ())
    if len(key) != 1 or key[0] not in table.column_names:
        return None
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        con.register("keys", table.select(list(key)))
        col = _quote(key[0])
        rows, total, distinct = con.sql(f"SELECT count(*), coalesce(sum(hash({col})), 0), count(DISTINCT {col}) "
                                        "FROM keys").fetchall()[0]
    finally:
        con.close()
    if distinct != rows:  # a doubled or null key: no digest, so every reader makes the full check and refuses it
        return None
    return f"{rows}:{total}"


def _null_error(path, spec, column: str, nulls: int):
    raise DnoError(f"{path}: column '{column}' has {nulls} null value(s) where a value is required; "
                   f"remake it with `{spec.made_by}`")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_rows(source, path: Path | str, schema_name: str, con=None, relation: str | None = None,
               digest: bytes | None = None) -> None:
    """The one check every reader makes of an artifact's rows, in one DuckDB pass over the columns it needs:
    the key is unique and never null, and each rule of ROW_RULES holds (finite numbers, ranges, known words).

    `source` is a pyarrow Table, or (with `con` and `relation`) a view of an open DuckDB connection over
    the file (`dno pairs` checks its inputs in its own connection). DnoError naming the file, the column,
    how many rows and one example."""
    spec = schemas.get(schema_name)
    key = KEYS.get(schema_name, ())
    rules = ROW_RULES.get(schema_name, ())
    if con is None:
        import duckdb

        if len(source) == 0:
            return
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.register("checked_rows", source.select(sorted({*key, *(c for c, _, _ in rules), "rejected_sample_id"}
                                                          & set(source.column_names))))
        relation, own = "checked_rows", True
    else:
        own = False
    try:
        parts = []
        by_digest = digest is not None and len(key) == 1
        if key:
            cols = ", ".join(_quote(k) for k in key)
            keyed = f"({cols})" if len(key) > 1 else cols
            parts.append(f"count(*) || ':' || coalesce(sum(hash({cols})), 0)" if by_digest
                         else f"count(*) - count(DISTINCT {keyed})")
            parts.append(" + ".join(f"count(*) FILTER (WHERE {_quote(k)} IS NULL)" for k in key))
        parts += [f"count(*) FILTER (WHERE NOT coalesce({sql}, false))" for _, sql, _ in rules]
        counts = con.sql(f"SELECT {', '.join(parts)} FROM {relation}").fetchall()[0]
        if key:
            repeated, nulls = counts[0], counts[1]
            if by_digest:  # the keys the writer found unique, or the full check
                repeated = 0 if repeated == digest.decode(errors="replace") else con.sql(
                    f"SELECT count(*) - count(DISTINCT {cols}) FROM {relation}").fetchall()[0][0]
            if nulls:
                _null_error(path, spec, "/".join(key), nulls)
            if repeated:
                cols = ", ".join(_quote(k) for k in key)
                example = con.sql(f"SELECT {cols} FROM {relation} GROUP BY ALL HAVING count(*) > 1 LIMIT 1").fetchall()
                example = ", ".join(str(v) for v in example[0]) if example else "?"
                raise DnoError(f"{path}: {repeated} {'/'.join(key)} value(s) appear more than once (e.g. {example}); "
                               f"each row needs its own key: remake it with `{spec.made_by}`")
            counts = counts[2:]
        for (column, sql, must), bad in zip(rules, counts):
            if bad:
                example = con.sql(f"SELECT {_quote(column)} FROM {relation} WHERE NOT coalesce({sql}, false) "
                                  "LIMIT 1").fetchall()
                value = repr(example[0][0]) if example else "?"
                value = value if len(value) <= 120 else value[:117] + "..."
                raise DnoError(f"{path}: column '{column}' has {bad} row(s) that are not {must} (e.g. {value}); "
                               f"remake it with `{spec.made_by}`")
    finally:
        if own:
            con.close()

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
    return meta.num_rows


def _check_rows(table: pa.Table, path: Path, spec) -> None:
    """Required columns hold no nulls; the key is unique."""
    import pyarrow.compute as pc

    for field in spec.schema:
        if not field.nullable:
            nulls = table[field.name].null_count
            if nulls:
                raise DnoError(f"{path}: column '{field.name}' has {nulls} null value(s) where a value is required; "
                               f"remake it with `{spec.made_by}`")
    key = KEYS.get(spec.name)
    if key and len(table):
        counts = table.group_by(list(key)).aggregate([([], "count_all")])
        repeated = counts.filter(pc.greater(counts["count_all"], 1))
        if len(repeated):
            example = ", ".join(str(repeated[k][0].as_py()) for k in key)
            raise DnoError(f"{path}: {len(repeated)} {'/'.join(key)} value(s) appear more than once (e.g. {example}); "
                           f"each row needs its own key: remake it with `{spec.made_by}`")


"""Versioned Parquet: schema-checked reads, atomic writes stamped with lineage, resumable parts.

Every artifact file carries key-value metadata:
  dno.schema          e.g. "samples"
  dno.schema_version  e.g. "1"
  dno.lineage         JSON: stage, inputs (path + sha256), resolved config (secrets removed),
                      package version, created_at
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import schemas

from . import __version__
from .errors import DnoError
from .ids import file_sha256, stable_hash

# A whole key, or its last _/-/. separated segment(s): "api_key", "hf_token", "openai_api_key", but not
# "max_new_tokens" or "tokenizer".
SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:api[_-]?key|token|secret(?:[_-]?key)?|password|authorization|auth[_-]?header)$", re.I
)


# ---------------------------------------------------------------- lineage and config

def redact(obj: Any) -> Any:
    """Drop every mapping key that looks like a secret, recursively.

    >>> redact({"model": "m", "api_key": "sk-1", "nested": {"auth_header": "x", "n": 1}})
    {'model': 'm', 'nested': {'n': 1}}
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): redact(v) for k, v in obj.items() if not SECRET_KEY.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def describe_inputs(paths: Iterable[Path | str]) -> list[dict]:
    """Path and content hash of each input (a file, or a model folder's files)."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DnoError(f"{p}: no such file or folder")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            digest = stable_hash([(str(f.relative_to(p)), file_sha256(f)) for f in files], length=64)
        else:
            digest = file_sha256(p)
        out.append({"path": str(p), "sha256": digest})
    return out


# Field metadata key of a config dataclass: False marks a setting of how a stage runs, not of
# what it produces (output path, concurrency, cache path...). stages/options.py declares it on
# each option; such settings are recorded in the lineage but left out of its fingerprint, so a
# rerun with more concurrency or another cache path still resumes and counts as up to date.
CHANGES_OUTPUT = "changes_output"


def operational_keys(config: Any) -> list[str]:
    """The config's fields declared with changes_output=False (none for a plain mapping)."""
    if is_dataclass(config) and not isinstance(config, type):
        return sorted(f.name for f in fields(config) if f.metadata.get(CHANGES_OUTPUT, True) is False)
    return []


def make_lineage(stage: str, inputs: Iterable[Path | str], config: Any, **extra: Any) -> dict:
    """Provenance of an output; `extra` adds derived settings to the config (e.g. judge_id)."""
    return {
        "stage": stage,
        "inputs": describe_inputs(inputs),
        "config": {**redact(config), **redact(extra)},
        "operational": operational_keys(config),
        "package_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def outcome_config(lineage: Mapping) -> dict:
    """The settings of a lineage that change the output (its config less the operational keys)."""
    skip = set(lineage.get("operational") or ())
    return {k: v for k, v in dict(lineage.get("config") or {}).items() if k not in skip}


def lineage_fingerprint(lineage: Mapping) -> str:
    """What makes two runs of a stage equivalent: stage, input contents and the settings that change
    the output. Operational settings (the output path among them) are left out, so a moved file
    still counts as up to date.
    """
    config = outcome_config(lineage)
    inputs = [i["sha256"] for i in lineage.get("inputs", [])]
    return stable_hash(lineage.get("stage"), inputs, config, length=64)


def read_lineage(path: Path | str) -> dict | None:
    """The lineage of an artifact file (or checkpoint folder), or None when there is none."""
    path = Path(path)
    try:
        if path.is_dir():
            manifest = path / "dno-manifest.json"
            return json.loads(manifest.read_text())["lineage"] if manifest.exists() else None
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(b"dno.lineage")
        return json.loads(raw) if raw else None
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None


def is_up_to_date(output: Path | str, lineage: Mapping) -> bool:
    """True when `output` exists and was made by the same stage from the same inputs and config."""
    old = read_lineage(output)
    return old is not None and lineage_fingerprint(old) == lineage_fingerprint(lineage)


# ---------------------------------------------------------------- atomic writes

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def to_table(rows: list[dict] | pa.Table, schema_name: str) -> pa.Table:
    schema = schemas.get(schema_name).schema
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(rows, schema=schema)


def write_artifact(rows: list[dict] | pa.Table, path: Path | str, schema_name: str, lineage: Mapping | None,
                   durable: bool = True) -> Path:
    """Write `rows` with the explicit schema of `schema_name`, atomically (tmp + fsync + rename).

    durable=False skips the fsyncs (still atomic by rename): for resumable parts, whose loss
    in a power cut costs only recomputation (judge answers stay in the cache).
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if durable:
        _fsync_dir(path.parent)
    return path


def write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- checked reads

def read_artifact(path: Path | str, schema_name: str) -> pa.Table:
    """Read an artifact and check its name, version and columns; DnoError on any mismatch."""
    path = Path(path)
    spec = schemas.get(schema_name)
    if not path.exists():
        raise DnoError(f"{path}: no such file; make it with `{spec.made_by}`")
    if path.is_dir():
        raise DnoError(f"{path}: is a folder, expected a {spec.name} Parquet file (made by `{spec.made_by}`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DnoError(f"{path}: not a readable Parquet file ({_first_line(e)}); make it with `{spec.made_by}`") from None
    meta = table.schema.metadata or {}
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
    missing = [n for n in spec.schema.names if n not in table.column_names]
    if missing:
        raise DnoError(f"{path}: missing column(s) {', '.join(missing)}; remake it with `{spec.made_by}`")
    for field in spec.schema:
        have = table.schema.field(field.name).type
        if not have.equals(field.type):
            raise DnoError(
                f"{path}: column '{field.name}' is {have}, expected {field.type}; remake it with `{spec.made_by}`"
            )
    return table.select(spec.schema.names).replace_schema_metadata(meta)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- resumable parts

def claim_work_dir(folder: Path, lineage: Mapping, fresh: bool) -> None:
    """Create (or reuse) a folder of unfinished work that belongs to this stage's inputs and config.

    Work from a run with other inputs or settings is never mixed in: it is an error unless
    `fresh`, which discards it.
    """
    fingerprint = lineage_fingerprint(lineage)
    marker = folder / "fingerprint.json"
    if folder.exists():
        old = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
        if old != fingerprint:
            if not fresh:
                raise DnoError(
                    f"{folder}: unfinished work from a run with other inputs or settings; "
                    "rerun that command to resume it, or pass --fresh to discard it"
                )
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"fingerprint": fingerprint}, marker)


class Parts:
    """Progress of an expensive stage, written as finished units so a rerun resumes.

    Units are numbered by the caller (a fixed batching of the input), so a rerun skips
    exactly the units whose part file exists. The folder `<output>.parts/` holds a
    `fingerprint.json`; parts from a run with other inputs or settings are never mixed in.
    """

    def __init__(self, output: Path, lineage: Mapping, schema_name: str, fresh: bool = False):
        self.output = Path(output)
        self.schema_name = schema_name
        self.dir = self.output.with_name(self.output.name + ".parts")
        claim_work_dir(self.dir, lineage, fresh)

    def _path(self, unit: int) -> Path:
        return self.dir / f"part-{unit:06d}.parquet"

    def done(self, unit: int) -> bool:
        return self._path(unit).exists()

    def count_done(self) -> int:
        return len(list(self.dir.glob("part-*.parquet")))

    def split(self, items: list, per_unit: int) -> tuple[list[list], list[int]]:
        """The items in fixed units of `per_unit` (unit k is part k), and the units not written yet.

        The units depend only on the items and `per_unit` (both in the fingerprint), so a rerun
        numbers them the same way and skips exactly the finished ones.
        """
        units = [items[i:i + per_unit] for i in range(0, len(items), per_unit)]
        return units, [u for u in range(len(units)) if not self.done(u)]

    def write(self, unit: int, rows: list[dict] | pa.Table) -> None:
        write_artifact(rows, self._path(unit), self.schema_name, lineage=None, durable=False)

    def finish(self, lineage: Mapping) -> pa.Table:
        """Concatenate all parts in unit order into the output file; remove the parts."""
        files = sorted(self.dir.glob("part-*.parquet"))
        schema = schemas.get(self.schema_name).schema
        tables = [pq.read_table(f).select(schema.names).cast(schema) for f in files]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        write_artifact(table, self.output, self.schema_name, lineage)
        shutil.rmtree(self.dir)
        return table

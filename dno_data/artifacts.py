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
from . import output_lock
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
    """Path and hash of each input (a file, or a model folder's files).

    `sha256` hashes the bytes. For an artifact (a dno Parquet file or a checkpoint folder),
    `content_sha256` hashes what it holds and how it was made, without its write time: the
    rows, the schema and the lineage's fingerprint (no created_at). Up-to-date checks use it, so an
    output rewritten unchanged (e.g. `dno pairs --force`) does not make later stages redo work.
    """
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
        entry = {"path": str(p), "sha256": digest}
        content = content_sha256(p)
        if content is not None:
            entry["content_sha256"] = content
        out.append(entry)
    return out


def _settings(lineage: Any) -> str | None:
    """What two equivalent writes share of their lineage: stage, input contents, settings (no write time)."""
    return lineage_fingerprint(lineage) if isinstance(lineage, Mapping) else None


def content_sha256(path: Path | str) -> str | None:
    """Hash of an artifact's content and the settings that made it, not its write time; None for others.

    A Parquet file: its bytes before the footer (the column data, which the key-value metadata
    never enters), its schema, its other metadata and the fingerprint of its lineage (stage,
    input contents, settings that change the output: no created_at, no --force). A checkpoint
    folder: its files but the manifest, and the fingerprint of the manifest's lineage.
    """
    path = Path(path)
    if path.is_dir():
        manifest = path / "dno-manifest.json"
        try:
            lineage = json.loads(manifest.read_text())["lineage"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".") and f != manifest)
        return stable_hash("checkpoint", [(str(f.relative_to(path)), file_sha256(f)) for f in files],
                           _settings(lineage), length=64)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return None
    meta = schema.metadata or {}
    if b"dno.schema" not in meta:
        return None
    try:
        lineage = json.loads(meta[b"dno.lineage"]) if b"dno.lineage" in meta else None
    except ValueError:
        return None
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size < 12:
            return None
        f.seek(size - 8)
        tail = f.read(8)
        if tail[4:] != b"PAR1":
            return None
        left = size - 8 - int.from_bytes(tail[:4], "little")
        f.seek(0)
        while left > 0 and (block := f.read(min(left, 1 << 20))):
            h.update(block)
            left -= len(block)
    others = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items()
              if k not in (b"dno.lineage", b"ARROW:schema")}
    return stable_hash("artifact", h.hexdigest(), schema.remove_metadata().to_string(), others, _settings(lineage),
                       length=64)


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
    still counts as up to date; an input's content hash (see describe_inputs) counts rather than
    its bytes when it has one.
    """
    config = outcome_config(lineage)
    inputs = [i.get("content_sha256") or i["sha256"] for i in lineage.get("inputs", [])]
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


# ---------------------------------------------------------------- where a stage may write

def is_artifact(path: Path | str) -> bool:
    """True for a file with dno metadata or a folder with a dno manifest (something a stage wrote)."""
    path = Path(path)
    if path.is_dir():
        return (path / "dno-manifest.json").is_file()
    try:
        return b"dno.schema" in (pq.read_schema(path).metadata or {})
    except (OSError, pa.ArrowException):
        return False


def check_output(output: Path | str, inputs: Iterable[Path | str] = (), *, folder_of: str | None = None) -> None:
    """Refuse, before any work, an output path that would destroy something the stage did not write.

    -o equal to an input, or a folder holding an input, is refused. With `folder_of=STAGE` the
    output is a folder (a checkpoint): an existing one may be replaced only when that stage
    wrote it (its manifest says so). Otherwise the output is a file and must not be a folder.
    """
    output = Path(output)
    target = output.resolve()
    for i in inputs:
        i = Path(i).resolve()
        if i == target or target in i.parents:
            raise DnoError(f"{output}: the output would overwrite the input {i}; choose another -o")
    if folder_of is not None:
        if output.exists() and not output.is_dir():
            raise DnoError(f"{output}: is a file, not a checkpoint folder; choose another -o")
        if output.is_dir():
            stage = (read_lineage(output) or {}).get("stage")
            if stage != folder_of:
                raise DnoError(f"{output}: exists and is not a checkpoint written by `dno {folder_of}`; dno will not "
                               "replace it: choose another -o (or move the folder away)")
    elif output.is_dir():
        raise DnoError(f"{output}: is a folder; -o takes a file path")


def check_result_output(output: Path | str) -> None:
    """Where `dno sql` may write a result: not onto an artifact or a folder (a missing parent folder is made)."""
    output = Path(output)
    if output.is_dir():
        raise DnoError(f"{output}: is a folder; -o takes a file path")
    if output.exists() and is_artifact(output):
        raise DnoError(f"{output}: is a dno artifact; a query result never replaces one: choose another -o")
    for parent in output.parents:
        if parent.exists() and not parent.is_dir():
            raise DnoError(f"{output}: {parent} is a file, not a folder; choose another -o")


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, an unwritable folder, a file where a folder should be
        raise DnoError(f"{path}: cannot write it ({_first_line(e)})") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
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

# The key of each artifact: one row per value, never null. Joins between stages use these.
KEYS = {"prompts": ("prompt_id",), "samples": ("sample_id",), "judgments": ("judgment_id",),
        "pairs": ("pair_id",), "eval": ("prompt_id",)}

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
    table = table.select(spec.schema.names).replace_schema_metadata(meta)
    _check_rows(table, path, spec)
    return table


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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- resumable parts

WORK_SUFFIXES = (".parts", ".partial")


def claim_work_dir(folder: Path, lineage: Mapping, fresh: bool, output: Path | None = None) -> None:
    """Create (or reuse) a folder of unfinished work that belongs to this stage's inputs and config.

    First takes the lock of the output (`output`, or the folder's name without `.parts` /
    `.partial`): while another process writes the same output this is an error, and the lock
    is held until the output is written (`release_output`) or the process ends.
    Work from a run with other inputs or settings is never mixed in: it is an error unless
    `fresh`, which discards it.
    """
    folder = Path(folder)
    if output is None:
        name = folder.name
        for suffix in WORK_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        output = folder.with_name(name)
    output_lock.acquire(output)
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


def release_output(output: Path | str) -> None:
    """The output is written: let other commands write it again (see claim_work_dir)."""
    output_lock.release(output)


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
        claim_work_dir(self.dir, lineage, fresh, output=self.output)

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
        release_output(self.output)
        return table

"""Provenance of artifacts: redacted config, input hashes, lineage stamps and fingerprints.

The lineage stored in an artifact's `dno.lineage` metadata (or a checkpoint's manifest) says
which stage made it, from which inputs (path + sha256), with which resolved config (secrets
removed), by which package version, on which machine and packages (torch's threads and
deterministic flag among them: dno_data.reproducibility), when. Its fingerprint decides whether an output is up to date.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .errors import DnoError
from .hub import hub_info
from .paths import check_input
from .ids import file_sha256, stable_hash
from .reproducibility import environment

# A whole key, or its last _/-/. separated segment(s): "api_key", "hf_token", "openai_api_key", but not
# "max_new_tokens" or "tokenizer" (dno_data.redact: the one redaction of keys and URLs).
from .redact import SECRET_KEY, redact_text  # noqa: E402


# ---------------------------------------------------------------- lineage and config

def redact(obj: Any) -> Any:
    """Drop every mapping key that looks like a secret, and a URL's credentials and secret query values
    (dno_data.redact), recursively.

    >>> redact({"model": "m", "api_key": "sk-1", "nested": {"auth_header": "x", "n": 1}, "url": "http://h?key=k"})
    {'model': 'm', 'nested': {'n': 1}, 'url': 'http://h?key=***'}
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): redact(v) for k, v in obj.items() if not SECRET_KEY.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, Path):
        return redact_text(str(obj))
    if isinstance(obj, str):
        return redact_text(obj)
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
            check_input(p)  # hashing a pipe or a device would block or never end
            digest = file_sha256(p)
        entry = {"path": str(p), "sha256": digest}
        hub = hub_info(p)  # a Hugging Face Hub snapshot: its repository and the commit it resolved to
        if hub is not None:
            entry["hub"] = hub
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
    folder: its files but the manifest and the model card, and the fingerprint of the manifest's lineage.
    """
    path = Path(path)
    if path.is_dir():
        manifest = path / "dno-manifest.json"
        try:
            lineage = json.loads(manifest.read_text())["lineage"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        card = path / "README.md"  # the model card renders the manifest: not content of its own
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
                       and f not in (manifest, card))
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


CHANGES_OUTPUT = "changes_output"  # a dataclass field's metadata key (dno_data.config declares it on each option)


def config_values(config: Any) -> Any:
    """What the lineage records of a config: a stage config's flat view (one name per option, the names
    of its flags, groups flattened: dno_data.config), else the mapping or dataclass as it is."""
    from .config import Config, to_options

    return to_options(config) if isinstance(config, Config) else config


def operational_keys(config: Any) -> list[str]:
    """The options declared with changes_output=False (how a stage runs, not what it makes: the output
    path, concurrency, a cache path...): recorded, but left out of the fingerprint, so a rerun with other
    such settings still resumes and counts as up to date. None for a plain mapping."""
    from .config import Config, flat_fields

    if isinstance(config, Config):
        return sorted(x.name for x in flat_fields(type(config)) if x.option.changes_output is False)
    if is_dataclass(config) and not isinstance(config, type):
        return sorted(f.name for f in fields(config) if f.metadata.get(CHANGES_OUTPUT, True) is False)
    return []


# ---------------------------------------------------------------- the run config file a command read

RUN_FILE_ENV = "DNO_RUN_FILE"  # how `dno iterate` hands its --config file's record to the stages it starts
_RUN_FILE: ContextVar[dict | None] = ContextVar("dno_run_file", default=None)


@contextmanager
def run_file_recorded(path: Path | str) -> Iterator[dict]:
    """While a command runs with `--config FILE`: every lineage it makes names the file and its content hash
    (the resolved values are in the lineage's config either way; this says where they came from)."""
    record = {"path": str(path), "sha256": file_sha256(Path(path))}
    token = _RUN_FILE.set(record)
    try:
        yield record
    finally:
        _RUN_FILE.reset(token)


def run_file() -> dict | None:
    """The run config file of the running command: its own --config, or the one `dno iterate` started it with."""
    record = _RUN_FILE.get()
    if record is None and os.environ.get(RUN_FILE_ENV):
        try:
            record = json.loads(os.environ[RUN_FILE_ENV])
        except ValueError:
            record = None
    return record


def make_lineage(stage: str, inputs: Iterable[Path | str], config: Any, **extra: Any) -> dict:
    """Provenance of an output; `extra` adds derived settings to the config (e.g. judge_id). A staging path
    (a local copy of an object: dno_data.staging) is recorded as the URL it stands for, so the lineage and
    its fingerprint are the same on every machine."""
    from .storage import public

    from_file = run_file()
    return public({
        "stage": stage,
        "inputs": describe_inputs(inputs),
        "config": {**redact(config_values(config)), **redact(extra)},
        **({"run_file": from_file} if from_file else {}),  # not in the fingerprint: the values above are
        "operational": operational_keys(config),
        "package_version": __version__,
        "environment": environment(),  # not in the fingerprint: work done on another machine stays up to date
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


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
    """True when `output` exists, was made by the same stage from the same inputs and config, and is of its
    schema's current version (a file an older dno wrote is made again, not refused later by the next stage)."""
    old = read_lineage(output)
    return old is not None and lineage_fingerprint(old) == lineage_fingerprint(lineage) and _current_version(output)


def _current_version(path: Path | str) -> bool:
    """Whether an artifact file is of its schema's current version (a checkpoint folder has no schema: True)."""
    path = Path(path)
    if path.is_dir():
        return True
    import schemas

    try:
        meta = pq.read_schema(path).metadata or {}
        spec = schemas.get(meta.get(b"dno.schema", b"").decode())
    except Exception:  # unreadable, or not a schema this dno knows: not up to date; its reader says why
        return False
    return meta.get(b"dno.schema_version", b"").decode() == str(spec.version)

"""Resumable work: finished units written as parts, and the claim on an output's work folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas

from . import output_lock, staging
from .artifacts import write_artifact, write_json_atomic
from .errors import DnoError
from .lineage import lineage_fingerprint

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
        old = _read_fingerprint(marker)
        if old != fingerprint:
            if not fresh and has_work(folder):
                raise DnoError(
                    f"{folder}: unfinished work from a run with other inputs or settings; "
                    "rerun that command to resume it, or pass --force to discard it and redo"
                )
            shutil.rmtree(folder)  # other settings' work (with --force), or nothing finished in it
    if not folder.exists():
        _CLAIMED.append(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"fingerprint": fingerprint}, marker)


_CLAIMED: list[Path] = []  # work folders this process created


def _read_fingerprint(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None  # missing or unreadable: no claim to resume


def has_work(folder: Path) -> bool:
    """Whether a work folder holds finished work (anything beyond its fingerprint and temporary files): a
    folder that holds none never blocks another command, and is removed when its command fails."""
    try:
        return any(p.name != "fingerprint.json" and not p.name.startswith(".") for p in Path(folder).iterdir())
    except OSError:
        return False


def discard_unstarted_work() -> None:
    """A failed or refused command leaves no work folder it created and finished nothing in (a
    `ck.partial/fingerprint.json` alone would otherwise stay behind); called on every command's error."""
    while _CLAIMED:
        folder = _CLAIMED.pop()
        if folder.exists() and not has_work(folder):
            shutil.rmtree(folder, ignore_errors=True)


def release_output(output: Path | str) -> None:
    """The output is written: let other commands write it again (see claim_work_dir)."""
    output_lock.release(output)


class Parts:
    """Progress of an expensive stage, written as finished units so a rerun resumes.

    Units are numbered by the caller (a fixed batching of the input), so a rerun skips
    exactly the units whose part file exists. The folder `<output>.parts/` holds a
    `fingerprint.json`; parts from a run with other inputs or settings are never mixed in.
    For an output on object storage each part is also written through to the bucket
    (dno_data.staging), so the rerun that resumes may run on another machine.
    """

    def __init__(self, output: Path, lineage: Mapping, schema_name: str, fresh: bool = False):
        self.output = Path(output)
        self.schema_name = schema_name
        self.dir = self.output.with_name(self.output.name + ".parts")
        staging.parts_opened(self.dir)
        claim_work_dir(self.dir, lineage, fresh, output=self.output)
        staging.parts_claimed(self.dir)

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
        staging.part_written(self._path(unit))

    def finish(self, lineage: Mapping) -> pa.Table:
        """Concatenate all parts in unit order into the output file; remove the parts."""
        files = sorted(self.dir.glob("part-*.parquet"))
        schema = schemas.get(self.schema_name).schema
        tables = [pq.read_table(f).select(schema.names).cast(schema) for f in files]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        write_artifact(table, self.output, self.schema_name, lineage)
        shutil.rmtree(self.dir)
        staging.parts_finished(self.dir)
        release_output(self.output)
        return table

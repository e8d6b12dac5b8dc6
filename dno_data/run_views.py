"""DuckDB views over a run folder's artifacts (dno_data.run_layout), for `dno sql` and analysis.

  prompts    RUN/prompts.parquet
  samples    RUN/iter-*/samples.parquet      (+ iteration)
  judgments  RUN/iter-*/judgments.parquet    (+ iteration)
  pairs      RUN/iter-*/pairs.parquet        (+ iteration)
  evals      RUN/iter-*/eval.parquet         (+ iteration; iter-00 = the initial policy)
"""

from __future__ import annotations

from pathlib import Path

from .duckdb_sql import connect
from .errors import DnoError, first_line
from .paths import check_input
from .run_layout import ITERATION_ARTIFACTS, ITERATION_PATTERN, RunLayout

# view -> the schema name its files must carry
SCHEMA_OF = {"prompts": "prompts", "samples": "samples", "judgments": "judgments", "pairs": "pairs",
             "evals": "eval"}


def open_run(run: Path, memory_limit: str | None = None):
    """A locked-down DuckDB connection (see duckdb_sql.connect) with one view per kind of artifact of `run`;
    `memory_limit` (e.g. "4GB"): DuckDB's, else its default (80% of RAM).

    Each file must be the artifact its name says (checked from its metadata); the connection
    may read these files and nothing else. A run on object storage (s3://...) is read from its local
    copy (dno_data.staging.fetch_run: its artifacts, downloaded when they changed).
    """
    from .storage import is_url

    if is_url(run):
        from .staging import fetch_run

        run = fetch_run(run)
    run = Path(run)
    if not run.is_dir():
        raise DnoError(f"{run}: no such run folder; pass --run runs/NAME")
    layout = RunLayout(run)
    found: dict[str, list[Path]] = {}
    if layout.prompts.exists():
        found["prompts"] = [layout.prompts]
    for view in ITERATION_ARTIFACTS:
        files = layout.iteration_files(view)
        if files:
            found[view] = files
    if not found:
        raise DnoError(f"{run}: no artifacts (prompts.parquet, iter-*/...parquet); run a stage first")
    for view, files in found.items():
        for f in files:
            _check_kind(f, SCHEMA_OF[view])
    settings = {} if memory_limit is None else {"memory_limit": str(memory_limit)}
    con = connect(read_paths=[f for files in found.values() for f in files], settings=settings, spill_near=run)
    for view, files in found.items():
        files = [f.resolve() for f in files]
        if view == "prompts":
            con.execute(f"CREATE VIEW prompts AS SELECT * FROM read_parquet('{_q(files[0])}')")
            continue
        listing = ", ".join(f"'{_q(f)}'" for f in files)
        con.execute(
            f"""CREATE VIEW {view} AS
                SELECT CAST(regexp_extract(filename, '{ITERATION_PATTERN}', 1) AS INTEGER) AS iteration,
                       * EXCLUDE (filename)
                FROM read_parquet([{listing}], filename = true, union_by_name = true)"""
        )
    return con, list(found)


def _check_kind(path: Path, schema_name: str) -> None:
    """The file is a readable dno artifact of this kind (any version: views span iterations)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_input(path, "run artifacts")
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as e:
        raise DnoError(f"{path}: not a readable Parquet file ({first_line(e)}); remake or remove it") from None
    found = (meta.get(b"dno.schema") or b"").decode()
    if found != schema_name:
        what = f"a '{found}' file" if found else "not a dno artifact"
        raise DnoError(f"{path}: {what} where a '{schema_name}' file belongs; move it out of the run folder")
    check_version_known(path, schema_name, meta)


def check_version_known(path: Path, schema_name: str, meta: dict) -> None:
    """Views span iterations, so an older schema version is read; a newer one (or none) is refused: this
    dno does not know what its columns mean."""
    import schemas

    spec = schemas.get(schema_name)
    version = (meta.get(b"dno.schema_version") or b"").decode()
    if not version.isdigit() or int(version) > spec.version:
        raise DnoError(f"{path}: {schema_name} schema version {version or '?'}, newer than this dno knows "
                       f"({spec.version}); upgrade dno, or remake it with `{spec.made_by}`")


def _q(path: Path) -> str:
    return str(path).replace("'", "''")

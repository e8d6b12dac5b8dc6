"""Canned analyses: named `.sql` files in dno_data/sql/queries/, run over a run's views.

    dno sql --list                                  # names and what each one answers
    dno sql --run runs/demo --query pair_types      # one of them

Each file's first comment line is its one-line description. A view the run does not have
yet (no pairs before `dno pairs`, ...) is an empty table of the artifact's schema, so every
query runs on a partial run and returns what there is.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import DnoError, first_line
from .run_views import SCHEMA_OF, open_run
from .duckdb_sql import query_polars

VIEW_SCHEMAS = SCHEMA_OF  # view -> artifact schema name


def _folder():
    return resources.files("dno_data").joinpath("sql", "queries")


def query_names() -> list[str]:
    return sorted(p.name[: -len(".sql")] for p in _folder().iterdir() if p.name.endswith(".sql"))


def describe(sql: str) -> str:
    """The first comment line of a query file.

    >>> describe("-- Pair types per iteration.\\n-- more\\nSELECT 1")
    'Pair types per iteration.'
    """
    for line in sql.splitlines():
        line = line.strip()
        if line.startswith("--"):
            return line[2:].strip()
        if line:
            break
    return ""


def list_queries() -> list[tuple[str, str]]:
    """(name, one-line description) of every canned query."""
    return [(name, describe(load_query(name))) for name in query_names()]


def load_query(name: str) -> str:
    names = query_names()
    if name not in names:
        raise DnoError(f"--query {name!r}: no such query; choose one of {', '.join(names)} (see --list)")
    return _folder().joinpath(f"{name}.sql").read_text()


def add_missing_views(con, made: list[str]) -> None:
    """Empty views (the artifact's columns + iteration) for the artifacts a run lacks."""
    import pyarrow as pa

    import schemas

    for view, schema_name in VIEW_SCHEMAS.items():
        if view in made:
            continue
        schema = schemas.get(schema_name).schema
        if view != "prompts":
            schema = pa.schema([pa.field("iteration", pa.int32()), *schema])
        con.register(view, schema.empty_table())


def open_run_all_views(run: Path):
    """open_run, with an empty view for every artifact the run does not have yet."""
    con, made = open_run(run)
    add_missing_views(con, made)
    return con


def run_query(run: Path | str | None, name: str, params: dict | None = None, con=None):
    """A canned query's result over a run folder (or an open connection) as a polars DataFrame."""
    sql = load_query(name)
    if con is None:
        con = open_run_all_views(run)
    try:
        return query_polars(con, sql, params or {})
    except Exception as e:  # a missing column in an old artifact, a bad parameter
        raise DnoError(f"--query {name}: {first_line(e)}") from None

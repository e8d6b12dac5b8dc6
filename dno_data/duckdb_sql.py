"""DuckDB helpers: SQL files shipped with the package, and named parameters."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .errors import DnoError


def load_sql(name: str) -> str:
    """Text of a shipped `.sql` file, e.g. load_sql("rule_paper")."""
    return resources.files("dno_data").joinpath("sql", f"{name}.sql").read_text()


def read_user_sql(path: Path | str, flag: str = "--sql") -> str:
    path = Path(path)
    if not path.is_file():
        raise DnoError(f"{flag} {path}: no such SQL file")
    text = path.read_text()
    if not text.strip():
        raise DnoError(f"{flag} {path}: the file is empty")
    return text


def used_params(sql: str, params: dict) -> dict:
    """Keep only the named parameters the query mentions ($name); DuckDB rejects extras."""
    names = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql))
    return {k: v for k, v in params.items() if k in names}


def connect():
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    return con


def query_arrow(con, sql: str, params: dict | None = None):
    """Run `sql` with its named parameters ($name) and return a pyarrow Table."""
    rel = con.sql(sql, params=used_params(sql, params or {}) or None)
    fn = getattr(rel, "to_arrow_table", None) or rel.arrow  # DuckDB 2.0 renamed it
    return fn()


def query_polars(con, sql: str, params: dict | None = None):
    import polars as pl

    return pl.from_arrow(query_arrow(con, sql, params))

"""DuckDB helpers: SQL files shipped with the package, and named parameters."""

from __future__ import annotations

import re
from importlib import resources
import os
from pathlib import Path

from .errors import DnoError, first_line
from .paths import check_input


def load_sql(name: str) -> str:
    """Text of a shipped `.sql` file, e.g. load_sql("rule_paper")."""
    return resources.files("dno_data").joinpath("sql", f"{name}.sql").read_text()


def read_user_sql(path: Path | str, flag: str = "--sql") -> str:
    path = Path(path)
    check_input(path, "SQL")
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


def spill_folder(near: Path | str) -> Path:
    """Where a DuckDB connection spills: `.dno-spill-PID-*` inside `near` (the run's or the output's folder),
    never DuckDB's default `<cwd>/.tmp`. DuckDB makes it only when it spills; a killed run's is swept by the
    next successful write beside it (dno_data.atomic.sweep_leftovers)."""
    import secrets

    return Path(near) / f".dno-spill-{os.getpid()}-{secrets.token_hex(4)}"


def connect(read_paths=(), settings: dict | None = None, spill_near: Path | str | None = None):
    """A locked-down in-memory DuckDB: it may read exactly `read_paths` (files) and nothing else.

    `settings` (e.g. memory_limit, temp_directory) are applied before the lock; a memory_limit DuckDB refuses is
    one error line naming --memory-limit. It spills into
    `spill_near` (default: the first read path's folder), never the working folder (spill_folder).

    No other file, folder or URL (external access off: no COPY TO, read_csv, glob, ATTACH of a
    file, INSTALL), no extension autoload, no lookup of Python variables by name; then the
    configuration is locked, so a query cannot SET any of it back. Tables registered from
    Python (con.register) and views over `read_paths` keep working.
    """
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                 "allow_community_extensions": False, "threads": 2})
    paths = [str(Path(p).resolve()) for p in read_paths]
    if paths:
        con.execute("SET allowed_paths = ?", [paths])
    settings = dict(settings or {})
    if "temp_directory" not in settings:
        import tempfile

        near = spill_near if spill_near is not None else (Path(paths[0]).parent if paths else tempfile.gettempdir())
        settings["temp_directory"] = str(spill_folder(near))
    for name, value in settings.items():
        try:
            con.execute(f"SET {name} = ?", [value])
        except Exception as e:  # duckdb.InvalidInputException and kin: a value the user gave
            con.close()
            if name == "memory_limit":
                raise DnoError(f"--memory-limit {value!r}: {first_line(e)}") from None
            raise
    con.execute("SET python_enable_replacements = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def check_read_only(sql: str) -> None:
    """Only queries (SELECT, FROM ..., WITH ..., DESCRIBE, SUMMARIZE): no COPY, EXPORT, ATTACH, SET, CREATE..."""
    import duckdb

    for statement in duckdb.extract_statements(sql):
        if statement.type != duckdb.StatementType.SELECT:
            kind = statement.type.name if hasattr(statement.type, "name") else str(statement.type)
            raise DnoError(f"only queries may run here (SELECT ...), not a {kind} statement")


def query_arrow(con, sql: str, params: dict | None = None):
    """Run the query `sql` (read-only statements only) with its named parameters ($name); a pyarrow Table."""
    check_read_only(sql)
    rel = con.sql(sql, params=used_params(sql, params or {}) or None)
    fn = getattr(rel, "to_arrow_table", None) or rel.arrow  # DuckDB 2.0 renamed it
    return fn()


def query_polars(con, sql: str, params: dict | None = None):
    import polars as pl

    return pl.from_arrow(query_arrow(con, sql, params))


def out_of_memory(e: BaseException, command: str, limit: str | None, given: str | None) -> DnoError | None:
    """The one-line error for DuckDB running out of memory in `command` (raised by a query, or through an Arrow
    stream), naming the setting to raise; None for any other error. `limit` is the limit it ran under, `given`
    the --memory-limit it came from (auto, or the same; None: DuckDB's default)."""
    first = first_line(e)
    if "Out of Memory Error" not in first:
        return None
    detail = first.split("Out of Memory Error:", 1)[-1].strip()
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(limit or ""))
    bigger = f"{float(m.group(1)) * 2:g}{m.group(2)}" if m else "a larger value"
    if not limit:
        under = "DuckDB's default memory limit (80% of RAM)"
    else:
        under = f"--memory-limit {limit}" if given == limit else f"--memory-limit {given} ({limit})"
    return DnoError(f"{command} ran out of memory under {under} ({detail}); raise --memory-limit "
                    f"(e.g. --memory-limit {bigger}), or free memory")

r"""`dno sql --run DIR "SELECT ..."`: DuckDB over a run's artifacts.

    dno sql --run runs/demo "SELECT iteration, pair_type, count(*) FROM pairs GROUP BY ALL ORDER BY ALL"
    dno sql --run runs/demo --file dno_data/sql/analysis_iterations.sql --format csv
    dno sql --run runs/demo --query pair_types          # a canned analysis (dno sql --list)
    dno sql --run runs/demo "SELECT * FROM samples WHERE iteration = \$t" --param t=2 --format parquet -o s.parquet

Views: prompts, samples, judgments, pairs, evals (each iter-* file with an `iteration` column).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, one_of, opt, output_file
from ..errors import DnoError, first_line

FORMATS = ("table", "csv", "json", "parquet")


def parse_params(values) -> dict:
    """`name=value` strings (numbers where they parse) as a mapping; a mapping stays as it is."""
    if isinstance(values, dict):
        return values
    out = {}
    for v in values or ():
        k, sep, val = str(v).partition("=")
        if not sep:
            raise ValueError(f"{v!r}: expected name=value")
        for cast in (int, float):
            try:
                out[k] = cast(val)
                break
            except ValueError:
                continue
        else:
            out[k] = val
    return out


@dataclass(frozen=True, kw_only=True)
class SqlConfig(Config):
    """Query a run's artifacts with DuckDB SQL."""

    run: Path = opt("Run folder (runs/NAME).", Path("runs/demo"), flags=("--run",))
    query: str | None = opt("SQL over prompts, samples, judgments, pairs, evals.", None, argument=True)
    named: str | None = opt("Run a canned analysis by name (see --list).", None, flags=("--query",), cli_type=str)
    show_list: bool = opt("List the canned analyses and exit.", False, flags=("--list",), changes_output=False)
    file: Path | None = opt("Read the query from a .sql file.", None)
    format: str = opt(f"{' | '.join(FORMATS)}.", "table", check=one_of(*FORMATS))
    output: Path | None = opt("Write here instead of stdout (required for parquet).", None, flags=("-o", "--output"),
                              check=output_file)
    params: dict = opt("Named parameter name=value for $name (repeatable).", factory=dict, flags=("--param",),
                       cli_type=list[str], normalize=parse_params)
    memory_limit: str | None = opt("DuckDB memory limit (e.g. 4GB); default: DuckDB's, 80% of RAM. Beyond it DuckDB "
                                   "spills to the run folder where it can.", None, changes_output=False)


def run(cfg: SqlConfig):
    """The query's result (a polars DataFrame), printed or written to cfg.output in cfg.format."""
    from ..duckdb_sql import out_of_memory, query_polars, read_user_sql
    from ..paths import check_output, write_output
    from ..queries import add_missing_views, list_queries, load_query
    from ..run_views import open_run

    if cfg.show_list:
        names = list_queries()
        width = max(len(n) for n, _ in names)
        sys.stdout.write("".join(f"{n.ljust(width)}  {doc}\n" for n, doc in names))
        return None
    if sum(x is not None for x in (cfg.query, cfg.file, cfg.named)) != 1:
        raise DnoError("pass a query, --file FILE or --query NAME (one of them)")
    if cfg.format == "parquet" and cfg.output is None:
        raise DnoError("--format parquet needs -o FILE")
    if cfg.output is not None:
        check_output(cfg.output, kind="sql")  # its folder is made when the result is written, not before
    query = cfg.query if cfg.query is not None else load_query(cfg.named) if cfg.named else read_user_sql(cfg.file, "--file")
    con, views = open_run(cfg.run, memory_limit=cfg.memory_limit)
    if cfg.named:
        add_missing_views(con, views)
    try:
        df = query_polars(con, query, cfg.params)
    except Exception as e:  # a user's SQL error is bad input
        oom = out_of_memory(e, "dno sql", cfg.memory_limit, cfg.memory_limit)
        if oom is not None:
            raise oom from None
        raise DnoError(f"query failed: {first_line(e)} (views: {', '.join(views)})") from None
    if cfg.format == "parquet":
        write_output(cfg.output, "sql", df.write_parquet)
    elif cfg.format == "csv":
        _emit(_flat(df).write_csv(), cfg.output)
    elif cfg.format == "json":
        _emit(df.write_json(), cfg.output)
    else:
        import polars as pl

        # whole column names (no width limit), no dtype row
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_hide_dataframe_shape=False,
                       tbl_hide_column_data_types=True, tbl_width_chars=-1):
            _emit(str(df) + "\n", cfg.output)
    return df


def _flat(df):
    """CSV holds no lists or structs: a nested column (e.g. `messages`) becomes its JSON text."""
    import json

    import polars as pl

    nested = [c for c, t in df.schema.items() if t.is_nested()]
    if not nested:
        return df
    return df.with_columns([pl.Series(c, [None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                                          for v in df[c].to_list()], dtype=pl.String) for c in nested])


def _emit(text: str, output: Path | None) -> None:
    from ..paths import write_output

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_output(output, "sql", lambda tmp: tmp.write_text(text))

r"""`dno sql --run DIR "SELECT ..."`: DuckDB over a run's artifacts.

    dno sql --run runs/demo "SELECT iteration, pair_type, count(*) FROM pairs GROUP BY ALL ORDER BY ALL"
    dno sql --run runs/demo --file dno_data/sql/analysis_iterations.sql --format csv
    dno sql --run runs/demo --query pair_types          # a canned analysis (dno sql --list)
    dno sql --run runs/demo "SELECT * FROM samples WHERE iteration = \$t" --param t=2 --format parquet -o s.parquet

Views: prompts, samples, judgments, pairs, evals (each iter-* file with an `iteration` column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.cli_utils import one_line_errors
from dno_data.errors import DnoError
from dno_data.queries import add_missing_views, list_queries, load_query
from dno_data.run_views import open_run
from dno_data.sql import query_polars, read_user_sql

FORMATS = ("table", "csv", "json", "parquet")


@dataclass(frozen=True)
class SqlConfig:
    run: Path
    query: str | None = None
    file: Path | None = None
    format: str = "table"
    output: Path | None = None  # required for parquet; else stdout
    params: dict = field(default_factory=dict)
    named: str | None = None  # --query NAME: a canned analysis (dno_data/sql/queries/NAME.sql)


def run(cfg: SqlConfig):
    if cfg.format not in FORMATS:
        raise DnoError(f"--format {cfg.format!r}: choose one of {', '.join(FORMATS)}")
    if sum(x is not None for x in (cfg.query, cfg.file, cfg.named)) != 1:
        raise DnoError("pass a query, --file FILE or --query NAME (one of them)")
    query = cfg.query if cfg.query is not None else load_query(cfg.named) if cfg.named else read_user_sql(cfg.file, "--file")
    con, views = open_run(cfg.run)
    if cfg.named:
        add_missing_views(con, views)
    try:
        df = query_polars(con, query, cfg.params)
    except Exception as e:  # a user's SQL error is bad input
        first = (str(e).strip().splitlines() or ["?"])[0]
        raise DnoError(f"query failed: {first} (views: {', '.join(views)})") from None
    if cfg.format == "parquet":
        if cfg.output is None:
            raise DnoError("--format parquet needs -o FILE")
        df.write_parquet(cfg.output)
    elif cfg.format == "csv":
        text = df.write_csv()
        _emit(text, cfg.output)
    elif cfg.format == "json":
        _emit(df.write_json(), cfg.output)
    else:
        import polars as pl

        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_hide_dataframe_shape=False):
            _emit(str(df) + "\n", cfg.output)
    return df


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        Path(output).write_text(text)


def _parse_params(values: list[str]) -> dict:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep:
            raise DnoError(f"--param {v!r}: expected name=value")
        for cast in (int, float):
            try:
                out[k] = cast(val)
                break
            except ValueError:
                continue
        else:
            out[k] = val
    return out


@one_line_errors
def command(
    query: Annotated[Optional[str], typer.Argument(help="SQL over prompts, samples, judgments, pairs, evals.")] = None,
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder (runs/NAME).")] = Path("runs/demo"),
    file: Annotated[Optional[Path], typer.Option(help="Read the query from a .sql file.")] = None,
    format: Annotated[str, typer.Option(help="table | csv | json | parquet.")] = "table",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Named parameter name=value for $name (repeatable).")] = None,
    named: Annotated[Optional[str], typer.Option("--query", help="Run a canned analysis by name (see --list).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the canned analyses and exit.")] = False,
):
    """Query a run's artifacts with DuckDB SQL."""
    if list_:
        width = max(len(n) for n, _ in list_queries())
        typer.echo("".join(f"{n.ljust(width)}  {doc}\n" for n, doc in list_queries()), nl=False)
        return
    run(SqlConfig(run_dir, query, file, format, output, _parse_params(param or []), named))

"""DuckDB views over a run folder's artifacts (dno_data.run_layout), for `dno sql` and analysis.

  prompts    RUN/prompts.parquet
  samples    RUN/iter-*/samples.parquet      (+ iteration)
  judgments  RUN/iter-*/judgments.parquet    (+ iteration)
  pairs      RUN/iter-*/pairs.parquet        (+ iteration)
  evals      RUN/iter-*/eval.parquet         (+ iteration; iter-00 = the initial policy)
"""

from __future__ import annotations

from pathlib import Path

from .errors import DnoError
from .duckdb_sql import connect
from .run_layout import ITERATION_ARTIFACTS, ITERATION_PATTERN, RunLayout


def open_run(run: Path):
    run = Path(run)
    if not run.is_dir():
        raise DnoError(f"{run}: no such run folder; pass --run runs/NAME")
    layout = RunLayout(run)
    con = connect()
    made = []
    if layout.prompts.exists():
        con.execute(f"CREATE VIEW prompts AS SELECT * FROM read_parquet('{_q(layout.prompts)}')")
        made.append("prompts")
    for view in ITERATION_ARTIFACTS:
        files = layout.iteration_files(view)
        if not files:
            continue
        listing = ", ".join(f"'{_q(f)}'" for f in files)
        con.execute(
            f"""CREATE VIEW {view} AS
                SELECT CAST(regexp_extract(filename, '{ITERATION_PATTERN}', 1) AS INTEGER) AS iteration,
                       * EXCLUDE (filename)
                FROM read_parquet([{listing}], filename = true, union_by_name = true)"""
        )
        made.append(view)
    if not made:
        raise DnoError(f"{run}: no artifacts (prompts.parquet, iter-*/...parquet); run a stage first")
    return con, made


def _q(path: Path) -> str:
    return str(path).replace("'", "''")

"""DuckDB views over a run folder's artifacts, for `dno sql` and analysis.

  prompts    runs/NAME/prompts.parquet
  samples    runs/NAME/iter-*/samples.parquet      (+ iteration)
  judgments  runs/NAME/iter-*/judgments.parquet    (+ iteration)
  pairs      runs/NAME/iter-*/pairs.parquet        (+ iteration)
  evals      runs/NAME/iter-*/eval.parquet         (+ iteration; iter-00 = the initial policy)
"""

from __future__ import annotations

from pathlib import Path

from .errors import DnoError
from .duckdb_sql import connect

VIEWS = {"samples": "samples", "judgments": "judgments", "pairs": "pairs", "evals": "eval"}


def iteration_dir(run: Path, t: int) -> Path:
    return Path(run) / f"iter-{t:02d}"


def open_run(run: Path):
    run = Path(run)
    if not run.is_dir():
        raise DnoError(f"{run}: no such run folder; pass --run runs/NAME")
    con = connect()
    made = []
    if (run / "prompts.parquet").exists():
        con.execute(f"CREATE VIEW prompts AS SELECT * FROM read_parquet('{_q(run / 'prompts.parquet')}')")
        made.append("prompts")
    for view, stem in VIEWS.items():
        files = sorted(run.glob(f"iter-*/{stem}.parquet"))
        if not files:
            continue
        listing = ", ".join(f"'{_q(f)}'" for f in files)
        con.execute(
            f"""CREATE VIEW {view} AS
                SELECT CAST(regexp_extract(filename, 'iter-([0-9]+)/[^/]*$', 1) AS INTEGER) AS iteration,
                       * EXCLUDE (filename)
                FROM read_parquet([{listing}], filename = true, union_by_name = true)"""
        )
        made.append(view)
    if not made:
        raise DnoError(f"{run}: no artifacts (prompts.parquet, iter-*/...parquet); run a stage first")
    return con, made


def _q(path: Path) -> str:
    return str(path).replace("'", "''")

"""The n-gram repetition check (the paper: a sample with heavily repeated n-grams is an automatic negative)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .duckdb_sql import connect, load_sql

Source = Path | str | pa.Table  # a samples file, or a table already in memory


def repetition_ratios(texts: list[str]) -> list[float]:
    """repetition.sql on a list of texts: the fraction of word 3-grams that repeat an earlier one.

    >>> repetition_ratios(["the cat sat on the mat", "go on go on go on go on", "42"])
    [0.0, 0.6666666666666667, 0.0]
    """
    con = connect()
    con.register("texts", pa.table({"sample_id": [str(i) for i in range(len(texts))], "response": texts}))
    sql = load_sql("repetition")
    rows = dict(con.execute(f"SELECT sample_id, repetition_ratio FROM ({sql})", {"max_repetition": -1.0}).fetchall())
    return [rows[str(i)] for i in range(len(texts))]


def repetition_suspects(samples: Source, max_repetition: float, batch_rows: int = 65_536) -> pa.Table:
    """(sample_id, response) of the samples whose repetition ratio may exceed `max_repetition`.

    A cheap upper bound of the ratio (repetition.sql's: distinct 3-grams >= distinct words - 2, with
    the word count taken from above and the distinct count from below, so it never misses a text) as
    a polars expression over the response column, read in batches of `batch_rows` (two columns,
    bounded memory). Only the texts that pass are kept, typically none or a few; repetition.sql gives
    them their exact ratio. The flags are therefore those of repetition.sql over all samples
    (tests/test_pairs_reference.py checks it).
    """
    import polars as pl
    import pyarrow.parquet as pq

    columns = ["sample_id", "response"]
    if isinstance(samples, pa.Table):
        batches = samples.select(columns).to_batches(max_chunksize=batch_rows)
    else:
        batches = pq.ParquetFile(samples).iter_batches(batch_size=batch_rows, columns=columns)
    # words as repetition.sql splits them: between spaces, tabs and line breaks. Splitting on the
    # space alone leaves empty strings between two separators; they only raise the bound: n counts
    # them (an upper bound of the words) and d drops one distinct value for them (a lower bound).
    words = pl.col("response").str.replace_all(r"[\t\n\r]", " ").str.split(" ")
    n, d = pl.col("n"), pl.col("d")
    may_repeat = (n >= 3) & (1.0 - pl.max_horizontal(d - 2, pl.lit(1)) / (n - 2) > max_repetition)
    kept = [pl.from_arrow(pa.Table.from_batches([b])).lazy()
            .with_columns(words.alias("w"))
            .with_columns(n=pl.col("w").list.len().cast(pl.Int64), d=pl.col("w").list.n_unique().cast(pl.Int64) - 1)
            .filter(may_repeat).select(columns).collect() for b in batches]
    out = pl.concat(kept) if kept else pl.DataFrame({"sample_id": [], "response": []})
    return out.to_arrow().cast(pa.schema([("sample_id", pa.string()), ("response", pa.string())]))


def repetition_table(con, samples: Source, max_repetition: float) -> None:
    """The temp table repetition(sample_id, repetitive) of the samples over `max_repetition`
    (automatic negatives); empty when the check cannot fire (a threshold >= 1)."""
    if max_repetition >= 1.0:  # the ratio is always < 1
        con.execute("CREATE TEMP TABLE repetition (sample_id VARCHAR, repetitive BOOLEAN)")
        return
    con.register("texts", repetition_suspects(samples, max_repetition))
    rep = load_sql("repetition")
    con.execute(f"CREATE TEMP TABLE repetition AS SELECT sample_id, repetitive FROM ({rep}) WHERE repetitive",
                {"max_repetition": max_repetition})
    con.unregister("texts")

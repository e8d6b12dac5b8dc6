"""The n-gram repetition check (the paper: a sample with heavily repeated n-grams is an automatic negative).

The repetition ratio of a response is the fraction of its word 3-grams that repeat an earlier one:
1 - distinct 3-grams / 3-grams (0 = none, near 1 = a loop; 0 for fewer than 3 words). Words are the
runs of characters between spaces, tabs and line breaks (as Python's str.split() for these; rarer
Unicode spaces count as part of a word).

The ratio is a property of the sample, so it is measured once, when the sample is written (the
samples column `repetition`: dno_data/sampling.py), and `dno pairs` / `dno sft --source best` compare
the stored number with --max-repetition (repetition.sql), reading 8 bytes a sample instead of its
text; --max-repetition can still change without resampling. Measuring takes about 50 us per
1.5k-character answer (polars, 2 cores): nothing beside generating the answer, but 5 minutes for the
6M answers of 1M prompts in every `dno pairs` (where it was computed before). A samples file made
elsewhere may leave the column null: those samples are measured when the pairs are built, in
batches (bounded memory).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .duckdb_sql import load_sql

Source = Path | str | pa.Table  # a samples file, or a table already in memory
BATCH_ROWS = 8192  # texts measured at a time


def _ratio(texts):
    """The repetition ratio of each text of a polars Series (exact: 3-grams joined by a space, which no
    word holds, counted distinct)."""
    import polars as pl

    words = (pl.col("t").str.replace_all("[\t\n\r]", " ").str.split(" ")
             .list.eval(pl.element().filter(pl.element() != "")))
    grams = pl.col("w").list.eval(pl.element() + " " + pl.element().shift(-1) + " " + pl.element().shift(-2))
    n = pl.col("w").list.len().cast(pl.Int64)
    ratio = pl.when(n < 3).then(0.0).otherwise(1.0 - grams.list.drop_nulls().list.n_unique() / (n - 2))
    return pl.DataFrame({"t": texts}).lazy().select(w=words).select(r=ratio).collect()["r"]


def ratio_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The repetition ratio of each text of an Arrow string array (float64), BATCH_ROWS texts at a time."""
    import polars as pl

    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    parts = [_ratio(pl.from_arrow(texts.slice(i, BATCH_ROWS)).alias("t")).to_arrow().cast(pa.float64())
             for i in range(0, len(texts), BATCH_ROWS)]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.float64())


def repetition_ratios(texts) -> list[float]:
    """The repetition ratio of each text.

    >>> repetition_ratios(["the cat sat on the mat", "go on go on go on go on", "42"])
    [0.0, 0.6666666666666667, 0.0]
    """
    return ratio_array(pa.array(list(texts), pa.string())).to_pylist()


def _unmeasured_batches(samples: Source):
    """(sample_id, response) batches of the samples whose `repetition` is null; row groups whose
    statistics say they have none are not read."""
    import pyarrow.parquet as pq

    columns = ["sample_id", "response", "repetition"]
    if isinstance(samples, pa.Table):
        if samples["repetition"].null_count:
            yield from samples.select(columns).to_batches(max_chunksize=BATCH_ROWS)
        return
    pf = pq.ParquetFile(samples)
    leaves = pf.metadata.schema
    col = next(i for i in range(len(leaves)) if leaves.column(i).path == "repetition")  # a leaf, not a field
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(col).statistics
        if st is None or not st.has_null_count or st.null_count:
            yield from pf.iter_batches(BATCH_ROWS, row_groups=[g], columns=columns)


def measure_unmeasured(samples: Source) -> pa.Table:
    """(sample_id, repetition) of the samples that came without their repetition ratio, measured now."""
    parts = []
    for batch in _unmeasured_batches(samples):
        batch = batch.filter(pc.is_null(batch.column("repetition")))
        if len(batch):
            parts.append(pa.table({"sample_id": batch.column("sample_id").cast(pa.string()),
                                   "repetition": ratio_array(batch.column("response"))}))
    schema = pa.schema([("sample_id", pa.string()), ("repetition", pa.float64())])
    return pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()


def repetition_table(con, samples: Source, max_repetition: float) -> None:
    """The temp table repetition(sample_id, repetitive) of the samples over `max_repetition` (automatic
    negatives), from the view `samples` of `con` (and `samples` itself, for the samples it has to
    measure); empty, without reading anything, when the check cannot fire (a threshold >= 1)."""
    if max_repetition >= 1.0:  # the ratio is always < 1
        con.execute("CREATE TEMP TABLE repetition (sample_id VARCHAR, repetitive BOOLEAN)")
        return
    con.register("measured", measure_unmeasured(samples))
    rep = load_sql("repetition")
    con.execute(f"CREATE TEMP TABLE repetition AS {rep}", {"max_repetition": max_repetition})
    con.unregister("measured")

"""The pairs file from the rule's output: its texts put beside each pair, written in bounded memory.

The pairs without their texts (pairs_narrow.sql: ids, sources, scores, win-rates, target) are small;
the texts are what is big (at 1M prompts x 6 chat-length answers, 9 GB of samples text of which the
pairs use 3 GB). So DuckDB sorts one stream, pairs_texts.sql: prompt by prompt, the texts its pairs use
(each once), then its pairs; `_with_texts` walks it a batch at a time and takes each pair's texts
from those of its prompt (pyarrow takes by index). DuckDB holds nothing wider than one text a row,
and spills the sort under --memory-limit; Python holds a batch and a few row groups (one being
assembled, up to three being compressed and written by a thread of their own). Replayed pairs
(replay.sql) come after the new ones, as they are in their own files. The file is written by a
pyarrow ParquetWriter in row groups of a fixed number of rows (from the samples' text sizes), so the
same inputs give the same bytes; atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas

from . import atomic
from .artifacts import rows_per_group, to_table
from .duckdb_sql import load_sql
from .errors import DnoError, first_line
from .pairs_checks import Source, sql_literal

BATCH_ROWS = 4096  # rows a batch of the sorted stream (texts and pairs together)


@dataclass
class Written:
    pairs: int = 0
    by_type: Counter = field(default_factory=Counter)
    replayed: Counter = field(default_factory=Counter)
    table: pa.Table | None = None  # the rows, when they were not written to a file


def pairs_query(rule_name: str, max_pairs: int | None, seed: int) -> str:
    """The stream of new pairs with their texts (pairs_texts.sql over pairs_narrow.sql)."""
    narrow = load_sql("pairs_narrow").replace("$rule", sql_literal(rule_name))
    if max_pairs is not None:
        narrow = (load_sql("max_pairs").replace("$assembled", f"({narrow})")
                  .replace("$max_pairs", str(int(max_pairs))).replace("$seed", str(int(seed))))
    return load_sql("pairs_texts").replace("$pairs", f"({narrow})")


def replay_query(con, replay: list[Path], fraction: float, seed: int) -> str | None:
    """The replayed rows of earlier pairs files (replay.sql), in the order to write them; None without any."""
    if not replay:
        return None
    cols = ", ".join(f'"{n}"' for n in schemas.get("pairs").schema.names)
    parts = [f"SELECT {cols}, {sql_literal(f)} AS source_file, {age} AS age FROM read_parquet({sql_literal(f)})"
             for age, f in enumerate(replay)]
    con.execute("CREATE TEMP VIEW old_pairs AS " + " UNION ALL ".join(parts))
    con.execute("""CREATE TEMP VIEW new_pairs AS
                   SELECT substr(sha256(chosen_sample_id || '>' || rejected_sample_id), 1, 16) AS pair_id, prompt_id
                   FROM rule_output WHERE chosen_sample_id IS NOT NULL AND rejected_sample_id IS NOT NULL""")
    rep = load_sql("replay").replace("$fraction", repr(float(fraction))).replace("$seed", str(int(seed)))
    return f"SELECT {cols} FROM ({rep}) ORDER BY age, k, prompt_id, chosen_sample_id, rejected_sample_id"


def _stream(con, sql: str):
    """The query's rows as Arrow record batches, fetched as they are consumed."""
    return con.sql(sql).to_arrow_reader(BATCH_ROWS)


def _messages(texts: pa.Array) -> pa.Array:
    """TRL's conversational form of answers: [{role: assistant, content: text}] each."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    role = pa.array(["assistant"] * len(texts), pa.string())
    one = pa.StructArray.from_arrays([role, texts.cast(pa.string())], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(range(len(texts) + 1), pa.int32()), one)


def _with_texts(batches):
    """The pairs rows of the sorted stream, a table per batch: each pair with its texts, taken from
    the texts of its prompt (read just before its pairs, perhaps in an earlier batch)."""
    carry = None  # the texts of the last prompt of the previous batch: its pairs may follow
    for batch in batches:
        if len(batch) == 0:
            continue
        is_text = pc.equal(batch.column("kind"), 0)
        texts = pa.Table.from_batches([batch.filter(is_text)]).select(
            ["first_id", "prompt_id", "response", "messages", "prompt_text"])
        if carry is not None:
            texts = pa.concat_tables([carry, texts.cast(carry.schema)])
        pairs = pa.Table.from_struct_array(batch.filter(pc.invert(is_text)).column("pair"))
        if len(pairs):
            ids = texts["first_id"].combine_chunks()
            ci = pc.index_in(pairs["chosen_sample_id"], value_set=ids)
            ri = pc.index_in(pairs["rejected_sample_id"], value_set=ids)
            if ci.null_count or ri.null_count:  # the stream's order guarantees it; a broken one must not pass
                raise RuntimeError("pairs_texts.sql: a pair came before the texts of its prompt")
            chosen, rejected = texts["response"].take(ci), texts["response"].take(ri)
            yield to_table(pairs.append_column("prompt", texts["messages"].take(ci))
                           .append_column("prompt_text", pc.coalesce(texts["prompt_text"].take(ci),
                                                                     texts["prompt_text"].take(ri)))
                           .append_column("chosen", _messages(chosen)).append_column("rejected", _messages(rejected)),
                           "pairs")
        last = batch.column("prompt_id")[len(batch) - 1]
        carry = texts.filter(pc.equal(texts["prompt_id"], last))


def _replayed(batches):
    for batch in batches:
        if len(batch):
            yield to_table(pa.Table.from_batches([batch]), "pairs")


def pair_row_bytes(samples: Source) -> int:
    """About how many bytes a row of pairs takes: its two answers and its prompt twice (messages and
    text), from the samples' average sizes (Parquet metadata, or the table)."""
    if isinstance(samples, pa.Table):
        n = max(1, len(samples))
        size = {c: samples[c].nbytes / n for c in ("response", "prompt_text", "messages")}
    else:
        meta = pq.ParquetFile(samples).metadata
        n = max(1, meta.num_rows)
        size = dict.fromkeys(("response", "prompt_text", "messages"), 0.0)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                top = col.path_in_schema.split(".")[0]
                if top in size:
                    size[top] += col.total_uncompressed_size / n
    return int(2 * size["response"] + size["prompt_text"] + size["messages"] + 200)


class _File:
    """A Parquet file written row group by row group by a thread of its own: encoding and zstd release
    the GIL, so compressing one row group overlaps reading and assembling the next (at 1M prompts x 6
    chat-length answers, compressing took 14 s of the 42 s of writing). At most two row groups wait.
    The temporary file becomes `output` in `publish` (fsync, rename), or is removed in `discard`."""

    def __init__(self, output: Path, lineage: dict | None):
        spec = schemas.get("pairs")
        meta = {"dno.schema": spec.name, "dno.schema_version": str(spec.version)}
        if lineage is not None:
            meta["dno.lineage"] = json.dumps(lineage, sort_keys=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output, self.tmp = output, atomic.temp_name(output)
        self.writer = pq.ParquetWriter(self.tmp, spec.schema.with_metadata(meta), compression="zstd")
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pairs-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (table := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_table(table, row_group_size=len(table))
                except BaseException as e:  # raised in the caller's thread, at its next write or at close
                    self.error = e

    def _raise(self) -> None:
        if isinstance(self.error, OSError):  # a full disk, an unwritable folder: the user's to fix
            raise DnoError(f"{self.output}: cannot write it ({first_line(self.error)})") from None
        if self.error is not None:
            raise self.error

    def write(self, table: pa.Table) -> None:
        self._raise()
        self.queue.put(table)

    def _close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self.writer.close()

    def publish(self) -> None:
        from .paths import publisher

        self._close()
        self._raise()
        publisher("pairs")(self.tmp, self.output, True)  # fsync, a pairs artifact or nothing at -o, rename

    def discard(self) -> None:
        self._close()
        atomic.remove(self.tmp)


class _Output:
    """The pairs as one table (output None) or written to `output` in row groups of `group_rows` rows
    (a fixed number: the same inputs give the same bytes), counting them by type and by replayed file."""

    def __init__(self, output: Path | None, lineage: dict | None, group_rows: int):
        self.group_rows, self.pending, self.tables, self.done = group_rows, [], [], Written()
        self.file = _File(output, lineage) if output is not None else None

    def add(self, table: pa.Table) -> None:
        self.done.pairs += len(table)
        for kind, counter in (("pair_type", self.done.by_type), ("replayed_from", self.done.replayed)):
            for row in pc.value_counts(table[kind]).to_pylist():
                if row["values"] is not None:
                    counter[row["values"]] += row["counts"]
        if self.file is None:
            self.tables.append(table)
            return
        self.pending.append(table)
        if sum(len(t) for t in self.pending) >= self.group_rows:
            rows = pa.concat_tables(self.pending)
            cut = len(rows) - len(rows) % self.group_rows
            for start in range(0, cut, self.group_rows):
                self.file.write(rows.slice(start, self.group_rows))
            self.pending = [rows.slice(cut)]

    def finish(self) -> Written:
        if self.file is None:
            spec = schemas.get("pairs")
            self.done.table = pa.concat_tables(self.tables) if self.tables else spec.schema.empty_table()
            return self.done
        rest = pa.concat_tables(self.pending) if self.pending else None
        if rest is not None and len(rest):
            self.file.write(rest)
        self.file.publish()
        self.file = None
        return self.done

    def abandon(self) -> None:
        if self.file is not None:
            self.file.discard()


def write_pairs(con, samples: Source, rule_name: str, *, replay: list[Path], replay_fraction: float, seed: int,
                max_pairs: int | None, output: Path | None, lineage: dict | None) -> Written:
    """The new pairs (then the replayed ones) to `output`, or as Written.table when it is None.
    Views: samples, rule_output, candidates (pairs.py made them)."""
    rep = replay_query(con, replay, replay_fraction, seed)  # its views first: no query while a stream is open
    out = _Output(Path(output) if output is not None else None, lineage, rows_per_group(pair_row_bytes(samples)))
    try:
        for table in _with_texts(_stream(con, pairs_query(rule_name, max_pairs, seed))):
            out.add(table)
        if rep is not None:
            for table in _replayed(_stream(con, rep)):
                out.add(table)
        return out.finish()
    finally:
        out.abandon()

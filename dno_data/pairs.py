"""Pairs from judgments, in DuckDB: win-rates, a pair rule, replay of earlier iterations.

The SQL lives in `dno_data/sql/`: repetition.sql (the n-gram check's automatic negatives, from the
ratio each sample carries), candidates.sql (scores and win-rates per sample), rule_paper.sql (also
--rule paper-best) / rule_best_worst.sql (or a user's file), pairs_narrow.sql, max_pairs.sql (a
seeded subset), pairs_texts.sql (each pair's texts), replay.sql.

Inputs are Parquet files (or, in tests, pyarrow tables) that DuckDB reads as views, so each query
reads only the columns it needs (projection pushdown) and nothing is looped over row by row. The
rules work on ids and numbers; the texts join the pairs last, in one sorted stream that
pairs_write.py writes batch by batch. DuckDB runs under --memory-limit, spilling to a temporary
folder beside the output; running out of it is one error line that says to raise it.
Preconditions (schemas, the rule, score judgments for the paper rules) are checked from the
files' metadata before any work (pairs_checks.py).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .artifacts import check_rows, key_digest_of
from .errors import DnoError, first_line
from .duckdb_sql import connect, load_sql, out_of_memory, used_params
from .pairs_checks import Source, check_inputs, rule_sql, sql_literal
from .pairs_write import write_pairs
from .repetition import repetition_table

from .pair_rules import AUTO_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_PARAMS, memory_limit_for  # noqa: F401

@dataclass
class PairsResult:
    table: pa.Table | None  # the pairs, or None when they were written straight to `output`
    pairs: int
    prompts_in: int
    samples_in: int
    failed_judgments: int
    unjudged_samples: int
    repetitive_samples: int
    truncated_samples: int = 0
    by_type: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    replayed: Counter = field(default_factory=Counter)
    capped: int = 0  # new pairs left out by max_pairs


# ---------------------------------------------------------------- DuckDB

def _view(con, name: str, src: Source) -> None:
    if isinstance(src, pa.Table):
        con.register(name, src)
    else:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({sql_literal(src)})")


def _connect(memory_limit: str | None, temp_directory: Path | None, paths: list[Path]):
    """A locked-down connection (duckdb_sql.connect) that may read only `paths`, the inputs (pyarrow
    writes the output); a user's --sql rule runs in it."""
    settings = {"enable_progress_bar": False}
    if memory_limit:
        settings["memory_limit"] = str(memory_limit)
    if temp_directory is not None:
        settings["temp_directory"] = str(temp_directory)
    return connect(read_paths=paths, settings=settings)  # a bad --memory-limit: one error line (connect)


def _out_of_memory(e: BaseException, limit: str | None, given: str | None) -> DnoError | None:
    """duckdb_sql.out_of_memory for `dno pairs`."""
    return out_of_memory(e, "dno pairs", limit, given)


def build_pairs(
    samples: Source,
    judgments: Source,
    *,
    rule: str = "paper",
    params: dict | None = None,
    sql_file: Path | None = None,
    max_repetition: float = 0.5,
    truncated: str = "negative",
    replay: list[Path] = (),
    replay_fraction: float = 0.3,
    seed: int = 0,
    output: Path | None = None,
    lineage: dict | None = None,
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
    temp_directory: Path | None = None,
    max_pairs: int | None = None,
) -> PairsResult:
    """Pairs of `samples` (a samples file or table) from `judgments`, by `rule` or a user's `sql_file`.

    With `output`, the pairs are written there (atomically, with `lineage` in the metadata) and
    result.table is None; else they come back as result.table. `max_pairs` keeps at most that many
    new pairs, a seeded random subset (max_pairs.sql), e.g. to match another method's pair budget.
    """
    check_inputs(samples, judgments, rule=rule, sql_file=sql_file, truncated=truncated, replay=replay)
    rule_text, rule_name, flags = rule_sql(rule, sql_file)
    params = {**DEFAULT_PARAMS, **(params or {}), **flags}
    spill = Path(temp_directory) if temp_directory else None
    made_spill = False
    if spill is None and output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # -o may name a folder that does not exist yet
        spill = Path(tempfile.mkdtemp(prefix=f".{Path(output).name}.spill-{os.getpid()}-",  # swept when its pid is gone
                                      dir=Path(output).parent))
        made_spill = True
    paths = [Path(p) for p in (samples, judgments, *replay) if not isinstance(p, pa.Table)]  # DuckDB reads only these
    limit = memory_limit_for(memory_limit, rule, sql_file)
    con = None
    try:
        con = _connect(limit, spill, paths)  # inside the try: a refused --memory-limit leaves no spill folder
        return _build(con, samples, judgments, rule_text, rule_name, sql_file, params, max_repetition, truncated,
                      list(replay), replay_fraction, seed, output, lineage, max_pairs)
    except Exception as e:
        oom = _out_of_memory(e, limit, memory_limit)
        if oom is None:
            raise
        raise oom from None
    finally:
        if con is not None:
            con.close()
        if made_spill:
            shutil.rmtree(spill, ignore_errors=True)


def _build(con, samples, judgments, rule_text, rule_name, sql_file, params, max_repetition, truncated, replay,
           replay_fraction, seed, output, lineage, max_pairs=None) -> PairsResult:
    _view(con, "samples", samples)
    _view(con, "judgments", judgments)
    for view, src in (("samples", samples), ("judgments", judgments)):  # keys, finite scores, ranges: as every reader
        check_rows(None, "the " + view if isinstance(src, pa.Table) else src, view, con=con, relation=view,
                   digest=key_digest_of(src))
    repetition_table(con, samples, max_repetition)
    if sql_file is None and rule_name in ("paper", "paper-best"):
        _check_rubric_scale(con, params)

    cand = load_sql("candidates")
    hashed = re.search(r"\bresponse_hash\b", rule_text, re.I) is not None  # else the texts are not read here
    con.execute(f"CREATE TEMP TABLE candidates AS {cand}",
                used_params(cand, {"truncated": truncated, "hash_responses": hashed}))
    prompts_in, samples_in, unjudged, n_repetitive, n_judged = con.sql(
        """SELECT count(DISTINCT prompt_id), count(*), count(*) FILTER (WHERE NOT judged),
                  count(*) FILTER (WHERE repetitive), count(*) FILTER (WHERE judged) FROM candidates""").fetchall()[0]
    failed, n_truncated = con.sql(
        """SELECT (SELECT count(*) FROM judgments WHERE status <> 'ok'),
                  (SELECT count(*) FROM samples WHERE finish_reason = 'length')""").fetchall()[0]
    if n_judged == 0 and not con.sql(
            """SELECT EXISTS (SELECT 1 FROM judgments j JOIN samples s ON s.sample_id = j.sample_id_a)""").fetchall()[0][0]:
        raise DnoError("the judgments and samples share no sample_id: pass the samples file that was judged")

    _rule_output(con, rule_text, params, sql_file or rule_name, user=sql_file is not None)
    dropped = Counter(dict(con.sql(
        "SELECT drop_reason, count(*) FROM rule_output WHERE drop_reason IS NOT NULL GROUP BY 1").fetchall()))
    without = con.sql(
        """SELECT count(DISTINCT prompt_id) FROM candidates WHERE prompt_id NOT IN
           (SELECT prompt_id FROM rule_output WHERE chosen_sample_id IS NOT NULL OR drop_reason IS NOT NULL)"""
    ).fetchall()[0][0]
    if without:
        dropped["dropped_by_rule"] += without

    result = PairsResult(None, 0, prompts_in, samples_in, failed, unjudged, n_repetitive, n_truncated, dropped=dropped)
    if max_pairs is not None:
        new = con.sql("SELECT count(DISTINCT (chosen_sample_id, rejected_sample_id)) FROM rule_output "
                      "WHERE chosen_sample_id IS NOT NULL AND rejected_sample_id IS NOT NULL").fetchall()[0][0]
        result.capped = max(0, new - max_pairs)
    written = write_pairs(con, samples, rule_name, replay=replay, replay_fraction=replay_fraction, seed=seed,
                          max_pairs=max_pairs, output=output, lineage=lineage)
    result.table, result.pairs, result.by_type, result.replayed = (written.table, written.pairs, written.by_type,
                                                                   written.replayed)
    return result


RUBRIC = (1.0, 6.0)  # the scale the paper rule's default thresholds are for (the built-in rubric and oracles)


def _check_rubric_scale(con, params: dict) -> None:
    """The paper rule with its default thresholds (a positive scores >= 5, margins 2 and 1) on scores off the 1-6
    rubric (a reward model's, a python: judge's own scale) would make a handful of pairs, or none, without a word:
    refused in one line. Thresholds set for the scale are taken as given."""
    names = ("min_positive_score", "teacher_margin", "policy_margin")
    if any(params.get(n) != DEFAULT_PARAMS[n] for n in names):
        return
    lo, hi = con.sql("SELECT min(score), max(score) FROM judgments WHERE status = 'ok' AND kind = 'score'").fetchall()[0]
    if lo is not None and (lo < RUBRIC[0] or hi > RUBRIC[1]):
        raise DnoError(f"--rule paper: its default thresholds (a positive scores >= 5, margins 2 and 1) are for the "
                       f"1-6 rubric, and these judgments score from {lo:g} to {hi:g}; use --rule best-worst (a reward "
                       "model's scores), or set --min-positive-score, --teacher-margin and --policy-margin for this "
                       "scale")


def _rule_output(con, rule_text: str, params: dict, where, user: bool) -> None:
    """The rule's rows as a temp table rule_output(prompt_id, chosen_sample_id, rejected_sample_id,
    target, drop_reason); a user's rule is checked to pair two different samples of one prompt."""
    try:
        cols = [d[0] for d in con.sql(f"SELECT * FROM ({rule_text}) LIMIT 0", params=used_params(rule_text, params)
                                      or None).description]
    except Exception as e:  # duckdb errors in a user's file are bad input, not a crash
        raise DnoError(f"{where}: the rule query failed: {first_line(e)}") from None
    for col in ("prompt_id", "chosen_sample_id", "rejected_sample_id"):
        if col not in cols:
            raise DnoError(f"{where}: the rule must return a column {col} (and may return target, drop_reason)")
    target = "CAST(target AS DOUBLE)" if "target" in cols else "NULL::DOUBLE"
    reason = "CAST(drop_reason AS VARCHAR)" if "drop_reason" in cols else "NULL::VARCHAR"
    sql = (f"CREATE TEMP TABLE rule_output AS SELECT CAST(prompt_id AS VARCHAR) AS prompt_id, "
           f"CAST(chosen_sample_id AS VARCHAR) AS chosen_sample_id, "
           f"CAST(rejected_sample_id AS VARCHAR) AS rejected_sample_id, {target} AS target, {reason} AS drop_reason "
           f"FROM ({rule_text})")
    try:
        con.execute(sql, used_params(rule_text, params) or None)
    except Exception as e:
        raise DnoError(f"{where}: the rule query failed: {first_line(e)}") from None
    if not user:
        return
    bad = con.sql(
        """SELECT r.chosen_sample_id, r.rejected_sample_id FROM rule_output r
           LEFT JOIN candidates c ON c.sample_id = r.chosen_sample_id
           LEFT JOIN candidates d ON d.sample_id = r.rejected_sample_id
           WHERE r.chosen_sample_id IS NOT NULL AND (c.sample_id IS NULL OR d.sample_id IS NULL
                 OR c.prompt_id <> d.prompt_id OR c.sample_id = d.sample_id OR c.prompt_id <> r.prompt_id)
           LIMIT 1"""
    ).fetchall()
    if bad:
        raise DnoError(f"{where}: pair ({bad[0][0]}, {bad[0][1]}) is not two different samples of one prompt")
    twice = con.sql(
        """SELECT chosen_sample_id, rejected_sample_id, count(*) FROM rule_output WHERE chosen_sample_id IS NOT NULL
           GROUP BY ALL HAVING count(*) > 1 LIMIT 1""").fetchall()
    if twice:  # one pair id for both rows: the file would hold one of them, or train on it twice
        raise DnoError(f"{where}: pair ({twice[0][0]}, {twice[0][1]}) comes {twice[0][2]} times (twice or more); "
                       f"a rule returns each pair once")
    off = con.sql("""SELECT chosen_sample_id, rejected_sample_id, target FROM rule_output
                     WHERE target IS NOT NULL AND (isnan(target) OR target < 0 OR target > 1) LIMIT 1""").fetchall()
    if off:
        raise DnoError(f"{where}: pair ({off[0][0]}, {off[0][1]}) has target {off[0][2]:g}; a target is the "
                       f"probability that chosen beats rejected, in [0, 1]")

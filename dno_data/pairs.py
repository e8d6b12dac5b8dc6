"""Pairs from judgments, in DuckDB: win-rates, a pair rule, replay of earlier iterations.

The SQL lives in `dno_data/sql/`: candidates.sql (scores and win-rates per sample),
rule_paper.sql / rule_paper_best.sql / rule_best_worst.sql (or a user's file), assemble_pairs.sql, replay.sql.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .artifacts import read_artifact, to_table
from .errors import DnoError
from .sql import connect, load_sql, query_arrow, read_user_sql, used_params

RULES = ("paper", "paper-best", "best-worst")
TRUNCATED = ("negative", "drop", "keep")  # what a sample cut at the length limit is (candidates.sql)

# Named parameters of the built-in rules ($name in the .sql files), with the paper's values.
DEFAULT_PARAMS = {"min_positive_score": 5.0, "teacher_margin": 2.0, "policy_margin": 1.0, "prefer_positive": "policy",
                  "max_negatives": None, "distinct_negatives": True, "min_margin": 0.0}


def repetition_ratio(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one (0 = none, near 1 = a loop).

    >>> repetition_ratio("the cat sat on the mat")
    0.0
    >>> round(repetition_ratio("go on go on go on go on"), 2)
    0.67
    >>> repetition_ratio("42")
    0.0
    """
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@dataclass
class PairsResult:
    table: pa.Table
    prompts_in: int
    samples_in: int
    failed_judgments: int
    unjudged_samples: int
    repetitive_samples: int
    truncated_samples: int = 0
    by_type: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    replayed: Counter = field(default_factory=Counter)


def build_pairs(
    samples: pa.Table,
    judgments: pa.Table,
    *,
    rule: str = "paper",
    params: dict | None = None,
    sql_file: Path | None = None,
    max_repetition: float = 0.5,
    truncated: str = "negative",
    replay: list[Path] = (),
    replay_fraction: float = 0.3,
    seed: int = 0,
) -> PairsResult:
    if truncated not in TRUNCATED:
        raise DnoError(f"--truncated {truncated!r}: choose one of {', '.join(TRUNCATED)}")
    params = {**DEFAULT_PARAMS, **(params or {})}
    con = connect()
    rep = pa.table({
        "sample_id": samples["sample_id"],
        "repetitive": pa.array([repetition_ratio(t) > max_repetition for t in samples["response"].to_pylist()]),
    })
    con.register("samples", samples)
    con.register("judgments", judgments)
    con.register("repetition", rep)
    known = set(samples["sample_id"].to_pylist())
    judged_ids = set(judgments["sample_id_a"].to_pylist()) | set(x for x in judgments["sample_id_b"].to_pylist() if x)
    if not known & judged_ids:
        raise DnoError("the judgments and samples share no sample_id: pass the samples file that was judged")

    candidates_sql = load_sql("candidates")
    con.execute(f"CREATE TEMP TABLE candidates AS {candidates_sql}", used_params(candidates_sql, {"truncated": truncated}))

    if sql_file is not None:
        rule_sql, rule_name = read_user_sql(sql_file), f"sql:{Path(sql_file).name}"
    elif rule in RULES:
        rule_sql, rule_name = load_sql("rule_" + rule.replace("-", "_")), rule
        if rule.startswith("paper") and len(judgments) and not pc.any(pc.equal(judgments["kind"], "score")).as_py():
            raise DnoError(f"--rule {rule} needs score judgments (these are pairwise); use --rule best-worst")
    else:
        raise DnoError(f"--rule {rule!r}: choose one of {', '.join(RULES)}, or pass --sql FILE")
    try:
        out = query_arrow(con, rule_sql, params)
    except Exception as e:  # duckdb errors in a user's file are bad input, not a crash
        first = (str(e).strip().splitlines() or ["?"])[0]
        raise DnoError(f"{sql_file or rule_name}: the rule query failed: {first}") from None
    out = _check_rule_output(out, sql_file or rule_name, con)
    con.register("rule_output", out)
    assemble = load_sql("assemble_pairs")
    table = query_arrow(con, assemble, {"rule": rule_name})
    table = to_table(table, "pairs")

    stats = con.sql(
        """SELECT count(DISTINCT prompt_id), count(*), count(*) FILTER (WHERE NOT judged),
                  count(*) FILTER (WHERE repetitive) FROM candidates"""
    ).fetchall()[0]
    dropped = Counter(
        dict(con.sql("SELECT drop_reason, count(*) FROM rule_output WHERE drop_reason IS NOT NULL GROUP BY 1").fetchall())
    )
    without = con.sql(
        """SELECT count(DISTINCT prompt_id) FROM candidates WHERE prompt_id NOT IN
           (SELECT prompt_id FROM rule_output WHERE chosen_sample_id IS NOT NULL OR drop_reason IS NOT NULL)"""
    ).fetchall()[0][0]
    if without:
        dropped["dropped_by_rule"] += without
    failed = int(pc.sum(pc.not_equal(judgments["status"], "ok")).as_py() or 0)
    n_truncated = int(pc.sum(pc.equal(samples["finish_reason"], "length")).as_py() or 0)
    result = PairsResult(table, stats[0], stats[1], failed, stats[2], stats[3], n_truncated, dropped=dropped)

    if replay:
        result.table, result.replayed = _replay(con, result.table, replay, replay_fraction, seed)
    result.by_type = Counter(result.table["pair_type"].to_pylist())
    return result


def _check_rule_output(out: pa.Table, where, con) -> pa.Table:
    for col in ("prompt_id", "chosen_sample_id", "rejected_sample_id"):
        if col not in out.column_names:
            raise DnoError(f"{where}: the rule must return a column {col} (and may return target, drop_reason)")
    cols = {"prompt_id": out["prompt_id"], "chosen_sample_id": out["chosen_sample_id"],
            "rejected_sample_id": out["rejected_sample_id"]}
    cols["target"] = out["target"].cast(pa.float64()) if "target" in out.column_names else pa.nulls(len(out), pa.float64())
    cols["drop_reason"] = out["drop_reason"].cast(pa.string()) if "drop_reason" in out.column_names else pa.nulls(len(out), pa.string())
    out = pa.table(cols)
    con.register("rule_check", out)
    bad = con.sql(
        """SELECT r.chosen_sample_id, r.rejected_sample_id FROM rule_check r
           LEFT JOIN candidates c ON c.sample_id = r.chosen_sample_id
           LEFT JOIN candidates d ON d.sample_id = r.rejected_sample_id
           WHERE r.chosen_sample_id IS NOT NULL AND (c.sample_id IS NULL OR d.sample_id IS NULL
                 OR c.prompt_id <> d.prompt_id OR c.sample_id = d.sample_id OR c.prompt_id <> r.prompt_id)
           LIMIT 1"""
    ).fetchall()
    if bad:
        raise DnoError(f"{where}: pair ({bad[0][0]}, {bad[0][1]}) is not two different samples of one prompt")
    return out


def _replay(con, new: pa.Table, files: list[Path], fraction: float, seed: int):
    olds = []
    for age, f in enumerate(files):
        t = read_artifact(f, "pairs")
        t = t.append_column("source_file", pa.array([str(f)] * len(t), pa.string()))
        olds.append(t.append_column("age", pa.array([age] * len(t), pa.int32())))
    con.register("new_pairs", new)
    con.register("old_pairs", pa.concat_tables(olds))
    sql = load_sql("replay")
    replayed = query_arrow(con, sql, {"fraction": fraction, "seed": seed})
    replayed = to_table(replayed, "pairs")
    counts = Counter(replayed["replayed_from"].to_pylist())
    return pa.concat_tables([new, replayed]), counts

"""rule_paper.sql (--rule paper and paper-best) against independent Python implementations, on random data."""

import random

import pyarrow.parquet as pq
import pytest

from conftest import sample_row
from dno_data.artifacts import to_table, write_artifact
from dno_data.pairs import build_pairs
from dno_data.repetition import repetition_ratios, repetition_table
from dno_data.duckdb_sql import connect
from paper_rule_reference import paper_best_pairs, paper_pairs, repetition_ratio, synthetic_rows

PARAMS = {"min_positive_score": 5.0, "teacher_margin": 2.0, "policy_margin": 1.0, "prefer_positive": "policy",
          "max_negatives": None, "distinct_negatives": True, "min_margin": 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule,reference", [("paper", paper_pairs), ("paper-best", paper_best_pairs)])
@pytest.mark.parametrize("variant", [{}, {"prefer_positive": "teacher"}, {"max_negatives": 1},
                                     {"teacher_margin": 3.0, "policy_margin": 2.0, "min_positive_score": 6.0},
                                     {"distinct_negatives": False}, {"policy_margin": 0.0}])
def test_sql_rule_equals_python_rule(seed, rule, reference, variant):
    samples, judgments = synthetic_rows(300, k=4, seed=seed)
    params = {**PARAMS, **variant}
    got = build_pairs(to_table(samples, "samples"), to_table(judgments, "judgments"), rule=rule, params=params).table
    got = set(zip(got["chosen_sample_id"].to_pylist(), got["rejected_sample_id"].to_pylist()))
    scores = {j["sample_id_a"]: j["score"] for j in judgments}
    expected = reference(samples, scores, **params)
    assert got == expected
    assert len(got) > 100  # the random data exercises the rule


def test_repetition_ratio_equals_python(tmp_path):
    rng = random.Random(0)
    words = ["go", "on", "the", "cat", "a", "b", "é", "猫"]
    seps = [" ", "  ", "\n", "\t", " \n ", "\r\n"]
    texts = []
    for _ in range(500):
        vocab = words[:rng.randint(2, len(words))]  # few words: loops; many: mostly distinct 3-grams
        texts.append("".join(rng.choice(vocab) + rng.choice(seps) for _ in range(rng.randint(0, 30))))
    got = repetition_ratios(texts)
    expected = [repetition_ratio(t) for t in texts]
    assert got == pytest.approx(expected)
    assert sum(x > 0.5 for x in got) > 20  # the data has repetitive texts
    # the flags `dno pairs` uses (repetition.sql): from the stored ratio, and measured for the samples
    # without one (from a table and a file, whose row groups are read only where a ratio is missing)
    rows = [{**sample_row(str(i), "p", t), "repetition": None if i % 3 else x}
            for i, (t, x) in enumerate(zip(texts, expected))]
    table = to_table(rows, "samples")
    path = write_artifact(rows, tmp_path / "samples.parquet", "samples", None)
    for threshold in (0.0, 0.2, 0.5, 0.8):
        want = {str(i) for i, x in enumerate(expected) if x > threshold}
        for src in (table, path):
            c = connect(read_paths=[path])
            c.register("samples", table)
            repetition_table(c, src, threshold)
            assert {row[0] for row in c.execute("SELECT sample_id FROM repetition").fetchall()} == want


def test_pairs_file_is_the_same_bytes_run_to_run(tmp_path):
    """DuckDB sorts in parallel and the texts are put beside their pairs batch by batch (pairs_texts.sql,
    pairs_write.py); the file must still come out in (prompt_id, chosen, rejected) order and byte for byte
    the same, or a rerun would make every later stage's input look changed."""
    from dno_data.artifacts import write_artifact

    samples, judgments = synthetic_rows(20_000, k=4, seed=3)
    s_path, j_path = tmp_path / "samples.parquet", tmp_path / "judgments.parquet"
    write_artifact(samples, s_path, "samples", {"stage": "test", "inputs": [], "config": {}})
    write_artifact(judgments, j_path, "judgments", {"stage": "test", "inputs": [], "config": {}})
    outs = [tmp_path / f"pairs{i}.parquet" for i in range(2)]
    for out in outs:
        build_pairs(s_path, j_path, rule="paper", params=PARAMS, output=out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    t = pq.read_table(outs[0])
    keys = list(zip(t["prompt_id"].to_pylist(), t["chosen_sample_id"].to_pylist(), t["rejected_sample_id"].to_pylist()))
    assert len(keys) > 20_000 and keys == sorted(keys)
    texts = dict(zip(*(c.to_pylist() for c in pq.read_table(s_path, columns=["sample_id", "response"]).columns)))
    assert [c[0]["content"] for c in t["chosen"].to_pylist()] == [texts[i] for i in t["chosen_sample_id"].to_pylist()]
    assert [r[0]["content"] for r in t["rejected"].to_pylist()] == [texts[i] for i in t["rejected_sample_id"].to_pylist()]

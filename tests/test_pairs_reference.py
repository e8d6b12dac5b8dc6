"""rule_paper.sql against an independent Python implementation of the same rule, on random data."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from paper_rule_python import paper_pairs  # noqa: E402

from bench_pairs import synthetic  # noqa: E402

from dno_data.pairs import build_pairs  # noqa: E402

PARAMS = {"min_positive_score": 5.0, "teacher_margin": 2.0, "policy_margin": 1.0, "prefer_positive": "policy",
          "max_negatives": None, "distinct_negatives": True, "min_margin": 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", [{}, {"prefer_positive": "teacher"}, {"max_negatives": 1},
                                     {"teacher_margin": 3.0, "policy_margin": 2.0, "min_positive_score": 6.0},
                                     {"distinct_negatives": False}])
def test_sql_rule_equals_python_rule(seed, variant):
    samples, judgments = synthetic(300, k=4, seed=seed)
    params = {**PARAMS, **variant}
    got = build_pairs(samples, judgments, rule="paper", params=params).table
    got = set(zip(got["chosen_sample_id"].to_pylist(), got["rejected_sample_id"].to_pylist()))
    rows = samples.select(["sample_id", "prompt_id", "source", "response"]).to_pylist()
    scores = dict(zip(judgments["sample_id_a"].to_pylist(), judgments["score"].to_pylist()))
    expected = paper_pairs(rows, scores, **{k: v for k, v in params.items() if k != "min_margin"})
    assert got == expected
    assert len(got) > 100  # the random data exercises the rule

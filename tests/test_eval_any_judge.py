"""`dno eval` says something for any judge: an empty reference is no teacher answer, a score judge
without a teacher reports its mean score with an interval, accuracy is n/a for a judge that is not
verifiable (and null, not 0.0, in the SQL analyses)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from conftest import write_example
from dno_data.evaluation import eval_summary

JUDGES = '''
def score(messages, response, reference=None):
    return float(1 + len(response) % 5)      # a rubric-like score, says nothing about correctness

def teacher(messages, reference=None):
    return "" if messages[-1]["content"].startswith("1") else "a teacher answer"

def prefer(messages, a, b, reference=None):
    return 0.9 if a == "a teacher answer" else 0.1   # the teacher wins
'''


@pytest.fixture
def eval_inputs(tmp_path, stage_prompts, monkeypatch):
    (tmp_path / "evaljudges.py").write_text(JUDGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return stage_prompts()


def _eval(tmp_path, prompts, model, name, **kw):
    from dno_data.stages.eval import EvalConfig, run

    out = run(EvalConfig.from_options(prompts=prompts, model=model, output=tmp_path / f"{name}.parquet", max_new_tokens=3, **kw))
    return pq.read_table(out).to_pylist()


def test_an_empty_reference_is_not_a_teacher_answer(tmp_path, eval_inputs, tiny_model, capsys):
    rows = _eval(tmp_path, eval_inputs, tiny_model, "e", judge="python:evaljudges:score",
                 teacher="python:evaljudges:teacher")
    empty = [r for r in rows if r["teacher_response"] == ""]
    given = [r for r in rows if r["teacher_response"]]
    assert empty and given  # the eval split has both kinds of prompt
    assert all(r["win"] is None and r["teacher_score"] is None and r["policy_score"] is not None for r in empty)
    assert all(r["win"] in (0.0, 0.5, 1.0) and r["teacher_score"] is not None for r in given)
    err = capsys.readouterr().err
    assert f"empty teacher answers (left out of the win-rate)  {len(empty)}" in err
    assert "accuracy" in err and "n/a (the judge does not say what is correct)" in err
    assert "mean score [95 % CI]" in err


def test_a_pairwise_judge_with_an_empty_reference_compares_nothing(tmp_path, eval_inputs, tiny_model):
    rows = _eval(tmp_path, eval_inputs, tiny_model, "p", judge="python:evaljudges:prefer", mode="pairwise",
                 teacher="python:evaljudges:teacher")
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["win"] for r in rows if r["teacher_response"] == ""} == {None}
    assert [r["win"] for r in rows if r["teacher_response"]] == pytest.approx([0.1] * sum(
        1 for r in rows if r["teacher_response"]))


def test_without_a_teacher_a_score_judge_reports_its_mean_score(tmp_path, eval_inputs, tiny_model, capsys):
    rows = _eval(tmp_path, eval_inputs, tiny_model, "n", judge="python:evaljudges:score", teacher=None)
    assert all(r["win"] is None and r["correct"] is None for r in rows)
    err = capsys.readouterr().err
    assert "win-rate" not in err
    assert "accuracy" in err and "n/a" in err
    mean = sum(r["policy_score"] for r in rows) / len(rows)
    assert f"mean score [95 % CI]  {mean:.2f} [" in err


def test_eval_summary_counts():
    rows = [{"status": "ok", "win": 1.0, "teacher_response": "t", "correct": True, "policy_score": 6.0},
            {"status": "ok", "win": 0.0, "teacher_response": "t", "correct": False, "policy_score": 2.0},
            {"status": "ok", "win": None, "teacher_response": " ", "correct": True, "policy_score": 6.0},
            {"status": "error", "win": None, "teacher_response": "t", "correct": None, "policy_score": None}]
    s = eval_summary(rows, True)
    assert s["prompts"] == 4 and s["judged ok"] == 3
    assert s["empty teacher answers (left out of the win-rate)"] == 1
    assert s["win-rate vs teacher [95 % CI]"].startswith("50.0 % [")
    assert s["accuracy"].startswith("66.7 % [")
    assert s["mean score [95 % CI]"].startswith("4.67 [")


def test_sql_accuracy_is_null_for_a_judge_that_is_not_verifiable(tmp_path):
    from dno_data.queries import open_run_all_views
    from dno_data.duckdb_sql import load_sql, query_polars

    row = {"prompt_id": "p", "turn": 1, "messages": [{"role": "user", "content": "q"}], "model": "m", "response": "r",
           "teacher_response": "t", "judge_id": "J", "policy_score": 5.0, "teacher_score": 3.0, "win": 1.0,
           "correct": None, "status": "ok", "error": None}
    write_example(tmp_path / "iter-01" / "eval.parquet", "eval", [row])
    con = open_run_all_views(tmp_path)
    for name in ("analysis_iterations", "demo_report"):
        got = query_polars(con, load_sql(name)).to_dicts()
        assert got[0]["accuracy_pct"] is None, name
        assert got[0]["winrate_vs_teacher_pct"] == 100.0, name

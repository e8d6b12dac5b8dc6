"""The instruction-following task (constraints checked by code), oracle:constraints, eval without a teacher."""

import json

import pyarrow.parquet as pq
import pytest

from dno_data.tasks.constraints import check, constraint_score, main, make_prompts
from dno_data.judges import Candidate, Group, make_judge


def test_each_constraint_is_checked():
    assert check("all lowercase here.", {"lowercase": True}) == [True]
    assert check("Not lowercase.", {"lowercase": True}) == [False]
    assert check("12345", {"lowercase": True}) == [False]  # no letter: not a lowercase text
    assert check("one two three", {"max_words": 3}) == [True]
    assert check("one two three four", {"max_words": 3}) == [False]
    assert check("", {"max_words": 3}) == [False]
    assert check("A Blue sky.", {"include": "blue"}) == [True]  # case-insensitive, whole word
    assert check("bluebird song", {"include": "blue"}) == [False]


def test_score_is_one_plus_five_times_the_share_met():
    spec = json.dumps({"lowercase": True, "max_words": 3})
    assert constraint_score("one two three", spec) == (6.0, True)
    assert constraint_score("One two three", spec) == (3.5, False)
    assert constraint_score("One two three four", spec) == (1.0, False)


def test_prompts_are_distinct_deterministic_and_constrained():
    a, b = make_prompts(200, seed=3), make_prompts(200, seed=3)
    assert a == b
    assert len({p["prompt"] for p in a}) == 200
    assert all(len(json.loads(p["reference"])) == 1 for p in a)
    assert all(len(json.loads(p["reference"])) == 2 for p in make_prompts(20, seed=3, constraints=2))
    with pytest.raises(ValueError):
        make_prompts(5_000)


def test_source_file_has_a_split_column(tmp_path):
    out = tmp_path / "source.jsonl"
    main(["--train", "10", "--eval", "4", "-o", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train"] * 10 + ["eval"] * 4


def test_oracle_constraints_judge():
    judge = make_judge("oracle:constraints")
    g = Group("p", [{"role": "user", "content": "x"}], json.dumps({"include": "stone"}),
              [Candidate("a", "a stone wall", "policy"), Candidate("b", "a brick wall", "policy")])
    rows = judge.judge(g)
    assert [(r["score"], r["correct"], r["status"]) for r in rows] == [(6.0, True, "ok"), (1.0, False, "ok")]
    no_ref = Group("p", g.messages, None, g.candidates)
    assert {r["status"] for r in judge.judge(no_ref)} == {"error"}  # a failure row, not a silent score


def test_eval_without_a_teacher_judges_the_policy_alone(tmp_path, tiny_model):
    from dno_data.stages.eval import EvalConfig, run as eval_run
    from dno_data.stages.prompts import PromptsConfig, run as prompts_run

    src = tmp_path / "s.jsonl"
    main(["--train", "4", "--eval", "3", "-o", str(src)])
    prompts = prompts_run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", text_column="prompt",
                                        reference_column="reference", split_column="split"))
    out = eval_run(EvalConfig.from_options(prompts=prompts, model=tiny_model, judge="oracle:constraints", output=tmp_path / "eval.parquet", teacher=None,
                              max_new_tokens=3))
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3
    assert all(r["status"] == "ok" and r["win"] is None and r["teacher_response"] is None for r in rows)
    assert all(r["policy_score"] in (1.0, 6.0) and r["correct"] in (True, False) for r in rows)


def test_constraints_teacher_meets_every_constraint():
    """The task's teacher (python:dno_data.tasks.constraints:teacher) scores 6 on every prompt kind."""
    from dno_data.tasks.constraints import teacher

    for n_constraints in (1, 2, 3):
        for p in make_prompts(40, seed=5, constraints=n_constraints):
            answer = teacher([{"role": "user", "content": p["prompt"]}], p["reference"])
            assert constraint_score(answer, p["reference"]) == (6.0, True), (p, answer)

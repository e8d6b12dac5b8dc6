"""Judges: built-in oracles, python:module:function (pointwise and pairwise), failures as rows."""

from __future__ import annotations

import importlib
import math
import sys
import textwrap

import pytest

import schemas
from dno_data.artifacts import to_table
from dno_data.errors import DnoError
from dno_data.judges import Candidate, Group, make_judge

MSGS = [{"role": "user", "content": "12+34"}]


def grp(*responses, reference="46", sources=None):
    sources = sources or ["policy"] * len(responses)
    return Group("p1", MSGS, reference,
                 [Candidate(f"s{i}", r, s) for i, (r, s) in enumerate(zip(responses, sources))])


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    """write(name, source) puts a module on sys.path (fresh import each time)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    written = []

    def write(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def _valid(rows):
    # every row fits the judgments schema
    to_table(rows, "judgments")
    for r in rows:
        assert r["status"] in schemas.judgments.STATUSES
    return rows


# ---------------------------------------------------------------- oracles

def test_oracle_addition():
    judge = make_judge("oracle:addition")
    rows = _valid(judge.judge(grp("46", " 46 ", "45", "", "4600")))
    assert [r["status"] for r in rows] == ["ok"] * 5
    scores = [r["score"] for r in rows]
    assert scores[0] == 6.0 and scores[1] == 6.0
    assert scores[3] == 1.0
    assert all(1.0 <= s <= 4.0 for s in scores[2:])  # wrong answers never reach 5
    assert scores[2] == pytest.approx(1 + 3 * 1 / 2)  # one of two right-aligned digits right
    assert [r["correct"] for r in rows] == [True, True, False, False, False]
    assert [r["sample_id_a"] for r in rows] == ["s0", "s1", "s2", "s3", "s4"]
    assert [r["position"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["kind"] == "score" and r["sample_id_b"] is None and r["judge"] == "oracle:addition" for r in rows)
    assert len({r["judgment_id"] for r in rows}) == 5


def test_oracle_exact():
    judge = make_judge("oracle:exact")
    rows = _valid(judge.judge(grp(" Paris. ", "PARIS", "Lyon", reference="paris")))
    assert [r["score"] for r in rows] == [6.0, 6.0, 1.0]
    assert [r["correct"] for r in rows] == [True, True, False]


def test_oracle_without_reference_is_an_error_row():
    rows = _valid(make_judge("oracle:addition").judge(grp("46", reference=None)))
    assert rows[0]["status"] == "error"
    assert rows[0]["score"] is None
    assert "reference" in rows[0]["error"]


def test_oracle_judge_ids_are_stable_and_distinct():
    assert make_judge("oracle:addition").judge_id == make_judge("oracle:addition").judge_id
    assert make_judge("oracle:addition").judge_id != make_judge("oracle:exact").judge_id


@pytest.mark.parametrize("spec,mode", [
    ("nonsense", "score"), ("oracle:nope", "score"), ("oracle:addition", "pairwise"), ("oracle:exact", "bogus"),
    ("python:no_such_module_xyz:f", "score"), ("python:nocolon", "score"), ("python:os:no_such_function", "score"),
    ("python:os:sep", "score"),
])
def test_unknown_specs(spec, mode):
    with pytest.raises(DnoError):
        make_judge(spec, mode)


# ---------------------------------------------------------------- python judges

def test_python_pointwise(judge_module):
    judge_module("pj", """
        def score(messages, response, reference=None):
            assert messages[0]["content"] == "12+34"
            return {"score": len(response), "correct": response == reference, "raw_output": "n=" + str(len(response))}
        """)
    judge = make_judge("python:pj:score")
    assert judge.kind == "score"
    rows = _valid(judge.judge(grp("46", "1234")))
    assert [(r["score"], r["correct"], r["raw_output"], r["status"]) for r in rows] == [
        (2.0, True, "n=2", "ok"), (4.0, False, "n=4", "ok")]


def test_python_pointwise_without_reference_parameter(judge_module):
    judge_module("pj2", """
        def score(messages, response):
            return 3
        """)
    rows = _valid(make_judge("python:pj2:score").judge(grp("x")))
    assert rows[0]["score"] == 3.0 and rows[0]["status"] == "ok" and rows[0]["correct"] is None


def test_python_pairwise_both_orders(judge_module):
    judge_module("pw", """
        def prefer_longer(messages, a, b, reference=None):
            return 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5
        """)
    judge = make_judge("python:pw:prefer_longer", mode="pairwise")
    assert judge.kind == "pair"
    rows = _valid(judge.judge(grp("1", "22", "333")))
    assert len(rows) == 3 * 2  # 3 pairs, both orders
    got = {(r["sample_id_a"], r["sample_id_b"], r["position"]): r["prob_a_wins"] for r in rows}
    assert got == {
        ("s0", "s1", 0): 0.0, ("s1", "s0", 1): 1.0,
        ("s0", "s2", 0): 0.0, ("s2", "s0", 1): 1.0,
        ("s1", "s2", 0): 0.0, ("s2", "s1", 1): 1.0,
    }
    assert all(r["kind"] == "pair" and r["score"] is None and r["status"] == "ok" for r in rows)
    assert len({r["judgment_id"] for r in rows}) == 6
    one_order = make_judge("python:pw:prefer_longer", mode="pairwise", both_orders=False)
    assert len(one_order.judge(grp("1", "22", "333"))) == 3
    assert one_order.judge_id != judge.judge_id


BAD_POINTWISE = {
    "raises": ("raise RuntimeError('judge down')", "error", "judge down"),
    "none": ("return None", "unparseable", None),
    "nan": ("return float('nan')", "unparseable", None),
    "inf": ("return float('inf')", "unparseable", None),
    "text": ("return 'great answer'", "unparseable", None),
    "dict_without_score": ("return {'raw_output': 'hmm'}", "unparseable", None),
    "text_number": ("return '5'", "unparseable", "'5'"),  # a string is not a score, even one that reads as a number
    "bool": ("return True", "unparseable", "True"),
    "system_exit": ("raise SystemExit(3)", "error", "SystemExit"),  # a row, not the process exiting 3
}


@pytest.mark.parametrize("case", sorted(BAD_POINTWISE))
def test_failing_pointwise_judge_gives_status_rows(judge_module, case):
    body, status, fragment = BAD_POINTWISE[case]
    judge_module(f"bad_{case}", f"""
        def score(messages, response, reference=None):
            {body}
        """)
    rows = _valid(make_judge(f"python:bad_{case}:score").judge(grp("46", "45")))
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == status
        assert r["score"] is None
        assert r["prob_a_wins"] is None
        assert r["error"]
        if fragment:
            assert fragment in r["error"]


BAD_PAIRWISE = {
    "raises": ("raise ValueError('nope')", "error"),
    "none": ("return None", "unparseable"),
    "nan": ("return math.nan", "unparseable"),
    "above_one": ("return 1.5", "error"),
    "below_zero": ("return -0.1", "error"),
    "text_number": ("return '0.5'", "unparseable"),
    "bool": ("return True", "unparseable"),
    "system_exit": ("raise SystemExit(3)", "error"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRWISE))
def test_failing_pairwise_judge_gives_status_rows(judge_module, case):
    body, status = BAD_PAIRWISE[case]
    judge_module(f"badpw_{case}", f"""
        import math
        def cmp(messages, a, b):
            {body}
        """)
    rows = _valid(make_judge(f"python:badpw_{case}:cmp", mode="pairwise").judge(grp("1", "2")))
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == status
        assert r["prob_a_wins"] is None
        assert r["score"] is None
        assert r["error"]


def test_only_the_failing_candidate_fails(judge_module):
    judge_module("flaky", """
        def score(messages, response, reference=None):
            if response == "boom":
                raise RuntimeError("boom")
            return 5
        """)
    rows = _valid(make_judge("python:flaky:score").judge(grp("46", "boom", "12")))
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert [r["score"] for r in rows] == [5.0, None, 5.0]


def test_pairwise_probability_bounds_are_inclusive(judge_module):
    judge_module("edges", """
        def cmp(messages, a, b):
            return 1.0 if a < b else 0.0
        """)
    rows = make_judge("python:edges:cmp", mode="pairwise").judge(grp("1", "2"))
    assert sorted(r["prob_a_wins"] for r in rows) == [0.0, 1.0]
    assert all(r["status"] == "ok" for r in rows)


def test_judge_id_changes_when_the_source_changes(judge_module):
    judge_module("evolving", """
        def score(messages, response):
            return 1
        """)
    first = make_judge("python:evolving:score").judge_id
    assert make_judge("python:evolving:score").judge_id == first  # stable while unchanged
    judge_module("evolving", """
        def score(messages, response):
            return 2  # a different judge now
        """)
    second = make_judge("python:evolving:score")
    assert second.judge(grp("x"))[0]["score"] == 2.0  # really the new code
    assert second.judge_id != first
    # the spec is part of the id too
    judge_module("evolving_copy", """
        def score(messages, response):
            return 2  # a different judge now
        """)
    assert make_judge("python:evolving_copy:score").judge_id != second.judge_id


def test_judgment_ids_depend_on_judge_and_sample():
    a = make_judge("oracle:addition").judge(grp("46"))[0]
    b = make_judge("oracle:exact").judge(grp("46"))[0]
    assert a["judgment_id"] != b["judgment_id"]
    assert a["judge_id"] != b["judge_id"]
    assert not math.isnan(a["score"])


# ---------------------------------------------------------------- truncated responses

def test_groups_mark_samples_that_stopped_at_the_length_limit(tmp_path):
    from conftest import lineage, sample_row
    from dno_data.artifacts import read_artifact, write_artifact
    from dno_data.judges.run import groups_of

    rows = [sample_row("a", "p1", "4", index=0), sample_row("b", "p1", "46", index=1),
            sample_row("t", "p1", "46", source="teacher")]
    rows[0]["finish_reason"] = "length"
    path = write_artifact(rows, tmp_path / "s.parquet", "samples", lineage("samples"))
    [group] = groups_of(read_artifact(path, "samples"))
    assert [(c.sample_id, c.truncated) for c in group.candidates] == [("a", True), ("b", False), ("t", False)]


def test_python_judges_may_ask_whether_a_response_was_truncated(judge_module):
    judge_module("trunc_judge", """
        def score(messages, response, truncated):
            return 1.0 if truncated else 6.0

        def cmp(messages, a, b, truncated):
            ta, tb = truncated
            return 0.5 if ta == tb else (0.0 if ta else 1.0)

        def plain(messages, response):
            return 3.0
    """)
    group = Group("p1", MSGS, "46", [Candidate("s0", "4", "policy", truncated=True), Candidate("s1", "46", "policy")])
    assert [r["score"] for r in _valid(make_judge("python:trunc_judge:score").judge(group))] == [1.0, 6.0]
    pair = _valid(make_judge("python:trunc_judge:cmp", mode="pairwise").judge(group))
    assert [(r["sample_id_a"], r["prob_a_wins"]) for r in pair] == [("s0", 0.0), ("s1", 1.0)]
    assert [r["score"] for r in make_judge("python:trunc_judge:plain").judge(group)] == [3.0, 3.0]


def test_the_demo_task_trains_and_saves_an_initial_policy(tmp_path):
    """The demo's supervised start (tasks.addition.train_initial_policy) runs end to end and saves a
    folder that loads: a few steps of a tiny model, no accuracy target."""
    from dno_data.models import check_model_dir
    from dno_data.tasks import addition

    model, tok = addition.train_initial_policy(tmp_path / "policy-0", steps=3, hidden=16, layers=1, heads=2,
                                               n_train=64, batch_size=8, stop_at_accuracy=None)
    assert check_model_dir(tmp_path / "policy-0")
    assert tok.eos_token_id is not None


# ---------------------------------------------------------------- dno judge --max-failure-rate

def _samples_file(path, responses):
    from conftest import sample_row, write_example

    return write_example(path, "samples", [sample_row(f"s{i}", f"p{i}", r, reference="46")
                                           for i, r in enumerate(responses)])


def test_judge_stops_when_too_many_rows_failed(tmp_path, judge_module):
    import pyarrow.parquet as pq

    from dno_data.stages.judge import JudgeConfig, run

    judge_module("half", """
        def score(messages, response):
            if response == "boom":
                raise RuntimeError("judge down")
            return 6.0 if response == "46" else 1.0
        """)
    samples = _samples_file(tmp_path / "samples.parquet", ["46", "boom", "1", "boom"])
    out = tmp_path / "j.parquet"
    with pytest.raises(DnoError, match=r"2 of 4 judgments \(50%\) failed, .*--max-failure-rate 0.1 \(2 failed: 2 RuntimeError\)"):
        run(JudgeConfig.from_options(samples=samples, output=out, judge="python:half:score"))
    # the file is still written, so a rerun re-asks only the failed rows
    assert sorted(pq.read_table(out)["status"].to_pylist()) == ["error", "error", "ok", "ok"]
    assert run(JudgeConfig.from_options(samples=samples, output=tmp_path / "j2.parquet", judge="python:half:score", max_failure_rate=0.5)).exists()


def test_retry_failed_reasks_unparseable_and_refused_answers(tmp_path):
    pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")
    from conftest import FAKE_SERVER_SAFETY, standard_groups, write_judge_samples
    from dno_data.artifacts import read_artifact
    from dno_data.stages.judge import JudgeConfig, run
    from support.fake_openai import FakeOpenAIServer

    samples = write_judge_samples(tmp_path / "samples.parquet", standard_groups(3))
    with FakeOpenAIServer(script=["garbage", "truncate"], **FAKE_SERVER_SAFETY) as srv:
        def cfg(**kw):
            return JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:m", base_url=srv.base_url, concurrency=1,
                               cache=tmp_path / "cache.sqlite", timeout=5.0, max_retries=0, **kw)

        def statuses():
            return sorted(set(read_artifact(tmp_path / "j.parquet", "judgments")["status"].to_pylist()))

        run(cfg(max_failure_rate=1.0))
        assert statuses() == ["ok", "refused", "unparseable"] and srv.stats.chat_requests == 3
        run(cfg(max_failure_rate=1.0))  # paid answers are not asked again by a plain rerun
        assert srv.stats.chat_requests == 3
        run(cfg(retry_failed=True))  # the refused and the unparseable calls are asked again, past the cache
        assert statuses() == ["ok"] and srv.stats.chat_requests == 5
        run(cfg(force=True))  # the cache now holds the new answers
        assert statuses() == ["ok"] and srv.stats.chat_requests == 5

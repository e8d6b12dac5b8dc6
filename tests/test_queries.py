"""Canned analyses (dno_data/sql/queries/*.sql) on a tiny hand-built run, numbers checked by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import eval_row, pair_row, pairs_row, sample_row, score_row, write_example
from dno_data.errors import DnoError
from dno_data.queries import list_queries, query_names, run_query

QUERIES = ["failures", "intransitive_cycles", "iterations", "judge_agreement", "judge_calls", "length_drift", "pair_types", "position_bias",
           "winrate"]


def _pair(pid, c, r, chosen, rejected, pair_type, replayed=None):
    cs, rs = pair_type.split(">")
    return {**pairs_row(pid, c, r, chosen, rejected), "pair_type": pair_type, "chosen_source": cs,
            "rejected_source": rs, "replayed_from": replayed}


def _pw(a, b, pid, p, position, status="ok", error=None):
    """A pairwise judgment of judge 'pw' (id J1)."""
    row = pair_row(a, b, pid, p if status == "ok" else None, position, status)
    return {**row, "judge_id": "J1", "judge": "pw", "error": error}


def _sc(sid, pid, score, position, status="ok", error=None, call=None, cached=None):
    """A score judgment of judge 'sc' (id K1); an API judge's rows name the request (call) they came from."""
    row = score_row(sid, pid, score if status == "ok" else None, status, position)
    return {**row, "judge_id": "K1", "judge": "sc", "error": error, "call_key": call, "cached": cached}


def _eval(pid, win, teacher, correct, status="ok", score=None, response="2"):
    return {**eval_row(pid), "win": win, "teacher_response": teacher, "correct": correct, "status": status,
            "policy_score": score, "response": response}


def build_run(run: Path) -> Path:
    """Iterations 0 (eval only), 1 (samples, judgments of two judges, pairs, eval) and 2 (pairs with a replay)."""
    write_example(run / "prompts.parquet", "prompts")
    it1, it2 = run / "iter-01", run / "iter-02"
    write_example(run / "iter-00" / "eval.parquet", "eval", [
        _eval("e1", 1.0, "x", True, response="ab"), _eval("e2", 0.0, "y", False, response="abcd")])
    write_example(it1 / "eval.parquet", "eval", [
        _eval("e1", 1.0, "t", None, score=4.0, response="abcdef"),
        _eval("e2", 0.5, "", None, score=2.0, response="abcdef"),  # an empty reference is no teacher answer
        _eval("e3", None, "t", None, status="error", response="abcdef")])
    write_example(it1 / "samples.parquet", "samples", [
        sample_row("a", "p1", "xy"), sample_row("b", "p1", "wxyz", index=1),
        sample_row("t", "p1", "12345", source="teacher")])
    write_example(it1 / "pairs.parquet", "pairs", [
        _pair("p1", "t", "a", "aaaa", "x", "teacher>policy"), _pair("p1", "t", "b", "bb", "yyy", "teacher>policy"),
        _pair("p1", "a", "b", "cccccc", "zz", "policy>policy")])
    write_example(it2 / "pairs.parquet", "pairs", [
        _pair("p2", "c", "t2", "abcdefgh", "a", "policy>teacher"), _pair("p2", "c", "d", "ab", "abc", "policy>policy"),
        _pair("p1", "t", "a", "a" * 100, "x", "teacher>policy", replayed=str(it1 / "pairs.parquet"))])
    judgments = [
        # p1: a cycle a>b (0.9, 1-0.3 -> 0.8), b>c (0.8, 0.6 -> 0.7), c>a (0.7, 0.5 -> 0.6)
        _pw("a", "b", "p1", 0.9, 0), _pw("b", "a", "p1", 0.3, 1),
        _pw("b", "c", "p1", 0.8, 0), _pw("c", "b", "p1", 0.4, 1),
        _pw("c", "a", "p1", 0.7, 0), _pw("a", "c", "p1", 0.5, 1),
        # p2: transitive d>e>f, d>f
        _pw("d", "e", "p2", 1.0, 0), _pw("e", "d", "p2", 0.0, 1),
        _pw("e", "f", "p2", 1.0, 0), _pw("f", "e", "p2", 0.0, 1),
        _pw("d", "f", "p2", 1.0, 0), _pw("f", "d", "p2", 0.0, 1),
        # p3: both orders failed
        _pw("g", "h", "p3", None, 0, status="error", error="boom"),
        _pw("h", "g", "p3", None, 1, status="unparseable", error="no verdict A or B"),
        # p4: i>j>k but i ~ k: no decided triangle
        _pw("i", "j", "p4", 1.0, 0), _pw("j", "i", "p4", 0.0, 1),
        _pw("j", "k", "p4", 1.0, 0), _pw("k", "j", "p4", 0.0, 1),
        _pw("i", "k", "p4", 0.5, 0), _pw("k", "i", "p4", 0.5, 1),
        # a score judge on p1 and p2 (position = where shown), one refusal
        # (one call per prompt: p1 answered from the cache, p2 and p3 called)
        _sc("a", "p1", 6.0, 0, call="k1", cached=True), _sc("b", "p1", 4.0, 1, call="k1", cached=True),
        _sc("c", "p1", 5.0, 2, call="k1", cached=True),
        _sc("d", "p2", 6.0, 0, call="k2", cached=False), _sc("e", "p2", 5.0, 1, call="k2", cached=False),
        _sc("f", "p2", 1.0, 2, call="k2", cached=False),
        _sc("g", "p3", None, 0, status="refused", error="refusal", call="k3", cached=False),
    ]
    write_example(it1 / "judgments.parquet", "judgments", judgments)
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("q") / "run")


def rows(run, name):
    return run_query(run, name).to_dicts()


def test_every_query_is_listed_with_a_one_line_description():
    assert query_names() == QUERIES
    for name, doc in list_queries():
        assert doc and "\n" not in doc and not doc.startswith("-"), name


def test_pair_types(tiny_run):
    assert rows(tiny_run, "pair_types") == [
        {"iteration": 1, "new_pairs": 3, "teacher_gt_policy": 2, "policy_gt_teacher": 0, "policy_gt_policy": 1,
         "teacher_gt_policy_pct": 66.7, "policy_gt_teacher_pct": 0.0, "policy_gt_policy_pct": 33.3,
         "replayed_pairs": 0},
        {"iteration": 2, "new_pairs": 2, "teacher_gt_policy": 0, "policy_gt_teacher": 1, "policy_gt_policy": 1,
         "teacher_gt_policy_pct": 0.0, "policy_gt_teacher_pct": 50.0, "policy_gt_policy_pct": 50.0,
         "replayed_pairs": 1},
    ]


def test_length_drift(tiny_run):
    got = {r["iteration"]: r for r in rows(tiny_run, "length_drift")}
    assert sorted(got) == [0, 1, 2]
    assert got[0]["pairs"] == 0 and got[0]["chosen_chars"] is None and got[0]["eval_answer_chars"] == 3.0
    assert {k: got[1][k] for k in ("pairs", "chosen_chars", "rejected_chars", "chosen_minus_rejected",
                                   "policy_sample_chars", "policy_sample_tokens", "teacher_chars",
                                   "eval_answer_chars")} == {
        "pairs": 3, "chosen_chars": 4.0, "rejected_chars": 2.0, "chosen_minus_rejected": 2.0,
        "policy_sample_chars": 3.0, "policy_sample_tokens": 3.0, "teacher_chars": 5.0, "eval_answer_chars": 6.0}
    # the replayed pair (100 characters) is not iteration 2's
    assert (got[2]["pairs"], got[2]["chosen_chars"], got[2]["rejected_chars"]) == (2, 5.0, 2.0)
    assert got[2]["policy_sample_chars"] is None


def test_position_bias(tiny_run):
    got = rows(tiny_run, "position_bias")
    pw = [r for r in got if r["kind"] == "pair"]
    assert pw == [{"iteration": 1, "judge": "pw", "kind": "pair", "shown_position": None, "judgments": 18,
                   "p_first_shown_wins": round(9.6 / 18, 4), "mean_score": None}]
    sc = [(r["shown_position"], r["judgments"], r["mean_score"]) for r in got if r["kind"] == "score"]
    assert sc == [(0, 2, 6.0), (1, 2, 4.5), (2, 2, 3.0)]


def test_position_bias_leaves_out_the_teachers_slot(tmp_path):
    """A rubric judge shows the teacher's answer among the policy's (here always last, and scored best): its
    slot is not a position of the policy's samples, so it is not in the bias (it read as a bias of slot 3)."""
    run = tmp_path / "run"
    write_example(run / "prompts.parquet", "prompts")
    write_example(run / "iter-01" / "samples.parquet", "samples", [
        sample_row("a", "p1", "xy"), sample_row("b", "p1", "wz", index=1), sample_row("t", "p1", "12", source="teacher"),
        sample_row("c", "p2", "xy"), sample_row("d", "p2", "wz", index=1), sample_row("u", "p2", "12", source="teacher")])
    write_example(run / "iter-01" / "judgments.parquet", "judgments", [
        _sc("a", "p1", 3.0, 0), _sc("b", "p1", 2.0, 1), _sc("t", "p1", 6.0, 2),
        _sc("c", "p2", 2.0, 0), _sc("d", "p2", 3.0, 1), _sc("u", "p2", 6.0, 2)])
    got = [(r["shown_position"], r["judgments"], r["mean_score"]) for r in rows(run, "position_bias")]
    assert got == [(0, 2, 2.5), (1, 2, 2.5)]


def test_failures(tiny_run):
    got = [(r["judge"], r["status"], r["reason"], r["judgments"], r["share_pct"]) for r in rows(tiny_run, "failures")]
    assert got == [
        ("pw", "ok", None, 18, 90.0), ("pw", "error", "boom", 1, 5.0),
        ("pw", "unparseable", "no verdict A or B", 1, 5.0),
        ("sc", "ok", None, 6, 85.7), ("sc", "refused", "refusal", 1, 14.3),
    ]


def test_winrate(tiny_run):
    assert rows(tiny_run, "winrate") == [
        {"iteration": 0, "eval_prompts": 2, "judged_ok": 2, "with_teacher": 2, "empty_teacher_answer": 0,
         "winrate_vs_teacher_pct": 50.0, "accuracy_pct": 50.0, "mean_policy_score": None},
        {"iteration": 1, "eval_prompts": 3, "judged_ok": 2, "with_teacher": 1, "empty_teacher_answer": 1,
         "winrate_vs_teacher_pct": 100.0, "accuracy_pct": None, "mean_policy_score": 3.0},
    ]


def test_intransitive_cycles(tiny_run):
    assert rows(tiny_run, "intransitive_cycles") == [
        {"iteration": 1, "judge": "pw", "prompts": 3, "decided_triangles": 2, "cyclic_triangles": 1,
         "prompts_with_a_cycle": 1, "cyclic_pct": 50.0}]


def test_judge_agreement(tiny_run):
    # p1: (a,b) both a; (a,c) pw c, sc a; (b,c) pw b, sc c. p2: all three agree.
    assert rows(tiny_run, "judge_agreement") == [
        {"iteration": 1, "judge_1": "pw", "judge_2": "sc", "prompts": 2, "answer_pairs": 6, "decided_by_both": 6,
         "agree": 4, "agreement_pct": 66.7}]


def test_judge_calls(tiny_run):
    assert rows(tiny_run, "judge_calls") == [
        {"iteration": 1, "judge": "pw", "judgments": 20, "requests": 0, "cache_hits": 0, "calls_made": 0,
         "cache_hit_pct": None},
        {"iteration": 1, "judge": "sc", "judgments": 7, "requests": 3, "cache_hits": 1, "calls_made": 2,
         "cache_hit_pct": 33.3},
    ]


def test_queries_run_on_a_run_with_only_prompts(tmp_path):
    write_example(tmp_path / "prompts.parquet", "prompts")
    for name in QUERIES:
        assert run_query(tmp_path, name).height == 0, name


def test_unknown_query_names_the_choices(tiny_run):
    with pytest.raises(DnoError, match="no such query; choose one of failures, "):
        run_query(tiny_run, "nope")


def test_cli_query_and_list(tiny_run, cli):
    import json

    proc = cli("sql", "--run", tiny_run, "--query", "winrate", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["winrate_vs_teacher_pct"] for r in json.loads(proc.stdout)] == [50.0, 100.0]
    proc = cli("sql", "--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == QUERIES
    assert "P(first shown wins)" in next(line for line in lines if line.startswith("position_bias"))
    proc = cli("sql", "--run", tiny_run, "--query", "nope")
    assert proc.returncode == 1 and proc.stderr.startswith("error: --query 'nope': no such query")
    assert "Traceback" not in proc.stderr
    proc = cli("sql", "--run", tiny_run, "--query", "winrate", "SELECT 1")
    assert proc.returncode == 1 and "one of them" in proc.stderr


def test_iterations(tiny_run):
    assert rows(tiny_run, "iterations") == [
        {"iteration": 0, "new_pairs": None, "replayed_pairs": None, "eval_prompts": 2,
         "winrate_vs_teacher_pct": 50.0, "accuracy_pct": 50.0, "mean_policy_score": None},
        {"iteration": 1, "new_pairs": 3, "replayed_pairs": 0, "eval_prompts": 3,
         "winrate_vs_teacher_pct": 100.0, "accuracy_pct": None, "mean_policy_score": 3.0},
        {"iteration": 2, "new_pairs": 2, "replayed_pairs": 1, "eval_prompts": None,
         "winrate_vs_teacher_pct": None, "accuracy_pct": None, "mean_policy_score": None},
    ]


def test_iterate_prints_the_iterations_table_at_the_end(tiny_run, capsys, monkeypatch):
    import dno_data.loop as loop
    from dno_data.stages import iterate

    monkeypatch.setattr(loop, "run_iterations", lambda *a, **k: None)  # the stages: already run
    iterate.run(iterate.IterateConfig.from_options(run=tiny_run, model=tiny_run, judge="oracle:exact", iterations=2))
    err = capsys.readouterr().err
    table = err[err.index("per iteration"):]
    assert "winrate_vs_teacher_pct" in table and "new_pairs" in table
    lines = [line for line in table.splitlines() if line.startswith("│")]
    assert len(lines) == 1 + 3  # the header and iterations 0, 1, 2


def test_sql_memory_limit(tiny_run, cli):
    """--memory-limit bounds DuckDB's memory in `dno sql` as in `dno pairs`; running out is one line that says
    which setting to raise, and a bad value is refused before the query runs."""
    big = "SELECT count(*) AS n, max(length(s)) AS l FROM (SELECT string_agg(repeat(x::VARCHAR, 200000), '') AS s " \
          "FROM range(60) t(x) GROUP BY x % 3)"
    proc = cli("sql", "--run", tiny_run, big, "--memory-limit", "2MB")
    assert proc.returncode == 1, proc.stdout
    assert re.fullmatch(r"error: dno sql ran out of memory under --memory-limit 2MB \(.*\); raise --memory-limit "
                        r"\(e\.g\. --memory-limit 4MB\), or free memory\n", proc.stderr), proc.stderr
    proc = cli("sql", "--run", tiny_run, big, "--memory-limit", "1GB", "--format", "csv")
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].startswith("3,"), proc.stderr
    proc = cli("sql", "--run", tiny_run, "SELECT 1", "--memory-limit", "lots")
    assert proc.returncode == 1 and proc.stderr.startswith("error: --memory-limit 'lots': "), proc.stderr

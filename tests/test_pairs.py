"""Pair rules in DuckDB on hand-built scores: the paper rule, win-rates, best-worst, user SQL, replay."""

from __future__ import annotations

import math
import re

import pyarrow.compute as pc
import pytest

from conftest import pair_row, sample_row, score_row
from dno_data.artifacts import read_artifact, to_table, write_artifact
from dno_data.errors import DnoError
from dno_data.pairs import build_pairs
from dno_data.repetition import repetition_ratios

DEFAULTS = dict(min_positive_score=5.0, teacher_margin=2.0, policy_margin=1.0, prefer_positive="policy",
                max_negatives=None, min_margin=0.0)

REPETITIVE = "go on go on go on go on go on"


def build(samples, judgments, rule="paper", **params):
    return build_pairs(to_table(samples, "samples"), to_table(judgments, "judgments"), rule=rule,
                       params={**DEFAULTS, **params})


def group(pid: str, scored: list[tuple[str, str, float | None]], teacher: tuple[str, float | None] | None = None,
          status: dict | None = None):
    """samples + score judgments for one prompt: scored = [(sample_id, response, score)]."""
    status = status or {}
    samples, judgments = [], []
    for i, (sid, resp, score) in enumerate(scored):
        samples.append(sample_row(sid, pid, resp, index=i))
        judgments.append(score_row(sid, pid, score, status=status.get(sid, "ok"), position=i))
    if teacher is not None:
        sid, score = teacher
        samples.append(sample_row(sid, pid, "teacher answer", source="teacher"))
        judgments.append(score_row(sid, pid, score, status=status.get(sid, "ok"), position=len(scored)))
    return samples, judgments


def pairs_of(result) -> set[tuple[str, str]]:
    return set(zip(result.table["chosen_sample_id"].to_pylist(), result.table["rejected_sample_id"].to_pylist()))


def rows_by_pair(result) -> dict:
    return {(r["chosen_sample_id"], r["rejected_sample_id"]): r for r in result.table.to_pylist()}


# ---------------------------------------------------------------- the paper rule

def test_repetition_ratio():
    assert repetition_ratios(["the cat sat on the mat", REPETITIVE, "", "a b", " \n go on\tgo on go on "]) == \
        pytest.approx([0.0, 0.75, 0.0, 0.0, 0.5])


def test_teacher_positive_needs_margin_two():
    s, j = group("p1", [("a", "x1", 4.5), ("b", "x2", 4.0), ("c", "x3", 4.5), ("d", "x4", 1.0)], teacher=("t", 6.0))
    r = build(s, j)
    assert pairs_of(r) == {("t", "b"), ("t", "d")}  # the two 4.5 are within 2 points of 6
    assert set(r.table["pair_type"].to_pylist()) == {"teacher>policy"}
    assert r.table["rule"].to_pylist() == ["paper", "paper"]
    by = rows_by_pair(r)
    assert by[("t", "b")]["margin"] == 2.0 and by[("t", "d")]["margin"] == 5.0
    assert by[("t", "b")]["chosen_score"] == 6.0 and by[("t", "b")]["rejected_score"] == 4.0
    assert by[("t", "b")]["chosen"] == [{"role": "assistant", "content": "teacher answer"}]
    assert by[("t", "b")]["rejected"] == [{"role": "assistant", "content": "x2"}]
    assert by[("t", "b")]["chosen_source"] == "teacher" and by[("t", "b")]["rejected_source"] == "policy"
    assert all(x is None for x in r.table["replayed_from"].to_pylist())


def test_policy_positive_uses_the_relaxed_margin():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 5.0), ("c", "x3", 5.5), ("d", "x4", 2.0)], teacher=("t", 4.0))
    r = build(s, j)
    # a (6): negatives <= 5: b (5), d (2), the teacher (4); c (5.5) is within the margin.
    # c (5.5) and b (5) are positives too: c > {d, t} (<= 4.5), b > {d, t} (<= 4)
    assert pairs_of(r) == {("a", "b"), ("a", "d"), ("a", "t"), ("c", "d"), ("c", "t"), ("b", "d"), ("b", "t")}
    types = {k: v["pair_type"] for k, v in rows_by_pair(r).items()}
    assert types[("a", "b")] == "policy>policy" and types[("a", "t")] == "policy>teacher"
    assert r.by_type == {"policy>policy": 4, "policy>teacher": 3}


def test_paper_rule_pairs_every_positive():
    # Section 5 of the paper: every sample scoring >= 5 is a positive; teacher 6, students 5/4/3/1
    s, j = group("p1", [("s5", "x5", 5.0), ("s4", "x4", 4.0), ("s3", "x3", 3.0), ("s1", "x1", 1.0)],
                 teacher=("t", 6.0))
    r = build(s, j)
    assert pairs_of(r) == {("t", "s4"), ("t", "s3"), ("t", "s1"), ("s5", "s4"), ("s5", "s3"), ("s5", "s1")}
    assert r.by_type == {"teacher>policy": 3, "policy>policy": 3}


def test_paper_rule_positive_below_a_stronger_positive():
    # two policy positives: the 6 takes the 5 as a negative (1 point below), the 5 keeps its own
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 5.0), ("c", "x3", 3.0)])
    assert pairs_of(build(s, j)) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_paper_rule_zero_margin_never_pairs_both_ways():
    s, j = group("p1", [("a", "x1", 5.0), ("b", "x2", 5.0), ("c", "x3", 2.0)])
    assert pairs_of(build(s, j, policy_margin=0.0)) == {("a", "c"), ("b", "c")}


def test_paper_best_keeps_the_single_best_positive():
    s, j = group("p1", [("s5", "x5", 5.0), ("s4", "x4", 4.0), ("s3", "x3", 3.0), ("s1", "x1", 1.0)],
                 teacher=("t", 6.0))
    r = build(s, j, rule="paper-best")
    assert pairs_of(r) == {("t", "s4"), ("t", "s3"), ("t", "s1")}
    assert set(r.table["rule"].to_pylist()) == {"paper-best"}


def test_no_positive():
    s, j = group("p1", [("a", "x1", 4.0), ("b", "x2", 1.0)], teacher=("t", 4.5))
    r = build(s, j)
    assert len(r.table) == 0
    assert r.dropped == {"no_positive": 1}


def test_no_negative_with_margin():
    s, j = group("p1", [("a", "x1", 5.0), ("b", "x2", 5.0), ("c", "x3", 6.0)], teacher=("t", 6.0))
    r = build(s, j)  # policy c wins the tie for best (prefer policy); nothing <= 5 ... except a and b
    assert pairs_of(r) == {("c", "a"), ("c", "b")}
    s, j = group("p2", [("a2", "x1", 5.0), ("b2", "x2", 5.0)], teacher=("t2", 6.0))
    r = build(s, j, prefer_positive="teacher")
    assert len(r.table) == 0
    assert r.dropped == {"no_negative_with_margin": 1}


def test_repetitive_response_is_never_positive_and_always_negative():
    s, j = group("p1", [("rep", REPETITIVE, 6.0), ("a", "x1", 5.0), ("b", "x2", 1.0)])
    r = build(s, j)
    # the repetitive 6 is skipped: a (5) is the positive; rep is a negative despite scoring higher
    assert pairs_of(r) == {("a", "rep"), ("a", "b")}
    assert r.repetitive_samples == 1
    assert "rep" not in r.table["chosen_sample_id"].to_pylist()


def test_only_repetitive_candidates_give_no_positive():
    s, j = group("p1", [("r1", REPETITIVE, 6.0), ("r2", REPETITIVE + " go on", 1.0)])
    r = build(s, j)
    assert len(r.table) == 0
    assert r.dropped == {"no_positive": 1}


def test_the_stored_repetition_ratio_is_used_and_a_missing_one_measured():
    """The samples column `repetition` (measured when the sample was written) decides; a sample without
    it is measured from its text."""
    s, j = group("p1", [("loop", REPETITIVE, 6.0), ("a", "x1", 5.0), ("b", "x2", 1.0)])
    s[0]["repetition"], s[1]["repetition"] = 0.0, 0.9  # stored: the loop passes, "x1" is the repetitive one
    r = build(s, j)
    assert pairs_of(r) == {("loop", "a"), ("loop", "b")} and r.repetitive_samples == 1
    s[0]["repetition"] = None  # not stored: measured from its text (0.75), an automatic negative again
    r = build(s, j)
    assert pairs_of(r) == set() and r.repetitive_samples == 2 and r.dropped == {"no_positive": 1}


def test_max_repetition_threshold():
    s, j = group("p1", [("rep", REPETITIVE, 6.0), ("a", "x1", 5.0), ("b", "x2", 1.0)])
    r = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, max_repetition=0.9)
    assert pairs_of(r) == {("rep", "b"), ("rep", "a"), ("a", "b")}  # 0.75 <= 0.9: no longer repetitive
    assert r.repetitive_samples == 0


def test_failed_judgments_are_left_out_and_counted():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0), ("c", "x3", None)], teacher=("t", None),
                 status={"c": "error", "t": "unparseable"})
    # even a failed judgment carrying a score must be ignored
    j[2]["score"] = 6.0
    r = build(s, j)
    assert pairs_of(r) == {("a", "b")}
    assert r.failed_judgments == 2
    assert r.unjudged_samples == 2


def test_prompt_with_only_failed_judgments():
    s1, j1 = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
    s2, j2 = group("p2", [("c", "x3", None), ("d", "x4", None)], status={"c": "error", "d": "refused"})
    r = build(s1 + s2, j1 + j2)
    assert pairs_of(r) == {("a", "b")}
    assert r.dropped == {"no_valid_judgments": 1}
    assert r.failed_judgments == 2
    assert r.prompts_in == 2 and r.samples_in == 4


def test_all_judgments_failed_is_not_mistaken_for_pairwise():
    s, j = group("p1", [("c", "x3", None), ("d", "x4", None)], status={"c": "error", "d": "error"})
    r = build(s, j)
    assert len(r.table) == 0
    assert r.dropped == {"no_valid_judgments": 1}


def test_paper_rule_rejects_pairwise_judgments():
    s = [sample_row("a", "p1", "x"), sample_row("b", "p1", "y", index=1)]
    j = [pair_row("a", "b", "p1", 0.9, 0), pair_row("b", "a", "p1", 0.2, 1)]
    with pytest.raises(DnoError, match="best-worst"):
        build(s, j)


def test_several_prompts_are_independent():
    s1, j1 = group("p1", [("a", "x1", 6.0), ("b", "x2", 5.0)])
    s2, j2 = group("p2", [("c", "x3", 4.0), ("d", "x4", 1.0)], teacher=("t2", 6.0))
    r = build(s1 + s2, j1 + j2)
    assert pairs_of(r) == {("a", "b"), ("t2", "c"), ("t2", "d")}
    for row in r.table.to_pylist():
        assert row["prompt_id"] == ("p1" if row["chosen_sample_id"] == "a" else "p2")


def _truncated_group(rule_scores=(6.0, 5.0, 1.0)):
    """cut (finish_reason length) scores 6, a 5, b 1."""
    s, j = group("p1", [("cut", "an answer cut mid", rule_scores[0]), ("a", "x1", rule_scores[1]),
                        ("b", "x2", rule_scores[2])])
    s[0]["finish_reason"] = "length"
    return s, j


def test_truncated_answer_is_never_chosen_by_default():
    s, j = _truncated_group()
    r = build(s, j)
    # the cut 6 is no positive; it is rejected against the finished positive a
    assert pairs_of(r) == {("a", "cut"), ("a", "b")}
    by = rows_by_pair(r)
    assert by[("a", "cut")]["rejected_truncated"] is True and by[("a", "cut")]["chosen_truncated"] is False
    assert by[("a", "b")]["rejected_truncated"] is False
    assert r.truncated_samples == 1
    r = build(s, j, rule="best-worst")
    assert "cut" not in r.table["chosen_sample_id"].to_pylist()


def test_truncated_drop_and_keep():
    s, j = _truncated_group()
    r = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, truncated="drop")
    assert pairs_of(r) == {("a", "b")}
    assert r.truncated_samples == 1
    r = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, truncated="keep")
    assert pairs_of(r) == {("cut", "a"), ("cut", "b"), ("a", "b")}
    assert rows_by_pair(r)[("cut", "b")]["chosen_truncated"] is True
    with pytest.raises(DnoError, match="--truncated"):
        build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, truncated="nope")


# ---------------------------------------------------------------- the rule's parameters

def test_min_positive_score():
    s, j = group("p1", [("a", "x1", 5.0), ("b", "x2", 1.0)])
    assert pairs_of(build(s, j)) == {("a", "b")}
    r = build(s, j, min_positive_score=6.0)
    assert len(r.table) == 0 and r.dropped == {"no_positive": 1}
    s, j = group("p1", [("a", "x1", 3.0), ("b", "x2", 1.0)])
    assert pairs_of(build(s, j, min_positive_score=3.0)) == {("a", "b")}


def test_teacher_margin():
    s, j = group("p1", [("a", "x1", 4.5), ("b", "x2", 3.0)], teacher=("t", 6.0))
    assert pairs_of(build(s, j)) == {("t", "b")}
    assert pairs_of(build(s, j, teacher_margin=1.0)) == {("t", "a"), ("t", "b")}
    r = build(s, j, teacher_margin=4.0)
    assert len(r.table) == 0 and r.dropped == {"no_negative_with_margin": 1}


def test_policy_margin():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 5.0), ("c", "x3", 3.0)])
    assert pairs_of(build(s, j)) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert pairs_of(build(s, j, policy_margin=2.0)) == {("a", "c"), ("b", "c")}
    assert pairs_of(build(s, j, policy_margin=0.5)) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_prefer_positive_of_paper_best():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 4.5), ("c", "x3", 3.0)], teacher=("t", 6.0))
    # tie at 6: policy a is the positive -> negatives <= 5: b, c
    assert pairs_of(build(s, j, rule="paper-best", prefer_positive="policy")) == {("a", "b"), ("a", "c")}
    # teacher t is the positive -> negatives <= 4: c only
    assert pairs_of(build(s, j, rule="paper-best", prefer_positive="teacher")) == {("t", "c")}
    # the paper rule pairs both positives
    assert pairs_of(build(s, j)) == {("a", "b"), ("a", "c"), ("t", "c")}


def test_max_negatives_keeps_the_lowest_scores():
    s, j = group("p1", [("a", "x1", 3.0), ("b", "x2", 1.0), ("c", "x3", 2.0), ("d", "x4", 4.0)], teacher=("t", 6.0))
    assert pairs_of(build(s, j)) == {("t", "a"), ("t", "b"), ("t", "c"), ("t", "d")}
    assert pairs_of(build(s, j, max_negatives=1)) == {("t", "b")}
    assert pairs_of(build(s, j, max_negatives=2)) == {("t", "b"), ("t", "c")}


# ---------------------------------------------------------------- win-rates

def test_score_winrates_by_hand():
    # policy scores 6, 4, 4, 1 and the teacher 6
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 4.0), ("c", "x3", 4.0), ("d", "x4", 1.0)], teacher=("t", 6.0))
    r = build(s, j, prefer_positive="teacher", teacher_margin=2.0)
    by = rows_by_pair(r)
    # teacher vs the 4 policy samples: tie with a (0.5), beats b, c, d -> 3.5 / 4
    # b vs the OTHER policy samples a, c, d: 0 + 0.5 + 1 -> 1.5 / 3
    # d vs a, b, c: 0 -> 0
    row_b, row_d = by[("t", "b")], by[("t", "d")]
    assert row_b["chosen_winrate"] == pytest.approx(3.5 / 4)
    assert row_b["rejected_winrate"] == pytest.approx(1.5 / 3)
    assert row_d["rejected_winrate"] == pytest.approx(0.0)
    # default target = sigmoid(winrate(chosen) - winrate(rejected)), both against every OTHER candidate
    # including the teacher: t 3.5 / 4 as above; b vs a, c, d, t: 0 + 0.5 + 1 + 0 -> 1.5 / 4
    assert row_b["target"] == pytest.approx(1 / (1 + math.exp(-(3.5 / 4 - 1.5 / 4))))
    # and a policy positive: a vs b, c, d -> 1; policy-vs-policy margin is the score gap
    r = build(s, j)
    by = rows_by_pair(r)
    assert by[("a", "b")]["chosen_winrate"] == pytest.approx(1.0)
    assert by[("a", "b")]["margin"] == pytest.approx(2.0)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_soft_target_of_teacher_pairs_counts_the_teacher():
    # teacher 6 beats every policy sample; policy a (4) beats the other policy samples too:
    # against the policy alone both win-rates are 1 and the target would be 0.5
    s, j = group("p1", [("a", "x1", 4.0), ("b", "x2", 1.0), ("c", "x3", 1.0)], teacher=("t", 6.0))
    by = rows_by_pair(build(s, j))
    assert by[("t", "a")]["target"] == pytest.approx(sigmoid(1.0 - 2 / 3))  # a vs t, b, c: 0 + 1 + 1
    assert by[("t", "b")]["target"] == pytest.approx(sigmoid(1.0 - 0.5 / 3))  # b vs t, a, c: 0 + 0 + 0.5
    assert all(r["target"] > 0.5 for r in by.values())


def test_soft_target_never_favours_an_automatic_negative():
    # the repetitive 6 is rejected below a 5 by the rule; its higher score must not pull the target under 0.5
    s, j = group("p1", [("rep", REPETITIVE, 6.0), ("a", "x1", 5.0), ("b", "x2", 1.0)])
    by = rows_by_pair(build(s, j))
    assert by[("a", "rep")]["target"] == 1.0  # only the rule's verdict: the hard label
    assert by[("a", "b")]["target"] == pytest.approx(sigmoid(0.5 - 0.0))  # a vs rep, b: 0 + 1; b: 0
    s, j = _truncated_group()
    assert rows_by_pair(build(s, j))[("a", "cut")]["target"] == 1.0


def _pairwise(pid, ids, prob):
    """Both orders for every pair; prob[(x, y, position)] = P(first shown wins)."""
    samples = [sample_row(sid, pid, f"resp {sid}", index=i) for i, sid in enumerate(ids)]
    judgments = [pair_row(a, b, pid, p, pos) for (a, b, pos), p in prob.items()]
    return samples, judgments


def test_pairwise_winrates_average_both_orders():
    s, j = _pairwise("p1", ["a", "b", "c"], {
        ("a", "b", 0): 0.9, ("b", "a", 1): 0.3,  # a over b: (0.9 + 0.7) / 2 = 0.8
        ("a", "c", 0): 1.0, ("c", "a", 1): 0.0,  # a over c: 1.0
        ("b", "c", 0): 0.6, ("c", "b", 1): 0.4,  # b over c: (0.6 + 0.6) / 2 = 0.6
    })
    r = build(s, j, rule="best-worst")
    assert pairs_of(r) == {("a", "c")}
    row = r.table.to_pylist()[0]
    assert row["chosen_winrate"] == pytest.approx((0.8 + 1.0) / 2)
    assert row["rejected_winrate"] == pytest.approx((0.0 + 0.4) / 2)
    assert row["margin"] == pytest.approx(0.9 - 0.2)
    assert row["chosen_score"] is None
    assert row["pair_type"] == "policy>policy"
    assert row["rule"] == "best-worst"


def test_pairwise_order_judged_twice_weighs_once_and_self_comparisons_are_left_out():
    s, j = _pairwise("p1", ["a", "b", "c"], {
        ("a", "b", 0): 1.0, ("b", "a", 1): 0.5,  # a over b: (1.0 + 0.5) / 2 = 0.75
        ("a", "c", 0): 1.0, ("c", "a", 1): 0.0,  # a over c: 1.0
        ("b", "c", 0): 0.5, ("c", "b", 1): 0.5,  # b over c: 0.5
    })
    again = pair_row("a", "b", "p1", 1.0, 0)  # the order a-b judged a second time
    again["judgment_id"] = "again"
    self_row = pair_row("a", "a", "p1", 0.0, 0)  # a judged against itself
    r = build(s, j + [again, self_row], rule="best-worst")
    assert pairs_of(r) == {("a", "c")}
    row = r.table.to_pylist()[0]
    assert row["chosen_winrate"] == pytest.approx((0.75 + 1.0) / 2)  # not (1 + 1 + 0.5) / 3 for b
    assert row["rejected_winrate"] == pytest.approx((0.0 + 0.5) / 2)


def test_best_worst_drops_ties():
    tie_s, tie_j = _pairwise("p1", ["a", "b"], {("a", "b", 0): 0.8, ("b", "a", 1): 0.8})  # position bias only
    gap_s, gap_j = _pairwise("p2", ["c", "d"], {("c", "d", 0): 0.75, ("d", "c", 1): 0.25})
    r = build(tie_s + gap_s, tie_j + gap_j, rule="best-worst")
    assert pairs_of(r) == {("c", "d")}
    assert r.dropped == {"tie": 1}


def test_best_worst_drops_ties_without_a_pair():
    # what holds today, bug or not: an all-tie prompt gives no pair
    tie_s, tie_j = group("p1", [("a", "x1", 5.0), ("b", "x2", 5.0)])
    r = build(tie_s, tie_j, rule="best-worst")
    assert len(r.table) == 0
    assert sum(r.dropped.values()) == 1


def test_best_worst_min_margin():
    gap_s, gap_j = _pairwise("p2", ["c", "d"], {("c", "d", 0): 0.75, ("d", "c", 1): 0.25})  # c: 0.75, d: 0.25
    big_s, big_j = _pairwise("p3", ["e", "f"], {("e", "f", 0): 1.0, ("f", "e", 1): 0.0})  # e: 1.0, f: 0.0
    r = build(gap_s + big_s, gap_j + big_j, rule="best-worst")
    assert pairs_of(r) == {("c", "d"), ("e", "f")}
    assert not r.dropped
    r = build(gap_s + big_s, gap_j + big_j, rule="best-worst", min_margin=0.75)
    assert pairs_of(r) == {("e", "f")}
    assert r.dropped == {"below_min_margin": 1}
    r = build(gap_s + big_s, gap_j + big_j, rule="best-worst", min_margin=0.5)  # gap 0.5 >= 0.5 is kept
    assert pairs_of(r) == {("c", "d"), ("e", "f")}


def test_best_worst_repetitive_is_never_best():
    s, j = group("p1", [("rep", REPETITIVE, 6.0), ("a", "x1", 4.0), ("b", "x2", 2.0)])
    r = build(s, j, rule="best-worst")
    assert pairs_of(r) == {("a", "rep")}


def test_best_worst_with_scores():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 3.0), ("c", "x3", 1.0)])
    r = build(s, j, rule="best-worst")
    assert pairs_of(r) == {("a", "c")}


def test_failed_pairwise_judgments_are_left_out():
    s, j = _pairwise("p1", ["a", "b"], {("a", "b", 0): 0.9, ("b", "a", 1): 0.1})
    j.append(pair_row("a", "b", "p1", 0.0, 0, status="error"))
    j[-1]["judgment_id"] = "failed"
    r = build(s, j, rule="best-worst")
    assert pairs_of(r) == {("a", "b")}
    assert r.table["chosen_winrate"].to_pylist() == [pytest.approx(0.9)]
    assert r.failed_judgments == 1


def test_unknown_rule():
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
    with pytest.raises(DnoError, match="nope"):
        build(s, j, rule="nope")


def test_judgments_of_other_samples():
    s, _ = group("p1", [("a", "x1", 6.0)])
    _, j = group("p1", [("zz", "x1", 6.0)])
    with pytest.raises(DnoError, match="sample_id"):
        build(s, j)


# ---------------------------------------------------------------- a user's SQL rule

def _user_rule(tmp_path, sql, params=None, samples=None, judgments=None):
    if samples is None:
        s1, j1 = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
        s2, j2 = group("p2", [("c", "x3", 2.0), ("d", "x4", 1.0)])
        samples, judgments = s1 + s2, j1 + j2
    path = tmp_path / "my_rule.sql"
    path.write_text(sql)
    return build_pairs(to_table(samples, "samples"), to_table(judgments, "judgments"), params=params or DEFAULTS,
                       sql_file=path), path


def test_user_sql_rule(tmp_path):
    sql = """
    -- highest score against lowest score, whatever the margin
    SELECT prompt_id, arg_max(sample_id, score) AS chosen_sample_id, arg_min(sample_id, score) AS rejected_sample_id
    FROM candidates GROUP BY prompt_id
    """
    r, _ = _user_rule(tmp_path, sql)
    assert pairs_of(r) == {("a", "b"), ("c", "d")}
    assert set(r.table["rule"].to_pylist()) == {"sql:my_rule.sql"}


def test_user_sql_rule_with_target_and_params(tmp_path):
    sql = """SELECT prompt_id, arg_max(sample_id, score) AS chosen_sample_id,
                    arg_min(sample_id, score) AS rejected_sample_id, 0.9 AS target
             FROM candidates GROUP BY prompt_id HAVING max(score) >= $min_positive_score"""
    r, _ = _user_rule(tmp_path, sql)
    assert pairs_of(r) == {("a", "b")}
    assert r.table["target"].to_pylist() == [pytest.approx(0.9)]


def test_user_sql_rule_naming_response_hash_gets_it(tmp_path):
    """response_hash is computed for a rule whose text names it (reading every response), else NULL."""
    s, j = group("p1", [("a", "same", 6.0), ("b", "same", 1.0), ("c", "other", 1.0)])
    same = """SELECT c.prompt_id, c.sample_id AS chosen_sample_id, d.sample_id AS rejected_sample_id
              FROM candidates c JOIN candidates d
                ON c.prompt_id = d.prompt_id AND c.response_hash = d.response_hash AND c.sample_id < d.sample_id"""
    r, _ = _user_rule(tmp_path, same, samples=s, judgments=j)
    assert pairs_of(r) == {("a", "b")}
    none = """SELECT prompt_id, arg_max(sample_id, score) AS chosen_sample_id, arg_min(sample_id, score) AS rejected_sample_id
              FROM candidates GROUP BY prompt_id HAVING count(*) FILTER (WHERE response_hash IS NULL) = 0"""
    r, _ = _user_rule(tmp_path, none.replace("response_hash", "RESPONSE_HASH"), samples=s, judgments=j)
    assert len(pairs_of(r)) == 1  # named in another case: still computed


def test_user_sql_syntax_error_names_the_file(tmp_path):
    with pytest.raises(DnoError) as info:
        _user_rule(tmp_path, "SELEC prompt_id FROM candidates")
    assert "my_rule.sql" in str(info.value)


def test_user_sql_pair_across_prompts_names_the_file(tmp_path):
    sql = "SELECT 'p1' AS prompt_id, 'a' AS chosen_sample_id, 'd' AS rejected_sample_id"
    with pytest.raises(DnoError) as info:
        _user_rule(tmp_path, sql)
    assert "my_rule.sql" in str(info.value)
    assert "one prompt" in str(info.value)


@pytest.mark.parametrize("sql", [
    "SELECT 'p1' AS prompt_id, 'a' AS chosen_sample_id, 'a' AS rejected_sample_id",  # same sample
    "SELECT 'p1' AS prompt_id, 'a' AS chosen_sample_id, 'nope' AS rejected_sample_id",  # unknown sample
    "SELECT 'p2' AS prompt_id, 'a' AS chosen_sample_id, 'b' AS rejected_sample_id",  # wrong prompt_id
    "SELECT 'p1' AS prompt_id, 'a' AS chosen_sample_id",  # a missing column
])
def test_user_sql_bad_pairs(tmp_path, sql):
    with pytest.raises(DnoError, match="my_rule.sql"):
        _user_rule(tmp_path, sql)


def test_user_sql_missing_or_empty_file(tmp_path):
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
    with pytest.raises(DnoError, match="nope.sql"):
        build_pairs(to_table(s, "samples"), to_table(j, "judgments"), sql_file=tmp_path / "nope.sql")
    with pytest.raises(DnoError, match="my_rule.sql"):
        _user_rule(tmp_path, "   \n")


# ---------------------------------------------------------------- replay

def _new_and_old(tmp_path, n_new_prompts=10, n_old_prompts=12):
    """New judgments giving 1 pair per prompt; an older pairs file with n_old_prompts pairs."""
    s_new, j_new = [], []
    for k in range(n_new_prompts):
        s, j = group(f"n{k}", [(f"na{k}", "x1", 6.0), (f"nb{k}", "x2", 1.0)])
        s_new += s
        j_new += j
    s_old, j_old = [], []
    for k in range(n_old_prompts):
        s, j = group(f"o{k}", [(f"oa{k}", "x1", 6.0), (f"ob{k}", "x2", 1.0)])
        s_old += s
        j_old += j
    old = build(s_old, j_old).table
    old_path = write_artifact(old, tmp_path / "iter-01-pairs.parquet", "pairs", None)
    return s_new, j_new, old_path


@pytest.mark.parametrize("n_new,fraction", [(10, 0.3), (7, 0.3), (10, 0.5), (3, 0.3)])
def test_replay_adds_at_most_the_fraction(tmp_path, n_new, fraction):
    s, j, old_path = _new_and_old(tmp_path, n_new_prompts=n_new)
    r = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, replay=[old_path],
                    replay_fraction=fraction)
    rows = r.table.to_pylist()
    new = [x for x in rows if x["replayed_from"] is None]
    replayed = [x for x in rows if x["replayed_from"] is not None]
    assert len(new) == n_new
    assert len(replayed) == math.floor(fraction * 12)  # of the older file's 12 pairs, whatever n_new
    assert all(x["replayed_from"] == str(old_path) for x in replayed)
    old_ids = set(read_artifact(old_path, "pairs")["pair_id"].to_pylist())
    assert {x["pair_id"] for x in replayed} <= old_ids
    assert len({x["pair_id"] for x in replayed}) == len(replayed)
    assert r.replayed == ({str(old_path): len(replayed)} if replayed else {})
    assert r.by_type["teacher>policy"] == 0 and sum(r.by_type.values()) == len(rows)


def test_replay_halves_per_older_file_and_is_deterministic(tmp_path):
    s, j, old1 = _new_and_old(tmp_path, n_new_prompts=10)
    older = tmp_path / "older"
    older.mkdir()
    _, _, old2 = _new_and_old(older, n_new_prompts=1)
    # old2 has the same pair_ids as old1; make them distinct
    t2 = read_artifact(old2, "pairs").to_pylist()
    for x in t2:
        x["pair_id"] = "older-" + x["pair_id"]
    write_artifact(t2, old2, "pairs", None)
    kw = dict(params=DEFAULTS, replay=[old1, old2], replay_fraction=0.3)
    r1 = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), **kw)
    r2 = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), **kw)
    assert r1.replayed == {str(old1): 3, str(old2): 1}  # floor(12 * 0.3), floor(12 * 0.15) of each file's 12
    assert r1.table.to_pylist() == r2.table.to_pylist()


def _iteration(tmp_path, name, n_prompts, replay=()):
    """An iteration's pairs file: one new pair per prompt, plus replay of earlier files (newest first)."""
    s_all, j_all = [], []
    for k in range(n_prompts):
        s, j = group(f"{name}-p{k}", [(f"{name}-a{k}", "x1", 6.0), (f"{name}-b{k}", "x2", 1.0)])
        s_all += s
        j_all += j
    r = build_pairs(to_table(s_all, "samples"), to_table(j_all, "judgments"), params=DEFAULTS, replay=list(replay),
                    replay_fraction=0.3)
    return write_artifact(r.table, tmp_path / f"{name}.parquet", "pairs", None), r


def test_replay_over_three_iterations_counts_rows_per_source(tmp_path):
    it1, _ = _iteration(tmp_path, "it1", 40)
    it2, r2 = _iteration(tmp_path, "it2", 40, replay=[it1])
    assert r2.replayed == {str(it1): 12}  # 30 % of it1's 40 pairs
    it3, r3 = _iteration(tmp_path, "it3", 10, replay=[it2, it1])
    rows = r3.table.to_pylist()
    by_source = {}
    for x in rows:
        by_source[x["replayed_from"]] = by_source.get(x["replayed_from"], 0) + 1
    # the fraction is of each earlier iteration's OWN new pairs (40 each), not of it3's 10 new pairs:
    # t-1 30 % -> 12, t-2 15 % -> 6; never a row that it2 had itself replayed from it1
    assert by_source == {None: 10, str(it2): 12, str(it1): 6}
    assert all(x["pair_id"] in set(read_artifact(it2, "pairs").filter(
        pc.is_null(read_artifact(it2, "pairs")["replayed_from"]))["pair_id"].to_pylist())
        for x in rows if x["replayed_from"] == str(it2))
    assert all(x["prompt_id"].startswith("it2-") for x in rows if x["replayed_from"] == str(it2))
    assert all(x["prompt_id"].startswith("it1-") for x in rows if x["replayed_from"] == str(it1))
    ids = [x["pair_id"] for x in rows]
    assert len(ids) == len(set(ids))


def test_replay_never_duplicates_a_pair_held_by_two_files(tmp_path):
    it1, _ = _iteration(tmp_path, "it1", 40)
    copy = tmp_path / "copy"
    copy.mkdir()
    same = write_artifact(read_artifact(it1, "pairs"), copy / "it1.parquet", "pairs", None)
    _, r = _iteration(tmp_path, "it3", 40, replay=[same, it1])
    ids = r.table["pair_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert sum(r.replayed.values()) >= 12


def test_replay_file_must_be_pairs(tmp_path):
    s, j, _ = _new_and_old(tmp_path, n_new_prompts=2)
    samples_path = write_artifact(s, tmp_path / "samples.parquet", "samples", None)
    with pytest.raises(DnoError, match="samples.parquet"):
        build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, replay=[samples_path])


def test_replay_skips_prompts_that_have_new_pairs(tmp_path):
    # the older iteration judged other samples of the SAME prompts
    s_new, j_new, s_old, j_old = [], [], [], []
    for k in range(10):
        s, j = group(f"p{k}", [(f"na{k}", "x1", 6.0), (f"nb{k}", "x2", 1.0)])
        s_new += s
        j_new += j
        s, j = group(f"p{k}", [(f"oa{k}", "x1", 6.0), (f"ob{k}", "x2", 1.0)])
        s_old += s
        j_old += j
    old_path = write_artifact(build(s_old, j_old).table, tmp_path / "old.parquet", "pairs", None)
    r = build_pairs(to_table(s_new, "samples"), to_table(j_new, "judgments"), params=DEFAULTS, replay=[old_path])
    assert sum(r.replayed.values()) == 0


# ---------------------------------------------------------------- through the stages, in process

def test_pairwise_judge_stage_then_best_worst_stage(tmp_path, monkeypatch):
    from dno_data.stages.judge import JudgeConfig
    from dno_data.stages.judge import run as judge_run
    from dno_data.stages.pairs import PairsConfig
    from dno_data.stages.pairs import run as pairs_run

    (tmp_path / "longer_wins.py").write_text(
        "def judge(messages, a, b):\n"
        "    return 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    samples = [sample_row("a", "p1", "1"), sample_row("b", "p1", "22", index=1), sample_row("c", "p1", "333", index=2),
               sample_row("d", "p2", "1"), sample_row("e", "p2", "2", index=1),
               sample_row("t", "p2", "teacher", source="teacher")]
    s_path = write_artifact(samples, tmp_path / "samples.parquet", "samples", None)
    j_path = judge_run(JudgeConfig.from_options(samples=s_path, output=tmp_path / "judgments.parquet", judge="python:longer_wins:judge",
                                   mode="pairwise"))
    judgments = read_artifact(j_path, "judgments").to_pylist()
    assert len(judgments) == 2 * (3 + 3)  # C(3,2) pairs per prompt, both orders
    assert {j["position"] for j in judgments} == {0, 1}
    p_path = pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "pairs.parquet", rule="best-worst"))
    rows = read_artifact(p_path, "pairs").to_pylist()
    got = {(r["chosen_sample_id"], r["rejected_sample_id"]): r for r in rows}
    # p1: c beats a and b -> 1.0; a loses to both -> 0.0.  p2: teacher beats d and e -> 1.0; d, e tie -> 0.5
    assert ("c", "a") in got and len(got) == 2
    assert got[("c", "a")]["chosen_winrate"] == 1.0 and got[("c", "a")]["rejected_winrate"] == 0.0
    (t_pair,) = [k for k in got if k[0] == "t"]
    assert t_pair[1] in ("d", "e")  # d and e tie for worst
    assert got[t_pair]["pair_type"] == "teacher>policy"
    assert got[t_pair]["chosen_winrate"] == 1.0 and got[t_pair]["rejected_winrate"] == 0.5
    # the paper rule refuses pairwise judgments with an actionable message
    with pytest.raises(DnoError, match="best-worst"):
        pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "paper.parquet", rule="paper"))
    assert not (tmp_path / "paper.parquet").exists()


# ---------------------------------------------------------------- the stage over files: checks first, one DuckDB plan

def _files(tmp_path, samples, judgments):
    return (write_artifact(samples, tmp_path / "samples.parquet", "samples", None),
            write_artifact(judgments, tmp_path / "judgments.parquet", "judgments", None))


def test_stage_writes_pairs_from_files(tmp_path, capsys):
    from dno_data.lineage import read_lineage
    from dno_data.stages.pairs import PairsConfig
    from dno_data.stages.pairs import run as pairs_run

    s, j = _truncated_group()
    s2, j2 = group("p2", [("c", "x3", 2.0), ("d", "x4", 1.0)], teacher=("t2", 6.0))
    s_path, j_path = _files(tmp_path, s + s2, j + j2)
    out = pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "pairs.parquet", memory_limit="256MB"))
    rows = read_artifact(out, "pairs").to_pylist()
    assert {(r["chosen_sample_id"], r["rejected_sample_id"]) for r in rows} == \
        {("a", "cut"), ("a", "b"), ("t2", "c"), ("t2", "d")}
    assert [r["prompt_id"] for r in rows] == sorted(r["prompt_id"] for r in rows)
    assert read_lineage(out)["stage"] == "pairs"
    err = capsys.readouterr().err
    assert re.search(r"truncated samples \(--truncated negative\)\s+1\n", err)
    assert "pairs written" in err and not list(tmp_path.glob(".pairs.parquet*"))  # no temp file or spill folder left
    # the same rows as the in-memory path
    mem = build_pairs(to_table(s + s2, "samples"), to_table(j + j2, "judgments"), params=DEFAULTS)
    assert mem.table.to_pylist() == rows


def test_stage_refuses_before_any_work(tmp_path, monkeypatch):
    from dno_data.stages.pairs import PairsConfig
    from dno_data.stages.pairs import run as pairs_run

    import dno_data.pairs as pairs_mod

    def no_work(*a, **k):
        raise AssertionError("the work started before the checks")

    monkeypatch.setattr(pairs_mod, "_build", no_work)
    s = [sample_row("a", "p1", "x"), sample_row("b", "p1", "y", index=1)]
    j = [pair_row("a", "b", "p1", 0.9, 0), pair_row("b", "a", "p1", 0.2, 1)]
    s_path, j_path = _files(tmp_path, s, j)
    with pytest.raises(DnoError, match="needs score judgments"):
        pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "pairs.parquet", rule="paper"))
    with pytest.raises(DnoError, match="--truncated"):
        pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "pairs.parquet", rule="best-worst", truncated="nope"))
    with pytest.raises(DnoError, match="samples.parquet.*expected 'pairs'"):
        pairs_run(PairsConfig.from_options(judgments=j_path, samples=s_path, output=tmp_path / "pairs.parquet", rule="best-worst", replay=(s_path,)))
    with pytest.raises(DnoError, match="expected 'judgments'"):
        pairs_run(PairsConfig.from_options(judgments=s_path, samples=s_path, output=tmp_path / "pairs.parquet", rule="best-worst"))
    assert not (tmp_path / "pairs.parquet").exists()


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    """4,000 prompts x 6 chat-length answers (150-350 words of a 3,000-word vocabulary, about 1.5k
    characters, 36 MB of text) with their repetition ratios (as `dno sample` writes them), a random
    score 1..6 each, as a samples and a judgments file."""
    import random

    rng = random.Random(0)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(1, 9))) for _ in range(3000)]
    samples, judgments = [], []
    for p in range(4000):
        for i in range(6):
            sid = f"p{p:04d}-{i}"
            samples.append(sample_row(sid, f"p{p:04d}", " ".join(rng.choices(vocab, k=rng.randint(150, 350))), index=i))
            judgments.append(score_row(sid, f"p{p:04d}", float(rng.randint(1, 6)), position=i))
    for row, ratio in zip(samples, repetition_ratios(r["response"] for r in samples)):
        row["repetition"] = ratio
    folder = tmp_path_factory.mktemp("chat")
    s_path, j_path = _files(folder, samples, judgments)
    scores: dict = {}
    for j in judgments:
        scores.setdefault(j["prompt_id"], []).append(j["score"])
    return s_path, j_path, sum(max(v) > min(v) for v in scores.values())


def test_chat_length_answers_fit_a_small_memory_limit(tmp_path, chat_files):
    """36 MB of answers under a 56MB limit: the pairs spill instead of running out of memory (joining
    each side's texts to the pairs, then sorting the finished rows, and writing them in row groups of
    122,880 rows made it fail up to 56MB), and the file is the same bytes as without a limit."""
    s_path, j_path, expected = chat_files
    small, free = tmp_path / "small.parquet", tmp_path / "free.parquet"
    r = build_pairs(s_path, j_path, rule="best-worst", params=DEFAULTS, output=small, memory_limit="56MB")
    build_pairs(s_path, j_path, rule="best-worst", params=DEFAULTS, output=free, memory_limit=None)
    assert r.pairs == expected and small.read_bytes() == free.read_bytes()
    samples = read_artifact(s_path, "samples")
    texts = dict(zip(samples["sample_id"].to_pylist(), samples["response"].to_pylist()))
    rows = read_artifact(small, "pairs").to_pylist()
    assert all(r["chosen"][0]["content"] == texts[r["chosen_sample_id"]] for r in rows)
    assert all(r["rejected"][0]["content"] == texts[r["rejected_sample_id"]] for r in rows)


def test_out_of_memory_is_one_line_naming_the_limit(tmp_path, chat_files, cli):
    s_path, j_path, _ = chat_files
    out = tmp_path / "pairs.parquet"
    with pytest.raises(DnoError, match=r"out of memory under --memory-limit 4MB.*raise --memory-limit") as e:
        build_pairs(s_path, j_path, rule="best-worst", params=DEFAULTS, output=out, memory_limit="4MB")
    assert "\n" not in str(e.value) and not out.exists() and not list(tmp_path.iterdir())
    r = cli("pairs", j_path, s_path, "-o", out, "--rule", "best-worst", "--memory-limit", "4MB")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.fullmatch(r"error: dno pairs ran out of memory under --memory-limit 4MB \(.*\); raise --memory-limit "
                        r"\(e\.g\. --memory-limit 8MB\), or free memory\n", r.stderr), r.stderr
    assert not out.exists() and not list(tmp_path.glob(".pairs.parquet*"))
    import dno_data.pairs as pairs_mod  # under auto, the limit it stood for

    auto = pairs_mod._out_of_memory(RuntimeError("Out of Memory Error: failed to pin block"), "1GB", "auto")
    assert str(auto).startswith("dno pairs ran out of memory under --memory-limit auto (1GB) (failed to pin block)")
    assert "e.g. --memory-limit 2GB" in str(auto)
    assert pairs_mod._out_of_memory(RuntimeError("Binder Error: no such column"), "1GB", "auto") is None


def test_a_failed_write_is_one_line_and_leaves_no_file(tmp_path, chat_files, monkeypatch):
    """The row groups are written by a thread of their own; its error (here a full disk) reaches the caller."""
    import dno_data.pairs_write as pairs_write

    class FullDisk(pairs_write.pq.ParquetWriter):
        def write_table(self, table, *a, **k):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pairs_write.pq, "ParquetWriter", FullDisk)
    s_path, j_path, _ = chat_files
    out = tmp_path / "pairs.parquet"
    with pytest.raises(DnoError, match=r"pairs.parquet: cannot write it \(.*No space left on device\)"):
        build_pairs(s_path, j_path, rule="best-worst", params=DEFAULTS, output=out)
    assert not list(tmp_path.iterdir())


def test_bad_memory_limit_is_one_line(tmp_path):
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
    s_path, j_path = _files(tmp_path, s, j)
    with pytest.raises(DnoError, match="--memory-limit"):
        build_pairs(s_path, j_path, params=DEFAULTS, memory_limit="lots")


def test_auto_memory_limit_follows_the_rule(tmp_path, monkeypatch):
    """One pair a prompt runs in 1GB (1.74 GB for the whole process at 1M prompts x 6 chat-length answers);
    the paper rules' and --sql's several pairs a prompt get 1.5GB; a limit given is used as given."""
    import dno_data.pairs as pairs_mod

    assert pairs_mod.memory_limit_for("auto", "best-worst") == "1GB"
    assert pairs_mod.memory_limit_for("auto", "paper") == pairs_mod.memory_limit_for("auto", "paper-best") == "1.5GB"
    assert pairs_mod.memory_limit_for("auto", "best-worst", sql_file=tmp_path / "r.sql") == "1.5GB"
    assert pairs_mod.memory_limit_for("700MB", "paper") == "700MB"
    seen = []
    real = pairs_mod._connect
    monkeypatch.setattr(pairs_mod, "_connect", lambda limit, *a: seen.append(limit) or real(limit, *a))
    s, j = group("p1", [("a", "x1", 6.0), ("b", "x2", 1.0)])
    s_path, j_path = _files(tmp_path, s, j)
    for rule in ("best-worst", "paper"):
        build_pairs(s_path, j_path, rule=rule, params=DEFAULTS)
    assert seen == ["1GB", "1.5GB"]


def test_repetition_check_is_skipped_when_it_cannot_fire(tmp_path, monkeypatch):
    import dno_data.repetition as repetition_mod

    loaded = []
    real = repetition_mod.load_sql
    monkeypatch.setattr(repetition_mod, "load_sql", lambda name: loaded.append(name) or real(name))
    s, j = group("p1", [("rep", REPETITIVE, 6.0), ("a", "x1", 5.0), ("b", "x2", 1.0)])
    build(s, j)
    assert "repetition" in loaded
    loaded.clear()
    r = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, max_repetition=1.0)
    assert "repetition" not in loaded
    assert r.repetitive_samples == 0 and ("rep", "a") in pairs_of(r)


# ---------------------------------------------------------------- --max-pairs (matched budgets)

def test_max_pairs_keeps_a_seeded_subset_of_the_new_pairs():
    s, j = group("p1", [("s5", "x5", 5.0), ("s4", "x4", 4.0), ("s3", "x3", 3.0), ("s1", "x1", 1.0)],
                 teacher=("t", 6.0))
    full = pairs_of(build(s, j))
    assert len(full) == 6
    capped = [build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, max_pairs=4, seed=seed)
              for seed in (0, 0, 1, 2, 3)]
    assert all(len(pairs_of(r)) == 4 and pairs_of(r) <= full and r.capped == 2 for r in capped)
    assert pairs_of(capped[0]) == pairs_of(capped[1])  # the same seed, the same subset
    assert len({frozenset(pairs_of(r)) for r in capped}) > 1  # another seed, another subset
    big = build_pairs(to_table(s, "samples"), to_table(j, "judgments"), params=DEFAULTS, max_pairs=100)
    assert pairs_of(big) == full and big.capped == 0


# ---------------------------------------------------------------- a rule is one .sql file

def test_a_rule_file_declares_its_rules_and_parameters(tmp_path):
    """`-- @rule` and `-- @param` header lines are all a new rule needs: its --rule name, its flags, their checks."""
    from dno_data.config import flat_fields
    from dno_data.pair_rules import DEFAULT_PARAMS, RULES, RuleParams, registry
    from dno_data.stages.pairs import PairsConfig

    (tmp_path / "rule_longest.sql").write_text(
        "-- @rule longest: the longest answer against the shortest\n"
        "-- @rule longest-strict strict: ... and never a tie\n"
        "-- @param min_chars int 10 >=1: Shortest answer that may be chosen.\n"
        "-- @param strict bool false: internal\n"
        "SELECT prompt_id, NULL AS chosen_sample_id, NULL AS rejected_sample_id FROM candidates WHERE $min_chars > 0\n")
    rules, params = registry(tmp_path)
    assert set(rules) == {"longest", "longest-strict"} and rules["longest-strict"].flags == ("strict",)
    assert params["min_chars"].default == 10 and params["min_chars"].help.startswith("Shortest")
    with pytest.raises(ValueError, match="at least 1"):
        params["min_chars"].check(0)
    # the shipped rules: the paper's parameters are flags of dno pairs, with the paper's values
    assert RULES[0] == "paper" and set(RULES) == {"paper", "paper-best", "best-worst"}
    assert DEFAULT_PARAMS["min_positive_score"] == 5.0 and DEFAULT_PARAMS["teacher_margin"] == 2.0
    flags = {x.flag for x in flat_fields(PairsConfig)}
    assert {"--min-positive-score", "--teacher-margin", "--policy-margin", "--min-margin"} <= flags
    with pytest.raises(Exception, match="--teacher-margin -1: must be at least 0"):
        PairsConfig.from_options(judgments="j", samples="s", output="o", teacher_margin=-1)
    assert RuleParams().prefer_positive == "policy"


def test_output_in_a_folder_that_does_not_exist_yet(tmp_path):
    """`dno pairs -o new/folder/pairs.parquet` makes the folder (its spill folder lives there): no traceback."""
    from conftest import run_cli, write_example

    s_path = write_example(tmp_path / "s.parquet", "samples")
    j_path = write_example(tmp_path / "j.parquet", "judgments")
    proc = run_cli("pairs", j_path, s_path, "-o", tmp_path / "new" / "folder" / "pairs.parquet", "--rule", "best-worst",
                   cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "new" / "folder" / "pairs.parquet").exists()
    assert not list((tmp_path / "new" / "folder").glob(".*spill*"))


def test_the_paper_rule_refuses_scores_off_its_rubric(tmp_path):
    """The paper rule's defaults (a positive scores >= 5, margins 2 and 1) are for the 1-6 rubric; a reward model's
    scores (here -1.2 to 8.5) under them would make a handful of pairs, silently. With those defaults the rule
    refuses such scores in one line; thresholds given for the scale, or best-worst, run."""
    s, j = group("p1", [("a", "x1", 8.5), ("b", "x2", -1.2), ("c", "x3", 3.0)])
    s_path, j_path = _files(tmp_path, s, j)
    with pytest.raises(DnoError, match=r"--rule paper: its default thresholds .* 1-6 rubric.* from -1\.2 to 8\.5.*"
                                       r"--rule best-worst"):
        build_pairs(s_path, j_path, rule="paper", params=DEFAULTS, output=tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()
    for rule, params in (("paper", {**DEFAULTS, "min_positive_score": 8.0}), ("best-worst", DEFAULTS)):
        r = build_pairs(s_path, j_path, rule=rule, params=params, output=tmp_path / f"{rule}.parquet")
        assert r.pairs >= 1, rule

"""The `paper` pair rule written directly in Python, one prompt at a time.

Two uses: the baseline that bench_pairs.py times DuckDB against, and an independent
implementation the tests compare rule_paper.sql with on random data.
"""

from __future__ import annotations

from collections import defaultdict


def paper_pairs(samples: list[dict], scores: dict[str, float], repetitive: set[str] = frozenset(), *,
                min_positive_score=5.0, teacher_margin=2.0, policy_margin=1.0, prefer_positive="policy",
                max_negatives=None, distinct_negatives=True) -> set[tuple[str, str]]:
    """(chosen_sample_id, rejected_sample_id) pairs of the DNO-Prct rule."""
    by_prompt = defaultdict(list)
    for s in samples:
        by_prompt[s["prompt_id"]].append(s)
    out = set()
    for cands in by_prompt.values():
        judged = [c for c in cands if scores.get(c["sample_id"]) is not None]
        if not judged:
            continue
        policy = [c for c in judged if c["source"] == "policy"]

        def winrate(c):
            others = [o for o in policy if o["sample_id"] != c["sample_id"]]
            if not others:
                return None
            s = scores[c["sample_id"]]
            return sum(1.0 if s > scores[o["sample_id"]] else 0.5 if s == scores[o["sample_id"]] else 0.0
                       for o in others) / len(others)

        def rank(c):
            w = winrate(c)
            return (c["sample_id"] in repetitive, -scores[c["sample_id"]], c["source"] != prefer_positive,
                    w is None, -(w or 0.0), c["sample_id"])

        pos = min(judged, key=rank)
        if pos["sample_id"] in repetitive or scores[pos["sample_id"]] < min_positive_score:
            continue
        margin = teacher_margin if pos["source"] == "teacher" else policy_margin
        negs = [c for c in judged if c is not pos and (
            c["sample_id"] in repetitive or scores[c["sample_id"]] <= scores[pos["sample_id"]] - margin)]
        negs.sort(key=lambda c: (scores[c["sample_id"]], c["sample_id"]))
        if distinct_negatives:  # one pair per distinct rejected text (the first in that order)
            seen: set = set()
            negs = [c for c in negs if not (c["response"] in seen or seen.add(c["response"]))]
        if max_negatives is not None:
            negs = negs[:max_negatives]
        out |= {(pos["sample_id"], n["sample_id"]) for n in negs}
    return out

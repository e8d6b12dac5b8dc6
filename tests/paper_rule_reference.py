"""The paper pair rules written directly in Python, one prompt at a time: an independent
implementation that tests/test_pairs_reference.py compares the SQL rules with on random data.

paper_pairs       rule_paper.sql       (every positive, Section 5 of the DNO paper)
paper_best_pairs  rule_paper.sql, $best_only  (--rule paper-best: only the best-scored positive of a prompt)
repetition_ratio  repetition.sql       (the n-gram check that makes automatic negatives)
"""

from __future__ import annotations

import random
from collections import defaultdict


def repetition_ratio(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _by_prompt(samples: list[dict]) -> dict[str, list[dict]]:
    by_prompt = defaultdict(list)
    for s in samples:
        by_prompt[s["prompt_id"]].append(s)
    return by_prompt


def _negatives(pos, judged, scores, repetitive, margin, distinct_negatives, max_negatives):
    p = scores[pos["sample_id"]]
    negs = [c for c in judged if c is not pos and (
        c["sample_id"] in repetitive or (scores[c["sample_id"]] < p and scores[c["sample_id"]] <= p - margin))]
    negs.sort(key=lambda c: (scores[c["sample_id"]], c["sample_id"]))
    if distinct_negatives:  # one pair per distinct rejected text (the first in that order)
        seen: set = set()
        negs = [c for c in negs if not (c["response"] in seen or seen.add(c["response"]))]
    if max_negatives is not None:
        negs = negs[:max_negatives]
    return negs


def paper_pairs(samples: list[dict], scores: dict[str, float], repetitive: set[str] = frozenset(), *,
                min_positive_score=5.0, teacher_margin=2.0, policy_margin=1.0, max_negatives=None,
                distinct_negatives=True, **_) -> set[tuple[str, str]]:
    """(chosen_sample_id, rejected_sample_id) pairs of the DNO-Prct rule: every positive, all its negatives."""
    out = set()
    for cands in _by_prompt(samples).values():
        judged = [c for c in cands if scores.get(c["sample_id"]) is not None]
        for pos in judged:
            if pos["sample_id"] in repetitive or scores[pos["sample_id"]] < min_positive_score:
                continue
            margin = teacher_margin if pos["source"] == "teacher" else policy_margin
            negs = _negatives(pos, judged, scores, repetitive, margin, distinct_negatives, max_negatives)
            out |= {(pos["sample_id"], n["sample_id"]) for n in negs}
    return out


def paper_best_pairs(samples: list[dict], scores: dict[str, float], repetitive: set[str] = frozenset(), *,
                     min_positive_score=5.0, teacher_margin=2.0, policy_margin=1.0, prefer_positive="policy",
                     max_negatives=None, distinct_negatives=True, **_) -> set[tuple[str, str]]:
    """(chosen_sample_id, rejected_sample_id) pairs with only the best-scored positive of each prompt."""
    out = set()
    for cands in _by_prompt(samples).values():
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
        negs = _negatives(pos, judged, scores, repetitive, margin, distinct_negatives, max_negatives)
        out |= {(pos["sample_id"], n["sample_id"]) for n in negs}
    return out


def synthetic_rows(n_prompts: int, k: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """K policy samples + 1 teacher per prompt, each with one random 1..6 score judgment; policy
    samples repeat one another's text (3 distinct texts a prompt), as sampled answers do."""
    rng = random.Random(seed)
    samples, judgments = [], []
    for p in range(n_prompts):
        pid = f"p{p:07d}"
        msgs = [{"role": "user", "content": f"question {p}"}]
        for i in range(k + 1):
            sid = f"{pid}-{i}"
            source = "teacher" if i == k else "policy"
            samples.append({"sample_id": sid, "prompt_id": pid, "messages": msgs, "prompt_text": f"question {p}",
                            "reference": None, "response": f"answer {p} {i % 3}" if source == "policy" else f"gold {p}",
                            "source": source, "generator": "test", "generator_id": "test", "sample_index": i % k,
                            "seed": 0, "temperature": 0.7, "top_p": 0.95, "num_tokens": 3,
                            "finish_reason": "stop" if source == "policy" else "teacher"})
            judgments.append({"judgment_id": f"j{sid}", "prompt_id": pid, "judge_id": "test", "judge": "test",
                              "kind": "score", "sample_id_a": sid, "sample_id_b": None, "position": i,
                              "score": float(rng.randint(1, 6)), "prob_a_wins": None, "correct": None,
                              "status": "ok", "error": None, "raw_output": None})
    return samples, judgments

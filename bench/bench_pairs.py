"""How fast is `dno pairs` (DuckDB) at scale, against the same rule in plain Python?

    python bench/bench_pairs.py --prompts 100000 --k 5

Builds synthetic samples and judgments (K policy samples + 1 teacher per prompt, random
1..6 scores), writes them as Parquet, then times in the same run:
  baseline  the paper rule in plain Python (tests/paper_rule_reference.py), from the same tables
  dno       build_pairs() = candidates.sql + rule_paper.sql + assemble_pairs.sql in DuckDB
and checks both give the same pair set. Prints seconds, pairs/s and the ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from paper_rule_reference import paper_pairs  # noqa: E402

from dno_data.artifacts import to_table  # noqa: E402
from dno_data.pairs import build_pairs  # noqa: E402


def synthetic(n_prompts: int, k: int, seed: int = 0):
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
                            "reference": None, "response": f"answer {p} {i % 3}" if source == "policy" else f"gold {p}", "source": source,
                            "generator": "bench", "generator_id": "bench", "sample_index": i % k, "seed": 0,
                            "temperature": 0.7, "top_p": 0.95, "num_tokens": 3, "finish_reason": "stop"})
            judgments.append({"judgment_id": f"j{sid}", "prompt_id": pid, "judge_id": "bench", "judge": "bench",
                              "kind": "score", "sample_id_a": sid, "sample_id_b": None, "position": i,
                              "score": float(rng.randint(1, 6)), "prob_a_wins": None, "correct": None,
                              "status": "ok", "error": None, "raw_output": None})
    return to_table(samples, "samples"), to_table(judgments, "judgments")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    samples, judgments = synthetic(args.prompts, args.k)
    print(f"{args.prompts} prompts x {args.k + 1} candidates = {len(samples)} samples")

    t0 = time.perf_counter()
    s_rows = samples.select(["sample_id", "prompt_id", "source", "response"]).to_pylist()
    scores = dict(zip(judgments["sample_id_a"].to_pylist(), judgments["score"].to_pylist()))
    expected = paper_pairs(s_rows, scores)
    t_base = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = build_pairs(samples, judgments, rule="paper", params={
        "min_positive_score": 5.0, "teacher_margin": 2.0, "policy_margin": 1.0, "prefer_positive": "policy",
        "max_negatives": None, "distinct_negatives": True, "min_margin": 0.0})
    t_dno = time.perf_counter() - t0
    got = set(zip(result.table["chosen_sample_id"].to_pylist(), result.table["rejected_sample_id"].to_pylist()))
    assert got == expected, f"pair sets differ: {len(got ^ expected)} pairs"
    print(f"baseline (plain Python): {t_base:7.2f} s  {len(expected) / t_base:10.0f} pairs/s")
    print(f"dno pairs (DuckDB)     : {t_dno:7.2f} s  {len(got) / t_dno:10.0f} pairs/s  ({len(got)} pairs, full rows)")
    print(f"ratio baseline/dno     : {t_base / t_dno:.2f}x")


if __name__ == "__main__":
    main()

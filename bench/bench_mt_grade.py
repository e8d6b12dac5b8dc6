"""Two-turn prompts of the constraints task, answered by a local model and graded single-answer (MT-Bench's
form) by an OpenAI-compatible judge: what the grades and the unparseable answers look like with a real judge.

    # a judge: SmolLM2-135M-Instruct served by vLLM on the CPU (docs/backends.md; the vLLM environment)
    python -m vllm.entrypoints.openai.api_server --model models/smollm2-135m-instruct --served-model-name judge \
        --host 127.0.0.1 --port 8011 --dtype bfloat16 --enforce-eager --gpu-memory-utilization 0.3 &
    python bench/bench_mt_grade.py --model models/smollm2-135m-instruct --base-url http://127.0.0.1:8011/v1 \
        -o runs/mt-grade --prompts 24
    python bench/bench_mt_grade.py ... --prompts 2     # the smallest size

Each prompt asks the task's constrained sentence (dno_data/tasks/constraints.py) and then a second turn,
"Now say the same in at most eight words." (asked after the model's own first answer). `dno eval` answers
both turns greedily (--max-new-tokens 48), `--judge openai:judge --judge-mode single --teacher none`;
then `dno report OUT`. Prints the grades per turn, how many judge answers could not be read, and the time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

SECOND_TURN = "Now say the same in at most eight words."


def dno(*args) -> None:
    print("$ dno " + shlex.join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "stages.cli", *map(str, args)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="the policy (an HF folder)")
    ap.add_argument("--base-url", required=True, help="the judge's OpenAI-compatible server")
    ap.add_argument("--judge", default="openai:judge", help="the judge spec (its served name)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="a run folder for the eval")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from dno_data.tasks.constraints import make_prompts

    questions = [{"question_id": i + 1, "category": "writing", "turns": [p["prompt"], SECOND_TURN]}
                 for i, p in enumerate(make_prompts(a.prompts, seed=0))]
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    dno("prompts", a.output / "questions.jsonl", "-o", a.output / "prompts.parquet")
    t0 = time.time()
    dno("eval", a.output / "prompts.parquet", "--split", "all", "--model", a.model, "--judge", a.judge,
        "--judge-mode", "single", "--teacher", "none", "--base-url", a.base_url, "--max-new-tokens", 48,
        "--judge-max-new-tokens", 256, "--batch-size", 8, "--threads", a.threads, "--concurrency", 4,
        "--cache", a.output / "cache" / "judge.sqlite", "-o", a.output / "iter-00" / "eval.parquet")
    seconds = time.time() - t0
    dno("report", a.output, "--resamples", 2000)

    import pyarrow.parquet as pq

    rows = pq.read_table(a.output / "iter-00" / "eval.parquet").to_pylist()
    print(f"\n{len(questions)} two-turn prompts, {len(rows)} answers graded in {seconds:.0f} s (generation and judge)")
    for turn in (1, 2):
        mine = [r for r in rows if r["turn"] == turn]
        grades = [r["policy_score"] for r in mine if r["status"] == "ok"]
        mean = f"{sum(grades) / len(grades):.2f}" if grades else "n/a"
        print(f"turn {turn}: {len(grades)} of {len(mine)} graded, mean grade {mean}, "
              f"statuses {dict(Counter(r['status'] for r in mine))}")
    bad = next((r for r in rows if r["status"] != "ok"), None)
    if bad is not None:
        print(f"an answer whose grade could not be read ({bad['error']}): {bad['response'][:60]!r}")


if __name__ == "__main__":
    main()

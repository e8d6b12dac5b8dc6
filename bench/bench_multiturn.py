"""Two-turn evaluation of a demo run's checkpoints: does the policy keep answering when its own first answer
is in the context?

    dno demo -o runs/demo                                            # (or dno demo --compare -o runs/cmp)
    python bench/bench_multiturn.py --run runs/demo -o runs/demo-mt  # every checkpoint, 250 two-turn prompts
    python bench/bench_multiturn.py --run runs/cmp --method dno -o runs/cmp-mt --problems 20   # small

The demo's held-out problems, paired in prompt order, become MT-Bench-shaped questions (`turns`: two
problems; `reference`: their sums) in OUT/questions.jsonl, imported with `dno prompts` and evaluated with
`dno eval --judge oracle:addition --teacher reference` for the initial policy (iter-00) and each
iteration's checkpoint (iter-NN), as the commands printed; then `dno report OUT`. Turn 2 is asked after
the policy's own answer to turn 1. Prints held-out accuracy per iteration and per turn.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def dno(*args) -> None:
    cmd = [sys.executable, "-m", "stages.cli", *map(str, args)]
    print("$ dno " + shlex.join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a dno demo folder (or dno demo --compare's)")
    ap.add_argument("--method", default=None, help="with a --compare folder: the method whose checkpoints to use")
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder of the two-turn evals (a run folder)")
    ap.add_argument("--problems", type=int, default=500, help="held-out problems used (two a prompt)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import pyarrow.parquet as pq

    held_out = [r for r in pq.read_table(a.run / "prompts.parquet").to_pylist() if r["split"] == "eval"]
    held_out = held_out[: a.problems - a.problems % 2]
    questions = [{"question_id": k // 2 + 1, "category": "math",
                  "turns": [held_out[k]["messages"][-1]["content"], held_out[k + 1]["messages"][-1]["content"]],
                  "reference": [held_out[k]["reference"], held_out[k + 1]["reference"]]}
                 for k in range(0, len(held_out), 2)]
    a.output.mkdir(parents=True, exist_ok=True)
    src = a.output / "questions.jsonl"
    src.write_text("".join(json.dumps(q) + "\n" for q in questions))
    dno("prompts", src, "-o", a.output / "prompts.parquet", "--reference-column", "reference")

    arm = a.run / a.method if a.method else a.run
    checkpoints = [(0, a.run / "policy-0")]
    checkpoints += [(int(p.parent.name.split("-")[1]), p) for p in sorted(arm.glob("iter-*/checkpoint"))
                    if (p / "config.json").exists()]
    t0 = time.time()
    for t, model in checkpoints:
        dno("eval", a.output / "prompts.parquet", "--split", "all", "--model", model, "--judge", "oracle:addition",
            "--teacher", "reference", "--max-new-tokens", 4, "--batch-size", 500, "--threads", a.threads,
            "-o", a.output / f"iter-{t:02d}" / "eval.parquet")
    seconds = time.time() - t0
    dno("report", a.output, "--resamples", 2000)

    from dno_data.report import collect_run

    print(f"\n{len(questions)} two-turn prompts, {len(checkpoints)} checkpoints evaluated in {seconds:.0f} s")
    print("| iteration | accuracy, both turns | turn 1 | turn 2 |\n|---|---|---|---|")
    for r in collect_run(a.output, resamples=2000).results:
        cells = [iv.fmt(100, 1, " %") if iv else "n/a" for iv in (r.accuracy, r.turns[1]["accuracy"],
                                                                    r.turns[2]["accuracy"])]
        print(f"| {r.iteration} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

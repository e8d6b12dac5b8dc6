"""Judge input billed at the full rate per judged prompt, with the judge templates shipped now and (with
--before REV) those of an earlier commit, against the test server's prompt cache.

    python bench/bench_prefix_cache.py --before 1565d81           # 200 demo prompts, rubric and pairwise
    python bench/bench_prefix_cache.py --smoke                    # 8 prompts, the shipped templates only

The demo's prompts (dno_data.tasks.addition: "347+589"), each with 5 policy answers (the sum, or off by
one or ten) and the teacher's (the sum), are judged by `dno judge --judge openai:gpt-4o` (rubric: one call
a prompt; pairwise: 30 calls a prompt) against tests/support/fake_openai.py under two cache rules: OpenAI's
(a prefix of 1024 tokens or more, in 128-token steps, is billed at the cached price) and vLLM's prefix
caching (16-token blocks, no minimum: what makes a local judge faster, not cheaper). With --system-tokens N
the judge also gets a system prompt of about N tokens (a longer rubric, examples). Each run has a fresh
call cache and a fresh server. Prints one JSON line per (templates, mode, rule): the input tokens per
judged prompt, how many came back cached, the rest (billed at the full rate), and gpt-4o's price per
1,000 prompts with and without prefix reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULES = {"openai": ("1024", "128"), "vllm": ("0", "16")}


def make_samples(path: Path, prompts: int) -> None:
    from dno_data.artifacts import write_artifact
    from dno_data.tasks.addition import make_problems

    rng = random.Random(0)
    rows = []
    for p, prob in enumerate(make_problems(prompts, seed=0)):
        msgs = [{"role": "user", "content": prob["prompt"]}]
        answers = [str(int(prob["reference"]) + rng.choice((0, 0, 1, -1, 10))) for _ in range(5)] + [prob["reference"]]
        for i, text in enumerate(answers):
            rows.append({"sample_id": f"s{p}-{i}", "prompt_id": f"p{p:06d}", "messages": msgs, "prompt_text": None,
                         "reference": prob["reference"], "response": text,
                         "source": "teacher" if i == 5 else "policy", "generator": "bench", "generator_id": "bench",
                         "sample_index": i, "seed": 0, "temperature": 0.7, "top_p": 0.95, "num_tokens": 2,
                         "finish_reason": "stop"})
    write_artifact(rows, path, "samples", {"stage": "bench", "inputs": [], "config": {}})


def judge_once(samples: Path, work: Path, mode: str, rule: str, template: Path | None, system: str | None) -> dict:
    min_tokens, block = RULES[rule]
    server = subprocess.Popen([sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--max-seconds", "600",
                               "--prefix-cache-min-tokens", min_tokens, "--prefix-cache-block", block],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = server.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"the test server did not start: {line}{server.stderr.read()}")
        cache = Path(tempfile.mkdtemp(dir=work)) / "cache.sqlite"
        cmd = [sys.executable, "-m", "stages.cli", "judge", str(samples), "-o", str(cache.parent / "j.parquet"),
               "--judge", "openai:gpt-4o", "--mode", mode, "--base-url", line.split()[1], "--cache", str(cache),
               "--concurrency", "8"]
        cmd += ["--template", str(template)] if template else []
        cmd += ["--system-prompt", system] if system else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200,
                              env={**os.environ, "OPENAI_API_KEY": "sk-bench"})
        if proc.returncode:
            raise SystemExit(f"dno judge failed:\n{proc.stderr[-2000:]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    field = lambda name: re.search(rf"^\s*{re.escape(name)}\s+(.+)$", proc.stderr, re.M).group(1).strip()  # noqa: E731
    return {"calls": int(field("calls made")), "input": int(field("input tokens")),
            "cached": int(field("of which prefix-cached")), "output": int(field("output tokens"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--modes", default="rubric,pairwise")
    ap.add_argument("--before", default=None, metavar="REV", help="also the templates of this git commit")
    ap.add_argument("--system-tokens", type=int, default=0, help="a judge system prompt of about this many tokens")
    ap.add_argument("--smoke", action="store_true", help="the smallest size: 8 prompts, rubric only")
    a = ap.parse_args()
    if a.smoke:
        a.prompts, a.modes = 8, "rubric"

    from dno_data.openai_api.costs import cost_usd, load_prices

    work = Path(tempfile.mkdtemp(prefix="dno-bench-prefix-"))
    samples = work / "samples.parquet"
    make_samples(samples, a.prompts)
    system = ("Judge as an expert grader would, and explain briefly. " * (a.system_tokens // 13 + 1)
              if a.system_tokens else None)
    price = load_prices()["gpt-4o"]
    for mode in a.modes.split(","):
        sets = {"shipped": None}
        if a.before:
            old = work / f"{mode}-{a.before}.jinja"
            old.write_text(subprocess.run(["git", "show", f"{a.before}:dno_data/templates/{mode}.jinja"], cwd=ROOT,
                                          check=True, capture_output=True, text=True).stdout)
            sets = {f"before ({a.before})": old, "shipped": None}
        for name, template in sets.items():
            for rule in RULES:
                got = judge_once(samples, work, mode, rule, template, system)
                per = lambda x: round(x / a.prompts, 1)  # noqa: E731
                print(json.dumps({
                    "templates": name, "mode": mode, "cache_rule": rule, "prompts": a.prompts,
                    "system_tokens": a.system_tokens, "calls": got["calls"],
                    "input_tokens_per_prompt": per(got["input"]), "cached_tokens_per_prompt": per(got["cached"]),
                    "full_rate_tokens_per_prompt": per(got["input"] - got["cached"]),
                    "gpt4o_usd_per_1k_prompts": round(1000 / a.prompts * cost_usd(
                        "gpt-4o", got["input"], got["output"], {"gpt-4o": price}, got["cached"]), 4),
                    "gpt4o_usd_per_1k_prompts_without_reuse": round(1000 / a.prompts * cost_usd(
                        "gpt-4o", got["input"], got["output"], {"gpt-4o": price}), 4),
                }), flush=True)


if __name__ == "__main__":
    main()

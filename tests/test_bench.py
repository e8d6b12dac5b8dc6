"""Every script in bench/ runs at its smallest size and prints its figures, so that a move or a rename in the
library cannot break a benchmark silently.

Default tier: the scripts that need no model (pairs, the test server's load, run hashes; the start-up bench
has tests/test_bench_startup.py). Second tier (`-m e2e`): the ones that train, sample or judge with the tiny
model (a few processes each). Slow tier: the ones that need vLLM or SmolLM2 (tests/test_slow_bench.py).
`test_every_bench_script_is_run` keeps the list whole: a new script in bench/ without a run here fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, problem_rows, write_jsonl

BENCH = ROOT / "bench"
HELPERS = {"questions.py"}  # imported by the sampling benches, not a benchmark


def bench(script: str, *args, cwd: Path | None = None, timeout: float = 300) -> str:
    """Run bench/SCRIPT ARGS in a process of its own; its stdout (the test fails on a non-zero exit)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = ["bash", str(BENCH / script)] if script.endswith(".sh") else [sys.executable, str(BENCH / script)]
    proc = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_every_bench_script_is_run():
    """Each bench script appears, by name in quotes, in a test that runs it (this file, the slow tier's, or its own)."""
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*bench*.py"))
    for p in sorted(BENCH.iterdir()):
        if p.suffix in (".py", ".sh") and p.name not in HELPERS:
            assert f'"{p.name}"' in tests, f"bench/{p.name} is run by no test: give it a smallest size and a test"


# ---------------------------------------------------------------- default tier: no model

def test_pairs_bench_runs(tmp_path):
    out = bench("bench_pairs.py", "--smoke", "--folder", tmp_path)
    for name in ("dno pairs --rule best-worst", "the same with the repetition check", "plain-Python best-vs-worst loop",
                 "bare DuckDB scan + write"):
        assert re.search(rf"^\s*{re.escape(name)}.*\s\d+\.\d+ s   peak RSS\s+\d+ MB$", out, re.M), out
    assert re.search(r"pairs: dno (\d+) .*, loop \1 ", out), out


def test_fake_server_bench_runs():
    (got,) = json_lines(bench("bench_fake_server.py", "--smoke"))
    assert got["ok"] == got["requests"] > 0 and got["requests_per_s"] > 0


def test_run_hashes_names_the_first_difference(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, answer in (("r1", "46"), ("r2", "47")):
        run = tmp_path / name
        (run / "iter-01").mkdir(parents=True)
        pq.write_table(pa.table({"prompt_id": ["p1"], "split": ["train"]}), run / "prompts.parquet")
        pq.write_table(pa.table({"prompt_id": ["p1"], "response": [answer], "sample_index": [0]}),
                       run / "iter-01" / "samples.parquet")
    out = bench("run_hashes.py", tmp_path / "r1", tmp_path / "r2")
    assert re.search(r"^iter-01 samples .* DIFFERS$", out, re.M) and "first difference: iter-01 samples" in out
    assert not re.search(r"^prompts .*DIFFERS", out, re.M)


# ---------------------------------------------------------------- second tier: the tiny model, a few processes

@pytest.mark.e2e
def test_train_bench_runs():
    *runs, summary = json_lines(bench("bench_train.py", "--smoke"))
    assert {r["side"] for r in runs} == {"dno", "trl"}
    assert summary["dno_pairs_per_s"] > 0 and summary["trl_pairs_per_s"] > 0 and summary["speed_ratio"] > 0
    assert summary["dno_peak_rss_mb"] > 0 and summary["repeats"] == 1


@pytest.mark.e2e
def test_judge_bench_runs():
    out = bench("bench_judge.py", "--smoke")
    for case in ("1. throughput", "2. warm cache", "3. faults", "4. secrets", "5. "):
        assert case in out, out
    assert "0 contain the API key" in out


@pytest.mark.e2e
def test_prefix_cache_bench_runs():
    out = bench("bench_prefix_cache.py", "--smoke")
    rows = json_lines(out)
    assert [(r["templates"], r["cache_rule"]) for r in rows] == [("shipped", "openai"), ("shipped", "vllm")]
    assert all(r["full_rate_tokens_per_prompt"] > 0 for r in rows)
    vllm = rows[1]  # 16-token blocks, no minimum: every call after the first reuses the instructions
    assert vllm["cached_tokens_per_prompt"] > 0 and vllm["gpt4o_usd_per_1k_prompts"] < vllm[
        "gpt4o_usd_per_1k_prompts_without_reuse"]


@pytest.mark.e2e
def test_hf_overhead_bench_runs(tiny_model):
    (got,) = json_lines(bench("bench_hf_overhead.py", "--model", tiny_model, "--prompts", 4, "-k", 2,
                              "--max-new-tokens", 4, "--repeats", 1, "--threads", 1))
    assert got["dno_output_tokens"] > 0 and got["hand_output_tokens"] > 0 and "overhead_wall_pct" in got


@pytest.mark.e2e
def test_sample_overhead_bench_runs_on_hf(tiny_model):
    got = json_lines(bench("bench_sample_overhead.py", "--backend", "hf", "--model", tiny_model, "--smoke"))
    summary = got[-1]
    assert {"bare", "dno_in_process", "dno_process"} <= set(summary["seconds"])
    assert summary["ratio_in_process"] > 0 and summary["ratio_process"] > 0
    assert summary["same_tokens"] is True


@pytest.mark.e2e
def test_multiturn_bench_runs(tmp_path, tiny_model):
    run = tmp_path / "demo"
    run.mkdir()
    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(8))
    from dno_data.stages.prompts import PromptsConfig
    from dno_data.stages.prompts import run as make_prompts

    make_prompts(PromptsConfig.from_options(src=src, output=run / "prompts.parquet", reference_column="reference",
                                            partitions=1, eval_size=4))
    shutil.copytree(tiny_model, run / "policy-0")
    out = bench("bench_multiturn.py", "--run", run, "-o", tmp_path / "mt", "--problems", 4)
    assert "2 two-turn prompts, 1 checkpoints evaluated" in out and re.search(r"^\| 0 \|", out, re.M), out


@pytest.mark.e2e
def test_mt_grade_bench_runs(tmp_path, tiny_model):
    from support.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(max_seconds=120) as srv:
        out = bench("bench_mt_grade.py", "--model", tiny_model, "--base-url", srv.base_url, "-o", tmp_path / "mt",
                    "--prompts", 2, "--threads", 1)
    assert re.search(r"^turn 1: \d+ of 2 graded", out, re.M) and re.search(r"^turn 2: \d+ of 2 graded", out, re.M)


@pytest.mark.e2e
def test_gpu_check_cpu_fallback_runs(tmp_path):
    out = bench("gpu_check.sh", cwd=ROOT, timeout=1800)  # 20 minutes on 2 cores at load 16
    assert "no CUDA GPU: the CPU fallbacks" in out
    for step in ("1. sampling", "2. training", "3. loop"):
        assert f"== {step}" in out, out
    assert "gpu_check: done" in out


def test_gpu_check_parses():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0


@pytest.mark.e2e
def test_bad_input_corpus_runs():
    out = bench("bad_input_corpus.py", "--only", "merge", timeout=600)  # 33 cases, about 30 s on 2 idle cores
    total = int(re.search(r"^(\d+) bad inputs across 1 commands", out, re.M).group(1))
    assert total > 20 and f"clean {total}  traceback 0" in out, out

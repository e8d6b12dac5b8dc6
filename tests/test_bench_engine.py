"""bench/bench_engine.py runs at its smallest size (so a change of the engine cannot break it silently)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("ray")


@pytest.mark.e2e
def test_engine_bench_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_engine.py"), "--prompts", "32",
                           "--sleep-batches", "4", "--sleep", "0.05"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"same_rows": true' in proc.stdout and "after start-up" in proc.stdout

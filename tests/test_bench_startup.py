"""bench/bench_startup.py runs at its smallest size (so a move of the CLI cannot break it silently)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_startup_bench_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_startup.py"), "--runs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dno --help" in proc.stdout and "x floor" in proc.stdout

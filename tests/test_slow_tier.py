"""The slow tier's wiring, checked in the default tier: `.ci/run` builds the environment with
`just vllm-env` and runs `just test-slow`, which runs every tests/test_slow_*.py file, and there
a slow test that would skip fails (DNO_REQUIRE_SLOW=1, tests/support/require_slow.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

SKIPPING = '''
import pytest

@pytest.mark.slow
@pytest.mark.skipif(True, reason="vllm is not installed")
def test_needs_vllm():
    pass

@pytest.mark.slow
def test_skips_inside():
    pytest.skip("no SmolLM2")

@pytest.mark.skip(reason="not a slow test")
def test_other():
    pass

@pytest.mark.slow
def test_runs():
    pass
'''


def _pytest(tmp_path, require: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    env.pop("DNO_REQUIRE_SLOW", None)
    if require:
        env["DNO_REQUIRE_SLOW"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "support.require_slow", "-p", "no:cacheprovider",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", "-rA", "test_skipping.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_slow_tests_that_would_skip_fail_where_required(tmp_path):
    free = _pytest(tmp_path, require=False)
    assert free.returncode == 0 and "1 passed, 3 skipped" in free.stdout, free.stdout[-2000:]
    required = _pytest(tmp_path, require=True)
    assert required.returncode == 1, required.stdout[-2000:]
    assert "1 failed, 1 passed, 1 skipped, 1 error" in required.stdout, required.stdout[-2000:]
    assert "DNO_REQUIRE_SLOW=1 and this slow test would skip: vllm is not installed" in required.stdout
    assert "DNO_REQUIRE_SLOW=1 and this slow test would skip: no SmolLM2" in required.stdout


def test_ci_runs_the_slow_tier_with_the_justfile_recipes():
    ci = "\n".join(line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "just vllm-env .venv-slow" in ci and "just test-slow .venv-slow" in ci
    assert ci.index("pytest -m e2e") < ci.index("just vllm-env")  # after the default tier
    justfile = (ROOT / "justfile").read_text()
    recipe = justfile.split("\ntest-slow ", 1)[1].split("\n\n", 1)[0]
    assert "DNO_REQUIRE_SLOW=1" in recipe
    slow_files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_slow_*.py")
                        if p.name != "test_slow_tier.py")
    assert slow_files and all(f in recipe for f in slow_files), (slow_files, recipe)
    assert ".venv-slow/" in (ROOT / ".gitignore").read_text().splitlines()

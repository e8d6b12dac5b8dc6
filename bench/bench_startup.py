"""How long a `dno` command takes to start, against `python -c "import typer"` (the floor of any Typer CLI).

    python bench/bench_startup.py              # 15 runs each, the median and the ratio to the floor
    python bench/bench_startup.py --runs 3     # the smallest size (a few seconds; tests/test_bench.py runs it)

Each figure is a whole process (wall clock, `time.perf_counter` around `subprocess.run`) with its peak
memory (the child's max RSS). The commands: `dno --help` (goal: at most 2x the floor and 0.5 s),
`--version`, the help of the commands that must not load torch (sql, pairs, report, iterate), and
`dno iterate` refusing a typo in `--train-args` (the loop checks every stage before it starts one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """Wall seconds and the child's own peak RSS (MB, from wait4's rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = 0  # reaped by wait4
    return seconds, usage.ru_maxrss / 1024


def measure(cmd: list[str], runs: int, cwd: Path, env: dict) -> tuple[float, float, float]:
    """(median seconds, min seconds, peak RSS in MB) over `runs` runs of `cmd` (one warm-up run first)."""
    once(cmd, cwd, env)
    got = [once(cmd, cwd, env) for _ in range(runs)]
    times = [t for t, _ in got]
    return statistics.median(times), min(times), max(m for _, m in got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    dno = [sys.executable, "-m", "stages.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "m").mkdir()
        cases = [
            ("python -c 'import typer' (the floor)", [sys.executable, "-c", "import typer"]),
            ("dno --help", [*dno, "--help"]),
            ("dno --version", [*dno, "--version"]),
            ("dno sql --help", [*dno, "sql", "--help"]),
            ("dno pairs --help", [*dno, "pairs", "--help"]),
            ("dno report --help", [*dno, "report", "--help"]),
            ("dno iterate --help", [*dno, "iterate", "--help"]),
            ("dno iterate --train-args '--betta 0.2' (refused)",
             [*dno, "iterate", "--run", "r", "--model", "m", "--judge", "oracle:addition", "--train-args",
              "--betta 0.2"]),
        ]
        rows = [(name, *measure(cmd, args.runs, work, env)) for name, cmd in cases]
    floor = rows[0][1]
    print(f"{'command':<52} {'median s':>9} {'min s':>7} {'x floor':>8} {'peak MB':>8}   ({args.runs} runs each)")
    for name, med, low, rss in rows:
        print(f"{name:<52} {med:>9.3f} {low:>7.3f} {med / floor:>8.2f} {rss:>8.0f}")
    help_s = rows[1][1]
    print(f"\ndno --help: {help_s:.3f} s, {help_s / floor:.2f}x the floor (goal: <= 2x and <= 0.5 s: "
          f"{'met' if help_s <= 2 * floor and help_s <= 0.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

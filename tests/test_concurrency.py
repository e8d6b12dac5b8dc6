"""Two commands on one output: the second is refused while the first runs; a dead run's lock blocks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, pairs_row, problem_rows, write_jsonl
from support.gate import write_gate_module
from dno_data import output_lock
from dno_data.artifacts import read_artifact, write_artifact


def _env(tmp_path) -> dict:
    path = [str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)), DNO_TEST_GATE=str(tmp_path / "gate"),
                PYTHONDONTWRITEBYTECODE="1")


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "stages.cli", *map(str, args)]


@pytest.fixture
def prompts16(tmp_path) -> Path:
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


@pytest.fixture
def samples16(tmp_path, prompts16) -> Path:
    from dno_data.stages.sample import SampleConfig, run

    return run(SampleConfig.from_options(prompts=prompts16, output=tmp_path / "samples.parquet", teacher="reference"))


def _refused(proc, output: Path) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "another dno process" in lines[0], proc.stderr
    assert str(output) in lines[0]


@pytest.mark.parametrize("stage", ["judge", "sample", "eval"])
def test_two_commands_started_together(tmp_path, stage, prompts16, samples16, tiny_model):
    """Both start at once; the one that does not get the output is refused, the other writes every row."""
    write_gate_module(tmp_path)
    out = tmp_path / f"{stage}-out.parquet"
    args = _cmd(*{
        "judge": ("judge", samples16, "--judge", "python:gate:score", "-o", out, "--prompts-per-part", "4"),
        "sample": ("sample", prompts16, "--teacher", "python:gate:teach", "-o", out, "--batch-size", "4"),
        "eval": ("eval", prompts16, "--model", tiny_model, "--judge", "python:gate:score", "--split", "all",
                 "--max-new-tokens", "2", "--batch-size", "4", "-o", out),
    }[stage])
    env = _env(tmp_path)
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        deadline = time.monotonic() + 180
        while not any(p.poll() is not None for p in procs):  # the second is refused while the first waits at the gate
            assert time.monotonic() < deadline, f"neither {stage} process ended"
            time.sleep(0.05)
        (tmp_path / "gate" / "go").touch()  # the first cannot have finished before this
        results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r[0] == 1)
    _refused(subprocess.CompletedProcess(args, 1, loser[1], loser[2]), out)
    table = read_artifact(out, {"judge": "judgments", "sample": "samples", "eval": "eval"}[stage])
    assert len(table) == 16 and set(table["status"].to_pylist() if "status" in table.column_names else ["ok"]) == {"ok"}
    assert not out.with_name(out.name + ".parts").exists()
    assert not output_lock.lock_path(out).exists()  # released, and its file removed


@pytest.mark.slow
def test_two_trainings_started_together_never_leave_a_broken_checkpoint(tmp_path, tiny_model):
    """No gate in training: the second is refused while the first runs, or finds its work done; never a mix."""
    out = tmp_path / "checkpoint"
    args = _cmd("train", _pairs(tmp_path), "--model", tiny_model, "--max-length", "32", "--batch-size", "1", "-o", out)
    env = _env(tmp_path)
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert "Traceback" not in err
        if code:
            _refused(subprocess.CompletedProcess(args, code, "", err), out)
    assert 0 in [r[0] for r in results]
    from dno_data.lineage import read_lineage

    assert read_lineage(out)["stage"] == "train" and (out / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".checkpoint*"))


@pytest.fixture
def held(tmp_path):
    """hold(output): this test process takes the output's lock, as a running command would."""
    taken = []

    def hold(output: Path):
        output_lock.acquire(output)
        taken.append(output)

    yield hold
    for output in taken:
        output_lock.release(output)


def _pairs(tmp_path) -> Path:
    rows = []
    for i, r in enumerate(problem_rows(4)):
        rows.append(pairs_row(f"p{i}", f"c{i}", f"r{i}", r["reference"], str(int(r["reference"]) + 1),
                              prompt_text=r["prompt"] + "="))
        rows[-1]["messages"] = [{"role": "user", "content": r["prompt"]}]
    return write_artifact(rows, tmp_path / "pairs.parquet", "pairs", None)


@pytest.mark.parametrize("stage", ["sample", "judge", "eval", "train"])
def test_a_running_command_holds_its_output(tmp_path, stage, prompts16, samples16, tiny_model, held):
    """While another process holds the output, each stage is refused before it touches any work."""
    out = tmp_path / ("checkpoint" if stage == "train" else f"{stage}-out.parquet")
    args = {
        "sample": ("sample", prompts16, "--teacher", "reference", "-o", out),
        "judge": ("judge", samples16, "--judge", "oracle:addition", "-o", out),
        "eval": ("eval", prompts16, "--model", tiny_model, "--judge", "oracle:addition", "--split", "all",
                 "--max-new-tokens", "2", "-o", out),
        "train": ("train", _pairs(tmp_path), "--model", tiny_model, "--max-length", "32", "-o", out),
    }[stage]
    held(out)
    proc = subprocess.run(_cmd(*args), env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _refused(proc, out)
    assert not out.exists()
    assert not list(tmp_path.glob(f"{out.name}.part*"))


def test_the_lock_of_a_killed_process_blocks_nothing(tmp_path, samples16):
    from dno_data.stages.judge import JudgeConfig, run

    out = tmp_path / "judgments.parquet"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from dno_data import output_lock; output_lock.acquire({str(out)!r}); print('held', "
                               "flush=True); import time; time.sleep(120)"],
        env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="another dno process"):
            run(JudgeConfig.from_options(samples=samples16, judge="oracle:addition", output=out))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    run(JudgeConfig.from_options(samples=samples16, judge="oracle:addition", output=out))
    assert len(read_artifact(out, "judgments")) == 16


def test_processes_taking_and_releasing_one_lock_never_overlap(tmp_path):
    """Three processes take and give back one output's lock 100 times each, the file removed at every release:
    the sections they hold it in never interleave (a taker that locked a removed file tries again), and no lock
    file is left behind."""
    out, log = tmp_path / "out.parquet", tmp_path / "log"
    script = (
        "import os, sys, time\n"
        "from dno_data import output_lock\n"
        "from dno_data.errors import DnoError\n"
        "for i in range(100):\n"
        "    try:\n"
        f"        output_lock.acquire({str(out)!r})\n"
        "    except DnoError:\n"
        "        continue\n"
        f"    fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
        "    os.write(fd, f'in {os.getpid()}\\n'.encode()); time.sleep(0.001); os.write(fd, f'out {os.getpid()}\\n'.encode())\n"
        "    os.close(fd)\n"
        f"    output_lock.release({str(out)!r})\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], env=_env(tmp_path)) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) >= 200  # most takes succeed: a waiting taker gets the lock once it is given back
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.split()[0] == "in" and leave == f"out {enter.split()[1]}", (enter, leave)
    assert not output_lock.lock_path(out).exists()

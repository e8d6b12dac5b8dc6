"""`dno sample --engine ray` under faults, on a real 2-node cluster on 127.0.0.1 (second tier):
a worker node lost mid-job, the driver killed and rerun, two drivers on one output.

Each test runs `dno sample` as its own process (the driver) against the cluster of RAY_ADDRESS.
The teacher is a python: function that sleeps, so the job lasts long enough to be hurt; it is
imported by the workers from the driver's working folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dno_data.artifacts import read_artifact

from conftest import ROOT, problem_rows, write_jsonl

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.e2e
N = 40  # prompts; batches of 2: 20 parts


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    from dno_data.engines.ray import local_cluster_only

    local_cluster_only()  # nodes and drivers on 127.0.0.1 only

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
    nodes = [c.add_node(num_cpus=2, node_ip_address="127.0.0.1") for _ in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


@pytest.fixture
def job(tmp_path, tiny_model):
    from dno_data.stages.prompts import PromptsConfig, run

    rows = [{"prompt": f"{a}+{b}", "reference": str(a + b)} for a in range(8) for b in range(5)][:N]
    src = write_jsonl(tmp_path / "problems.jsonl", rows)
    prompts = run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))
    (tmp_path / "slow_teacher.py").write_text(
        "import time\n\ndef answer(messages, reference=None):\n    time.sleep(0.25)\n    return reference\n")
    return ["sample", prompts, "--model", tiny_model, "-k", "2", "--max-new-tokens", "4", "--batch-size", "2",
            "--temperature", "1.0", "--teacher", "python:slow_teacher:answer"]


def _start(args, cwd: Path, address: str, out: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(ROOT), "DNO_PROGRESS_INTERVAL": "1"}
    return subprocess.Popen([sys.executable, "-m", "stages.cli", *map(str, args), "-o", out, "--engine", "ray",
                             "--workers", "2"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_parts(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while len(list(folder.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no progress"
        time.sleep(0.1)


def _check_complete(path: Path, reference: Path | None = None) -> list[dict]:
    rows = sorted(read_artifact(path, "samples").to_pylist(), key=lambda r: r["sample_id"])
    assert len(rows) == N * 3 and len({r["sample_id"] for r in rows}) == N * 3  # no prompt lost or doubled
    assert len({r["prompt_id"] for r in rows}) == N
    if reference is not None:
        assert rows == sorted(read_artifact(reference, "samples").to_pylist(), key=lambda r: r["sample_id"])
    return rows


def _local(job, tmp_path) -> Path:
    from conftest import run_cli

    r = run_cli(*job, "-o", "local.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path / "local.parquet"


def test_a_worker_node_lost_mid_job(tmp_path, job, cluster):
    c, nodes = cluster
    proc = _start(job, tmp_path, c.address, "ray.parquet")
    _wait_parts(tmp_path / "ray.parquet.parts", 3, proc)
    c.remove_node(nodes[0])  # SPREAD put one of the two workers there
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "workers lost" in err and "batches retried" in err  # it did happen mid-job
    assert "sample: " in err and "prompts/s" in err  # progress lines across the cluster
    _check_complete(tmp_path / "ray.parquet", _local(job, tmp_path))


def test_the_driver_killed_resumes(tmp_path, job, cluster):
    c, _ = cluster
    proc = _start(job, tmp_path, c.address, "ray.parquet")
    _wait_parts(tmp_path / "ray.parquet.parts", 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((tmp_path / "ray.parquet.parts").glob("part-*.parquet")))
    again = _start(job, tmp_path, c.address, "ray.parquet")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    resumed = int(next(line.split()[-1] for line in err.splitlines() if "batches_resumed" in line))
    assert resumed >= done >= 4
    _check_complete(tmp_path / "ray.parquet", _local(job, tmp_path))


def test_two_drivers_on_one_output(tmp_path, job, cluster):
    c, _ = cluster
    first = _start(job, tmp_path, c.address, "ray.parquet")
    _wait_parts(tmp_path / "ray.parquet.parts", 1, first)
    second = _start(job, tmp_path, c.address, "ray.parquet")
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 1 and "another dno process" in err2 and "Traceback" not in err2
    _check_complete(tmp_path / "ray.parquet")

"""`dno iterate --train-launcher`: the loop's train step under `accelerate launch` with two CPU
processes (configs/accelerate/cpu_2proc.yaml), the multi-GPU / multi-node path's CPU form."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, problem_rows, write_jsonl

LAUNCHER = f"accelerate launch --config_file {ROOT / 'configs' / 'accelerate' / 'cpu_2proc.yaml'}"


def test_dry_run_shows_the_launcher_on_train_only(tmp_path, cli):
    proc = cli("iterate", "--run", tmp_path / "r", "--model", tmp_path / "sft", "--judge", "oracle:addition",
               "--iterations", "1", "--train-launcher", LAUNCHER, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip() and not line.startswith("# ")]
    assert [line.startswith(LAUNCHER + " dno train ") for line in lines] == [False, False, False, True, False]


def test_launch_args_start_the_console_script_under_the_launcher(tmp_path):
    from dno_data.loop import LoopSettings, dno_script, iteration_configs, launch_args

    s = LoopSettings(run=tmp_path / "r", model=tmp_path / "sft", judge="oracle:addition", iterations=1)
    sample, *_, train, _ = iteration_configs(s, 1)
    argv = launch_args(train, "torchrun --nproc_per_node 2")
    assert argv[:3] == ["torchrun", "--nproc_per_node", "2"] and argv[3] == dno_script() and argv[4] == "train"
    assert launch_args(sample, "torchrun --nproc_per_node 2")[:3] != ["torchrun", "--nproc_per_node", "2"]


@pytest.mark.e2e
def test_iterate_trains_on_two_processes(tmp_path, cli, tiny_model):
    run = tmp_path / "r"
    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    assert cli("prompts", src, "-o", run / "prompts.parquet", "--reference-column", "reference", "--partitions", "1",
               "--eval-size", "4").returncode == 0
    proc = cli("iterate", "--run", run, "--model", tiny_model, "--judge", "oracle:addition", "--iterations", "1",
               "--sample-args", "-k 4 --max-new-tokens 4", "--train-args", "--batch-size 1 --max-length 32",
               "--eval-args", "--max-new-tokens 4", "--train-launcher", LAUNCHER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"$ {LAUNCHER} dno train" in proc.stderr
    manifest = json.loads((run / "iter-01" / "checkpoint" / "dno-manifest.json").read_text())
    assert manifest["metrics"]["processes"] == 2

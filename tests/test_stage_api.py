"""A stage is one library unit (dno_data.stages, dno_data.api): the Python call and the `dno` command are the
same thing; the loop checks every stage's settings before it starts anything; no working folder can shadow
dno's packages; `dno --help` and the DuckDB-only commands load no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, problem_rows, run_cli, write_jsonl


def _content(path: Path) -> str | None:
    from dno_data.lineage import content_sha256

    return content_sha256(path)


def _weights(folder: Path) -> str:
    import hashlib

    return hashlib.sha256(b"".join(f.read_bytes() for f in sorted(folder.glob("*.safetensors")))).hexdigest()


@pytest.mark.e2e
def test_the_python_api_makes_what_the_cli_makes(tmp_path, tiny_model, monkeypatch):
    """A notebook's sample -> judge -> pairs -> train through dno_data.api gives the same artifacts (content hashes:
    rows, schema and the settings that made them) as the same commands typed at the shell. Both work in a folder
    of their own with the same relative paths (an input's path is one of the settings)."""
    from dno_data.api import (JudgeConfig, JudgeSettings, PairsConfig, PromptsConfig, SampleConfig, Sampling, TrainConfig,
                              TrainOptions, command_line, judge, pairs, prompts, sample, train)

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(8))
    api, cli = tmp_path / "api", tmp_path / "cli"
    api.mkdir()
    cli.mkdir()
    monkeypatch.chdir(api)
    made = [prompts(PromptsConfig(src=src, output="prompts.parquet", reference_column="reference", partitions=2)),
            sample(SampleConfig(prompts="prompts.parquet", output="samples.parquet", model=tiny_model, partition=1,
                                k=3, teacher="reference", sampling=Sampling(temperature=1.0, max_new_tokens=4))),
            judge(JudgeConfig(samples="samples.parquet", output="judgments.parquet",
                              judge=JudgeSettings(spec="oracle:addition"))),
            pairs(PairsConfig(judgments="judgments.parquet", samples="samples.parquet", output="pairs.parquet"))]
    cfg = TrainConfig(pairs="pairs.parquet", model=tiny_model, output="checkpoint",
                      training=TrainOptions(beta=0.5, learning_rate=1e-3, batch_size=2, max_length=32, save_every=0))
    made.append(train(cfg))
    assert all((api / p).exists() for p in made)
    assert command_line(cfg) == (f"dno train pairs.parquet --model {tiny_model} -o checkpoint --beta 0.5 "
                                 "--learning-rate 0.001 --batch-size 2 --max-length 32 --save-every 0")

    steps = [["prompts", src, "-o", "prompts.parquet", "--reference-column", "reference", "--partitions", "2"],
             ["sample", "prompts.parquet", "-o", "samples.parquet", "--model", tiny_model, "--partition", "1",
              "-k", "3", "--teacher", "reference", "--temperature", "1.0", "--max-new-tokens", "4"],
             ["judge", "samples.parquet", "-o", "judgments.parquet", "--judge", "oracle:addition"],
             ["pairs", "judgments.parquet", "samples.parquet", "-o", "pairs.parquet"],
             ["train", "pairs.parquet", "--model", tiny_model, "-o", "checkpoint", "--beta", "0.5",
              "--learning-rate", "1e-3", "--batch-size", "2", "--max-length", "32", "--save-every", "0"]]
    for args in steps:
        proc = run_cli(*args, cwd=cli)
        assert proc.returncode == 0, proc.stderr
    for name in ("prompts.parquet", "samples.parquet", "judgments.parquet", "pairs.parquet", "checkpoint"):
        assert _content(api / name) == _content(cli / name), name
    assert _weights(api / "checkpoint") == _weights(cli / "checkpoint")


def _tiny_run(tmp_path: Path, tiny_model: Path) -> Path:
    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(8))
    proc = run_cli("prompts", src, "-o", tmp_path / "run" / "prompts.parquet", "--reference-column", "reference",
                   "--partitions", "1", "--eval-size", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "run"


@pytest.mark.parametrize("how", ["--train-args", "[train] table", "[train] typo", "--dry-run"])
def test_a_typo_in_any_stage_stops_the_loop_before_it_starts(tmp_path, tiny_model, how):
    """`--train-args "--betta 0.2"` or a `[train] beta = "high"` table: one error line before the first stage runs
    (nothing sampled), with or without --dry-run."""
    import time

    run = _tiny_run(tmp_path, tiny_model)
    args = ["iterate", "--run", run, "--model", tiny_model, "--judge", "oracle:addition", "--iterations", "1"]
    if how == "[train] table":
        (tmp_path / "run.toml").write_text('[train]\nbeta = "high"\n')
        args += ["--config", tmp_path / "run.toml"]
        expect = ['run.toml [train]: --beta', "'high'"]
    elif how == "[train] typo":
        (tmp_path / "run.toml").write_text('[train]\nbetta = 0.2\n')
        args += ["--config", tmp_path / "run.toml"]
        expect = ["run.toml: unknown key [train] 'betta'", "beta"]
    else:
        args += ["--train-args", "--betta 0.2"]
        expect = ["--train-args", "--betta"]
    if how == "--dry-run":
        args.append("--dry-run")
    start = time.monotonic()
    proc = run_cli(*args, cwd=tmp_path)
    seconds = time.monotonic() - start
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in expect), lines[0]
    assert proc.stdout == "" and not (run / "iter-01").exists()  # no stage started
    assert seconds < 60  # a bound against hangs; the figure itself is in bench/bench_startup.py


def _shadowing_folder(tmp_path: Path) -> Path:
    """A working folder holding packages named like dno's own (a common layout for a user's project)."""
    work = tmp_path / "work"
    for pkg in ("schemas", "stages"):
        (work / pkg).mkdir(parents=True)
        (work / pkg / "__init__.py").write_text("raise ImportError('the user\\'s own package, not dno\\'s')\n")
    return work


@pytest.mark.e2e
def test_a_working_folder_with_its_own_schemas_package_does_not_break_iterate(tmp_path, tiny_model):
    """`dno iterate` starts each stage so that the working folder is not on the import path (python -P); a judge
    module in that folder (`python:my_judge:score`) is still found: the folder is tried after dno's packages."""
    run = _tiny_run(tmp_path, tiny_model)
    work = _shadowing_folder(tmp_path)
    (work / "my_judge.py").write_text("def score(messages, response, reference=None):\n"
                                      "    return 6.0 if response.strip() == (reference or '').strip() else 1.0\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it: the installed package
    proc = subprocess.run([sys.executable, "-P", "-m", "stages.cli", "iterate", "--run", run, "--model", tiny_model,
                           "--judge", "python:my_judge:score", "--iterations", "1", "--sample-args",
                           "-k 2 --max-new-tokens 4", "--train-args", "--max-length 32 --save-every 0",
                           "--eval-args", "--max-new-tokens 4"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "iter-01" / "checkpoint").is_dir() and (run / "iter-01" / "eval.parquet").exists()


@pytest.mark.e2e
def test_the_readme_accelerate_line_works_from_any_folder(tmp_path, tiny_model):
    """`accelerate launch "$(command -v dno)" train ...` (the README's form) from a folder holding its own `schemas/`
    and `stages/` packages: the console script keeps the folder off the import path."""
    import shutil

    from conftest import pairs_row, write_example

    dno = shutil.which("dno") or str(Path(sys.executable).with_name("dno"))
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    if not Path(dno).exists() or not Path(accelerate).exists():
        pytest.skip("needs the installed `dno` and `accelerate` console scripts")
    pairs = write_example(tmp_path / "pairs.parquet", "pairs", [pairs_row(f"p{i}", f"a{i}", f"b{i}") for i in range(4)])
    work = _shadowing_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", dno, "train", str(pairs),
                           "--model", str(tiny_model), "-o", str(tmp_path / "ckpt"), "--max-length", "32",
                           "--batch-size", "2", "--save-every", "0"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ckpt" / "dno-manifest.json").exists()


HEAVY = ("torch", "transformers")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["sql", "--help"], ["pairs", "--help"],
                                  ["report", "--help"], ["iterate", "--help"], ["sql", "--run", "RUN", "SELECT 1 AS x"],
                                  ["pairs", "J", "S", "-o", "OUT"], ["report", "RUN"]])
def test_light_commands_import_no_torch(tmp_path, args):
    """`python -X importtime -m stages.cli ...`: dno's help, version, sql, pairs and report load neither torch nor
    transformers (a command that fails on its input still counts: it must say so quickly)."""
    from conftest import write_example

    write_example(tmp_path / "RUN" / "prompts.parquet", "prompts")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "stages.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, (args, sorted(m for m in imported if m in HEAVY))
    assert "Traceback" not in proc.stderr


def test_every_command_is_a_function_of_the_python_api():
    """A stage's registry line is all the API needs: every command is `dno_data.api.<name>` and its config too."""
    import dno_data.api as api
    from dno_data.stages import STAGES, load

    for command, stage in STAGES.items():
        name = {"eval": "evaluate"}.get(command, command.split()[-1].replace("-", "_"))
        cls, run = load(command)
        assert getattr(api, name) is run and getattr(api, stage.config) is cls, command
    assert "import_gguf" in dir(api) and "SampleConfig" in dir(api)

"""--config run.toml (stages/options.py): every command reads its table, flags override it, unknown keys
and bad values are one line naming the file and key, the resolved values reach the lineage, and
`dno iterate` / `just iterate` give each stage its table's values as flags."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import ROOT, problem_rows, write_jsonl
from dno_data.lineage import read_lineage
from stages.cli import app

COMMANDS = [c.name for c in app.registered_commands]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", [*COMMANDS, "model import-gguf"])
def test_every_command_takes_config(name):
    result = invoke(*name.split(), "--help")
    assert result.exit_code == 0 and "--config" in result.output


def test_a_stage_reads_its_table_flags_override_and_lineage_has_the_values(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(16))
    cfg = tmp_path / "run.toml"
    cfg.write_text('run = "runs/x"\n[prompts]\npartitions = 2\neval-size = 4\nreference_column = "reference"\n'
                   '[train]\nbeta = 0.5\n')
    r = invoke("prompts", src, "-o", tmp_path / "a.parquet", "--config", cfg)
    assert r.exit_code == 0, r.output
    got = read_lineage(tmp_path / "a.parquet")["config"]
    assert (got["partitions"], got["eval_size"], got["reference_column"]) == (2, 4, "reference")
    r = invoke("prompts", src, "-o", tmp_path / "b.parquet", "--config", cfg, "--partitions", "3")
    assert r.exit_code == 0, r.output
    got = read_lineage(tmp_path / "b.parquet")["config"]
    assert (got["partitions"], got["eval_size"]) == (3, 4)  # the flag wins, the file fills the rest



def test_the_lineage_names_the_config_file_and_its_hash_also_in_the_stages_iterate_starts(tmp_path, monkeypatch):
    import json

    from dno_data.ids import file_sha256
    from dno_data.lineage import RUN_FILE_ENV, run_file, run_file_recorded
    from dno_data.loop import child_env

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(16))
    cfg = tmp_path / "run.toml"
    cfg.write_text("[prompts]\npartitions = 2\n")
    assert invoke("prompts", src, "-o", tmp_path / "a.parquet", "--config", cfg).exit_code == 0
    assert invoke("prompts", src, "-o", tmp_path / "b.parquet", "--partitions", "2").exit_code == 0
    record = {"path": str(cfg), "sha256": file_sha256(cfg)}
    assert read_lineage(tmp_path / "a.parquet")["run_file"] == record
    assert "run_file" not in read_lineage(tmp_path / "b.parquet")  # no file: no record (and nothing left over)
    from dno_data.lineage import lineage_fingerprint

    a, b = read_lineage(tmp_path / "a.parquet"), read_lineage(tmp_path / "b.parquet")
    assert a["config"]["partitions"] == b["config"]["partitions"] == 2
    assert lineage_fingerprint(a) == lineage_fingerprint({**a, "run_file": None})  # where values came from: not
    assert run_file() is None and RUN_FILE_ENV not in child_env()
    with run_file_recorded(cfg):  # dno iterate --config: each stage it starts gets the record
        monkeypatch.setenv(RUN_FILE_ENV, child_env()[RUN_FILE_ENV])
    assert run_file() == record and json.loads(child_env()[RUN_FILE_ENV]) == record


@pytest.mark.parametrize("text,words", [
    ("bogus = 1\n", ["'bogus'", "dno iterate"]),
    ("[prompts]\nbeta = 0.1\n", ["[prompts]", "'beta'", "partitions"]),
    ("[trian]\nbeta = 0.1\n", ["'trian'", "train"]),
    ("[model.import-gguf]\nbeta = 1\n", ["[model.import-gguf]", "'beta'"]),
    ("[prompts]\npartitions = \"many\"\n", ["prompts partitions", "'many'"]),
    ("[prompts\n", ["not a readable TOML file"]),
    # one option twice, spelled both ways: an error, not the last one winning
    ("[train]\nlearning_rate = 1e-3\nlearning-rate = 2e-3\n", ["[train]", "'learning_rate' and 'learning-rate'",
                                                                "the same option"]),
    ("dry_run = true\ndry-run = false\n", ["'dry_run' and 'dry-run'", "the same option"]),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, words):
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    r = invoke("prompts", tmp_path / "p.jsonl", "-o", tmp_path / "a.parquet", "--config", cfg)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {cfg}"), r.output
    for w in words:
        assert w in lines[0]
    assert not (tmp_path / "a.parquet").exists()


def test_missing_config_file(tmp_path):
    r = invoke("prompts", "p.jsonl", "-o", tmp_path / "a.parquet", "--config", tmp_path / "nope.toml")
    assert r.exit_code == 1 and "nope.toml: no such config file" in r.output


def test_iterate_reads_top_level_keys_and_passes_the_file_to_every_stage(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('run = "runs/r1"\nmodel = "m"\njudge = "oracle:addition"\n[iterate]\niterations = 2\n'
                   'dry-run = true\n[train]\nbeta = 0.5\n')
    r = invoke("iterate", "--config", cfg)
    assert r.exit_code == 0, r.output
    header, *cmds = r.output.splitlines()
    # first the loop itself with what the file resolved to (not `--config run.toml`), then each stage
    assert header == ("# dno iterate --run runs/r1 --model m --judge oracle:addition --iterations 2 "
                      "--train-args '--beta 0.5'")
    assert len(cmds) == 10 and not any("--config" in c for c in cmds)  # the file's values, as each stage's flags
    assert all("--beta 0.5" in c for c in cmds if c.startswith("dno train")) and "--beta" not in " ".join(
        c for c in cmds if not c.startswith("dno train"))
    assert "--judge oracle:addition" in cmds[1] and "runs/r1/iter-02" in cmds[-1]
    r = invoke("iterate", "--config", cfg, "--iterations", "1", "--judge", "python:m:f")
    header, *cmds = r.output.splitlines()
    assert len(cmds) == 5 and "--judge python:m:f" in cmds[1]
    assert "--judge python:m:f --iterations 1 " in header  # the flags over the file


def test_just_iterate_passes_config_from_the_callers_folder(tmp_path):
    if shutil.which("just") is None:
        pytest.skip("just is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dno").write_text(f'#!/bin/sh\nexec {sys.executable} -m stages.cli "$@"\n')
    (bin_dir / "dno").chmod(0o755)
    (tmp_path / "run.toml").write_text('run = "runs/r1"\nmodel = "m"\njudge = "oracle:addition"\n'
                                       'iterations = 1\ndry-run = true\n')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["just", "--justfile", str(ROOT / "justfile"), "config=run.toml", "iterate"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dno sample runs/r1/prompts.parquet" in r.stdout and "--model m " in r.stdout

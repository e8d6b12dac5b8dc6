"""Nothing overwritten that a stage did not write: -o never replaces an input, a foreign folder or a run artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import pairs_row, problem_rows, write_example, write_jsonl
from dno_data.artifacts import read_artifact, write_artifact
from dno_data.errors import DnoError
from dno_data.ids import file_sha256


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    rows = []
    for i, r in enumerate(problem_rows(4)):
        rows.append(pairs_row(f"p{i}", f"c{i}", f"r{i}", r["reference"], str(int(r["reference"]) + 1),
                              prompt_text=r["prompt"] + "="))
        rows[-1]["messages"] = [{"role": "user", "content": r["prompt"]}]
    return write_artifact(rows, tmp_path / "pairs.parquet", "pairs", None)


def _train(pairs, model, out, **kw):
    from dno_data.stages.train import TrainConfig, run

    return run(TrainConfig.from_options(pairs=pairs, model=model, output=out, batch_size=2, max_length=32, threads=1, **kw))


def test_train_never_replaces_a_folder_it_did_not_write(tmp_path, pairs_file, tiny_model):
    run_dir = tmp_path / "runs" / "mine"
    (run_dir / "iter-01").mkdir(parents=True)
    (run_dir / "notes.md").write_text("three weeks of notes")
    with pytest.raises(DnoError, match="not a checkpoint") as info:
        _train(pairs_file, tiny_model, run_dir)
    assert str(run_dir) in str(info.value) and "\n" not in str(info.value)
    assert (run_dir / "notes.md").read_text() == "three weeks of notes"
    assert sorted(p.name for p in tmp_path.joinpath("runs").iterdir()) == ["mine"]  # no .partial, no .old


def test_train_replaces_its_own_checkpoint(tmp_path, pairs_file, tiny_model):
    out = tmp_path / "ckpt"
    _train(pairs_file, tiny_model, out, max_steps=1)
    _train(pairs_file, tiny_model, out, max_steps=2)  # other settings: a new checkpoint in its place
    assert json.loads((out / "dno-manifest.json").read_text())["options"]["max_steps"] == 2


def test_train_refuses_a_checkpoint_folder_of_another_stage(tmp_path, pairs_file, tiny_model):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "dno-manifest.json").write_text(json.dumps({"lineage": {"stage": "model"}}))
    with pytest.raises(DnoError, match="not a checkpoint"):
        _train(pairs_file, tiny_model, out)
    assert (out / "dno-manifest.json").exists()


@pytest.mark.parametrize("which", ["pairs", "model", "file"])
def test_train_output_equal_to_an_input_or_a_file_is_refused(tmp_path, pairs_file, tiny_model, which):
    target = {"pairs": pairs_file, "model": tiny_model, "file": tmp_path / "notes.txt"}[which]
    if which == "file":
        target.write_text("x")
    before = file_sha256(pairs_file)
    with pytest.raises(DnoError):
        _train(pairs_file, tiny_model, target)
    assert file_sha256(pairs_file) == before
    assert (tiny_model / "config.json").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_train_output_around_its_inputs_is_refused(tmp_path, tiny_model):
    rows = [pairs_row("p0", "c0", "r0")]
    pairs = write_artifact(rows, tmp_path / "run" / "iter-01" / "pairs.parquet", "pairs", None)
    with pytest.raises(DnoError, match="input"):
        _train(pairs, tiny_model, tmp_path / "run")
    assert pairs.exists()


def test_prompts_output_equal_to_its_source_is_refused(tmp_path):
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(4))
    run(PromptsConfig.from_options(src=src, output=tmp_path / "x.parquet"))
    before = file_sha256(tmp_path / "x.parquet")
    with pytest.raises(DnoError, match="input"):
        run(PromptsConfig.from_options(src=tmp_path / "x.parquet", output=tmp_path / "x.parquet"))
    assert file_sha256(tmp_path / "x.parquet") == before
    read_artifact(tmp_path / "x.parquet", "prompts")


# ---------------------------------------------------------------- dno sql -o

@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    write_example(run / "prompts.parquet", "prompts")
    write_example(run / "iter-01" / "samples.parquet", "samples")
    return run


def _sql(run, output, fmt="parquet"):
    from dno_data.stages.sql import SqlConfig, run as sql

    return sql(SqlConfig.from_options(run=run, query="SELECT * FROM prompts", format=fmt, output=output))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sql_output_never_overwrites_a_run_artifact(run_dir, fmt):
    target = run_dir / "iter-01" / "samples.parquet"
    before = file_sha256(target)
    with pytest.raises(DnoError, match="artifact"):
        _sql(run_dir, target, fmt)
    assert file_sha256(target) == before


def test_sql_output_into_a_missing_folder_is_made_onto_a_folder_is_refused(run_dir, tmp_path):
    _sql(run_dir, tmp_path / "missing" / "out.parquet")
    assert (tmp_path / "missing" / "out.parquet").is_file()
    with pytest.raises(DnoError, match="folder"):
        _sql(run_dir, run_dir / "iter-01")


def test_sql_output_may_replace_its_own_earlier_result(run_dir, tmp_path):
    out = tmp_path / "out.parquet"
    _sql(run_dir, out)
    _sql(run_dir, out)
    import polars as pl

    assert len(pl.read_parquet(out)) == 2

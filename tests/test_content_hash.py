"""Up to date means same content and settings, not same write time."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from conftest import EXAMPLE_ROWS, lineage, problem_rows, write_jsonl
from dno_data.artifacts import write_artifact
from dno_data.lineage import describe_inputs, make_lineage


def _write(path: Path, rows, lin):
    return write_artifact(rows, path, "samples", lin)


def test_same_rows_and_settings_written_twice_describe_the_same(tmp_path, monkeypatch):
    import dno_data.lineage as lineage_mod

    rows = EXAMPLE_ROWS["samples"]()
    a = _write(tmp_path / "a.parquet", rows, make_lineage("sample", [], {"k": 2}))
    real = lineage_mod._dt.datetime

    class Later(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + lineage_mod._dt.timedelta(days=3)

    monkeypatch.setattr(lineage_mod._dt, "datetime", Later)
    b = _write(tmp_path / "b.parquet", rows, make_lineage("sample", [], {"k": 2}))
    assert pq.read_schema(a).metadata[b"dno.lineage"] != pq.read_schema(b).metadata[b"dno.lineage"]
    assert describe_inputs([a])[0]["sha256"] != describe_inputs([b])[0]["sha256"]  # the bytes differ
    assert describe_inputs([a])[0]["content_sha256"] == describe_inputs([b])[0]["content_sha256"]


def test_other_rows_or_settings_describe_differently(tmp_path):
    rows = EXAMPLE_ROWS["samples"]()
    base = describe_inputs([_write(tmp_path / "a.parquet", rows, lineage("sample", [], {"k": 2}))])[0]["content_sha256"]
    other_rows = [dict(rows[0], response="3"), rows[1]]
    assert describe_inputs([_write(tmp_path / "b.parquet", other_rows, lineage("sample", [], {"k": 2}))])[0]["content_sha256"] != base
    assert describe_inputs([_write(tmp_path / "c.parquet", rows, lineage("sample", [], {"k": 3}))])[0]["content_sha256"] != base


def test_rows_edited_under_the_same_metadata_describe_differently(tmp_path):
    path = _write(tmp_path / "a.parquet", EXAMPLE_ROWS["samples"](), lineage("sample"))
    before = describe_inputs([path])[0]["content_sha256"]
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 1).replace_schema_metadata(table.schema.metadata), path, compression="zstd")
    assert describe_inputs([path])[0]["content_sha256"] != before


def test_pairs_forced_twice_leaves_train_up_to_date(tmp_path, tiny_model, capsys):
    """`dno pairs --force` with the same inputs must not make `dno train` redo its work."""
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.pairs import PairsConfig, run as pairs
    from dno_data.stages.prompts import PromptsConfig, run as prompts
    from dno_data.stages.sample import SampleConfig, run as sample
    from dno_data.stages.train import TrainConfig, run as train

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(8))
    p = prompts(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))
    s = sample(SampleConfig.from_options(prompts=p, output=tmp_path / "samples.parquet", model=tiny_model, k=2, max_new_tokens=3,
                            teacher="reference", threads=1))
    j = judge(JudgeConfig.from_options(samples=s, judge="oracle:addition", output=tmp_path / "judgments.parquet"))
    pairs_cfg = PairsConfig.from_options(judgments=j, samples=s, output=tmp_path / "pairs.parquet")
    pairs(pairs_cfg)
    cfg = TrainConfig.from_options(pairs=tmp_path / "pairs.parquet", model=tiny_model, output=tmp_path / "ckpt", batch_size=2,
                      max_length=32, max_steps=1, threads=1)
    train(cfg)
    before = (tmp_path / "ckpt" / "dno-manifest.json").stat().st_mtime_ns
    time.sleep(1.1)  # created_at has one-second resolution
    pairs(PairsConfig.from_options(judgments=j, samples=s, output=tmp_path / "pairs.parquet", force=True))
    capsys.readouterr()
    train(cfg)
    assert "up to date" in capsys.readouterr().err
    assert (tmp_path / "ckpt" / "dno-manifest.json").stat().st_mtime_ns == before


def test_an_artifact_of_an_older_schema_version_is_not_up_to_date(tmp_path):
    """A file an older dno wrote (same inputs and settings, an older schema version) is made again by its stage
    instead of being called up to date and then refused by the next stage."""
    from conftest import rewrite_metadata, write_example
    from dno_data.lineage import is_up_to_date, read_lineage

    out = write_example(tmp_path / "samples.parquet", "samples")
    lin = read_lineage(out)
    assert is_up_to_date(out, lin)
    rewrite_metadata(out, **{"dno.schema_version": 1})
    assert not is_up_to_date(out, lin)

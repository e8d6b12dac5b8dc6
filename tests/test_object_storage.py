"""Object storage as the disk: every stage on s3:// paths against a real S3-compatible server on 127.0.0.1
(moto's server mode), the staging mirror, the lease that replaces the file lock, parts written through,
and the one-line errors.
"""

from __future__ import annotations

import pytest

from dno_data.errors import DnoError


# ---------------------------------------------------------------- locations

def test_a_url_stays_a_url_in_a_path_option():
    from dno_data.config import to_argv
    from dno_data.run_layout import RunLayout
    from dno_data.stages.judge import JudgeConfig
    from dno_data.stages.report import ReportConfig

    cfg = JudgeConfig.from_options(samples="s3://b/runs/r1/iter-01/samples.parquet",
                                   output="s3://b/runs/r1/iter-01/judgments.parquet", judge="oracle:addition")
    assert cfg.samples == "s3://b/runs/r1/iter-01/samples.parquet"  # a Path would be s3:/b/...
    assert to_argv(cfg)[:3] == ["s3://b/runs/r1/iter-01/samples.parquet", "-o", "s3://b/runs/r1/iter-01/judgments.parquet"]
    layout = RunLayout("s3://b/runs/r1/")
    assert layout.prompts == "s3://b/runs/r1/prompts.parquet"
    assert layout.checkpoint(2) == "s3://b/runs/r1/iter-02/checkpoint"
    assert layout.policy(1, "s3://b/models/sft") == "s3://b/models/sft" and layout.policy(3, "m") == layout.checkpoint(2)
    assert ReportConfig(runs=("s3://b/runs/r1",)).default_output() == "s3://b/runs/r1/report.html"
    with pytest.raises(DnoError, match="--cache .*must be a local path"):
        JudgeConfig.from_options(samples="s.parquet", output="j.parquet", judge="oracle:addition", cache="s3://b/c.sqlite")


def test_staging_paths_map_back_to_their_urls(tmp_path, monkeypatch):
    from dno_data import storage

    monkeypatch.setenv("DNO_CACHE", str(tmp_path / "c"))
    local = storage.local_of("s3://bucket/runs/r1/prompts.parquet")
    assert local == tmp_path / "c" / "objects" / "s3" / "bucket" / "runs" / "r1" / "prompts.parquet"
    assert storage.url_of(local) == "s3://bucket/runs/r1/prompts.parquet"
    assert storage.url_of(tmp_path / "elsewhere.parquet") is None
    assert storage.public({"path": str(local), "files": [f"{local}: no such file", local]}) == {
        "path": "s3://bucket/runs/r1/prompts.parquet",
        "files": ["s3://bucket/runs/r1/prompts.parquet: no such file", "s3://bucket/runs/r1/prompts.parquet"]}
    with pytest.raises(DnoError, match="credentials in a URL are refused") as e:
        storage.split("s3://AKIA:hunter2@bucket/x")
    assert "hunter2" not in str(e.value)

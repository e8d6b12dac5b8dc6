"""`dno sample --shard i/n` and `dno merge`: disjoint parts by key; the merge equals an unsharded run
and refuses missing or doubled prompts."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from conftest import problem_rows, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.lineage import is_up_to_date, read_lineage
from dno_data.errors import DnoError
from dno_data.sharding import parse_shard, shard_of


@pytest.fixture
def prompts12(tmp_path) -> Path:
    """16 problems: 12 train (partition 1), 4 eval."""
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference", eval_size=4))


def _cfg(prompts, out, model, **kw):
    from dno_data.stages.sample import SampleConfig

    base = dict(prompts=prompts, output=out, model=model, k=2, max_new_tokens=4, batch_size=3, teacher="reference",
                threads=1, temperature=1.0)
    base.update(kw)
    return SampleConfig.from_options(**base)


def _sample(*a, **kw) -> Path:
    from dno_data.stages.sample import run

    return run(_cfg(*a, **kw))


def _merge(shards, out, prompts=None) -> Path:
    from dno_data.stages.merge import MergeConfig, run

    return run(MergeConfig.from_options(shards=tuple(shards), output=out, prompts=prompts))


@pytest.fixture
def sharded(tmp_path, prompts12, tiny_model):
    """An unsharded run (batch 4) and its 3 shards (batch 3)."""
    full = _sample(prompts12, tmp_path / "full.parquet", tiny_model, batch_size=4)
    shards = [_sample(prompts12, tmp_path / f"shard-{i}.parquet", tiny_model, shard=f"{i}/3") for i in range(3)]
    return full, shards


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0", "1/"):
        with pytest.raises(DnoError, match="expected i/n"):
            parse_shard(bad)


def test_shards_partition_the_selection_by_key(tmp_path, prompts12, sharded):
    full, shards = sharded
    selection = {r["prompt_id"] for r in read_artifact(prompts12, "prompts").to_pylist() if r["split"] == "train"}
    ids = [set(read_artifact(s, "samples")["prompt_id"].to_pylist()) for s in shards]
    assert set().union(*ids) == selection
    assert sum(map(len, ids)) == len(selection)  # disjoint
    assert all(ids)  # 12 prompts over 3 shards: none empty here
    for i, part in enumerate(ids):
        assert all(shard_of(pid, 3) == i for pid in part)

    # The row order of the prompts file does not matter: shards are chosen by key.
    import pyarrow.parquet as pq

    from dno_data.artifacts import write_artifact

    rows = read_artifact(prompts12, "prompts").to_pylist()
    random.Random(1).shuffle(rows)
    shuffled = write_artifact(rows, tmp_path / "shuffled" / "prompts.parquet", "prompts", read_lineage(prompts12))
    assert pq.read_table(shuffled)["prompt_id"].to_pylist() != pq.read_table(prompts12)["prompt_id"].to_pylist()
    again = _sample(shuffled, tmp_path / "shuffled" / "shard-1.parquet", None, shard="1/3")
    assert set(read_artifact(again, "samples")["prompt_id"].to_pylist()) == ids[1]


def test_merge_equals_the_unsharded_run(tmp_path, prompts12, tiny_model, sharded):
    full, shards = sharded
    merged = _merge(shards[::-1], tmp_path / "merged.parquet")
    a, b = read_artifact(full, "samples").to_pylist(), read_artifact(merged, "samples").to_pylist()
    assert len(a) == 12 * 3
    assert sorted(a, key=lambda r: r["sample_id"]) == sorted(b, key=lambda r: r["sample_id"])
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]  # and in the same order
    lin = read_lineage(merged)
    assert lin["config"]["shard"] is None and len(lin["merged_from"]) == 3
    assert sorted(m["shard"] for m in lin["merged_from"]) == ["0/3", "1/3", "2/3"]
    # The merged file is what the unsharded command would make: it counts as up to date.
    from dno_data.lineage import make_lineage

    assert is_up_to_date(merged, make_lineage("sample", [prompts12, tiny_model], _cfg(prompts12, merged, tiny_model)))


def test_merge_refuses_missing_and_doubled_prompts(tmp_path, sharded):
    full, shards = sharded
    missing_ids = sorted(set(read_artifact(shards[2], "samples")["prompt_id"].to_pylist()))
    with pytest.raises(DnoError, match="in no shard") as e:
        _merge(shards[:2], tmp_path / "m.parquet")
    assert missing_ids[0] in str(e.value) and "shard-0.parquet = shard 0/3" in str(e.value)
    assert "\n" not in str(e.value)

    copy = tmp_path / "copy-of-shard-0.parquet"
    shutil.copy(shards[0], copy)
    doubled = sorted(set(read_artifact(shards[0], "samples")["prompt_id"].to_pylist()))
    with pytest.raises(DnoError, match="more than one shard") as e:
        _merge([*shards, copy], tmp_path / "m.parquet")
    assert doubled[0] in str(e.value) and "copy-of-shard-0.parquet" in str(e.value)
    assert not (tmp_path / "m.parquet").exists()


def test_merge_refuses_shards_of_other_runs(tmp_path, prompts12, tiny_model, sharded):
    full, shards = sharded
    other = _sample(prompts12, tmp_path / "other-2.parquet", tiny_model, shard="2/3", k=1)
    with pytest.raises(DnoError, match="other settings than .*shard-0.parquet \\(k\\)"):
        _merge([*shards[:2], other], tmp_path / "m.parquet")
    with pytest.raises(DnoError, match="full.parquet: not a shard"):
        _merge([full, *shards], tmp_path / "m.parquet")
    # Shards of another n: the prompt check catches the overlap.
    half = _sample(prompts12, tmp_path / "half-0.parquet", tiny_model, shard="0/2")
    with pytest.raises(DnoError, match="more than one shard|in no shard"):
        _merge([half, *shards[1:]], tmp_path / "m.parquet")


def test_merge_checks_the_prompts_file(tmp_path, prompts12, sharded):
    full, shards = sharded
    moved = tmp_path / "moved.parquet"
    shutil.move(prompts12, moved)
    with pytest.raises(DnoError, match="prompts file is not there; pass --prompts"):
        _merge(shards, tmp_path / "m.parquet")
    _merge(shards, tmp_path / "m.parquet", prompts=moved)
    with pytest.raises(DnoError, match="not the prompts file the shards were made from"):
        _merge(shards, tmp_path / "m2.parquet", prompts=tmp_path / "m.parquet")


def test_merge_cli_one_line_error(tmp_path, cli, sharded):
    full, shards = sharded
    proc = cli("merge", shards[0], shards[1], "-o", tmp_path / "m.parquet")
    assert proc.returncode == 1 and proc.stderr.startswith("error: cannot merge") and "Traceback" not in proc.stderr
    proc = cli("merge", *shards, "-o", tmp_path / "m.parquet")
    assert proc.returncode == 0, proc.stderr
    assert read_artifact(tmp_path / "m.parquet", "samples").num_rows == 36

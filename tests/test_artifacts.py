"""Versioned Parquet: round trips, atomic writes, checked reads, redaction, resumable parts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from conftest import EXAMPLE_ROWS, drop_column, lineage, rewrite_metadata, write_example
from dno_data.artifacts import read_artifact, write_artifact
from dno_data.lineage import CHANGES_OUTPUT, is_up_to_date, lineage_fingerprint, read_lineage, redact
from dno_data.parts import Parts
from dno_data.errors import DnoError
from dno_data.ids import file_sha256


# ---------------------------------------------------------------- round trips

def test_registry_has_example_rows_for_every_schema():
    assert set(schemas.REGISTRY) == set(EXAMPLE_ROWS)


@pytest.mark.parametrize("name", sorted(schemas.REGISTRY))
def test_round_trip_every_schema(tmp_path, name):
    rows = EXAMPLE_ROWS[name]()
    src = tmp_path / "input.txt"
    src.write_text("some input")
    lin = lineage(f"make-{name}", [src], {"alpha": 1, "nested": {"x": [1, 2]}})
    path = write_artifact(rows, tmp_path / f"{name}.parquet", name, lin)

    table = read_artifact(path, name)
    spec = schemas.get(name)
    assert table.schema.names == spec.schema.names
    for field in spec.schema:
        assert table.schema.field(field.name).type.equals(field.type)
    assert table.to_pylist() == rows

    meta = pq.read_schema(path).metadata
    assert meta[b"dno.schema"] == name.encode()
    assert meta[b"dno.schema_version"] == str(spec.version).encode()
    stored = json.loads(meta[b"dno.lineage"])
    assert stored == lin
    assert stored["stage"] == f"make-{name}"
    assert stored["inputs"] == [{"path": str(src), "sha256": file_sha256(src)}]
    assert stored["config"] == {"alpha": 1, "nested": {"x": [1, 2]}}
    assert read_lineage(path) == lin
    # the metadata survives read_artifact too
    assert table.schema.metadata[b"dno.schema"] == name.encode()


def test_round_trip_empty_table(tmp_path):
    path = write_artifact([], tmp_path / "s.parquet", "samples", None)
    table = read_artifact(path, "samples")
    assert len(table) == 0
    assert table.schema.names == schemas.get("samples").schema.names
    assert read_lineage(path) is None


def test_row_groups_hold_about_row_group_bytes(tmp_path):
    """Chat-length answers: row groups of about ROW_GROUP_BYTES, not pyarrow's default of 1Mi rows (a
    reader holds a row group's column chunk: 1.2M such answers were one row group of 1.8 GB)."""
    from conftest import sample_row
    from dno_data.artifacts import ROW_GROUP_BYTES

    rows = [sample_row(f"s{i}", "p", f"{i} " + "word " * 400) for i in range(40_000)]  # 2 KB each, 80 MB
    meta = pq.ParquetFile(write_artifact(rows, tmp_path / "s.parquet", "samples", None)).metadata
    sizes = [meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)]
    assert meta.num_row_groups >= 3 and max(sizes) <= 1.25 * ROW_GROUP_BYTES
    assert len(read_artifact(tmp_path / "s.parquet", "samples")) == 40_000


def test_write_accepts_a_table_with_extra_and_reordered_columns(tmp_path):
    rows = EXAMPLE_ROWS["prompts"]()
    t = pa.Table.from_pylist(rows, schema=schemas.get("prompts").schema)
    t = t.select(list(reversed(t.column_names))).append_column("extra", pa.array([1, 2]))
    path = write_artifact(t, tmp_path / "p.parquet", "prompts", None)
    back = read_artifact(path, "prompts")
    assert back.column_names == schemas.get("prompts").schema.names
    assert back.to_pylist() == rows


# ---------------------------------------------------------------- atomic writes

def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_leaves_no_temp_file(tmp_path):
    write_example(tmp_path / "p.parquet", "prompts")
    write_example(tmp_path / "p.parquet", "prompts")  # overwrite too
    assert _listing(tmp_path) == ["p.parquet"]


@pytest.mark.parametrize("bad_rows", [
    [{"prompt_id": None}],  # null in a non-nullable column
    [{"prompt_id": "x", "messages": "not a list", "split": "train"}],  # wrong type
    [{"prompt_id": 5, "messages": [], "split": "train"}],
])
def test_failed_write_keeps_the_old_file(tmp_path, bad_rows):
    path = write_example(tmp_path / "p.parquet", "prompts")
    before = path.read_bytes()
    with pytest.raises(Exception):
        write_artifact(bad_rows, path, "prompts", lineage())
    assert path.read_bytes() == before
    assert read_artifact(path, "prompts").to_pylist() == EXAMPLE_ROWS["prompts"]()
    assert _listing(tmp_path) == ["p.parquet"]


def test_crash_inside_the_parquet_writer_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_example(tmp_path / "p.parquet", "prompts")
    before = path.read_bytes()

    def broken_writer(table, where, **kw):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_writer)
    with pytest.raises(DnoError, match="disk full"):
        write_artifact(EXAMPLE_ROWS["prompts"](), path, "prompts", None)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["p.parquet"]


def test_crash_on_a_new_path_leaves_nothing(tmp_path, monkeypatch):
    def broken_writer(table, where, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_writer)
    with pytest.raises(DnoError, match="disk full"):  # one line for the user, not a traceback
        write_artifact(EXAMPLE_ROWS["pairs"](), tmp_path / "new.parquet", "pairs", None)
    assert _listing(tmp_path) == []


def test_write_into_a_path_under_a_file_is_one_error_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DnoError) as info:
        write_artifact(EXAMPLE_ROWS["pairs"](), tmp_path / "notes.txt" / "pairs.parquet", "pairs", None)
    assert "notes.txt" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- checked reads

def _assert_dno_error(path, schema_name, *fragments):
    with pytest.raises(DnoError) as info:
        read_artifact(path, schema_name)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_read_missing_path(tmp_path):
    _assert_dno_error(tmp_path / "nope.parquet", "samples", "no such file", "dno sample")


def test_read_folder(tmp_path):
    folder = tmp_path / "samples.parquet"
    folder.mkdir()
    _assert_dno_error(folder, "samples", "folder")


def test_read_not_parquet(tmp_path):
    path = tmp_path / "samples.parquet"
    path.write_text('{"sample_id": "x"}\n')
    _assert_dno_error(path, "samples", "not a readable Parquet file")


def test_read_parquet_without_dno_metadata(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist(EXAMPLE_ROWS["samples"](), schema=schemas.get("samples").schema), path)
    _assert_dno_error(path, "samples", "not a dno artifact")


def test_read_other_artifact(tmp_path):
    path = write_example(tmp_path / "samples.parquet", "samples")
    _assert_dno_error(path, "judgments", "'samples'", "'judgments'", "dno judge")


def test_read_wrong_schema_version(tmp_path):
    path = write_example(tmp_path / "judgments.parquet", "judgments")
    rewrite_metadata(path, **{"dno.schema_version": 99})
    _assert_dno_error(path, "judgments", "version 99")


def test_read_missing_column(tmp_path):
    path = write_example(tmp_path / "pairs.parquet", "pairs")
    drop_column(path, "chosen")
    assert pq.read_schema(path).metadata[b"dno.schema"] == b"pairs"  # metadata kept
    _assert_dno_error(path, "pairs", "missing column", "chosen")


def test_read_wrong_column_type(tmp_path):
    path = write_example(tmp_path / "prompts.parquet", "prompts")
    table = pq.read_table(path)
    meta = table.schema.metadata
    i = table.column_names.index("partition")
    table = table.set_column(i, "partition", table["partition"].cast(pa.string())).replace_schema_metadata(meta)
    pq.write_table(table, path)
    _assert_dno_error(path, "prompts", "partition")


# ---------------------------------------------------------------- lineage

def test_redact_removes_secrets_recursively():
    cfg = {
        "model": "m",
        "api_key": "sk-1",
        "API-KEY": "sk-2",
        "token": "t",
        "hf_token": "t2",
        "Authorization": "Bearer x",
        "nested": {"auth_header": "x", "password": "p", "n": 1, "items": [{"secret": 1, "keep": 2}]},
    }
    out = redact(cfg)
    assert out == {"model": "m", "nested": {"n": 1, "items": [{"keep": 2}]}}
    assert "sk-1" not in json.dumps(out)


def test_redact_converts_paths_and_dataclasses(tmp_path):
    from dno_data.stages.prompts import PromptsConfig

    out = redact(PromptsConfig.from_options(src=tmp_path / "a.jsonl", output=tmp_path / "b.parquet"))
    assert out["src"] == str(tmp_path / "a.jsonl")
    json.dumps(out)


def test_redact_keeps_settings_that_merely_contain_token():
    cfg = {"max_new_tokens": 256, "tokenizer": "gpt2", "api_key": "sk"}
    assert redact(cfg) == {"max_new_tokens": 256, "tokenizer": "gpt2"}


def test_fingerprint_depends_on_max_new_tokens(tmp_path):
    src = tmp_path / "x"
    src.write_text("x")
    a = lineage("sample", [src], {"k": 2, "max_new_tokens": 4})
    b = lineage("sample", [src], {"k": 2, "max_new_tokens": 64})
    assert lineage_fingerprint(a) != lineage_fingerprint(b)


@dataclasses.dataclass(frozen=True)
class _StageConfig:
    """A stage config whose output path and --force are declared as not changing the output."""

    k: int = 1
    output: str = dataclasses.field(default="a.parquet", metadata={CHANGES_OUTPUT: False})
    force: bool = dataclasses.field(default=False, metadata={CHANGES_OUTPUT: False})


def test_up_to_date_depends_on_inputs_and_config_not_output(tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("one")
    lin = lineage("stage", [src], _StageConfig())
    assert lin["operational"] == ["force", "output"] and lin["config"]["output"] == "a.parquet"  # recorded
    out = write_artifact(EXAMPLE_ROWS["prompts"](), tmp_path / "o.parquet", "prompts", lin)
    assert is_up_to_date(out, lineage("stage", [src], _StageConfig(output="elsewhere.parquet", force=True)))
    assert not is_up_to_date(out, lineage("stage", [src], _StageConfig(k=2)))
    assert not is_up_to_date(out, lineage("other", [src], _StageConfig()))
    # a plain mapping declares nothing operational: every key counts
    assert not is_up_to_date(out, lineage("stage", [src], {"k": 1, "output": "elsewhere.parquet"}))
    src.write_text("two")
    assert not is_up_to_date(out, lineage("stage", [src], _StageConfig()))
    assert not is_up_to_date(tmp_path / "missing.parquet", lin)


# ---------------------------------------------------------------- resumable parts

def _samples(n: int, tag: str) -> list[dict]:
    from conftest import sample_row

    return [sample_row(f"{tag}{i}", "p1", str(i), index=i) for i in range(n)]


def test_parts_resume_and_finish_in_unit_order(tmp_path):
    out = tmp_path / "samples.parquet"
    lin = lineage("sample", [], {"k": 2})
    parts = Parts(out, lin, "samples")
    assert parts.dir == tmp_path / "samples.parquet.parts"
    assert parts.count_done() == 0
    # write units out of order: finish must still concatenate 0, 1, 2
    parts.write(2, _samples(1, "c"))
    parts.write(0, _samples(2, "a"))
    assert parts.done(0) and parts.done(2) and not parts.done(1)
    assert parts.count_done() == 2

    # a "rerun" with the same lineage sees the finished units
    again = Parts(out, lineage("sample", [], {"k": 2}), "samples")
    assert again.done(0) and again.done(2) and not again.done(1)
    again.write(1, _samples(3, "b"))
    table = again.finish(lin)

    ids = ["a0", "a1", "b0", "b1", "b2", "c0"]
    assert table["sample_id"].to_pylist() == ids
    assert read_artifact(out, "samples")["sample_id"].to_pylist() == ids
    assert read_lineage(out) == lin
    assert not parts.dir.exists()
    assert _listing(tmp_path) == ["samples.parquet"]


def test_parts_finish_with_no_units_writes_an_empty_file(tmp_path):
    out = tmp_path / "j.parquet"
    table = Parts(out, lineage("judge"), "judgments").finish(lineage("judge"))
    assert len(table) == 0
    assert len(read_artifact(out, "judgments")) == 0


def test_parts_of_another_run_are_refused_unless_fresh(tmp_path):
    out = tmp_path / "samples.parquet"
    Parts(out, lineage("sample", [], {"k": 2}), "samples").write(0, _samples(1, "a"))

    with pytest.raises(DnoError) as info:
        Parts(out, lineage("sample", [], {"k": 3}), "samples")
    assert "samples.parquet.parts" in str(info.value)
    assert "--force" in str(info.value)
    # the old work is still there after the refusal
    assert (out.with_name("samples.parquet.parts") / "part-000000.parquet").exists()

    fresh = Parts(out, lineage("sample", [], {"k": 3}), "samples", fresh=True)
    assert fresh.count_done() == 0
    assert not fresh.done(0)


def test_parts_folder_without_fingerprint_is_refused(tmp_path):
    out = tmp_path / "samples.parquet"
    folder = tmp_path / "samples.parquet.parts"
    folder.mkdir()
    (folder / "part-000000.parquet").write_bytes(b"junk")
    with pytest.raises(DnoError):
        Parts(out, lineage("sample"), "samples")


# ---------------------------------------------------------------- keys: unique and present

@pytest.mark.parametrize("name,key", [("prompts", "prompt_id"), ("samples", "sample_id"),
                                      ("judgments", "judgment_id"), ("pairs", "pair_id"), ("eval", "prompt_id")])
def test_read_refuses_a_duplicate_key(tmp_path, name, key):
    rows = EXAMPLE_ROWS[name]()
    path = write_example(tmp_path / f"{name}.parquet", name, rows + [dict(rows[0])])
    with pytest.raises(DnoError) as info:
        read_artifact(path, name)
    msg = str(info.value)
    assert str(path) in msg and key in msg and "\n" not in msg


@pytest.mark.parametrize("name,column", [("prompts", "prompt_id"), ("samples", "prompt_id"), ("pairs", "chosen")])
def test_read_refuses_a_null_in_a_required_column(tmp_path, name, column):
    import pyarrow as pa

    from dno_data.artifacts import to_table

    table = to_table(EXAMPLE_ROWS[name](), name)
    i = table.schema.get_field_index(column)
    values = table[column].to_pylist()
    values[0] = None
    # a writer that ignores the schema's non-null promise (the way a hand-made file would)
    table = table.set_column(i, pa.field(column, table.schema.field(column).type), pa.array(values, table.schema.field(column).type))
    table = table.replace_schema_metadata({b"dno.schema": name.encode(),
                                           b"dno.schema_version": str(schemas.get(name).version).encode()})
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    with pytest.raises(DnoError) as info:
        read_artifact(path, name)
    msg = str(info.value)
    assert str(path) in msg and column in msg and "null" in msg and "\n" not in msg

"""`stages.prompts.run`: import, stable ids, duplicates, partitions, eval split, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from conftest import problem_rows, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.errors import DnoError
from dno_data.ids import prompt_id
from dno_data.stages.prompts import PromptsConfig, run


def _import(src: Path, out: Path | None = None, **kw) -> list[dict]:
    out = out or src.with_name(src.stem + "-prompts.parquet")
    run(PromptsConfig.from_options(src=src, output=out, **kw))
    return read_artifact(out, "prompts").to_pylist()


def _summary_counts(err: str) -> dict:
    """The `  name  value` lines of a stage summary as a dict."""
    out = {}
    for line in err.splitlines():
        if line.startswith("  "):
            name, _, value = line.strip().rpartition("  ")
            out[name.strip()] = value.strip()
    return out


def _by_content(rows):
    return {r["messages"][-1]["content"]: r for r in rows}


# ---------------------------------------------------------------- formats

def _write_format(tmp_path: Path, fmt: str, rows: list[dict]) -> Path:
    path = tmp_path / f"src.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        pl.DataFrame(rows).write_csv(path)
    else:
        pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_import_text_column_every_format(tmp_path, fmt):
    rows = problem_rows(10)
    src = _write_format(tmp_path, fmt, rows)
    out = _import(src, reference_column="reference")
    assert len(out) == 10
    by = _by_content(out)
    assert set(by) == {r["prompt"] for r in rows}
    for r in rows:
        got = by[r["prompt"]]
        assert got["messages"] == [{"role": "user", "content": r["prompt"]}]
        assert got["reference"] == r["reference"]
        assert got["prompt_id"] == prompt_id([{"role": "user", "content": r["prompt"]}])
        assert got["split"] == "train" and got["partition"] == 1
        assert got["source"].startswith(src.name + ":")


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_import_messages_column(tmp_path, fmt):
    rows = [
        {"chat": [{"role": "user", "content": "12+34"}], "ref": "46"},
        {"chat": [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2"}], "ref": "3"},
    ]
    src = _write_format(tmp_path, fmt, rows)
    out = _import(src, messages_column="chat", reference_column="ref")
    by = _by_content(out)
    assert by["12+34"]["messages"] == [{"role": "user", "content": "12+34"}]
    assert by["1+2"]["messages"] == [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2"}]
    assert by["1+2"]["reference"] == "3"


def test_messages_column_is_guessed_and_system_prepended(tmp_path):
    src = write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "5+5"}]}])
    out = _import(src, system="be brief")
    assert out[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "5+5"}]
    assert out[0]["reference"] is None


def test_text_and_messages_give_the_same_prompt_id(tmp_path):
    a = _import(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "7+8"}]))
    b = _import(write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "7+8"}]}]))
    assert a[0]["prompt_id"] == b[0]["prompt_id"]


# ---------------------------------------------------------------- duplicates and ids

def test_duplicates_removed_and_counted(tmp_path, capsys):
    rows = problem_rows(6) + [{"prompt": "12+34", "reference": "46"}, {"prompt": "  55+21\n", "reference": "76"},
                              {"prompt": "\t40+7 ", "reference": "47"}]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    out = _import(src)
    assert len(out) == 6
    assert len({r["prompt_id"] for r in out}) == 6
    counts = _summary_counts(capsys.readouterr().err)
    assert counts["read"] == "9"
    assert counts["dropped_duplicate"] == "3"
    assert counts["written"] == "6"


def test_prompt_id_stable_across_runs_and_file_order(tmp_path):
    rows = problem_rows(16)
    a = _import(write_jsonl(tmp_path / "a.jsonl", rows), partitions=3, eval_size=4)
    b = _import(write_jsonl(tmp_path / "b.jsonl", list(reversed(rows))), partitions=3, eval_size=4)
    again = _import(tmp_path / "a.jsonl", tmp_path / "again.parquet", partitions=3, eval_size=4)
    key = lambda rs: {r["prompt_id"]: (r["messages"][-1]["content"], r["partition"], r["split"]) for r in rs}  # noqa: E731
    assert key(a) == key(b) == key(again)


def test_seed_changes_the_assignment_not_the_ids(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(16))
    a = _import(src, tmp_path / "s0.parquet", partitions=2, eval_size=4, seed=0)
    b = _import(src, tmp_path / "s1.parquet", partitions=2, eval_size=4, seed=1)
    assert {r["prompt_id"] for r in a} == {r["prompt_id"] for r in b}
    assert [(r["partition"], r["split"]) for r in a] != [(r["partition"], r["split"]) for r in b]


# ---------------------------------------------------------------- partitions and eval split

@pytest.mark.parametrize("partitions,eval_size", [(1, 0), (2, 4), (3, 4), (4, 0), (5, 3)])
def test_partitions_disjoint_covering_balanced(tmp_path, partitions, eval_size):
    rows = problem_rows(16)
    out = _import(write_jsonl(tmp_path / "a.jsonl", rows), partitions=partitions, eval_size=eval_size)
    train = [r for r in out if r["split"] == "train"]
    evals = [r for r in out if r["split"] == "eval"]
    assert len(evals) == eval_size
    assert all(r["partition"] is None for r in evals)
    assert len(train) == 16 - eval_size
    sizes = Counter(r["partition"] for r in train)
    assert set(sizes) == set(range(1, partitions + 1))  # covering: every partition 1..T used
    assert sum(sizes.values()) == len(train)  # each train prompt in exactly one partition
    assert max(sizes.values()) - min(sizes.values()) <= 1  # balanced
    assert len({r["prompt_id"] for r in out}) == 16  # disjoint: no prompt twice
    assert {r["split"] for r in out} <= {"train", "eval"}


def test_eval_prompts_do_not_move_when_partitions_change(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(16))
    a = _import(src, tmp_path / "a.parquet", partitions=2, eval_size=4)
    b = _import(src, tmp_path / "b.parquet", partitions=4, eval_size=4)
    ev = lambda rs: {r["prompt_id"] for r in rs if r["split"] == "eval"}  # noqa: E731
    assert ev(a) == ev(b)


# ---------------------------------------------------------------- errors

def test_empty_file(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    with pytest.raises(DnoError, match="empty.jsonl"):
        _import(src)
    assert not (tmp_path / "empty-prompts.parquet").exists()


def test_empty_csv_with_header_only(tmp_path):
    src = tmp_path / "empty.csv"
    src.write_text("prompt,reference\n")
    with pytest.raises(DnoError, match="empty.csv"):
        _import(src)


def test_missing_column(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(3))
    with pytest.raises(DnoError, match="question"):
        _import(src, text_column="question")
    with pytest.raises(DnoError, match="answer"):
        _import(src, reference_column="answer")


def test_no_guessable_column(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"q": "1+1"}])
    with pytest.raises(DnoError, match="a.jsonl"):
        _import(src)


def test_unknown_format(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("1+1\n")
    with pytest.raises(DnoError, match="a.txt"):
        _import(src)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DnoError, match="nope.jsonl"):
        _import(tmp_path / "nope.jsonl")


def test_path_that_does_not_exist_fails(tmp_path):
    # whatever the exception type, nothing is written
    with pytest.raises(Exception):
        _import(tmp_path / "nope.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("eval_size", [16, 17, 100])
def test_eval_size_must_leave_training_prompts(tmp_path, eval_size):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(16))
    with pytest.raises(DnoError, match="eval-size"):
        _import(src, eval_size=eval_size)
    assert not (tmp_path / "a-prompts.parquet").exists()


def test_eval_size_counts_prompts_after_deduplication(tmp_path):
    rows = problem_rows(3) + problem_rows(3)  # 6 rows, 3 prompts
    with pytest.raises(DnoError):
        _import(write_jsonl(tmp_path / "a.jsonl", rows), eval_size=3)


def test_negative_eval_size_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(16))
    with pytest.raises(DnoError):
        _import(src, eval_size=-1)


def test_partitions_must_be_positive(tmp_path):
    with pytest.raises(DnoError, match="partitions"):
        _import(write_jsonl(tmp_path / "a.jsonl", problem_rows(3)), partitions=0)


def test_empty_user_turn_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "1+1"}, {"prompt": "   "}])
    with pytest.raises(DnoError, match="row 2"):
        _import(src)


def test_rerun_is_up_to_date(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", problem_rows(5))
    out = tmp_path / "p.parquet"
    run(PromptsConfig.from_options(src=src, output=out))
    stat = out.stat()
    capsys.readouterr()
    run(PromptsConfig.from_options(src=src, output=out))
    assert "up to date" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stat.st_mtime_ns
    # changing a setting is not up to date
    run(PromptsConfig.from_options(src=src, output=out, partitions=2))
    assert "up to date" not in capsys.readouterr().err
    assert {r["partition"] for r in read_artifact(out, "prompts").to_pylist()} == {1, 2}


@pytest.mark.parametrize("message,words", [
    ({"role": "user", "content": None}, ["row 2", "content", "None"]),
    ({"role": "user", "content": 5}, ["row 2", "content", "5"]),
    ({"role": "user", "content": ["a", "b"]}, ["row 2", "content"]),
    ({"role": "wizard", "content": "1+2"}, ["row 2", "role", "wizard"]),
])
def test_a_bad_message_is_refused_with_its_row(tmp_path, message, words):
    # not coerced to text ("None", "5") nor dropped by the chat template: refused, naming the row
    src = tmp_path / "m.jsonl"
    good = {"messages": [{"role": "user", "content": "1+1"}]}
    src.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [message]}) + "\n")
    with pytest.raises(DnoError) as e:
        _import(src, out=tmp_path / "out.parquet")
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "out.parquet").exists()


def test_a_huge_prompt_is_dropped_and_counted_before_any_stage_sees_it(tmp_path, cli):
    """A 1M-character prompt would make sampling try to allocate for a million tokens: `dno prompts`
    drops prompts over --max-prompt-chars (default 100,000) and says how many."""
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"prompt": "1+1"}) + "\n" + json.dumps({"prompt": "x" * 1_000_000}) + "\n")
    r = cli("prompts", src, "-o", tmp_path / "p.parquet")
    assert r.returncode == 0, r.stderr
    assert "dropped_longer_than_max_prompt_chars  1" in r.stderr
    assert read_artifact(tmp_path / "p.parquet", "prompts").num_rows == 1
    r = cli("prompts", src, "-o", tmp_path / "p2.parquet", "--max-prompt-chars", "2000000")
    assert read_artifact(tmp_path / "p2.parquet", "prompts").num_rows == 2


# ---------------------------------------------------------------- inputs people have

def test_import_a_datasets_save_to_disk_folder(tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list(problem_rows(6))
    ds.save_to_disk(str(tmp_path / "ds"))
    out = _import(tmp_path / "ds", reference_column="reference")
    assert {r["messages"][-1]["content"]: r["reference"] for r in out} == {r["prompt"]: r["reference"]
                                                                          for r in problem_rows(6)}
    assert _summary_counts(capsys.readouterr().err)["prompt column"] == "prompt"
    DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DnoError, match="splits test, train.*dd/test"):
        _import(tmp_path / "dd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DnoError, match="state.json"):
        _import(tmp_path / "plain")


def test_import_jsonl_gz(tmp_path):
    import gzip

    src = tmp_path / "p.jsonl.gz"
    src.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in problem_rows(5)).encode()))
    out = _import(src, reference_column="reference")
    assert sorted(r["messages"][-1]["content"] for r in out) == sorted(r["prompt"] for r in problem_rows(5))
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(b"prompt\n1+1\n"))
    with pytest.raises(DnoError, match="unknown format"):
        _import(tmp_path / "p.csv.gz")


def test_messages_column_last_user_turn_is_the_prompt_and_the_answer_the_reference(tmp_path, capsys):
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "and 2+2?"},
            {"role": "assistant", "content": "4"}]
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}, {"messages": conv[:4]}])
    out = _import(src)
    by = _by_content(out)
    assert list(by) == ["and 2+2?"]  # the same prompt twice: one row
    assert by["and 2+2?"]["messages"] == conv[:4] and by["and 2+2?"]["reference"] == "4"
    counts = _summary_counts(capsys.readouterr().err)
    assert counts["prompt column"] == "messages (through the last user turn)"
    assert counts["reference column"].startswith("messages: the assistant turn")
    assert counts["reference from the conversation"] == "1" and counts["dropped_duplicate"] == "1"


def test_sharegpt_conversations(tmp_path, capsys):
    rows = [{"id": "a", "conversations": [{"from": "human", "value": "12+34"}, {"from": "gpt", "value": "46"}]},
            {"id": "b", "conversations": [{"from": "system", "value": "add"}, {"from": "human", "value": "1+2"}]}]
    out = _import(write_jsonl(tmp_path / "sharegpt.jsonl", rows))
    by = _by_content(out)
    assert by["12+34"]["messages"] == [{"role": "user", "content": "12+34"}] and by["12+34"]["reference"] == "46"
    assert by["1+2"]["messages"] == [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2"}]
    assert by["1+2"]["reference"] is None
    assert _summary_counts(capsys.readouterr().err)["prompt column"].startswith("conversations")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"conversations": [{"from": "robot", "value": "hi"}]}])
    with pytest.raises(DnoError, match="row 1.*'robot'"):
        _import(bad)


def test_alpaca_instruction_and_input_are_joined(tmp_path, capsys):
    rows = [{"instruction": "Add the numbers.", "input": "12+34", "output": "46"},
            {"instruction": "Name a colour.", "input": "", "output": "red"}]
    out = _import(write_jsonl(tmp_path / "alpaca.jsonl", rows), reference_column="output")
    by = _by_content(out)
    assert set(by) == {"Add the numbers.\n\n12+34", "Name a colour."}
    assert by["Add the numbers.\n\n12+34"]["reference"] == "46"
    counts = _summary_counts(capsys.readouterr().err)
    assert counts["prompt column"] == "instruction + input (Alpaca)" and counts["reference column"] == "output"
    assert counts["instruction joined with input"] == "1"

"""Outside preference data: TRL-format files that `datasets` writes, read as dno's pairs (dno_data.preference_import).

Each shape TRL's DPOTrainer takes (explicit or implicit prompt; text or conversational) is written by
`datasets` as Parquet, JSON lines and a save_to_disk folder. TRL's own data utilities read the same file
(the prompt TRL extracts, the text its chat template renders) and must agree with what dno trains on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from dno_data.errors import DnoError

U = "user"
A = "assistant"


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# two pairs of each shape, in the tiny model's vocabulary (digits, + and =)
SHAPES = {
    "text": {"prompt": ["12+34=", "55+21="], "chosen": ["46", "76"], "rejected": ["59", "13"]},
    "conversational": {"prompt": [[_msg(U, "12+34")], [_msg(U, "55+21")]],
                       "chosen": [[_msg(A, "46")], [_msg(A, "76")]],
                       "rejected": [[_msg(A, "59")], [_msg(A, "13")]]},
    "text-implicit": {"chosen": ["12+34=46", "55+21=76"], "rejected": ["12+34=59", "55+21=13"]},
    "conversational-implicit": {"chosen": [[_msg(U, "12+34"), _msg(A, "46")], [_msg(U, "55+21"), _msg(A, "76")]],
                                "rejected": [[_msg(U, "12+34"), _msg(A, "59")], [_msg(U, "55+21"), _msg(A, "13")]]},
}
WRITERS = ("parquet", "jsonl", "save_to_disk")


def write_dataset(tmp_path: Path, shape: str, writer: str) -> Path:
    from datasets import Dataset

    ds = Dataset.from_dict(SHAPES[shape])
    if writer == "parquet":
        path = tmp_path / f"{shape}.parquet"
        ds.to_parquet(str(path))
    elif writer == "jsonl":
        path = tmp_path / f"{shape}.jsonl"
        ds.to_json(str(path))  # JSON lines, datasets' default
    else:
        path = tmp_path / f"{shape}-dataset"
        ds.save_to_disk(str(path))
    return path


def load_for_trl(path: Path):
    from datasets import load_dataset, load_from_disk

    if path.is_dir():
        return load_from_disk(str(path))
    return load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files=str(path), split="train")


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_reads_as_trl_reads_it(tmp_path, tiny_tokenizer, shape, writer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    from dno_data.models import render_prompt
    from dno_data.preference_import import read_pairs

    path = write_dataset(tmp_path, shape, writer)
    pairs = read_pairs(path).to_pylist()
    trl_rows = [maybe_extract_prompt(dict(ex)) for ex in load_for_trl(path)]
    assert len(pairs) == len(trl_rows) == 2
    for ours, theirs in zip(pairs, trl_rows):
        if is_conversational(theirs):
            assert ours["prompt"] == theirs["prompt"] and ours["prompt_text"] is None
            assert ours["chosen"] == theirs["chosen"] and ours["rejected"] == theirs["rejected"]
        else:
            assert ours["prompt_text"] == theirs["prompt"]
            assert ours["chosen"][0]["content"] == theirs["chosen"]
            assert ours["rejected"][0]["content"] == theirs["rejected"]
        # what DPOTrainer trains on: TRL renders the same prompt text dno does
        rendered = maybe_apply_chat_template(theirs, tiny_tokenizer)
        assert (ours["prompt_text"] or render_prompt(tiny_tokenizer, ours["prompt"])) == rendered["prompt"]
        assert rendered["chosen"].startswith(ours["chosen"][0]["content"])
    assert len({p["pair_id"] for p in pairs}) == 2


def test_train_runs_on_a_trl_file_with_its_content_hash_in_the_lineage(tmp_path, tiny_model, capsys):
    from dno_data.lineage import read_lineage
    from dno_data.stages.train import TrainConfig, run

    path = write_dataset(tmp_path, "conversational-implicit", "parquet")
    cfg = TrainConfig.from_options(pairs=path, model=tiny_model, output=tmp_path / "ckpt", batch_size=2,
                                   learning_rate=1e-3)
    run(cfg)
    manifest = json.loads((tmp_path / "ckpt" / "dno-manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 1
    first = read_lineage(tmp_path / "ckpt")["inputs"][0]
    assert first["path"] == str(path) and first["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    capsys.readouterr()
    run(cfg)
    assert "up to date" in capsys.readouterr().err
    write_dataset(tmp_path, "conversational", "parquet").replace(path)  # other data under the same name
    run(cfg)
    assert "up to date" not in capsys.readouterr().err


@pytest.mark.e2e  # a whole command in a process of its own: the second tier
def test_train_and_sft_take_a_save_to_disk_folder_from_the_cli(tmp_path, tiny_model, cli):
    folder = write_dataset(tmp_path, "text", "save_to_disk")
    r = cli("train", folder, "--model", tiny_model, "-o", "ckpt", "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    r = cli("sft", folder, "--model", tiny_model, "-o", "sft", "--batch-size", "2", "--max-steps", "1")
    assert r.returncode == 0, r.stderr
    assert "sft (chosen)" in r.stderr  # a preference file: its chosen side, as for a dno pairs file


BAD = [
    ({"prompt": "12+34=", "chosen": None, "rejected": "5"}, "row 2: 'chosen' is null"),
    ({"prompt": "12+34=", "chosen": "46", "rejected": "46"}, "row 2: chosen and rejected are the same answer"),
    ({"prompt": "12+34=", "chosen": " ", "rejected": "4"}, "row 2 'chosen': the answer is empty"),
    ({"prompt": "", "chosen": "46", "rejected": "4"}, "row 2: the prompt is empty"),
    ({"chosen": "46", "rejected": "12"}, "row 2: no 'prompt' column, and 'chosen' and 'rejected' do not begin alike"),
    ({"prompt": [_msg(U, "1+1")], "chosen": [_msg(A, "2"), _msg(U, "and?")], "rejected": [_msg(A, "3")]},
     "row 2 'chosen': after the prompt it holds assistant, user"),
    ({"prompt": [_msg(U, "1+1")], "chosen": [_msg(A, "2")], "rejected": "3"}, "row 2: the prompt is a conversation but 'rejected' is not"),
    ({"prompt": [_msg("tool", "1+1")], "chosen": [_msg(A, "2")], "rejected": [_msg(A, "3")]}, "row 2 'prompt': message 1 has role 'tool'"),
]


@pytest.mark.parametrize("row,message", BAD, ids=[m.split(": ", 1)[-1][:30] for _, m in BAD])
def test_bad_rows_are_one_line_naming_the_file_and_row(tmp_path, row, message):
    from dno_data.preference_import import read_pairs

    good = {"prompt": "12+34=", "chosen": "46", "rejected": "59"}
    if "prompt" not in row:
        good = {"chosen": "12+34=46", "rejected": "12+34=59"}
    elif isinstance(row["prompt"], list):
        good = {"prompt": [_msg(U, "2+2")], "chosen": [_msg(A, "4")], "rejected": [_msg(A, "5")]}
    path = write_jsonl(tmp_path / "prefs.jsonl", [good, row])
    with pytest.raises(DnoError) as e:
        read_pairs(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_not_preference_data_and_unpaired_data_are_refused(tmp_path):
    from dno_data.preference_import import read_pairs

    with pytest.raises(DnoError, match="no chosen/rejected columns .it has prompt, text."):
        read_pairs(write_jsonl(tmp_path / "x.jsonl", [{"prompt": "1+1=", "text": "2"}]))
    with pytest.raises(DnoError, match="unpaired preference data"):
        read_pairs(write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "1+1=", "completion": "2", "label": True}]))


def test_a_bad_file_leaves_no_checkpoint_behind(tmp_path, tiny_model, cli):
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "1+1=", "chosen": "2", "rejected": "2"}])
    r = cli("train", path, "--model", tiny_model, "-o", "ckpt")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {path}: row 1: chosen and rejected are the same answer")
    assert not any(p.name.startswith("ckpt") for p in tmp_path.iterdir())


def test_sharegpt_messages_and_scores_come_in(tmp_path):
    from dno_data.preference_import import read_pairs

    row = {"chosen": [{"from": "human", "value": "1+1"}, {"from": "gpt", "value": "2"}],
           "rejected": [{"from": "human", "value": "1+1"}, {"from": "gpt", "value": "3"}],
           "score_chosen": 9.0, "score_rejected": 2.5}
    (pair,) = read_pairs(write_jsonl(tmp_path / "p.jsonl", [row])).to_pylist()
    assert pair["prompt"] == [_msg(U, "1+1")] and pair["chosen"] == [_msg(A, "2")]
    assert (pair["chosen_score"], pair["rejected_score"], pair["margin"]) == (9.0, 2.5, 6.5)

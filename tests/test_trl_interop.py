"""pairs.parquet and `dno export` in TRL's preference format: TRL's data utilities and DPOTrainer read
the real prompt, not one guessed from the common start of chosen and rejected."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import problem_rows, run_cli, write_jsonl
from dno_data.artifacts import read_artifact


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def dno_pairs_file(root: Path, model: Path) -> Path:
    """prompts → sample (K=2 + the reference as teacher) → judge → `dno pairs`, on the tiny fixtures."""
    src = write_jsonl(root / "problems.jsonl", problem_rows(16))
    _ok(run_cli("prompts", src, "-o", "prompts.parquet", "--reference-column", "reference", cwd=root))
    _ok(run_cli("sample", "prompts.parquet", "-o", "samples.parquet", "--model", model, "-k", "2",
                "--max-new-tokens", "4", "--teacher", "reference", "--batch-size", "8", cwd=root))
    _ok(run_cli("judge", "samples.parquet", "-o", "judgments.parquet", "--judge", "oracle:addition", cwd=root))
    _ok(run_cli("pairs", "judgments.parquet", "samples.parquet", "-o", "pairs.parquet", cwd=root))
    return root / "pairs.parquet"


@pytest.mark.slow
def test_trl_dpo_trainer_trains_on_pairs_parquet_with_its_real_prompt(tmp_path, tiny_model):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from dno_data.models import load_tokenizer

    pairs = dno_pairs_file(tmp_path, tiny_model)
    rows = read_artifact(pairs, "pairs").to_pylist()
    assert rows, "the fixture run gave no pairs"
    data = Dataset.from_parquet(str(pairs))  # the file as it is, no conversion
    tok = load_tokenizer(tiny_model, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    cfg = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, max_steps=1,
                    learning_rate=1e-3, beta=0.1, report_to="none", save_strategy="no", use_cpu=True,
                    bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True, max_length=32)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    seen = trainer.train_dataset
    for i, row in enumerate(rows):  # the prompt TRL tokenized is the prompt the policy sampled from
        assert tok.decode(seen[i]["prompt_ids"]) == row["prompt_text"]
        assert tok.decode(seen[i]["chosen_ids"]).startswith(row["chosen"][0]["content"])
        assert tok.decode(seen[i]["rejected_ids"]).startswith(row["rejected"][0]["content"])
    out = trainer.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss)


# ---------------------------------------------------------------- dno export

def _pairs(tmp_path) -> Path:
    from conftest import pairs_row, write_example

    rows = [pairs_row("p1", "a", "b", "46", "47", prompt_text="12+34="),
            pairs_row("p2", "c", "d", "76", "75", prompt_text=None)]
    rows[0]["prompt"] = [{"role": "user", "content": "12+34"}]
    rows[1]["prompt"] = [{"role": "user", "content": "55+21"}]
    return write_example(tmp_path / "pairs.parquet", "pairs", rows)


def test_export_trl_conversational_is_what_trl_data_utilities_read(tmp_path, cli, tiny_model, tiny_tokenizer):
    from datasets import Dataset
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    _ok(cli("export", _pairs(tmp_path), "--format", "trl", "-o", "dpo.parquet"))
    data = Dataset.from_parquet(str(tmp_path / "dpo.parquet"))
    assert set(data.column_names) == {"prompt", "chosen", "rejected", "pair_id"}
    ex = data[0]
    assert is_conversational(ex)
    for key in ("prompt", "chosen", "rejected"):
        assert is_conversational({key: ex[key]})
    assert maybe_extract_prompt(ex) is ex  # the prompt is explicit: TRL does not guess it
    out = maybe_apply_chat_template({k: ex[k] for k in ("prompt", "chosen", "rejected")}, tiny_tokenizer)
    assert out["prompt"] == "12+34=" and out["chosen"].startswith("46") and out["rejected"].startswith("47")


def test_export_jsonl_strings_and_a_tokenizer(tmp_path, cli, tiny_model):
    import json

    from trl.data_utils import is_conversational

    _ok(cli("export", _pairs(tmp_path), "--string", "-o", "dpo.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("12+34=", "46", "47"), ("user: 55+21\nassistant:", "76", "75")]  # no prompt_text: plain text
    assert not is_conversational(rows[0])
    _ok(cli("export", "pairs.parquet", "--string", "--tokenizer", tiny_model, "-o", "dpo.jsonl", "--force"))
    rows = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["12+34=", "55+21="]  # the tokenizer's chat template


def test_export_hf_dataset_folder(tmp_path, cli):
    from datasets import load_from_disk
    from trl.data_utils import is_conversational

    _ok(cli("export", _pairs(tmp_path), "--format", "hf-dataset", "-o", "ds"))
    data = load_from_disk(str(tmp_path / "ds"))
    assert len(data) == 2 and is_conversational(data[1])
    assert data[1]["prompt"] == [{"role": "user", "content": "55+21"}]
    again = cli("export", "pairs.parquet", "--format", "hf-dataset", "-o", "ds")
    assert again.returncode == 1 and "--force" in again.stderr
    _ok(cli("export", "pairs.parquet", "--format", "hf-dataset", "-o", "ds", "--force"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    refused = cli("export", "pairs.parquet", "--format", "hf-dataset", "-o", "mine", "--force")
    assert refused.returncode == 1 and "not a datasets folder" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_export_refuses_an_unknown_file_kind(tmp_path, cli):
    r = cli("export", _pairs(tmp_path), "-o", "dpo.csv")
    assert r.returncode == 1 and "dpo.csv" in r.stderr and ".jsonl" in r.stderr and "Traceback" not in r.stderr
    r = cli("export", "pairs.parquet", "-o", "dpo.jsonl", "--tokenizer", "tok")
    assert r.returncode == 1 and "--string" in r.stderr and not (tmp_path / "dpo.jsonl").exists()

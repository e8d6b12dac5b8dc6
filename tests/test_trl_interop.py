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
        assert tok.decode(seen[i]["chosen_ids"]).startswith(row["chosen_text"])
        assert tok.decode(seen[i]["rejected_ids"]).startswith(row["rejected_text"])
    out = trainer.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss)

"""dno_data.training end to end on the tiny fixture: the direction of training, dropout, the
reference, truncated responses, length grouping, the learning-rate schedule (1 vs 2 processes)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, pairs_row, problem_rows
from dno_data.artifacts import write_artifact


def write_pairs(path: Path, n: int = 12, **extra) -> Path:
    """n pairs over n addition prompts: the right sum against a wrong one."""
    rows = []
    for i, r in enumerate((problem_rows(16) * 4)[:n]):
        row = pairs_row(f"p{i}", f"c{i}", f"r{i}", r["reference"], str(int(r["reference"]) + 1),
                        prompt_text=r["prompt"] + "=")
        row["prompt"] = [{"role": "user", "content": r["prompt"]}]
        rows.append({**row, **extra})
    return write_artifact(rows, path, "pairs", None)


@pytest.fixture
def pairs_file(tmp_path):
    return write_pairs(tmp_path / "pairs.parquet")


def train_cfg(pairs, model, out, **kw):
    from dno_data.stages.train import TrainConfig

    base = dict(pairs=pairs, model=model, output=out, batch_size=2, learning_rate=1e-3, max_length=32,
                save_every=0, threads=1, warmup_ratio=0.0)
    return TrainConfig.from_options(**{**base, **kw})


def history(ckpt: Path) -> list[dict]:
    return [json.loads(line) for line in (ckpt.with_name(ckpt.name + ".records") / "train_log.jsonl").read_text().splitlines()]


def manifest(ckpt: Path) -> dict:
    return json.loads((ckpt / "dno-manifest.json").read_text())


def dropout_model(tiny_model: Path, tmp_path: Path, p: float = 0.5) -> Path:
    """The tiny fixture with attention dropout p (a dropout the policy applies while training)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dropout-model"
    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["attention_dropout"] = p
    (out / "config.json").write_text(json.dumps(cfg))
    assert AutoModelForCausalLM.from_pretrained(out).config.attention_dropout == p
    return out


# ---------------------------------------------------------------- the direction of training

def test_first_loss_is_ln2_and_reward_accuracy_rises(tmp_path, tiny_model):
    from dno_data.stages.train import run

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    run(train_cfg(pairs, tiny_model, tmp_path / "ckpt", batch_size=4, learning_rate=1e-2))
    h = history(tmp_path / "ckpt")
    assert len(h) == 8
    assert h[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference before the first update
    assert h[0]["margin"] == pytest.approx(0.0, abs=1e-6)
    assert h[0]["reward_accuracy"] == 0.5  # every pair a tie: half right, not all wrong
    assert max(x["reward_accuracy"] for x in h[1:4]) > 0.5  # within a few steps the chosen side wins
    assert sum(x["reward_accuracy"] for x in h[4:]) / 4 > 0.5
    assert sum(x["loss"] for x in h[4:]) / 4 < math.log(2)


def test_dropout_is_off_in_the_policy_unless_kept(tmp_path, tiny_model, pairs_file):
    from dno_data.stages.train import run

    model = dropout_model(tiny_model, tmp_path)
    run(train_cfg(pairs_file, model, tmp_path / "off", max_steps=1))
    assert history(tmp_path / "off")[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    run(train_cfg(pairs_file, model, tmp_path / "on", max_steps=1, keep_dropout=True))
    assert abs(history(tmp_path / "on")[0]["loss"] - math.log(2)) > 1e-4
    # the saved config keeps the model's own dropout rate
    assert json.loads((tmp_path / "off" / "config.json").read_text())["attention_dropout"] == 0.5


def test_max_steps_scores_only_the_pairs_it_uses(tmp_path, tiny_model, pairs_file, capsys):
    import pyarrow.parquet as pq

    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=2))
    m = manifest(tmp_path / "ckpt")["metrics"]
    assert m["steps"] == 2 and m["pairs"] == 12 and m["pairs_used"] == 4
    assert pq.read_table(tmp_path / "ckpt.records" / "ref_logps.parquet").num_rows == 4
    assert "reference log-probs: 4 pairs" in capsys.readouterr().out


def test_max_steps_beyond_one_epoch_cycles_the_pairs(tmp_path, tiny_model, pairs_file):
    """`dno compare` gives every arm DNO's optimizer steps: with fewer pairs than that, `dno train --max-steps`
    passes over them again (each pass in a new seeded order), as `dno sft` does; tokens count every pass."""
    import pyarrow.parquet as pq

    from dno_data.stages.train import run

    for loss in ("hard", "kto"):
        out = tmp_path / loss
        run(train_cfg(pairs_file, tiny_model, out, max_steps=15, loss=loss))  # 12 pairs, 2 a step: 6 steps an epoch
        m = manifest(out)["metrics"]
        assert m["steps"] == 15 and len(history(out)) == 15 and m["pairs"] == 12 and m["pairs_used"] == 30
        assert m["passes"] == 2.5
        ref = pq.read_table(tmp_path / f"{loss}.records" / "ref_logps.parquet").to_pylist()
        assert len(ref) == 30
        first, second = ([r["pair_id"] for r in ref[k:k + 12]] for k in (0, 12))
        assert sorted(first) == sorted(second) and first != second  # every pair once a pass, a new order each pass
    one_epoch = tmp_path / "epoch"
    run(train_cfg(pairs_file, tiny_model, one_epoch, max_steps=6))
    tokens_per_pair = manifest(one_epoch)["metrics"]["tokens"] / 12
    assert manifest(tmp_path / "hard")["metrics"]["tokens"] == pytest.approx(30 * tokens_per_pair, rel=0.2)


def test_a_fixed_reference_is_used_for_the_reference_pass(tmp_path, tiny_model, pairs_file):
    """--reference DIR: the log-ratios are taken against DIR, not against the input model."""
    import pyarrow.parquet as pq

    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "pi2"))  # a model that differs from the fixture
    run(train_cfg(pairs_file, tmp_path / "pi2", tmp_path / "dpo", reference=tiny_model, loss="dpo", max_steps=1))
    run(train_cfg(pairs_file, tiny_model, tmp_path / "again", max_steps=1))
    ref_dpo = pq.read_table(tmp_path / "dpo.records" / "ref_logps.parquet").to_pydict()
    ref_tiny = pq.read_table(tmp_path / "again.records" / "ref_logps.parquet").to_pydict()
    assert ref_dpo == ref_tiny  # the same pairs, scored by the same (fixed) model
    first = history(tmp_path / "dpo")[0]
    assert first["margin"] > 0 and first["loss"] < math.log(2)  # pi2 already prefers the chosen side
    assert manifest(tmp_path / "dpo")["reference_model"] == str(tiny_model)


def test_reference_with_another_tokenizer_is_refused(tmp_path, tiny_model, pairs_file):
    from dno_data.errors import DnoError
    from dno_data.stages.train import run

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    key = next(k for k in vocab if k.isdigit())
    vocab[key + "x"] = vocab.pop(key)
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(DnoError, match="another tokenizer"):
        run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", reference=other, max_steps=1))


def test_unknown_loss_is_a_one_line_error(tmp_path, tiny_model, pairs_file, cli):
    r = cli("train", pairs_file, "--model", tiny_model, "-o", tmp_path / "ckpt", "--loss", "nope")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and "hard, dpo, soft, ipo, ipo-sum, sppo" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("loss", ["ipo", "ipo-sum", "sppo", "soft", "dpo"])
def test_every_loss_trains(tmp_path, tiny_model, loss):
    from dno_data.stages.train import run

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    run(train_cfg(pairs, tiny_model, tmp_path / loss, loss=loss, batch_size=4, learning_rate=1e-2))
    h = history(tmp_path / loss)
    assert len(h) == 8 and all(math.isfinite(x["loss"]) for x in h)
    assert manifest(tmp_path / loss)["options"]["loss"] == loss
    assert sum(x["margin"] for x in h[4:]) > 0  # every variant moves the chosen side up relative to the rejected


def test_scoring_only_response_positions_changes_nothing(tiny_model, tiny_tokenizer):
    """batch_logps with logits_to_keep (vocabulary projection from the first response token on)
    gives the log-probs of the full forward."""
    import torch

    from dno_data.models import load_causal_lm
    from dno_data.training import build_examples, collate
    from dno_data.training.data import batch_logps, takes_logits_to_keep
    from dno_data.artifacts import to_table

    rows = [pairs_row("p1", "a", "b", "22", "3", prompt_text="11+11="),
            pairs_row("p2", "c", "d", "4", "555", prompt_text="2+2="),
            pairs_row("p3", "e", "f", "1234", "5", prompt_text="1000+234=")]
    examples, _ = build_examples(to_table(rows, "pairs"), tiny_tokenizer, max_length=32)
    for i, ex in enumerate(examples):
        ex["index"] = i
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    model = load_causal_lm(tiny_model, "float32").eval()
    assert takes_logits_to_keep(model)
    with torch.no_grad():
        full, cut = batch_logps(model, batch), batch_logps(model, batch, keep_logits=True)
    for a, b in zip(full, cut):
        assert torch.allclose(a, b, atol=1e-5)


def test_batches_count_each_answers_scored_tokens(tiny_tokenizer):
    """IPO's per-token means divide by these counts: the answer's characters plus EOS, what sequence_logps sums."""
    from dno_data.artifacts import to_table
    from dno_data.training import build_examples, collate

    rows = [pairs_row("p1", "a", "b", "22", "3", prompt_text="11+11="),
            pairs_row("p2", "c", "d", "4", "555", prompt_text="2+2=")]
    examples, _ = build_examples(to_table(rows, "pairs"), tiny_tokenizer, max_length=32)
    for i, ex in enumerate(examples):
        ex["index"] = i
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    assert batch["chosen_tokens"].tolist() == [3, 2]  # "22" + EOS, "4" + EOS
    assert batch["rejected_tokens"].tolist() == [2, 4]  # "3" + EOS, "555" + EOS


# ---------------------------------------------------------------- truncated responses

def test_truncated_side_gets_no_eos_in_training(tmp_path, tiny_model, tiny_tokenizer):
    import pyarrow.parquet as pq

    from dno_data.training import build_examples

    path = write_pairs(tmp_path / "pairs.parquet", n=2, chosen_truncated=False, rejected_truncated=True)
    table = pq.read_table(path)
    examples, _ = build_examples(table, tiny_tokenizer, max_length=32)
    eos = tiny_tokenizer.eos_token_id
    for ex in examples:
        assert ex["chosen_ids"][-1] == eos
        assert ex["rejected_ids"][-1] != eos
        assert sum(ex["rejected_mask"]) == len(tiny_tokenizer(table["rejected"][0][0]["content"].as_py(),
                                                              add_special_tokens=False)["input_ids"])


def test_truncated_responses_are_counted_in_the_manifest(tmp_path, tiny_model):
    from dno_data.stages.train import run

    pairs = write_pairs(tmp_path / "pairs.parquet", n=4, rejected_truncated=True)
    run(train_cfg(pairs, tiny_model, tmp_path / "ckpt"))
    assert manifest(tmp_path / "ckpt")["metrics"]["truncated_responses"] == 4


# ---------------------------------------------------------------- length-grouped batches

def test_group_by_length_cuts_padding_and_keeps_every_pair(tiny_tokenizer):
    from dno_data.training.data import example_length, training_order

    examples = [{"chosen_ids": [0] * n, "rejected_ids": [0] * (n // 2 + 1)} for n in
                [3, 40, 5, 38, 7, 36, 9, 34, 11, 32, 13, 30, 15, 28, 17, 26]]

    def padding(order, batch=4):
        total = 0
        for i in range(0, len(order), batch):
            lengths = [example_length(examples[k]) for k in order[i:i + batch]]
            total += sum(max(lengths) - x for x in lengths)
        return total

    plain = training_order(examples, seed=0)
    grouped = training_order(examples, seed=0, group_by_length=True, group=4)
    assert sorted(grouped) == sorted(plain) == list(range(16))
    assert padding(grouped) < padding(plain) / 2
    assert training_order(examples, seed=0, group_by_length=True, group=4) == grouped  # seeded


def test_group_by_length_trains(tmp_path, tiny_model, pairs_file):
    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", group_by_length=True))
    h = history(tmp_path / "ckpt")
    assert len(h) == 6 and h[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


# ---------------------------------------------------------------- the schedule on N processes

def test_lr_schedule_counts_optimizer_steps(tmp_path, tiny_model):
    """Linear warm-up then decay over exactly the run's optimizer steps (grad_accum 2)."""
    from dno_data.stages.train import run

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    run(train_cfg(pairs, tiny_model, tmp_path / "ckpt", batch_size=2, grad_accum=2, warmup_ratio=0.25,
                  learning_rate=1e-3))
    lrs = [x["lr"] for x in history(tmp_path / "ckpt")]
    assert len(lrs) == 8  # 32 pairs / (2 x 2)
    # transformers' linear schedule, read after each step: warm-up over 2 steps, then down to 0 at step 8
    expected = [1e-3 * min((s) / 2, (8 - s) / 6) for s in range(1, 9)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def _torchrun(nproc: int, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "stages.cli", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 30 s alone on 2 cores, 75 s on a busy machine: three torchrun processes load torch
def test_two_processes_match_one_process(tmp_path, tiny_model):
    """Same pairs, same global batch (1 x 4 vs 2 x 2): the same LR curve and the same weights.

    Run with `pytest -m slow tests/test_training.py`."""
    import torch
    from safetensors.torch import load_file

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    common = ["--model", tiny_model, "--learning-rate", "1e-3", "--max-length", "32", "--save-every", "0",
              "--warmup-ratio", "0.25", "--threads", "1"]
    one = _torchrun(1, pairs, "-o", tmp_path / "one", "--batch-size", "4", *common)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, pairs, "-o", tmp_path / "two", "--batch-size", "2", *common)
    assert two.returncode == 0, two.stderr[-3000:]
    h1, h2 = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(h1) == len(h2) == 8
    assert [x["lr"] for x in h2] == pytest.approx([x["lr"] for x in h1], abs=1e-12)
    assert h2[-1]["lr"] == 0.0 and h2[-2]["lr"] > 0  # the schedule ends with the run, not after half of it
    assert [x["loss"] for x in h2] == pytest.approx([x["loss"] for x in h1], abs=1e-5)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


# ---------------------------------------------------------------- LoRA, mixed precision, checkpointing

def test_lora_trains_adapters_and_saves_a_merged_model(tmp_path, tiny_model, pairs_file):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "lora", lora_r=4, lora_alpha=8.0,
                  lora_target_modules="q_proj,v_proj", learning_rate=1e-2))
    ckpt = tmp_path / "lora"
    h = history(ckpt)
    assert h[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # reference = the adapter-free base
    assert not (ckpt / "adapter_config.json").exists()  # merged: a plain HF folder
    AutoModelForCausalLM.from_pretrained(ckpt)
    before, after = load_file(tiny_model / "model.safetensors"), load_file(ckpt / "model.safetensors")
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)  # only the adapted weights moved
    assert manifest(ckpt)["options"]["lora_r"] == 4


# ---------------------------------------------------------------- the checkpoint is the model alone

def test_the_checkpoint_is_the_model_alone_and_its_records_lie_beside_it(tmp_path, tiny_model, pairs_file):
    """What from_pretrained and vLLM load, the model card and the manifest; ref_logps and the log beside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dno_data.paths import describe
    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=2))
    ckpt, records = tmp_path / "ckpt", tmp_path / "ckpt.records"
    model_files = {f.name for f in tiny_model.iterdir()}  # config, generation config, weights, tokenizer
    assert {"config.json", "generation_config.json", "model.safetensors"} <= model_files
    assert {f.name for f in ckpt.iterdir()} == model_files | {"README.md", "dno-manifest.json"}
    assert {f.name for f in records.iterdir()} == {"ref_logps.parquet", "train_log.jsonl", "dno-manifest.json"}
    assert describe(records) == "training records written by `dno train` or `dno sft`"
    AutoModelForCausalLM.from_pretrained(ckpt)
    AutoTokenizer.from_pretrained(ckpt)
    card = (ckpt / "README.md").read_text()
    m = manifest(ckpt)
    steps = m["metrics"]["steps"]
    assert card.startswith("---\nlibrary_name: transformers\n")
    for line in (f"| base model | `{tiny_model}` (sha256 {m['lineage']['inputs'][1]['sha256'][:12]}) |",
                 f"| data | `{pairs_file}` (sha256 ", "| loss | hard, beta 0.1 |",
                 f"| steps | {steps} (batch 2 x accumulation 1 x 1 processes), learning rate 0.001",
                 f"| final loss | {m['metrics']['final_loss']:.3g} |"):
        assert line in card, line


def test_a_folder_that_is_not_training_records_is_never_replaced(tmp_path, tiny_model, pairs_file):
    """CHECKPOINT.records is an output too: a folder of the user's there is refused before any work."""
    from dno_data.errors import DnoError
    from dno_data.stages.train import run

    mine = tmp_path / "ckpt.records"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DnoError, match=r"ckpt.records: is a folder, not training records written by"):
        run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=1))
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "ckpt").exists()
    shutil.rmtree(mine)
    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=1))
    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=2))  # its own records: replaced
    assert len(history(tmp_path / "ckpt")) == 2


def test_save_adapter_writes_the_adapter_alone_and_merge_adds_the_model(tmp_path, tiny_model, pairs_file):
    """--save-adapter: peft's PeftModel.from_pretrained(base, CHECKPOINT) loads it, no full weights; with --merge the
    checkpoint is the merged model (what the loop's next iteration loads), the same adapter in adapter/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dno_data.errors import DnoError
    from dno_data.stages.train import run

    lora = dict(lora_r=4, lora_alpha=8.0, lora_target_modules="q_proj,v_proj", learning_rate=5e-2, max_steps=2)
    run(train_cfg(pairs_file, tiny_model, tmp_path / "adapter", save_adapter=True, **lora))
    run(train_cfg(pairs_file, tiny_model, tmp_path / "both", save_adapter=True, merge=True, **lora))
    adapter, both = tmp_path / "adapter", tmp_path / "both"
    names = {f.name for f in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "dno-manifest.json",
            "generation_config.json"} <= names
    assert not names & {"model.safetensors", "config.json"}  # no full model
    assert "PeftModel.from_pretrained" in (adapter / "README.md").read_text()
    assert {f.name for f in (both / "adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    plain = base(ids).logits
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    tuned = peft_model(ids).logits
    assert not torch.allclose(tuned, plain)  # the adapter moved the model
    merged = AutoModelForCausalLM.from_pretrained(both)(ids).logits
    assert torch.allclose(merged, tuned, atol=1e-5)  # same seed, same steps: the merged model is the adapter's
    for bad, why in ((dict(save_adapter=True), "--save-adapter saves LoRA adapters: it needs --lora-r"),
                     (dict(lora_r=4, merge=True), "--merge goes with --save-adapter")):
        with pytest.raises(DnoError, match=why):
            train_cfg(pairs_file, tiny_model, tmp_path / "x", **bad)


def test_lora_with_unknown_target_modules_is_an_error(tmp_path, tiny_model, pairs_file):
    from dno_data.errors import DnoError
    from dno_data.stages.train import run

    with pytest.raises(DnoError, match="lora-target-modules"):
        run(train_cfg(pairs_file, tiny_model, tmp_path / "x", lora_r=4, lora_target_modules="no_such_module"))


def test_bf16_mixed_precision_trains(tmp_path, tiny_model, pairs_file):
    import json as _json

    from dno_data.stages.train import run

    run(train_cfg(pairs_file, tiny_model, tmp_path / "bf16", mixed_precision="bf16", max_steps=3))
    h = history(tmp_path / "bf16")
    assert len(h) == 3 and all(math.isfinite(x["loss"]) for x in h)
    assert h[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # the reference pass autocasts the same way
    assert _json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "float32"  # weights stay fp32


def test_gradient_checkpointing_gives_the_same_weights(tmp_path, tiny_model, pairs_file, monkeypatch):
    import torch
    import transformers.modeling_utils as modeling_utils
    from safetensors.torch import load_file

    from dno_data.stages.train import run

    real, calls = modeling_utils.checkpoint, []
    monkeypatch.setattr(modeling_utils, "checkpoint", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    run(train_cfg(pairs_file, tiny_model, tmp_path / "plain", max_steps=3))
    assert not calls
    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=3, gradient_checkpointing=True))
    assert len(calls) == 3  # one layer, three training forwards (the no-grad reference pass keeps none)
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "ckpt" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()).get("use_cache", True) is True


def test_training_and_reference_pass_show_their_progress(tmp_path, tiny_model, pairs_file, monkeypatch, capfd):
    """A progress line per long phase (steps with ETA and loss, reference pairs); off a terminal (here:
    pytest's capture) they are log lines (tests/test_progress_lines.py: a bar on a terminal)."""
    import re

    from dno_data.stages.train import run

    monkeypatch.setenv("DNO_PROGRESS_INTERVAL", "0")
    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=2))
    err = capfd.readouterr().err
    train = re.findall(r"^train: (\d+)/(\d+) steps .*, loss -?[\d.]+$", err, re.M)
    assert train[-1] == ("2", "2") and len(train) == 3, err  # one per step, one at the end
    assert re.findall(r"^reference: (\d+)/(\d+) pairs", err, re.M)[-1] == ("4", "4"), err  # the 4 pairs the 2 steps use


def test_stage_output_has_no_library_bars_or_warnings(tmp_path, tiny_model, pairs_file, cli):
    r = cli("train", pairs_file, "--model", tiny_model, "-o", tmp_path / "ckpt", "--max-steps", "2", "--save-every", "1")
    assert r.returncode == 0, r.stderr
    for noise in ("Writing model shards", "Removed shared tensor", "Loading weights"):
        assert noise not in r.stdout + r.stderr


def test_report_to_logs_every_step_to_an_accelerate_tracker(tmp_path, tiny_model, pairs_file, monkeypatch):
    """--report-to NAME: accelerate's tracker API gets the config once and each step's figures."""
    from accelerate.tracking import GeneralTracker

    import dno_data.training.setup as setup_mod
    from dno_data.stages.train import run

    seen = {"config": None, "steps": []}

    class Recorder(GeneralTracker):
        name, requires_logging_directory, main_process_only = "recorder", False, True

        def __init__(self, logs):
            super().__init__()

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            seen["config"] = values

        def log(self, values, step=None, **kw):
            seen["steps"].append((step, values))

    monkeypatch.setitem(setup_mod.CUSTOM_TRACKERS, "recorder", Recorder)
    run(train_cfg(pairs_file, tiny_model, tmp_path / "ckpt", max_steps=2, report_to="recorder"))
    assert seen["config"]["beta"] > 0
    assert [s for s, _ in seen["steps"]] == [1, 2]
    assert {"loss", "lr"} <= set(seen["steps"][0][1])


def test_report_to_an_unknown_or_missing_tracker_is_one_line(tmp_path, tiny_model, pairs_file, cli):
    r = cli("train", pairs_file, "--model", tiny_model, "-o", tmp_path / "ckpt", "--report-to", "nope")
    assert r.returncode != 0 and "--report-to nope: not an accelerate tracker" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_loop_takes_an_adapter_checkpoint_only_with_the_merged_model(tmp_path):
    """The next iteration samples from iteration t's checkpoint: dno iterate refuses --save-adapter alone
    (before anything runs) and takes it with --merge, whose checkpoint is the merged model."""
    from dno_data.errors import DnoError
    from dno_data.stages.iterate import IterateConfig

    base = dict(run=tmp_path / "r", model=tmp_path / "m", judge="oracle:addition", iterations=2)
    with pytest.raises(DnoError, match=r"--train-args --save-adapter: the next iteration samples from this "
                                       r"checkpoint.*add --merge"):
        IterateConfig.from_options(**base, train_args={"lora_r": 4, "save_adapter": True})
    IterateConfig.from_options(**base, train_args={"lora_r": 4, "save_adapter": True, "merge": True})

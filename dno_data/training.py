"""DNO training: the contrastive loss against the policy that sampled, under accelerate.

Reads a pairs table, computes the reference log-probs once (no-grad pass of the input
model, so no second model sits in memory), then trains at most one epoch over the pairs.
Runs as one CPU process, on many GPUs/nodes via `accelerate launch -m stages.cli train ...`, or as
several CPU processes via `torchrun --nproc_per_node N -m stages.cli train ...`.

Crash safety: progress lives in `<output>.partial/` (reference log-probs, accelerator state
every --save-every steps); a rerun with the same inputs resumes there. The final folder
appears by rename only when complete.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import claim_work_dir, write_json_atomic
from .errors import DnoError
from .models import check_model_dir, load_causal_lm, load_tokenizer, render_prompt

MANIFEST = "dno-manifest.json"


@dataclass(frozen=True)
class TrainOptions:
    beta: float = 0.1
    loss: str = "hard"  # hard | soft
    learning_rate: float = 5e-7
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 1024
    seed: int = 0
    save_every: int = 50
    dtype: str = "float32"
    threads: int | None = None


# ---------------------------------------------------------------- tokenization

def encode_pair(tokenizer, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS and a mask that is 1 exactly on response tokens.

    Prompt and response are tokenized separately and concatenated, so the boundary is exact
    by construction (tokenizing the joined text can merge tokens across it).
    """
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def build_examples(pairs: pa.Table, tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Encoded examples, and how many pairs were dropped because the prompt alone is too long."""
    examples, too_long = [], 0
    for row in pairs.to_pylist():
        prompt = row["prompt_text"] or render_prompt(tokenizer, row["messages"])
        ex = {"pair_id": row["pair_id"], "target": float(row["target"])}
        for side in ("chosen", "rejected"):
            ids, mask = encode_pair(tokenizer, prompt, row[side])
            if sum(1 for m in mask if m == 0) >= max_length:
                break
            ex[f"{side}_ids"], ex[f"{side}_mask"] = ids[:max_length], mask[:max_length]
        else:
            examples.append(ex)
            continue
        too_long += 1
    return examples, too_long


def collate(batch: list[dict], pad_id: int) -> dict:
    """Chosen rows then rejected rows in one right-padded batch (one forward pass for both)."""
    import torch

    seqs = [ex["chosen_ids"] for ex in batch] + [ex["rejected_ids"] for ex in batch]
    masks = [ex["chosen_mask"] for ex in batch] + [ex["rejected_mask"] for ex in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    loss_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        loss_mask[i, : len(m)] = torch.tensor(m)
    out = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask,
           "index": torch.tensor([ex["index"] for ex in batch]),
           "target": torch.tensor([ex["target"] for ex in batch], dtype=torch.float32)}
    if "ref_chosen" in batch[0]:
        out["ref_chosen"] = torch.tensor([ex["ref_chosen"] for ex in batch], dtype=torch.float32)
        out["ref_rejected"] = torch.tensor([ex["ref_rejected"] for ex in batch], dtype=torch.float32)
    return out


def batch_logps(model, batch: dict):
    from .losses import sequence_logps

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = sequence_logps(logits, batch["input_ids"], batch["loss_mask"])
    n = batch["input_ids"].shape[0] // 2
    return logps[:n], logps[n:]


# ---------------------------------------------------------------- the loop

def train(pairs: pa.Table, model_dir: Path, output: Path, opts: TrainOptions, lineage: dict,
          fresh: bool = False, log=print) -> dict | None:
    """Train and write the checkpoint; the metrics on the main process, None on the others."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from .losses import dno_loss

    if opts.threads:
        torch.set_num_threads(opts.threads)
    check_model_dir(model_dir)
    if len(pairs) == 0:
        raise DnoError("the pairs file has no rows: nothing to train on (loosen the rule of `dno pairs`)")
    accelerator = Accelerator(gradient_accumulation_steps=opts.grad_accum,
                              cpu=not torch.cuda.is_available())
    set_seed(opts.seed)
    partial = output.with_name(output.name + ".partial")
    if accelerator.is_main_process:
        claim_work_dir(partial, lineage, fresh)
    accelerator.wait_for_everyone()

    tokenizer = load_tokenizer(model_dir, padding_side="right")
    model = load_causal_lm(model_dir, opts.dtype)
    examples, too_long = build_examples(pairs, tokenizer, opts.max_length)
    if not examples:
        raise DnoError(f"every pair is longer than --max-length {opts.max_length}; raise it")
    for i, ex in enumerate(examples):
        ex["index"] = i
    pad_id = tokenizer.pad_token_id

    # 1. reference log-probs under the input model (= the policy that sampled), once.
    ref_path = partial / "ref_logps.parquet"
    t0 = time.time()
    if ref_path.exists():
        ref = pq.read_table(ref_path).to_pydict()
        log(f"reference log-probs: resumed from {ref_path}")
    else:
        model.eval()
        ref_loader = accelerator.prepare(DataLoader(examples, batch_size=opts.batch_size * 2,
                                                    collate_fn=lambda b: collate(b, pad_id)))
        model = accelerator.prepare(model)
        got = {"index": [], "ref_chosen": [], "ref_rejected": []}
        with torch.no_grad():
            for batch in ref_loader:
                c, r = batch_logps(model, batch)
                idx, c, r = accelerator.gather_for_metrics((batch["index"], c, r))
                got["index"] += idx.tolist(); got["ref_chosen"] += c.tolist(); got["ref_rejected"] += r.tolist()
        order = sorted(range(len(got["index"])), key=lambda k: got["index"][k])
        ref = {"pair_id": [examples[got["index"][k]]["pair_id"] for k in order],
               "ref_chosen": [got["ref_chosen"][k] for k in order],
               "ref_rejected": [got["ref_rejected"][k] for k in order]}
        if accelerator.is_main_process:
            pq.write_table(pa.table(ref), ref_path)
        model = accelerator.unwrap_model(model)
        log(f"reference log-probs: {len(examples)} pairs in {time.time() - t0:.1f}s")
    for ex, c, r in zip(examples, ref["ref_chosen"], ref["ref_rejected"]):
        ex["ref_chosen"], ex["ref_rejected"] = c, r

    # 2. at most one epoch of the contrastive loss, in a fixed seeded order (resumable).
    g = torch.Generator().manual_seed(opts.seed)
    order = torch.randperm(len(examples), generator=g).tolist()
    loader = DataLoader([examples[i] for i in order], batch_size=opts.batch_size,
                        collate_fn=lambda b: collate(b, pad_id))
    per_step = opts.grad_accum * accelerator.num_processes
    total_steps = max(1, math.floor(math.ceil(len(loader) / per_step) * opts.epochs))
    if opts.max_steps:
        total_steps = min(total_steps, opts.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay)
    scheduler = get_scheduler(opts.lr_scheduler, optimizer, num_warmup_steps=int(opts.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    step, history = 0, []
    progress = partial / "progress.json"
    if progress.exists() and (partial / "state").exists():
        accelerator.load_state(str(partial / "state"))
        saved = json.loads(progress.read_text())
        step, history = saved["step"], saved["history"]
        log(f"resuming training at step {step}/{total_steps}")
    run_loader = accelerator.skip_first_batches(loader, step * opts.grad_accum) if step else loader

    model.train()
    t0 = time.time()
    acc = {"loss": 0.0, "reward_accuracy": 0.0, "margin": 0.0, "n": 0}
    for batch in run_loader:
        if step >= total_steps:
            break
        with accelerator.accumulate(model):
            c, r = batch_logps(model, batch)
            loss, rewards = dno_loss(c, r, batch["ref_chosen"], batch["ref_rejected"], opts.beta,
                                     target=batch["target"] if opts.loss == "soft" else None)
            accelerator.backward(loss)
            if opts.max_grad_norm and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
            optimizer.step(); scheduler.step(); optimizer.zero_grad()
        margin = rewards["chosen_reward"] - rewards["rejected_reward"]
        acc["loss"] += loss.item(); acc["n"] += 1
        acc["reward_accuracy"] += (margin > 0).float().mean().item(); acc["margin"] += margin.mean().item()
        if accelerator.sync_gradients:
            step += 1
            history.append({"step": step, "lr": scheduler.get_last_lr()[0],
                            **{k: acc[k] / acc["n"] for k in ("loss", "reward_accuracy", "margin")}})
            acc = {"loss": 0.0, "reward_accuracy": 0.0, "margin": 0.0, "n": 0}
            if opts.save_every and step % opts.save_every == 0 and step < total_steps:
                accelerator.save_state(str(partial / "state"))
                if accelerator.is_main_process:
                    write_json_atomic({"step": step, "history": history}, progress)
    train_seconds = time.time() - t0

    # 3. the checkpoint: HF folder + manifest, by rename once complete.
    accelerator.wait_for_everyone()
    metrics = {
        "pairs": len(pairs), "pairs_used": len(examples), "dropped_too_long": too_long,
        "steps": step, "train_seconds": round(train_seconds, 2),
        "final_loss": history[-1]["loss"] if history else None,
        "mean_loss": sum(h["loss"] for h in history) / len(history) if history else None,
        "final_reward_accuracy": history[-1]["reward_accuracy"] if history else None,
    }
    if accelerator.is_main_process:
        tmp = output.with_name(f".{output.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy(ref_path, tmp / "ref_logps.parquet")
        with open(tmp / "train_log.jsonl", "w") as f:
            f.writelines(json.dumps(h) + "\n" for h in history)
        write_json_atomic({"lineage": lineage, "reference_model": str(model_dir), "metrics": metrics,
                           "options": opts.__dict__}, tmp / MANIFEST)
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            tmp.rename(output)
            shutil.rmtree(old)
        else:
            tmp.rename(output)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    return metrics if accelerator.is_main_process else None

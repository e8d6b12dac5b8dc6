"""Part 3: at most one epoch of the contrastive loss, resumable from `<output>.partial/state`.

The learning-rate schedule counts optimizer steps: it is stepped once per step on every
process, never once per process and step (a scheduler passed to `accelerator.prepare` steps
num_processes times per call, which ended the schedule after 1/N of the run on N processes).
Logged figures are means over all processes of the step's micro-batches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .. import losses
from ..artifacts import write_json_atomic
from .data import batch_logps, collate
from .options import TrainOptions
from .setup import Setup

FIGURES = ("loss", "reward_accuracy", "margin")


@dataclass
class FitResult:
    model: object  # the trained model, unwrapped
    steps: int
    history: list[dict]
    seconds: float


def fit(s: Setup, opts: TrainOptions, log=print) -> FitResult:
    import torch
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    acc, model = s.accelerator, s.model
    pad_id = s.tokenizer.pad_token_id
    loader = DataLoader(s.examples, batch_size=opts.batch_size, collate_fn=lambda b: collate(b, pad_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay)
    scheduler = get_scheduler(opts.lr_scheduler, optimizer,
                              num_warmup_steps=int(opts.warmup_ratio * s.total_steps),
                              num_training_steps=s.total_steps)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    acc.register_for_checkpointing(scheduler)

    step, history = 0, []
    state, progress = s.partial / "state", s.partial / "progress.json"
    if progress.exists() and state.exists():
        acc.load_state(str(state))
        saved = json.loads(progress.read_text())
        step, history = saved["step"], saved["history"]
        log(f"resuming training at step {step}/{s.total_steps}")
    run_loader = acc.skip_first_batches(loader, step * opts.grad_accum) if step else loader

    model.train()
    t0 = time.time()
    sums, n = torch.zeros(len(FIGURES), device=acc.device), 0
    for batch in run_loader:
        if step >= s.total_steps:
            break
        with acc.accumulate(model):
            c, r = batch_logps(model, batch)
            labels = losses.Labels(batch["target"], batch["chosen_winrate"], batch["rejected_winrate"])
            loss, rewards = losses.dno_loss(c, r, batch["ref_chosen"], batch["ref_rejected"], opts.beta,
                                            loss=opts.loss, labels=labels)
            acc.backward(loss)
            if opts.max_grad_norm and acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        margin = rewards["chosen_reward"] - rewards["rejected_reward"]
        sums += torch.stack([loss.detach().float(), losses.reward_accuracy(margin), margin.mean().float()])
        n += 1
        if acc.sync_gradients:
            scheduler.step()
            step += 1
            means = acc.reduce(sums / n, reduction="mean").tolist()
            history.append({"step": step, "lr": scheduler.get_last_lr()[0], **dict(zip(FIGURES, means))})
            sums, n = torch.zeros_like(sums), 0
            if opts.save_every and step % opts.save_every == 0 and step < s.total_steps:
                acc.save_state(str(state))
                if acc.is_main_process:
                    write_json_atomic({"step": step, "history": history}, progress)
    acc.wait_for_everyone()
    return FitResult(acc.unwrap_model(model), step, history, time.time() - t0)

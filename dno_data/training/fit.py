"""Part 3: the optimizer loop over an objective (the contrastive loss by default; `dno sft` passes the NLL), at most
one epoch of pairs or --max-steps, resumable from `<output>.partial/state`.

The learning-rate schedule counts optimizer steps: it is stepped once per step on every
process, never once per process and step (a scheduler passed to `accelerator.prepare` steps
num_processes times per call, which ended the schedule after 1/N of the run on N processes).
Logged figures are means over all processes of the step's micro-batches.

A resumable state is one unit: the accelerate state (model, optimizer, scheduler, RNGs) and
`progress.json` (step, history) are written to a hidden folder, fsynced, and renamed to
`state-NNNNNN` in one step; older states are removed after. A crash at any moment leaves the
last whole state in charge, and a rerun resumes from it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import losses
from ..artifacts import write_json_atomic
from ..atomic import replace
from ..errors import DnoError, first_line
from .data import batch_logps, collate, kl_logps
from .options import TrainOptions
from .setup import Setup

@dataclass(frozen=True)
class Objective:
    """What one micro-batch contributes: `step(model, batch, setup, opts) -> (loss, figures)`, the
    figures a tensor of len(names) values logged per optimizer step ("loss" first)."""
    names: tuple[str, ...]
    collate: Callable[[list[dict], int], dict]
    step: Callable


def _contrastive_step(model, batch, s, opts, kl=None):
    import torch

    c, r = batch_logps(model, batch, s.keep_logits)
    labels = losses.Labels(batch["target"], batch["chosen_winrate"], batch["rejected_winrate"], kl=kl,
                           desirable_weight=opts.desirable_weight, undesirable_weight=opts.undesirable_weight,
                           chosen_tokens=batch["chosen_tokens"], rejected_tokens=batch["rejected_tokens"])
    loss, rewards = losses.dno_loss(c, r, batch["ref_chosen"], batch["ref_rejected"], opts.beta,
                                    loss=opts.loss, labels=labels)
    margin = rewards["chosen_reward"] - rewards["rejected_reward"]
    return loss, torch.stack([loss.detach().float(), losses.reward_accuracy(margin), margin.mean().float()])


def _kto_step(model, batch, s, opts):
    """The contrastive step with KTO's reference point: the policy's log-probs of the batch's KL sequences
    (no gradient: TRL detaches the estimate) against the reference's, averaged over the processes."""
    import torch

    with torch.no_grad():
        policy_kl = kl_logps(model, batch, s.keep_logits)
    kl = losses.kl_estimate(policy_kl.float(), batch["ref_kl"], lambda x: s.accelerator.reduce(x, reduction="mean"))
    loss, figures = _contrastive_step(model, batch, s, opts, kl)
    return loss, torch.cat([figures, kl.reshape(1).to(figures.dtype)])


CONTRASTIVE = Objective(("loss", "reward_accuracy", "margin"), collate, _contrastive_step)
KTO = Objective(CONTRASTIVE.names + ("kl",), collate, _kto_step)  # --loss kto: also the KL estimate per step
FIGURES = CONTRASTIVE.names


def contrastive_objective(opts: TrainOptions) -> Objective:
    return KTO if losses.LOSSES[opts.loss].needs_kl else CONTRASTIVE


@dataclass
class FitResult:
    model: object  # the trained model, unwrapped
    steps: int
    history: list[dict]
    seconds: float
    state_dict: dict | None = None  # gathered from every process when the weights are sharded (FSDP, ZeRO-3)


def fit(s: Setup, opts: TrainOptions, log=print, objective: Objective | None = None, what: str = "train") -> FitResult:
    """Train with `objective` (default: the contrastive loss --loss names); progress is shown as `what`."""
    from ..console import Progress

    import torch
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    objective = objective or contrastive_objective(opts)
    acc, model = s.accelerator, s.model
    pad_id = s.tokenizer.pad_token_id
    loader = DataLoader(s.examples, batch_size=opts.batch_size, collate_fn=lambda b: objective.collate(b, pad_id))
    # the fused kernel (one pass over all parameters; also what transformers' Trainer uses by default)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay,
                                  fused=model.device.type in ("cpu", "cuda"))
    scheduler = get_scheduler(opts.lr_scheduler, optimizer,
                              num_warmup_steps=int(opts.warmup_ratio * s.total_steps),
                              num_training_steps=s.total_steps)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    acc.register_for_checkpointing(scheduler)

    step, history = 0, []
    latest = latest_state(s.partial)
    if latest is not None:
        step, history = load_state(acc, latest)
        log(f"resuming training at step {step}/{s.total_steps}")
    run_loader = acc.skip_first_batches(loader, step * opts.grad_accum) if step else loader

    if opts.report_to:  # accelerate trackers (TensorBoard, W&B...) beside train_log.jsonl
        acc.init_trackers("dno", config={k: v for k, v in vars(opts).items() if isinstance(v, (int, float, str, bool))})
    model.train()
    t0 = time.time()
    sums, n = torch.zeros(len(objective.names), device=acc.device), 0
    # the main process's progress: a bar on a terminal, else a line every $DNO_PROGRESS_INTERVAL seconds
    progress = Progress(what, s.total_steps, "steps", done=step, enabled=acc.is_main_process)
    for batch in run_loader:
        if step >= s.total_steps:
            break
        with acc.accumulate(model):
            loss, figures = objective.step(model, batch, s, opts)
            acc.backward(loss)
            if opts.max_grad_norm and acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        sums += figures
        n += 1
        if acc.sync_gradients:
            scheduler.step()
            step += 1
            means = acc.reduce(sums / n, reduction="mean").tolist()
            history.append({"step": step, "lr": scheduler.get_last_lr()[0], **dict(zip(objective.names, means))})
            sums, n = torch.zeros_like(sums), 0
            if opts.report_to:
                acc.log({k: v for k, v in history[-1].items() if k != "step"}, step=step)
            progress.note(f"{objective.names[0]} {history[-1][objective.names[0]]:.4f}")
            progress.add(1)
            if opts.save_every and step % opts.save_every == 0 and step < s.total_steps:
                save_state(acc, s.partial, step, history)
    progress.close()
    if opts.report_to:
        acc.end_training()
    acc.wait_for_everyone()
    # Sharded weights (FSDP, DeepSpeed ZeRO-3) are gathered by every process together; DDP and a
    # single process save the unwrapped model's own weights.
    sharded = acc.distributed_type.name in ("FSDP", "DEEPSPEED") and not opts.lora_r
    state_dict = acc.get_state_dict(model) if sharded else None
    return FitResult(acc.unwrap_model(model), step, history, time.time() - t0, state_dict)


# ---------------------------------------------------------------- resumable states

def latest_state(partial: Path) -> Path | None:
    states = sorted(partial.glob("state-[0-9]*"))
    return states[-1] if states else None


def save_state(acc, partial: Path, step: int, history: list[dict]) -> None:
    tmp = partial / f".state-{step:06d}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_json_atomic({"step": step, "history": history}, tmp / "progress.json")
        final = partial / f"state-{step:06d}"
        replace(tmp, final)  # fsync every file, rename, fsync the folder
        for old in partial.glob("state-[0-9]*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def load_state(acc, folder: Path) -> tuple[int, list[dict]]:
    try:
        saved = json.loads((folder / "progress.json").read_text())
        acc.load_state(str(folder))
    except Exception as e:  # a damaged file of any kind: torch, safetensors, pickle, json
        raise DnoError(f"{folder}: the saved training state cannot be read ({first_line(e, 200)}); "
                       "rerun with --force to discard the unfinished work") from None
    return saved["step"], saved["history"]

"""`dno train PAIRS --model DIR -o CHECKPOINT`: one DNO step, pi_t -> pi_{t+1}.

    dno train runs/demo/iter-01/pairs.parquet --model runs/demo/policy-0 -o runs/demo/iter-01/checkpoint \
        --beta 0.1 --learning-rate 5e-7 --batch-size 4
    accelerate launch --multi_gpu --num_processes 8 -m stages.cli train pairs.parquet --model DIR -o ckpt  # GPUs
    torchrun --nproc_per_node 2 -m stages.cli train pairs.parquet --model DIR -o ckpt          # CPU, 2 processes

The reference is the input model (the policy that sampled the pairs) unless --reference
names another: its log-probs are computed once in a no-grad pass before training. Loss only
on response tokens; the loss is chosen by name (--loss, dno_data.losses.LOSSES).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dno_data.artifacts import check_output, read_artifact

from dno_data.lineage import make_lineage

from dno_data.parts import release_output
from dno_data.errors import DnoError
from dno_data.losses import LOSSES
from dno_data.models import check_model_dir
from dno_data.reproducibility import configure_torch
from dno_data.training import train

from .common import summary, up_to_date
from .options import FORCE, THREADS, above, build_command, one_of, opt, output_folder
from .training_options import (BATCH_SIZE, EPOCHS, GRAD_ACCUM, GRADIENT_CHECKPOINTING, GROUP_BY_LENGTH, KEEP_DROPOUT, REPORT_TO,
                               LEARNING_RATE, LORA_ALPHA, LORA_R, LORA_TARGET_MODULES, LR_SCHEDULER, MAX_GRAD_NORM,
                               MAX_LENGTH, MAX_STEPS, MIXED_PRECISION, SAVE_EVERY, SEED, WARMUP_RATIO, WEIGHT_DECAY, D,
                               train_dtype_field, train_options)


@dataclass(frozen=True)
class TrainConfig:
    pairs: Path = opt("pairs.parquet (from `dno pairs`).", argument=True)
    model: Path = opt("HF folder of the policy that sampled (pi_t; also the reference unless --reference).")
    output: Path = opt("Checkpoint folder to write (pi_{t+1}).", flags=("-o", "--output"), changes_output=False,
                       check=output_folder)
    # the paper: 0.1 or 0.05; higher keeps pi_{t+1} closer to pi_t
    beta: float = opt("Strength of the tie to the reference (> 0).", D.beta, check=above(0))
    loss: str = opt(f"Loss by name: {' | '.join(LOSSES)} (hard: DNO-Prct; soft: Algorithm 1's target; dpo: "
                    "hard against a fixed --reference).", D.loss, check=one_of(*LOSSES))
    learning_rate: float = LEARNING_RATE.field(D.learning_rate)
    batch_size: int = BATCH_SIZE.field(D.batch_size)
    grad_accum: int = GRAD_ACCUM.field(D.grad_accum)
    epochs: float = EPOCHS.field(D.epochs)
    max_steps: int | None = MAX_STEPS.field(D.max_steps)
    warmup_ratio: float = WARMUP_RATIO.field(D.warmup_ratio)
    lr_scheduler: str = LR_SCHEDULER.field(D.lr_scheduler)
    weight_decay: float = WEIGHT_DECAY.field(D.weight_decay)
    max_grad_norm: float | None = MAX_GRAD_NORM.field(D.max_grad_norm)
    max_length: int = MAX_LENGTH.field(D.max_length)
    seed: int = SEED.field(D.seed)
    save_every: int = SAVE_EVERY.field(D.save_every)
    dtype: str = train_dtype_field()
    threads: int = THREADS.field(D.threads)
    force: bool = FORCE.field(False)
    reference: Path | None = opt("Reference model folder (default: --model, the policy that sampled); e.g. a fixed "
                                 "pi_1 for offline DPO.", D.reference)
    keep_dropout: bool = KEEP_DROPOUT.field(D.keep_dropout)
    group_by_length: bool = GROUP_BY_LENGTH.field(D.group_by_length)
    report_to: str = REPORT_TO.field(D.report_to)
    lora_r: int = LORA_R.field(D.lora_r)
    lora_alpha: float = LORA_ALPHA.field(D.lora_alpha)
    lora_target_modules: str = LORA_TARGET_MODULES.field(D.lora_target_modules)
    mixed_precision: str = MIXED_PRECISION.field(D.mixed_precision)
    gradient_checkpointing: bool = GRADIENT_CHECKPOINTING.field(D.gradient_checkpointing)


def run(cfg: TrainConfig) -> Path:
    pairs = read_artifact(cfg.pairs, "pairs")
    check_model_dir(cfg.model)
    if cfg.reference is not None:
        check_model_dir(cfg.reference, flag="--reference")
    if cfg.output.resolve() == cfg.model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    check_output(cfg.output, [cfg.pairs, cfg.model] + ([cfg.reference] if cfg.reference else []), kind="train")
    configure_torch(cfg.threads)  # before the lineage, which records it
    lineage = make_lineage("train", [cfg.pairs, cfg.model] + ([cfg.reference] if cfg.reference else []), cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    opts = train_options(cfg)
    metrics = train(pairs, cfg.model, cfg.output, opts, lineage, fresh=cfg.force)
    release_output(cfg.output)
    if metrics is not None:  # the main process reports
        summary(f"train {cfg.model} -> {cfg.output}", metrics)
    return cfg.output


command = build_command(TrainConfig, run, "Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t).")

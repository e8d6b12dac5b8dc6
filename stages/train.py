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
from dno_data.training import TrainOptions, train


from .common import summary, up_to_date
from .options import (DTYPE, FORCE, THREADS, above, at_least, build_command, in_range, lr_scheduler_name,
                      one_of, opt, output_folder)


D = TrainOptions  # the library's defaults: declared once, in dno_data.training.options
TRAIN_DTYPES = ("float32", "bfloat16")


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
    learning_rate: float = opt("AdamW learning rate (small models take larger rates).", D.learning_rate, check=above(0))
    batch_size: int = opt("Pairs per micro-batch per process.", D.batch_size, check=at_least(1))
    grad_accum: int = opt("Micro-batches per optimizer step.", D.grad_accum, check=at_least(1))
    epochs: float = opt("Fraction of an epoch, in (0, 1].", D.epochs, check=in_range(0, 1, lo_open=True))
    max_steps: int | None = opt("Stop after this many optimizer steps.", D.max_steps, check=at_least(1))
    warmup_ratio: float = opt("Warm-up share of the steps.", D.warmup_ratio, check=in_range(0, 1))
    lr_scheduler: str = opt("transformers scheduler: linear, cosine, constant...", D.lr_scheduler, check=lr_scheduler_name)
    weight_decay: float = opt("AdamW weight decay.", D.weight_decay, check=at_least(0))
    max_grad_norm: float | None = opt("Clip gradients to this norm (0: off).", D.max_grad_norm, cli_type=float, check=at_least(0))
    max_length: int = opt("Most tokens of prompt + response; longer responses are cut.", D.max_length, check=at_least(1))
    seed: int = opt("Seed of the data order.", D.seed)
    save_every: int = opt("Steps between resumable states in <output>.partial/ (0: never).", D.save_every, check=at_least(0))
    dtype: str = DTYPE.field(D.dtype, help=f"Training dtype: {'|'.join(TRAIN_DTYPES)}.", check=one_of(*TRAIN_DTYPES))
    threads: int | None = THREADS.field(D.threads)
    force: bool = FORCE.field(False)
    reference: Path | None = opt("Reference model folder (default: --model, the policy that sampled); e.g. a fixed "
                                 "pi_1 for offline DPO.", D.reference)
    keep_dropout: bool = opt("Keep dropout on in the policy (off by default, as in TRL).", D.keep_dropout)
    group_by_length: bool = opt("Batch pairs of similar length (less padding; another data order).", D.group_by_length)
    lora_r: int = opt("Train LoRA adapters of this rank (peft), merged on save; 0: full training.", D.lora_r,
                      check=at_least(0))
    lora_alpha: float = opt("LoRA alpha (scale = alpha / r).", D.lora_alpha, check=above(0))
    lora_target_modules: str = opt("Modules that get adapters: comma-separated names (q_proj,v_proj) or all-linear.",
                                   D.lora_target_modules)
    mixed_precision: str = opt("no | bf16 | fp16 autocast (the weights stay in --dtype).", D.mixed_precision,
                               check=one_of("no", "bf16", "fp16"))
    gradient_checkpointing: bool = opt("Recompute activations in the backward pass (less memory).", D.gradient_checkpointing)


def run(cfg: TrainConfig) -> Path:
    pairs = read_artifact(cfg.pairs, "pairs")
    check_model_dir(cfg.model)
    if cfg.reference is not None:
        check_model_dir(cfg.reference, flag="--reference")
    if cfg.output.resolve() == cfg.model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    check_output(cfg.output, [cfg.pairs, cfg.model] + ([cfg.reference] if cfg.reference else []), folder_of="train")
    lineage = make_lineage("train", [cfg.pairs, cfg.model] + ([cfg.reference] if cfg.reference else []), cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    opts = TrainOptions(**{k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__})
    metrics = train(pairs, cfg.model, cfg.output, opts, lineage, fresh=cfg.force)
    release_output(cfg.output)
    if metrics is not None:  # the main process reports
        summary(f"train {cfg.model} -> {cfg.output}", metrics)
    return cfg.output


command = build_command(TrainConfig, run, "Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t).")

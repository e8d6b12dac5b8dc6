"""The settings of one training run (the library's view of `dno train`'s options)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..reproducibility import DEFAULT_THREADS

MANIFEST = "dno-manifest.json"  # beside the HF files of a checkpoint


@dataclass(frozen=True)
class TrainOptions:
    beta: float = 0.1
    loss: str = "hard"  # a name in dno_data.losses.LOSSES
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
    threads: int = DEFAULT_THREADS  # torch CPU threads (dno_data.reproducibility)
    reference: Path | None = None  # the reference model; None = the input model (pi_t)
    keep_dropout: bool = False  # dropout stays on in the policy (off by default, as in TRL)
    group_by_length: bool = False  # batches of similar lengths (less padding), order still seeded
    lora_r: int = 0  # rank of LoRA adapters (peft); 0 = train every weight
    lora_alpha: float = 16.0
    lora_target_modules: str = "all-linear"  # comma-separated module names, or peft's "all-linear"
    mixed_precision: str = "no"  # no | bf16 | fp16 (autocast under accelerate; weights stay in --dtype)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    report_to: str = ""  # accelerate trackers, comma-separated (tensorboard, wandb, ...); logs in <output>.logs/

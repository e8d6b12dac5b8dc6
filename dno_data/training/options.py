"""The settings of one training run, declared once: `dno train` and `dno sft` embed them as a group.

Each field carries its option (help, check, whether it changes the output), so the two commands
share one declaration of every training flag; `dno sft` leaves out the contrastive ones (beta,
loss, reference, KTO's weights). torch-free: the --loss names come from dno_data.losses' registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, Option, above, at_least, in_range, one_of
from ..config.groups import THREADS
from ..config.options import lr_scheduler_name
from ..losses import LOSSES, loss_help
from ..reproducibility import DEFAULT_THREADS

MANIFEST = "dno-manifest.json"  # beside the HF files of a checkpoint
TRAIN_DTYPES = ("float32", "bfloat16")
# options `dno sft` has no use for
CONTRASTIVE_ONLY = ("beta", "loss", "reference", "desirable_weight", "undesirable_weight")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Config):
    # the paper: 0.1 or 0.05; higher keeps pi_{t+1} closer to pi_t
    beta: float = Option("Strength of the tie to the reference (> 0).", check=above(0)).field(0.1)
    loss: str = Option(f"Loss by name ({loss_help()}).", check=one_of(*LOSSES)).field("hard")
    # KTO's lambda_D and lambda_U (TRL's desirable_weight / undesirable_weight); each pair gives one of each
    desirable_weight: float = Option("--loss kto: weight of the chosen (desirable) answers' loss.",
                                     check=above(0)).field(1.0)
    undesirable_weight: float = Option("--loss kto: weight of the rejected (undesirable) answers' loss.",
                                       check=above(0)).field(1.0)
    learning_rate: float = Option("AdamW learning rate (small models take larger rates).",
                                  check=above(0)).field(5e-7)
    batch_size: int = Option("Pairs (dno sft: examples) per micro-batch per process.", check=at_least(1)).field(4)
    grad_accum: int = Option("Micro-batches per optimizer step.", check=at_least(1)).field(1)
    epochs: float = Option("Passes over the data: dno train at most 1 (one epoch on the new pairs, as the paper "
                           "trains each iteration); dno sft any number > 0 (ignored with --max-steps).",
                           check=in_range(0, 1000, lo_open=True)).field(1.0)
    max_steps: int | None = Option("Exactly this many optimizer steps: fewer than one epoch stops early, more "
                                   "passes over the pairs (dno sft: examples) again, each pass in a new seeded order "
                                   "(dno compare gives every arm DNO's steps so).", check=at_least(1)).field(None)
    warmup_ratio: float = Option("Warm-up share of the steps.", check=in_range(0, 1)).field(0.1)
    lr_scheduler: str = Option("transformers scheduler: linear, cosine, constant...",
                               check=lr_scheduler_name).field("linear")
    weight_decay: float = Option("AdamW weight decay.", check=at_least(0)).field(0.0)
    max_grad_norm: float | None = Option("Clip gradients to this norm (0: off).", cli_type=float,
                                         check=at_least(0)).field(1.0)
    max_length: int = Option("Most tokens of prompt + response; longer responses are cut.",
                             check=at_least(1)).field(1024)
    seed: int = Option("Seed of the data order.").field(0)
    save_every: int = Option("Steps between resumable states in <output>.partial/ (0: never).",
                             check=at_least(0)).field(50)
    dtype: str = Option(f"Training dtype: {'|'.join(TRAIN_DTYPES)}.", check=one_of(*TRAIN_DTYPES)).field("float32")
    threads: int = THREADS.field(DEFAULT_THREADS)  # torch CPU threads (dno_data.reproducibility)
    # the reference model; None = the input model (pi_t)
    reference: Path | None = Option("Reference model folder (default: --model, the policy that sampled); e.g. a "
                                    "fixed pi_1 for offline DPO.").field(None)
    keep_dropout: bool = Option("Keep dropout on in the policy (off by default, as in TRL).").field(False)
    group_by_length: bool = Option("Batch examples of similar length (less padding; another data order).").field(False)
    lora_r: int = Option("Train LoRA adapters of this rank (peft), merged on save; 0: full training.",
                         check=at_least(0)).field(0)
    lora_alpha: float = Option("LoRA alpha (scale = alpha / r).", check=above(0)).field(16.0)
    lora_target_modules: str = Option("Modules that get adapters: comma-separated names (q_proj,v_proj) or "
                                      "all-linear.").field("all-linear")
    mixed_precision: str = Option("no | bf16 | fp16 autocast (the weights stay in --dtype).",
                                  check=one_of("no", "bf16", "fp16")).field("no")
    gradient_checkpointing: bool = Option("Recompute activations in the backward pass (less memory).").field(False)
    report_to: str = Option("Also log the training curves to these accelerate trackers (comma-separated: tensorboard, "
                            "wandb, mlflow...; files in <output>.logs/); train_log.jsonl is always written.",
                            changes_output=False).field("")

"""The options of the commands that train (`dno train`, `dno sft`), declared once.

Both commands list these Option objects in their Config (e.g. `learning_rate: float =
LEARNING_RATE.field(D.learning_rate)`), so a flag means the same thing, with the same help and
check, in both; `train_options(cfg)` turns a config into the library's TrainOptions.
"""

from __future__ import annotations

import dataclasses

from dno_data.training import TrainOptions

from .options import DTYPE, Option, above, at_least, in_range, lr_scheduler_name, one_of

D = TrainOptions  # the library's defaults: declared once, in dno_data.training.options
TRAIN_DTYPES = ("float32", "bfloat16")

LEARNING_RATE = Option("AdamW learning rate (small models take larger rates).", check=above(0))
BATCH_SIZE = Option("Pairs (dno sft: examples) per micro-batch per process.", check=at_least(1))
GRAD_ACCUM = Option("Micro-batches per optimizer step.", check=at_least(1))
EPOCHS = Option("Fraction of an epoch, in (0, 1].", check=in_range(0, 1, lo_open=True))
MAX_STEPS = Option("Stop after this many optimizer steps.", check=at_least(1))
WARMUP_RATIO = Option("Warm-up share of the steps.", check=in_range(0, 1))
LR_SCHEDULER = Option("transformers scheduler: linear, cosine, constant...", check=lr_scheduler_name)
WEIGHT_DECAY = Option("AdamW weight decay.", check=at_least(0))
MAX_GRAD_NORM = Option("Clip gradients to this norm (0: off).", cli_type=float, check=at_least(0))
MAX_LENGTH = Option("Most tokens of prompt + response; longer responses are cut.", check=at_least(1))
SEED = Option("Seed of the data order.")
SAVE_EVERY = Option("Steps between resumable states in <output>.partial/ (0: never).", check=at_least(0))
KEEP_DROPOUT = Option("Keep dropout on in the policy (off by default, as in TRL).")
REPORT_TO = Option("Also log the training curves to these accelerate trackers (comma-separated: tensorboard, wandb, "
                   "mlflow...; files in <output>.logs/); train_log.jsonl is always written.", changes_output=False)
GROUP_BY_LENGTH = Option("Batch examples of similar length (less padding; another data order).")
LORA_R = Option("Train LoRA adapters of this rank (peft), merged on save; 0: full training.", check=at_least(0))
LORA_ALPHA = Option("LoRA alpha (scale = alpha / r).", check=above(0))
LORA_TARGET_MODULES = Option("Modules that get adapters: comma-separated names (q_proj,v_proj) or all-linear.")
MIXED_PRECISION = Option("no | bf16 | fp16 autocast (the weights stay in --dtype).", check=one_of("no", "bf16", "fp16"))
GRADIENT_CHECKPOINTING = Option("Recompute activations in the backward pass (less memory).")


def train_dtype_field():
    return DTYPE.field(D.dtype, help=f"Training dtype: {'|'.join(TRAIN_DTYPES)}.", check=one_of(*TRAIN_DTYPES))


def train_options(cfg, **override) -> TrainOptions:
    """The TrainOptions of a config: its fields that TrainOptions has (the rest keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    values = {k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__ if k in names}
    return TrainOptions(**{**values, **override})

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
from typing import Annotated, Optional

import typer

from dno_data.artifacts import make_lineage, read_artifact
from dno_data.cli_utils import one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.models import check_model_dir
from dno_data.training import TrainOptions, train


@dataclass(frozen=True)
class TrainConfig:
    pairs: Path
    model: Path  # pi_t: the policy that sampled the pairs; also the reference unless `reference` is set
    output: Path  # checkpoint folder for pi_{t+1}
    beta: float = 0.1  # the paper: 0.1 or 0.05; higher keeps pi_{t+1} closer to pi_t
    loss: str = "hard"  # a name in dno_data.losses.LOSSES: hard (DNO-Prct), soft (Algorithm 1), dpo, ipo, sppo
    learning_rate: float = 5e-7  # small models take larger rates
    batch_size: int = 4  # pairs per micro-batch (per process)
    grad_accum: int = 1  # micro-batches per optimizer step
    epochs: float = 1.0  # at most one epoch on the new pairs
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"  # any transformers scheduler name
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # gradient clipping (None or 0: off)
    max_length: int = 1024  # prompt + response tokens; longer responses are cut
    seed: int = 0
    save_every: int = 50  # steps between resumable states in <output>.partial/
    dtype: str = "float32"  # float32 | bfloat16
    threads: int | None = None
    force: bool = False
    fresh: bool = False
    reference: Path | None = None  # the reference model; None = the input model (pi_t)
    keep_dropout: bool = False  # keep dropout on in the policy (off by default, as in TRL)
    group_by_length: bool = False  # batches of similar lengths (less padding; another data order)
    lora_r: int = 0  # LoRA adapters of this rank (peft), merged into the checkpoint; 0: full training
    lora_alpha: float = 16.0
    lora_target_modules: str = "all-linear"  # comma-separated module names, or "all-linear"
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast; the weights stay in --dtype
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory)


def run(cfg: TrainConfig) -> Path:
    from dno_data.losses import LOSSES

    if cfg.loss not in LOSSES:
        raise DnoError(f"--loss must be one of {', '.join(LOSSES)}")
    if not 0 < cfg.epochs <= 1:
        raise DnoError("--epochs must be in (0, 1]: DNO trains at most one epoch on the new pairs")
    if cfg.dtype not in ("float32", "bfloat16"):
        raise DnoError("--dtype must be float32 or bfloat16")
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise DnoError("--mixed-precision must be no, bf16 or fp16")
    if cfg.lora_r < 0:
        raise DnoError("--lora-r must be 0 (off) or a positive rank")
    pairs = read_artifact(cfg.pairs, "pairs")
    check_model_dir(cfg.model)
    if cfg.reference is not None:
        check_model_dir(cfg.reference, flag="--reference")
    if cfg.output.resolve() == cfg.model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    lineage = make_lineage("train", [cfg.pairs, cfg.model] + ([cfg.reference] if cfg.reference else []), cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    opts = TrainOptions(**{k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__})
    metrics = train(pairs, cfg.model, cfg.output, opts, lineage, fresh=cfg.fresh)
    if metrics is not None:  # the main process reports
        summary(f"train {cfg.model} -> {cfg.output}", metrics)
    return cfg.output


@one_line_errors
def command(
    pairs: Annotated[Path, typer.Argument(help="pairs.parquet (from `dno pairs`).")],
    model: Annotated[Path, typer.Option(help="HF folder of the policy that sampled (the reference).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint folder to write.")],
    beta: Annotated[float, typer.Option(help="Strength of the tie to the reference.")] = 0.1,
    loss: Annotated[str, typer.Option(help="hard (DNO-Prct) | soft (Algorithm 1 target) | dpo | ipo | sppo.")] = "hard",
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-7,
    batch_size: Annotated[int, typer.Option(help="Pairs per micro-batch per process.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    epochs: Annotated[float, typer.Option(help="Fraction of an epoch, at most 1.")] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
    warmup_ratio: Annotated[float, typer.Option(help="Warm-up share of the steps.")] = 0.1,
    lr_scheduler: Annotated[str, typer.Option(help="transformers scheduler: linear, cosine, constant...")] = "linear",
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Clip gradients to this norm (0: off).")] = 1.0,
    max_length: Annotated[int, typer.Option(help="Most tokens of prompt + response.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of the data order.")] = 0,
    save_every: Annotated[int, typer.Option(help="Steps between resumable states (0: never).")] = 50,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16.")] = "float32",
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads.")] = None,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard an unfinished run with other settings.")] = False,
    reference: Annotated[Optional[Path], typer.Option(
        help="Reference model folder (default: --model, the policy that sampled); e.g. a fixed pi_1 for offline DPO.")] = None,
    keep_dropout: Annotated[bool, typer.Option(help="Keep dropout on in the policy (off by default).")] = False,
    group_by_length: Annotated[bool, typer.Option(help="Batch pairs of similar length (less padding).")] = False,
    lora_r: Annotated[int, typer.Option(help="Train LoRA adapters of this rank (peft), merged on save; 0: off.")] = 0,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16.0,
    lora_target_modules: Annotated[str, typer.Option(
        help="Modules that get adapters: comma-separated names (q_proj,v_proj) or all-linear.")] = "all-linear",
    mixed_precision: Annotated[str, typer.Option(help="no | bf16 | fp16 autocast (weights stay in --dtype).")] = "no",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in backward (less memory).")] = False,
):
    """Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t)."""
    run(TrainConfig(pairs, model, output, beta, loss, learning_rate, batch_size, grad_accum, epochs, max_steps,
                    warmup_ratio, lr_scheduler, weight_decay, max_grad_norm, max_length, seed, save_every, dtype, threads, force, fresh, reference, keep_dropout, group_by_length,
                    lora_r, lora_alpha, lora_target_modules, mixed_precision, gradient_checkpointing))

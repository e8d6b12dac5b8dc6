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

from ..config import Config, group, opt
from ..errors import DnoError
from ..training.options import TrainOptions
from .common import CHECKPOINT, FORCE


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t)."""

    pairs: Path = opt("pairs.parquet (from `dno pairs`).", argument=True)
    model: Path = opt("HF folder of the policy that sampled (pi_t; also the reference unless --reference).")
    output: Path = CHECKPOINT.field(help="Checkpoint folder to write (pi_{t+1}).")
    # beta (the paper: 0.1 or 0.05), the loss, the reference, the optimizer, LoRA, precision
    training: TrainOptions = group(TrainOptions)
    force: bool = FORCE.field(False)

    def validate(self) -> None:
        if self.training.loss == "kto" and self.training.batch_size < 2:
            raise DnoError("--loss kto needs --batch-size 2 or more: with one pair a micro-batch, the KL estimate "
                           "is that pair's own log-ratios, not a reference point (TRL's KTOTrainer refuses it too)")
        if self.training.epochs > 1:
            raise DnoError(f"--epochs {self.training.epochs:g}: dno train takes at most one epoch (0 < epochs <= 1): "
                           "DNO trains each iteration once on its new pairs, the next iteration samples again")


def run(cfg: TrainConfig) -> Path:
    """Write the checkpoint folder cfg.output (resuming <output>.partial/) and return its path."""
    from ..artifacts import read_artifact
    from ..console import summary, up_to_date
    from ..lineage import make_lineage
    from ..models import check_model_dir
    from ..paths import check_output
    from ..parts import release_output
    from ..reproducibility import configure_torch
    from ..training import train

    reference = cfg.training.reference
    pairs = read_artifact(cfg.pairs, "pairs")  # keys, targets in [0, 1], chosen and rejected two samples
    _check_texts_differ(pairs, cfg.pairs)
    check_model_dir(cfg.model)
    if reference is not None:
        check_model_dir(reference, flag="--reference")
    if cfg.output.resolve() == cfg.model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    inputs = [cfg.pairs, cfg.model] + ([reference] if reference else [])
    check_output(cfg.output, inputs, kind="train")
    configure_torch(cfg.training.threads)  # before the lineage, which records it
    lineage = make_lineage("train", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    metrics = train(pairs, cfg.model, cfg.output, cfg.training, lineage, fresh=cfg.force)
    release_output(cfg.output)
    if metrics is not None:  # the main process reports
        summary(f"train {cfg.model} -> {cfg.output}", metrics)
    return cfg.output



def _check_texts_differ(pairs, path) -> None:
    """A pair whose chosen and rejected answers are the same text teaches nothing and hides a broken file."""
    import duckdb

    if len(pairs) == 0:
        return
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("pairs", pairs.select(["pair_id", "chosen", "rejected"]))
    same, example = con.sql("SELECT count(*), any_value(pair_id) FROM pairs WHERE chosen = rejected").fetchall()[0]
    con.close()
    if same:
        raise DnoError(f"{path}: {same} pair(s) have the same chosen and rejected answer (e.g. pair_id {example}); "
                       "remake it with `dno pairs` (a pair needs two different answers)")

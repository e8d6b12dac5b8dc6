"""`dno train PAIRS --model DIR -o CHECKPOINT`: one DNO step, pi_t -> pi_{t+1}.

    dno train runs/demo/iter-01/pairs.parquet --model runs/demo/policy-0 -o runs/demo/iter-01/checkpoint \
        --beta 0.1 --learning-rate 5e-7 --batch-size 4
    dno train ultrafeedback.parquet --model HuggingFaceTB/SmolLM2-135M-Instruct -o ckpt   # TRL data, a Hub id
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
from ..config.groups import REVISION
from ..errors import DnoError
from ..training.options import TrainOptions
from .common import CHECKPOINT, FORCE


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t)."""

    pairs: Path = opt("pairs.parquet (from `dno pairs`), or TRL-format preference data (prompt/chosen/rejected; "
                      "Parquet, JSONL or a datasets save_to_disk folder).", argument=True)
    model: Path = opt("HF folder (or Hugging Face Hub id) of the policy that sampled (pi_t; also the reference "
                      "unless --reference).")
    revision: str | None = REVISION.field(None)
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
    from ..config import replace
    from ..console import summary, up_to_date
    from ..lineage import make_lineage
    from ..models import check_model_dir
    from ..paths import check_output
    from ..training.options import records_of
    from ..parts import release_output
    from ..preference_import import read_pairs
    from ..reproducibility import configure_torch
    from ..training import train

    pairs = read_pairs(cfg.pairs)  # keys, targets in [0, 1], chosen and rejected two samples
    pairs, same_text = _without_same_texts(pairs, cfg.pairs)
    model = check_model_dir(cfg.model, revision=cfg.revision)  # a Hub id: its snapshot folder (dno_data.hub)
    reference = cfg.training.reference
    if reference is not None:
        reference = check_model_dir(reference, flag="--reference")
    if cfg.output.resolve() == model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    inputs = [cfg.pairs, model] + ([reference] if reference else [])
    check_output(cfg.output, inputs, kind="train")
    check_output(records_of(cfg.output), inputs, kind="train-records")  # its training records, beside it
    configure_torch(cfg.training.threads)  # before the lineage, which records it
    lineage = make_lineage("train", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    metrics = train(pairs, model, cfg.output, replace(cfg.training, reference=reference), lineage, fresh=cfg.force,
                    extra_metrics={"pairs_same_text_left_out": same_text})
    release_output(cfg.output)
    if metrics is not None:  # the main process reports
        summary(f"train {cfg.model} -> {cfg.output}", metrics)
    return cfg.output



def _without_same_texts(pairs, path):
    """The pairs less those whose chosen and rejected answers are the same text, ended the same way, and how many
    those were. Such a pair teaches nothing; `dno pairs` makes one when a judge scores two copies of one answer
    differently (an LLM judge that samples, position bias), so it is left out with a warning rather than stopping a
    loop; a file of nothing else is refused. The same text finished by EOS against one cut at the length limit is a
    real pair (`dno pairs --truncated negative`): training gives the first its EOS and the second none."""
    import os

    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..console import say

    if len(pairs) == 0:
        return pairs, 0
    ends = [c for c in ("chosen_truncated", "rejected_truncated") if c in pairs.column_names]
    same_end = " AND chosen_truncated IS NOT DISTINCT FROM rejected_truncated" if len(ends) == 2 else ""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("pairs", pairs.select(["pair_id", "chosen", "rejected", *ends]))
    same = [r[0] for r in con.sql(f"SELECT pair_id FROM pairs WHERE chosen = rejected{same_end}").fetchall()]
    con.close()
    if not same:
        return pairs, 0
    if len(same) == len(pairs):
        raise DnoError(f"{path}: every pair ({len(same)}) has the same chosen and rejected answer (e.g. pair_id "
                       f"{same[0]}); remake it with `dno pairs` (a pair needs two different answers)")
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch: the main process says it
        say(f"warning: {path}: {len(same)} of {len(pairs)} pairs have the same chosen and rejected answer (e.g. "
            f"pair_id {same[0]}: a judge scored two copies of one answer differently); they are left out")
    return pairs.filter(pc.invert(pc.is_in(pairs["pair_id"], value_set=pa.array(same, pairs["pair_id"].type)))), len(same)

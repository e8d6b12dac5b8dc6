"""DNO training: the contrastive loss against a reference, under accelerate, in four parts.

    setup      (setup.py)      accelerator, model and tokenizer, encoded pairs, the seeded plan
    reference  (reference.py)  the reference log-probs, once, in a no-grad pass
    fit        (fit.py)        at most one epoch of the loss named by --loss (dno_data.losses), or exactly
                               --max-steps optimizer steps (the pairs cycled, each pass in a new seeded order)
    save       (save.py)       the HF folder + dno-manifest.json, swapped in whole

`dno sft` (sft.py) runs the same setup, fit and save with a token-NLL objective and no reference.

The reference is the input model (the policy that sampled the pairs) unless another is
given. Runs as one CPU process, on many GPUs/nodes via `accelerate launch -m stages.cli
train ...`, or as several CPU processes via `torchrun --nproc_per_node N -m stages.cli train ...`.

Crash safety: progress lives in `<output>.partial/` (reference log-probs, accelerator state
every --save-every steps); a rerun with the same inputs resumes there. The final folder
appears by rename only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .options import MANIFEST, TrainOptions

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MANIFEST", "TrainOptions", "build_examples", "collate", "encode_pair", "train"]


def __getattr__(name: str):  # the data helpers load pyarrow and the tokenizer code only when used
    if name in ("build_examples", "collate", "encode_pair"):
        from . import data

        return getattr(data, name)
    raise AttributeError(name)


def train(pairs: pa.Table, model_dir: Path, output: Path, opts: TrainOptions, lineage: dict,
          fresh: bool = False, log=print, extra_metrics: dict | None = None) -> dict | None:
    """Train and write the checkpoint; the metrics (with `extra_metrics`, what the caller counted before) on the
    main process, None on the others."""
    from .fit import fit
    from .reference import reference_logps
    from .save import metrics_of, save_checkpoint
    from .setup import setup

    s = setup(pairs, model_dir, output, opts, lineage, fresh, cycle=bool(opts.max_steps))  # --max-steps: exactly
    ref_path = reference_logps(s, opts, log)
    result = fit(s, opts, log)
    metrics = {**metrics_of(s, result), **(extra_metrics or {})}
    save_checkpoint(s, result, output, ref_path, model_dir, opts, lineage, metrics)
    return metrics if s.accelerator.is_main_process else None

"""Part 4: the checkpoint, an HF folder plus `dno-manifest.json`, swapped in whole."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..artifacts import write_json_atomic
from ..folder_swap import building_folder
from ..paths import publisher
from ..storage import public
from .fit import FitResult
from .options import MANIFEST, TrainOptions
from .setup import Setup


def metrics_of(s: Setup, result: FitResult) -> dict:
    h = result.history
    kl = {"final_kl": h[-1]["kl"]} if h and "kl" in h[-1] else {}  # --loss kto's reference point
    return {
        "pairs": s.pairs_in, "pairs_used": len(s.examples), "dropped_too_long": s.dropped_too_long,
        # above 1: --max-steps cycled the pairs; tokens: response tokens of both sides over every step
        "passes": round(len(s.examples) / max(1, len({ex["pair_id"] for ex in s.examples})), 2), "tokens": s.tokens,
        "truncated_responses": sum(ex.get("truncated_sides", 0) for ex in s.examples),  # trained without EOS
        "steps": result.steps, "train_seconds": round(result.seconds, 2),
        "processes": s.accelerator.num_processes,
        "final_loss": h[-1]["loss"] if h else None,
        "mean_loss": sum(x["loss"] for x in h) / len(h) if h else None,
        "final_reward_accuracy": h[-1]["reward_accuracy"] if h else None,
        **kl,
    }


def save_checkpoint(s: Setup, result: FitResult, output: Path, ref_path: Path | None, model_dir: Path,
                    opts: TrainOptions, lineage: dict, metrics: dict, objective: str = "contrastive") -> None:
    """Write the checkpoint on the main process and remove the unfinished-work folder.

    An existing `output` is replaced only when it is a checkpoint of the same stage (lineage's
    "stage": train or sft), checked again under the output's lock right before the swap.

    ref_path: the reference log-probs of a contrastive run (None: an objective without a
    reference, e.g. supervised fine-tuning; the manifest's reference_model is then null)."""
    if s.accelerator.is_main_process:
        with building_folder(output, publish=publisher(lineage["stage"])) as tmp:
            model = result.model
            if opts.lora_r:  # merge the adapters: the checkpoint is a plain model like any other
                model = model.merge_and_unload()
            if opts.gradient_checkpointing:
                model.config.use_cache = True  # turned off for training only
            model.save_pretrained(tmp, safe_serialization=True, state_dict=result.state_dict)
            s.tokenizer.save_pretrained(tmp)
            if ref_path is not None:
                shutil.copy(ref_path, tmp / "ref_logps.parquet")
            with open(tmp / "train_log.jsonl", "w") as f:
                f.writelines(json.dumps(h) + "\n" for h in result.history)
            options = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
            reference = None if ref_path is None else str(opts.reference or model_dir)
            manifest = {"lineage": lineage, "objective": objective, "reference_model": reference, "metrics": metrics,
                        "options": options}
            write_json_atomic(public(manifest), tmp / MANIFEST)  # a staging path as its URL (dno_data.storage)
        shutil.rmtree(s.partial, ignore_errors=True)
    s.accelerator.wait_for_everyone()

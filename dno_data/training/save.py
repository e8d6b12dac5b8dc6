"""Part 4: the checkpoint, the model alone, swapped in whole; its training records beside it.

    CHECKPOINT/            what from_pretrained and vLLM load: config.json, weights, tokenizer,
                           generation_config.json; README.md (the model card: the lineage summary)
                           and dno-manifest.json (lineage, options, metrics: the mark that dno wrote
                           the folder, read by the output guard, the up-to-date check and compare)
    CHECKPOINT.records/    ref_logps.parquet, train_log.jsonl (+ its own dno-manifest.json)

A LoRA run (--lora-r) writes the merged model; with --save-adapter the checkpoint is the adapter
alone (adapter_config.json + adapter_model.safetensors: peft's PeftModel.from_pretrained(base, CHECKPOINT)),
and with --merge as well the merged model, its adapter in CHECKPOINT/adapter/.

The records are published first, then the checkpoint: a checkpoint that is there (and so up to date
for a rerun) always has the records of the run that made it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..artifacts import write_json_atomic
from ..folder_swap import building_folder
from ..paths import publisher
from ..storage import public
from .card import model_card
from .fit import FitResult
from .options import ADAPTER_DIR, CARD, MANIFEST, TrainOptions, records_of
from .setup import Setup

RECORDS_STAGE = "train-records"  # the stage its manifest names (dno_data.paths: its own kind of output)


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


def check_finite_weights(result: FitResult, output: Path) -> None:
    """Refuse to write a checkpoint whose weights hold NaN or infinity (a diverged run, a NaN in the data):
    one error line, nothing written; the unfinished-work folder stays for a rerun with other settings."""
    import torch

    from ..errors import DnoError

    tensors = result.state_dict if result.state_dict is not None else result.model.state_dict()
    bad = [name for name, t in tensors.items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise DnoError(f"{output}: training produced non-finite weights (NaN or inf) in {len(bad)} of {len(tensors)} "
                       f"tensors (e.g. {bad[0]}); nothing was written: lower --learning-rate, check the pairs' "
                       "targets and win-rates, and rerun with --force")


def save_checkpoint(s: Setup, result: FitResult, output: Path, ref_path: Path | None, model_dir: Path,
                    opts: TrainOptions, lineage: dict, metrics: dict, objective: str = "contrastive") -> None:
    """Write the records and the checkpoint on the main process and remove the unfinished-work folder.

    An existing `output` is replaced only when it is a checkpoint of the same stage (lineage's
    "stage": train or sft), its records folder only when it holds the records of one; both checked
    again under the output's lock right before each swap.

    ref_path: the reference log-probs of a contrastive run (None: an objective without a
    reference, e.g. supervised fine-tuning; the manifest's reference_model is then null)."""
    if s.accelerator.is_main_process:
        from ..lineage import lineage_fingerprint

        check_finite_weights(result, output)  # before anything is written
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
        reference = None if ref_path is None else str(opts.reference or model_dir)
        manifest = public({"lineage": lineage, "objective": objective, "reference_model": reference,
                           "metrics": metrics, "options": options})  # a staging path as its URL (dno_data.storage)
        with building_folder(records_of(output), publish=publisher(RECORDS_STAGE)) as tmp:
            if ref_path is not None:
                shutil.copy(ref_path, tmp / ref_path.name)
            with open(tmp / "train_log.jsonl", "w") as f:
                f.writelines(json.dumps(h) + "\n" for h in result.history)
            write_json_atomic({"lineage": {"stage": RECORDS_STAGE, "checkpoint": output.name,
                                           "made_by": lineage["stage"],
                                           "fingerprint": lineage_fingerprint(lineage)}}, tmp / MANIFEST)
        with building_folder(output, publish=publisher(lineage["stage"])) as tmp:
            _save_model(s, result, opts, tmp)
            write_json_atomic(manifest, tmp / MANIFEST)
            (tmp / CARD).write_text(model_card(manifest))
        shutil.rmtree(s.partial, ignore_errors=True)
    s.accelerator.wait_for_everyone()


def _save_model(s: Setup, result: FitResult, opts: TrainOptions, folder: Path) -> None:
    """The model files: the full model, the merged LoRA model, or the adapter (and with --merge both)."""
    model = result.model
    if opts.gradient_checkpointing:
        model.config.use_cache = True  # turned off for training only
    if opts.lora_r and opts.save_adapter:
        adapter = folder / ADAPTER_DIR if opts.merge else folder
        model.save_pretrained(adapter, safe_serialization=True)  # a PeftModel: adapter_config.json + its weights
        (adapter / CARD).unlink(missing_ok=True)  # peft's blank card template; the checkpoint's own card is written after
        if not opts.merge:
            s.tokenizer.save_pretrained(folder)
            _save_generation_config(model, folder)
            return
    if opts.lora_r:  # merge the adapters: the checkpoint is a plain model like any other
        model = model.merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True, state_dict=result.state_dict)
    s.tokenizer.save_pretrained(folder)


def _save_generation_config(model, folder: Path) -> None:
    """An adapter checkpoint keeps its base model's generation settings (save_pretrained of a full model
    writes them itself)."""
    config = getattr(model, "generation_config", None)
    if config is not None:
        config.save_pretrained(folder)

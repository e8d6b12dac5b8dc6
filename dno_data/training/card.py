"""The model card of a checkpoint: README.md, the lineage summary a reader of the folder (or of its
Hub page) sees first; rendered from the manifest, which stays the record (dno-manifest.json).

Deterministic for the same manifest, and left out of the folder's content hash with the manifest
(dno_data.lineage.content_sha256), so two runs that trained the same weights have the same identity.
"""

from __future__ import annotations

from pathlib import PurePath

from ..console import fmt_value


def _short(entry: dict) -> str:
    digest = entry.get("content_sha256") or entry.get("sha256") or ""
    return f"`{entry.get('path')}` (sha256 {digest[:12]})" if digest else f"`{entry.get('path')}`"


def model_card(manifest: dict) -> str:
    """README.md of a checkpoint from its manifest (lineage, objective, reference, metrics, options)."""
    lineage, metrics, opts = manifest.get("lineage") or {}, manifest.get("metrics") or {}, manifest.get("options") or {}
    stage = lineage.get("stage", "train")
    config = lineage.get("config") or {}
    inputs = {str(i.get("path")): i for i in lineage.get("inputs") or []}
    model = str(config.get("model", ""))
    data = str(config.get("pairs") or config.get("data") or "")
    adapter = bool(opts.get("lora_r")) and bool(opts.get("save_adapter"))
    merged = adapter and bool(opts.get("merge"))
    library = "peft" if adapter and not merged else "transformers"
    rows = [("base model", _short(inputs[model]) if model in inputs else f"`{model}`"),
            ("data", _short(inputs[data]) if data in inputs else f"`{data}`")]
    if manifest.get("objective") == "sft":
        rows.append(("loss", "token negative log-likelihood (supervised fine-tuning)"))
    else:
        rows.append(("loss", f"{opts.get('loss')}, beta {fmt_value(opts.get('beta'))}"))
        rows.append(("reference", f"`{manifest.get('reference_model')}`"))
    rows.append(("steps", f"{metrics.get('steps')} (batch {opts.get('batch_size')} x accumulation "
                          f"{opts.get('grad_accum')} x {metrics.get('processes', 1)} processes), learning rate "
                          f"{fmt_value(opts.get('learning_rate'))}, {opts.get('lr_scheduler')} schedule"))
    if opts.get("lora_r"):
        rows.append(("LoRA", f"rank {opts.get('lora_r')}, alpha {fmt_value(opts.get('lora_alpha'))}, "
                             f"{'adapter' + (' + merged model' if merged else ' alone') if adapter else 'merged'}"))
    figures = [(k.replace("_", " "), fmt_value(metrics[k])) for k in
               ("pairs_used", "final_loss", "mean_loss", "final_reward_accuracy", "final_kl") if metrics.get(k) is not None]
    name = PurePath(str(config.get("output") or "checkpoint")).name
    if adapter and not merged:
        load = ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                f"base = AutoModelForCausalLM.from_pretrained(\"{model}\")\n"
                f"model = PeftModel.from_pretrained(base, \"{name}\")")
    else:
        load = f"from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained(\"{name}\")"
    lines = ["---", f"library_name: {library}", "tags:", "- dno", f"- dno-{stage}", "---", "",
             f"# {name}", "",
             f"Written by `dno {stage}` (dno {lineage.get('package_version', '')}, Direct Nash Optimization).", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    if figures:
        lines += ["Figures of the run:", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in figures], ""]
    lines += ["```python", load, "```", "",
              "The full lineage (every input's hash, every setting) is in `dno-manifest.json`; the run's training "
              f"records (reference log-probs, the per-step log) are in `{name}.records/` beside this folder, not in it.",
              ""]
    return "\n".join(lines)

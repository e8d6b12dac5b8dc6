"""Part 1 of a training run: the accelerator, the model and tokenizer, the encoded pairs, the plan."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..parts import claim_work_dir
from ..reproducibility import configure_torch
from ..errors import DnoError
from ..losses import LOSSES
from ..models import check_model_dir, load_causal_lm, load_tokenizer
from .data import attach_kl_sequences, build_examples, count_steps, takes_logits_to_keep, training_order
from .options import TrainOptions


@dataclass
class Setup:
    accelerator: Any
    tokenizer: Any
    model: Any
    examples: list[dict]  # the pairs that training uses, in training order; ex["index"] = position
    pairs_in: int
    dropped_too_long: int
    total_steps: int
    partial: Path  # <output>.partial/: reference log-probs and resumable state
    keep_logits: bool = False  # the model takes `logits_to_keep` (see data.batch_logps)

    @property
    def tokens(self) -> int:
        """Response tokens the loss covers over the whole run (both sides of a pair; a cycled example each
        time it comes): what the run trained on, comparable across arms whatever their examples' lengths."""
        return sum(sum(ex[k]) for ex in self.examples for k in ("mask", "chosen_mask", "rejected_mask") if k in ex)


def setup(pairs: pa.Table, model_dir: Path, output: Path, opts: TrainOptions, lineage: dict,
          fresh: bool = False, *, encode=build_examples, cycle: bool = False) -> Setup:
    """`encode(table, tokenizer, max_length) -> (examples, dropped)` turns the rows into examples
    (pairs by default; supervised fine-tuning passes data.build_sft_examples). With `cycle`, the
    run is --max-steps long (else --epochs, which may exceed 1) and passes over the examples again,
    each pass in a new seeded order, instead of stopping after one epoch."""
    import torch
    from accelerate.utils import set_seed

    configure_torch(opts.threads)
    check_model_dir(model_dir)
    if opts.reference is not None:
        check_model_dir(opts.reference, flag="--reference")
    if len(pairs) == 0:
        raise DnoError("the pairs file has no rows: nothing to train on (loosen the rule of `dno pairs`)")
    accelerator = make_accelerator(opts, output.with_name(output.name + ".logs"))
    set_seed(opts.seed)
    partial = output.with_name(output.name + ".partial")
    if accelerator.is_main_process:
        if fresh:  # --force discards unfinished work of any kind, also of the same settings
            shutil.rmtree(partial, ignore_errors=True)
        claim_work_dir(partial, lineage, fresh)
    accelerator.wait_for_everyone()

    tokenizer = load_tokenizer(model_dir, padding_side="right")
    model, keep_logits = load_policy(model_dir, opts)
    examples, too_long = encode(pairs, tokenizer, opts.max_length)
    if not examples:
        raise DnoError(f"every {'pair' if encode is build_examples else 'example'}'s prompt is longer than --max-length "
                       f"{opts.max_length}; raise it")
    group = opts.batch_size * opts.grad_accum * accelerator.num_processes
    if cycle:
        total_steps = opts.max_steps or max(1, math.ceil(len(examples) / group * opts.epochs))
        order, used, p = [], total_steps * group, 0
        while len(order) < used:  # one seeded order per pass over the examples
            order += training_order(examples, opts.seed + p, opts.group_by_length, group)
            p += 1
        examples = [dict(examples[k]) for k in order[:used]]
    else:
        total_steps, used = count_steps(len(examples), opts.batch_size, opts.grad_accum, accelerator.num_processes,
                                        opts.epochs, opts.max_steps)
        order = training_order(examples, opts.seed, opts.group_by_length, group)[:used]
        examples = [examples[k] for k in order]
    for i, ex in enumerate(examples):
        ex["index"] = i
    if LOSSES[opts.loss].needs_kl:  # KTO: each micro-batch's mismatched sequences, fixed with the order
        attach_kl_sequences(examples, opts.batch_size, opts.max_length)
    return Setup(accelerator, tokenizer, model, examples, len(pairs), too_long, total_steps, partial, keep_logits)


def make_accelerator(opts: TrainOptions, logs: Path | None = None):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if opts.mixed_precision not in ("no", "bf16", "fp16"):
        raise DnoError("--mixed-precision must be no, bf16 or fp16")
    # A process may train more than once (tests, notebooks): each run states its own precision.
    # The distributed state (process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    try:
        trackers = [t.strip() for t in opts.report_to.split(",") if t.strip()]
        _check_trackers(trackers)
        log_with = [CUSTOM_TRACKERS[t](logs) if t in CUSTOM_TRACKERS else t for t in trackers]
        return Accelerator(gradient_accumulation_steps=opts.grad_accum, cpu=not torch.cuda.is_available(),
                           mixed_precision=opts.mixed_precision, log_with=log_with or None,
                           project_dir=str(logs) if trackers and logs else None)
    except ValueError as e:
        raise DnoError(f"--mixed-precision {opts.mixed_precision}: {str(e).splitlines()[0]}") from None


# --report-to NAME for a tracker of your own: NAME -> factory(logs_dir) -> accelerate GeneralTracker
CUSTOM_TRACKERS: dict = {}


def _check_trackers(names: list[str]) -> None:
    """--report-to names accelerate trackers that exist and are installed (accelerate itself drops a
    missing one with a debug message, so a typo or a missing package would log nothing, silently)."""
    if not names:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        if name in CUSTOM_TRACKERS:
            continue
        cls = LOGGER_TYPE_TO_CLASS.get(name)
        if cls is None:
            raise DnoError(f"--report-to {name}: not an accelerate tracker; choose among "
                           f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
        import accelerate.utils as au

        available = getattr(au, f"is_{name}_available", None)
        if available is not None and not available():
            raise DnoError(f"--report-to {name}: the package is not installed; pip install {name}")


def load_policy(model_dir: Path, opts: TrainOptions):
    """The model to train, dropout off unless kept, with checkpointing and LoRA as asked; and
    whether it takes `logits_to_keep`."""
    model = load_causal_lm(model_dir, opts.dtype)
    keep_logits = takes_logits_to_keep(model)
    if not opts.keep_dropout:
        disable_dropout(model)
    if opts.gradient_checkpointing:
        model.config.use_cache = False
        if hasattr(model, "activation_checkpointing_enable"):  # the name in transformers >= 5.24
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if opts.lora_r:
        model = add_lora(model, opts)
    return model, keep_logits


def disable_dropout(model) -> None:
    """Dropout off everywhere in the model (as TRL does by default for DPO).

    With dropout on, the policy's log-probs are noisy while the reference pass (no grad, eval
    mode) is not, so even policy = reference gives losses other than ln 2. Both the
    `nn.Dropout` modules and the dropout rates that attention modules read at forward time
    (e.g. Llama's `attention_dropout`) are set to 0; the saved config keeps its values.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and not isinstance(value, bool) and name.endswith(("dropout", "dropout_p")):
                setattr(module, name, 0.0)


def add_lora(model, opts: TrainOptions):
    """Wrap the model with trainable LoRA adapters (peft); the base weights stay frozen.

    The adapter-free model is the base: with `model.disable_adapter()` it serves as the
    reference without a second copy in memory. The checkpoint merges the adapters in.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise DnoError("--lora-r needs the peft package: pip install 'dno-data[lora]' (or pip install peft)") from None
    targets = opts.lora_target_modules
    target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=0.0, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise DnoError(f"--lora-target-modules {targets}: {str(e).splitlines()[0]}") from None

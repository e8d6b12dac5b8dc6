"""Part 2: the reference log-probs, once, in a no-grad pass (no second model stays in memory).

The reference is the input model (pi_t, the policy that sampled the pairs) unless
`--reference DIR` names another (e.g. a fixed pi_1 for offline DPO); that one is loaded for
this pass only and freed before training. Only the pairs that training will use are scored,
in the training order and batch size, so with policy = reference the first loss is ln 2 up
to float rounding. Each process scores its share of the batches; the results are gathered.
The values are kept in `<output>.partial/ref_logps.parquet`, so a resumed run skips this pass.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


from ..atomic import atomic_path
from ..console import Progress
from ..errors import DnoError
from ..models import load_causal_lm, load_tokenizer
from .data import batch_logps, collate, kl_logps, takes_logits_to_keep
from .options import TrainOptions
from .setup import Setup

REF_FILE = "ref_logps.parquet"
REF_COLUMNS = ("ref_chosen", "ref_rejected")
KL_COLUMNS = ("ref_kl_chosen", "ref_kl_rejected")  # KTO: the reference on the KL sequences


def reference_logps(s: Setup, opts: TrainOptions, log=print) -> Path:
    """Attach ref_chosen / ref_rejected (and, for KTO, ref_kl_chosen / ref_kl_rejected: the reference's
    log-probs of the example's KL sequences) to every example; return the file that holds them."""
    path = s.partial / REF_FILE
    columns = REF_COLUMNS + (KL_COLUMNS if s.examples and "kl_chosen_ids" in s.examples[0] else ())
    if path.exists():
        try:
            ref = pq.read_table(path).to_pydict()
        except (pa.ArrowException, OSError) as e:
            raise DnoError(f"{path}: the saved reference log-probs cannot be read ({str(e).splitlines()[0][:200]}); "
                           "rerun with --force to discard the unfinished work") from None
        got = dict(zip(ref["pair_id"], zip(*(ref[c] for c in columns)))) if set(columns) <= set(ref) else {}
        if all(ex["pair_id"] in got for ex in s.examples):
            for ex in s.examples:
                ex.update(zip(columns, got[ex["pair_id"]]))
            log(f"reference log-probs: resumed from {path}")
            return path
    t0 = time.time()
    values = _score(s, opts)
    for ex in s.examples:
        ex.update(zip(columns, values[ex["index"]]))
    if s.accelerator.is_main_process:
        table = pa.table({"pair_id": [ex["pair_id"] for ex in s.examples],
                          **{c: [ex[c] for ex in s.examples] for c in columns}})
        with atomic_path(path, durable=False) as tmp:  # a cache: a power cut costs a recomputation
            pq.write_table(table, tmp)
    s.accelerator.wait_for_everyone()
    log(f"reference log-probs: {len(s.examples)} pairs in {time.time() - t0:.1f}s")
    return path


def _score(s: Setup, opts: TrainOptions) -> dict[int, tuple[float, ...]]:
    import torch
    from accelerate.utils import gather_object

    acc = s.accelerator
    if opts.reference is None:
        model = s.model
    else:
        _check_same_vocabulary(s.tokenizer, opts.reference)
        model = load_causal_lm(opts.reference, opts.dtype)
    was_training = model.training
    model.eval()
    model.to(acc.device)
    pad_id = s.tokenizer.pad_token_id
    batches = [s.examples[i:i + opts.batch_size] for i in range(0, len(s.examples), opts.batch_size)]
    mine = []
    keep = s.keep_logits if model is s.model else takes_logits_to_keep(model)
    # with LoRA adapters the reference is the adapter-free base model (no second copy)
    base = model.disable_adapter() if opts.lora_r and model is s.model else contextlib.nullcontext()
    with torch.no_grad(), base, acc.autocast():
        mine_batches = batches[acc.process_index::acc.num_processes]
        # the main process's share (all of it on one process)
        progress = Progress("reference", sum(map(len, mine_batches)), "pairs", enabled=acc.is_main_process)
        for batch in mine_batches:
            b = {k: v.to(acc.device) for k, v in collate(batch, pad_id).items()}
            values = list(batch_logps(model, b, keep))
            if "kl_input_ids" in b:
                values += kl_logps(model, b, keep).chunk(2)  # the chosen rows' KL sequences, then the rejected's
            mine += list(zip(b["index"].tolist(), *(v.float().tolist() for v in values)))
            progress.add(len(batch))
        progress.close()
    if model is not s.model:
        del model
    else:
        model.train(was_training)
    return {i: tuple(values) for i, *values in gather_object(mine)}


def _check_same_vocabulary(tokenizer, reference: Path) -> None:
    other = load_tokenizer(reference, padding_side="right")
    if other.get_vocab() != tokenizer.get_vocab():
        raise DnoError(f"{reference}: the reference model has another tokenizer than --model; "
                       "log-probs over different token ids cannot be compared")

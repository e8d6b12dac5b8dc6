"""From a pairs table to padded batches: tokenization, the seeded order, collation."""

from __future__ import annotations

import math
import random

import pyarrow as pa

from ..models import render_prompt


def encode_pair(tokenizer, prompt_text: str, response: str, truncated: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response (+ EOS) and a mask that is 1 exactly on response tokens.

    Prompt and response are tokenized separately and concatenated, so the boundary is exact
    by construction (tokenizing the joined text can merge tokens across it). A response that
    stopped at the length limit (`truncated`) gets no EOS: the model did not end it there,
    so training must not teach it to stop there.
    """
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not truncated:
        response_ids = response_ids + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def _float_or_nan(x) -> float:
    return float("nan") if x is None else float(x)


def build_examples(pairs: pa.Table, tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Encoded examples, and how many pairs were dropped because the prompt alone is too long."""
    examples, too_long = [], 0
    for row in pairs.to_pylist():
        prompt = row["prompt_text"] or render_prompt(tokenizer, row["prompt"])
        ex = {"pair_id": row["pair_id"], "target": float(row["target"]),
              "chosen_winrate": _float_or_nan(row.get("chosen_winrate")),
              "rejected_winrate": _float_or_nan(row.get("rejected_winrate"))}
        ex["truncated_sides"] = sum(bool(row.get(f"{side}_truncated")) for side in ("chosen", "rejected"))
        for side in ("chosen", "rejected"):
            answer = row[side][0]["content"]  # one assistant message
            ids, mask = encode_pair(tokenizer, prompt, answer, bool(row.get(f"{side}_truncated")))
            if sum(1 for m in mask if m == 0) >= max_length:
                break
            ex[f"{side}_ids"], ex[f"{side}_mask"] = ids[:max_length], mask[:max_length]
        else:
            examples.append(ex)
            continue
        too_long += 1
    return examples, too_long


def build_sft_examples(rows: pa.Table, tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Encoded single sequences (prompt + response, loss on the response only) from rows with
    example_id, messages, prompt_text, response, truncated; and how many were dropped because the
    prompt alone is too long. A truncated response gets no EOS (see encode_pair)."""
    examples, too_long = [], 0
    for row in rows.to_pylist():
        prompt = row["prompt_text"] or render_prompt(tokenizer, row["messages"])
        ids, mask = encode_pair(tokenizer, prompt, row["response"], bool(row.get("truncated")))
        if sum(1 for m in mask if m == 0) >= max_length:
            too_long += 1
            continue
        examples.append({"example_id": row["example_id"], "ids": ids[:max_length], "mask": mask[:max_length],
                         "truncated_sides": int(bool(row.get("truncated")))})
    return examples, too_long


def collate_sft(batch: list[dict], pad_id: int) -> dict:
    """Single sequences in one right-padded batch; loss_mask is 1 on response tokens only."""
    import torch

    width = max(len(ex["ids"]) for ex in batch)
    pad = [width - len(ex["ids"]) for ex in batch]
    return {"input_ids": torch.tensor([ex["ids"] + [pad_id] * k for ex, k in zip(batch, pad)], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(ex["ids"]) + [0] * k for ex, k in zip(batch, pad)],
                                           dtype=torch.long),
            "loss_mask": torch.tensor([ex["mask"] + [0] * k for ex, k in zip(batch, pad)], dtype=torch.long),
            "index": torch.tensor([ex["index"] for ex in batch])}


def example_length(ex: dict) -> int:
    if "ids" in ex:  # a single sequence (supervised fine-tuning)
        return len(ex["ids"])
    return max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))


def content_key(ex: dict) -> tuple:
    """What an example trains on (token ids, masks, target, win-rates), for a canonical order.

    Two examples with the same key train the same way, so an order of keys is an order of
    training data, whatever ids (sample ids name the policy's folder) the rows carry.
    """
    def num(name: str) -> float:
        x = float(ex.get(name, math.nan))
        return -math.inf if math.isnan(x) else x  # NaN never compares: a missing value sorts first

    if "ids" in ex:  # a supervised example (build_sft_examples): one sequence
        return (ex["ids"], ex["mask"], ex.get("truncated_sides", 0))
    return (ex["chosen_ids"], ex["rejected_ids"], ex.get("chosen_mask", []), ex.get("rejected_mask", []),
            num("target"), num("chosen_winrate"), num("rejected_winrate"), ex.get("truncated_sides", 0))


def training_order(examples: list[dict], seed: int, group_by_length: bool = False, group: int = 1) -> list[int]:
    """A seeded permutation of the examples' positions, independent of the order of the rows.

    The permutation is applied to the examples sorted by content (content_key), not to the rows
    as the pairs file holds them: the file's order follows sample ids, which hash the policy's
    folder (its manifest, its write time), so two runs of one seed wrote the same pairs in
    different orders and trained on different sequences of batches.

    With `group_by_length`, the permutation is cut into mega-batches of 50 groups of `group`
    examples (a group = one optimizer step's pairs over all processes), each sorted by length,
    longest first, so a batch holds similar lengths (less padding) while the order stays random
    at the scale of mega-batches (the scheme of transformers' LengthGroupedSampler).
    """
    import torch

    canonical = sorted(range(len(examples)), key=lambda k: content_key(examples[k]))
    g = torch.Generator().manual_seed(seed)
    order = [canonical[i] for i in torch.randperm(len(examples), generator=g).tolist()]
    if not group_by_length:
        return order
    size = 50 * max(1, group)
    megas = [sorted(order[i:i + size], key=lambda k: -example_length(examples[k])) for i in range(0, len(order), size)]
    # keep the mega-batch's groups in a seeded order, not longest-first across the whole run
    rng = random.Random(seed)
    out = []
    for mega in megas:
        groups = [mega[i:i + group] for i in range(0, len(mega), group)]
        rng.shuffle(groups)
        out += [k for grp in groups for k in grp]
    return out


def count_steps(n_examples: int, batch_size: int, grad_accum: int, num_processes: int, epochs: float,
                max_steps: int | None) -> tuple[int, int]:
    """Optimizer steps of the run, and how many examples (in training order) those steps use."""
    per_step = batch_size * grad_accum * num_processes
    total = max(1, math.floor(math.ceil(n_examples / per_step) * epochs))
    if max_steps:
        total = min(total, max_steps)
    return total, min(n_examples, total * per_step)


def attach_kl_sequences(examples: list[dict], batch_size: int, max_length: int) -> None:
    """KTO's mismatched (prompt, answer) sequences, built as TRL's KTOTrainer builds them, on each example.

    The examples are in training order; each block of `batch_size` is one micro-batch. Its n pairs are
    2n unpaired examples, [chosen_1..chosen_n, rejected_1..rejected_n] with prompts [x_1..x_n, x_1..x_n]
    (TRL's `unpair_preference_dataset`), and the KL sequence of example k is its prompt with the answer
    of example k - 1, cyclically (TRL's `add_kl_completion_ids`: completions rotated by one within the
    batch). The sequences are fixed here, with the order, so the reference pass and training score
    the same ones, however a process's batches are dealt.
    """
    def split(ex: dict, side: str) -> tuple[list[int], list[int]]:
        ids, mask = ex[f"{side}_ids"], ex[f"{side}_mask"]
        start = mask.index(1)  # the prompt alone is shorter than max_length: an answer token is kept
        return ids[:start], ids[start:]

    for first in range(0, len(examples), batch_size):
        block = examples[first:first + batch_size]
        n = len(block)
        prompts = [split(ex, "chosen")[0] for ex in block]
        answers = [split(ex, side)[1] for side in ("chosen", "rejected") for ex in block]
        for i, ex in enumerate(block):
            for side, k in (("chosen", i), ("rejected", n + i)):
                answer = answers[(k - 1) % (2 * n)]
                ex[f"kl_{side}_ids"] = (prompts[i] + answer)[:max_length]
                ex[f"kl_{side}_mask"] = ([0] * len(prompts[i]) + [1] * len(answer))[:max_length]


def _padded(seqs: list[list[int]], masks: list[list[int]], pad_id: int) -> tuple:
    """Right-padded input_ids, attention_mask and loss_mask."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.long)
    return ids, attn, loss_mask


def collate(batch: list[dict], pad_id: int) -> dict:
    """Chosen rows then rejected rows in one right-padded batch (one forward pass for both); with
    KTO's KL sequences (attach_kl_sequences), those as a second batch, `kl_*`, in the same order."""
    import torch

    sides = ("chosen", "rejected")
    ids, attn, loss_mask = _padded([ex[f"{s}_ids"] for s in sides for ex in batch],
                                   [ex[f"{s}_mask"] for s in sides for ex in batch], pad_id)
    out = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask,
           "index": torch.tensor([ex["index"] for ex in batch]),
           "target": torch.tensor([ex["target"] for ex in batch], dtype=torch.float32),
           "chosen_winrate": torch.tensor([ex.get("chosen_winrate", math.nan) for ex in batch], dtype=torch.float32),
           "rejected_winrate": torch.tensor([ex.get("rejected_winrate", math.nan) for ex in batch],
                                            dtype=torch.float32)}
    # each answer's number of scored tokens (sequence_logps sums from position 1 on): IPO's per-token means
    out["chosen_tokens"], out["rejected_tokens"] = loss_mask[:, 1:].sum(dim=1).split(len(batch))
    if "ref_chosen" in batch[0]:
        out["ref_chosen"] = torch.tensor([ex["ref_chosen"] for ex in batch], dtype=torch.float32)
        out["ref_rejected"] = torch.tensor([ex["ref_rejected"] for ex in batch], dtype=torch.float32)
    if "kl_chosen_ids" in batch[0]:
        out["kl_input_ids"], out["kl_attention_mask"], out["kl_loss_mask"] = _padded(
            [ex[f"kl_{s}_ids"] for s in sides for ex in batch], [ex[f"kl_{s}_mask"] for s in sides for ex in batch],
            pad_id)
    if "ref_kl_chosen" in batch[0]:
        out["ref_kl"] = torch.tensor([ex[f"ref_kl_{s}"] for s in sides for ex in batch], dtype=torch.float32)
    return out


def kl_logps(model, batch: dict, keep_logits: bool = False):
    """Log-probs of the answers of a batch's KTO KL sequences (collate's `kl_*`), chosen rows' first."""
    return row_logps(model, {"input_ids": batch["kl_input_ids"], "attention_mask": batch["kl_attention_mask"],
                             "loss_mask": batch["kl_loss_mask"]}, keep_logits)


def batch_logps(model, batch: dict, keep_logits: bool = False):
    """Sequence log-probs of the chosen and of the rejected rows, from one forward pass."""
    logps = row_logps(model, batch, keep_logits)
    n = logps.shape[0] // 2
    return logps[:n], logps[n:]


def row_logps(model, batch: dict, keep_logits: bool = False):
    """Each row's log-prob of its response tokens (where loss_mask is 1), from one forward pass.

    keep_logits: the model takes transformers' `logits_to_keep`; then the vocabulary
    projection runs only from the position before the earliest response token on (the
    prompt positions predict nothing that is scored), which saves time and memory.
    """
    from ..losses import sequence_logps

    ids, mask = batch["input_ids"], batch["loss_mask"]
    start = 0
    if keep_logits:
        first = mask.float().argmax(dim=1)  # each row's first response position
        start = max(0, int(first.min().item()) - 1)
    kwargs = {"logits_to_keep": ids.shape[1] - start} if start else {}
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], **kwargs).logits
    return sequence_logps(logits, ids[:, start:], mask[:, start:])


def takes_logits_to_keep(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(type(model).forward).parameters

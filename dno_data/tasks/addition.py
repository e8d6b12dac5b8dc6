"""Toy demo task for DNO: multi-digit addition solved by a tiny character-level LM.

Everything here is built from scratch and offline (no model hub):

* ``build_tokenizer()``   a character-level ``PreTrainedTokenizerFast`` with a chat template
                          whose generation prompt is ``"="``, so ``"347+589"`` -> ``"347+589="``.
* ``make_problems()``     deterministic addition problems with a fixed train / held-out split
                          decided by the canonical form ``min(a,b)+max(a,b)``, so ``a+b`` and
                          its twin ``b+a`` always fall in the same split.
* ``build_model()``       a tiny seeded ``LlamaForCausalLM``.
* ``train_initial_policy()`` a deliberately *short* SFT so the starting policy is weak
                          (greedy held-out accuracy ~15-40 %) but its samples are sometimes
                          correct, which is exactly what DNO needs to improve on.
* ``teacher()``           the exact answer (plays the role of the strong "teacher" model).
* ``score()``             a 1..6 judge score: 6 only for an exact answer, wrong answers get
                          partial credit for correct digits but never more than 4.

The prompt is the bare problem ("347+589"); the response is the bare answer ("936").
Operands always have exactly ``digits`` digits, so all prompts of a run have the same length.
"""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

import torch

CHARS = "0123456789+="
PAD, EOS, BOS = "<pad>", "</s>", "<s>"

# The user message is the problem, the generation prompt is "=", an assistant turn is the
# answer followed by EOS. No BOS and no spaces: every character is exactly one token, so
# tokenizing prompt + response splits exactly at the character boundary.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}={{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}={% endif %}"
)


# --------------------------------------------------------------------------- tokenizer
def build_tokenizer():
    """Character-level fast tokenizer (WordLevel over single characters)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, BOS: 2}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    # Split every single character into its own pre-token ("isolated" keeps them all).
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    # WordLevel would decode with spaces between tokens ("9 3 6"); Fuse joins them back ("936").
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=PAD,  # no <unk>: the demo never sees characters outside CHARS
        padding_side="left",  # decoder-only generation wants left padding
        model_max_length=64,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# --------------------------------------------------------------------------- problems
def canonical(a: int, b: int) -> str:
    """The problem up to the order of its operands: ``canonical(85, 47) == canonical(47, 85) == "47+85"``."""
    return f"{min(a, b)}+{max(a, b)}"


def is_heldout(a: int, b: int) -> bool:
    """Fixed ~10 % of all (a, b) pairs form the held-out split, independent of any seed.

    Decided by the canonical form, so a problem and its reversed twin (``b+a``, the same sum)
    are always in the same split: a held-out score never rewards recalling a trained twin.
    """
    return zlib.crc32(canonical(a, b).encode()) % 10 == 0


def make_problems(n: int, seed: int, digits: int = 2, split: str = "train") -> list[dict]:
    """``n`` distinct problems ``{"prompt": "347+589", "reference": "936"}`` from ``split``.

    Deterministic in (n, seed, digits, split). ``split`` is "train" or "heldout"; the two
    splits are disjoint by construction, also up to the order of the operands (see
    ``is_heldout``), so a held-out set never leaks into training whatever seeds are used. Different train subsets (e.g. one per DNO
    iteration) are obtained by drawing one list and slicing it.
    """
    assert split in ("train", "heldout")
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    # about 90 % (train) / 10 % (held-out) of the (hi - lo + 1)^2 problems exist in a split (counted when few)
    if digits <= 2:
        capacity = sum(is_heldout(a, b) == (split == "heldout") for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    else:
        capacity = (hi - lo + 1) ** 2 * (0.9 if split == "train" else 0.1)
    if n > 0.8 * capacity:  # rejection sampling would crawl (or never end) near capacity
        raise ValueError(f"{n} problems requested but the {digits}-digit {split} split has ~{capacity:.0f}")
    rng = random.Random(f"{seed}-{digits}-{split}")
    seen: set[tuple[int, int]] = set()
    out: list[dict] = []
    while len(out) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if (a, b) in seen or is_heldout(a, b) != (split == "heldout"):
            continue
        seen.add((a, b))
        out.append({"prompt": f"{a}+{b}", "reference": str(a + b)})
    return out


# --------------------------------------------------------------------------- teacher & judge
def teacher(messages: list[dict]) -> str:
    """Exact answer to the last user message ("a+b")."""
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    a, b = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*=?\s*", content).groups()
    return str(int(a) + int(b))


def careless_teacher(messages: list[dict]) -> str:
    """A teacher that is not always right: on about half of the problems whose units carry (a fixed
    half, by a hash of the problem) it forgets that carry, as people do ("47+85" -> "122"), so about
    one answer in five is wrong. The judge (oracle:addition) still checks the true sum: the role of a
    strong teacher whose answers a judge does not always prefer (the paper's policy > teacher pairs).

    >>> careless_teacher([{"role": "user", "content": "47+85"}]), careless_teacher([{"role": "user", "content": "12+34"}])
    ('122', '46')
    """
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    a, b = (int(x) for x in re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*=?\s*", content).groups())
    carries = (a % 10) + (b % 10) >= 10
    if carries and zlib.crc32(f"careless {a}+{b}".encode()) % 2 == 0:
        return str(a + b - 10)
    return str(a + b)


def score(response: str, reference: str) -> float:
    """Judge score on the 1..6 scale.

    6 for an exact answer (after stripping whitespace). Otherwise 1 + 3 * (fraction of
    right-aligned digit positions that match), capped at 4, so a wrong answer never reaches
    5 or 6 and the "positive must score >= 5" rule means "positive must be correct".
    """
    response, reference = response.strip(), reference.strip()
    if response == reference:
        return 6.0
    if not response:
        return 1.0
    width = max(len(response), len(reference))
    hits = sum(r == g for r, g in zip(response[::-1], reference[::-1]))
    return min(4.0, 1.0 + 3.0 * hits / width)


def oracle(messages, response: str, reference: str | None = None) -> dict:
    """`oracle:addition`: the graded check of the answer against the reference sum."""
    if reference is None:
        raise ValueError("oracle:addition needs the reference sum")
    s = score(response, reference)
    return {"score": s, "correct": s >= 6.0}


# --------------------------------------------------------------------------- model
def build_model(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A tiny, seeded Llama (about 0.13 M parameters at the defaults; 4 heads of 16 dims)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


# --------------------------------------------------------------------------- batching helpers
def encode_sft(tokenizer, problems: list[dict]):
    """Right-padded ``input_ids``, ``attention_mask`` and a ``loss_mask`` that is 1 exactly on
    the answer tokens + EOS, tokenized like `dno train` does (dno_data.training.encode_pair).

    Right padding keeps position ids = 0..n for real tokens, the same positions
    ``generate`` uses for a left-padded prompt, so log-probs match what was sampled.
    """
    from ..models import render_prompt
    from ..training import encode_pair

    rows, masks = zip(*(encode_pair(tokenizer, render_prompt(tokenizer, [{"role": "user", "content": p["prompt"]}]),
                                    p["reference"]) for p in problems))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return input_ids, attention, loss_mask


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, do_sample: bool, num_return_sequences: int = 1,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 6, batch_size: int = 512):
    """Batched ``model.generate`` with left padding. Returns ``len(prompts) * n`` strings,
    grouped by prompt (prompt 0's n samples first)."""
    model.eval()
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    outs: list[str] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)
        outs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in outs]


def heldout_accuracy(model, tokenizer, problems: list[dict], max_new_tokens: int = 6) -> float:
    """Greedy exact-match accuracy."""
    preds = generate(model, tokenizer, [p["prompt"] for p in problems], do_sample=False,
                     max_new_tokens=max_new_tokens)
    return sum(p == q["reference"] for p, q in zip(preds, problems)) / len(problems)


# --------------------------------------------------------------------------- SFT
def train_initial_policy(out_dir, *, steps: int = 1500, seed: int = 0, digits: int = 2, batch_size: int = 64,
                         lr: float = 3e-3, warmup: int = 50, hidden: int = 64, layers: int = 2, heads: int = 4,
                         n_train: int = 20000, stop_at_accuracy: float | None = 0.2, check_every: int = 25,
                         log_every: int = 0):
    """Short supervised fine-tuning from scratch, then ``save_pretrained`` model + tokenizer.

    Loss only on answer tokens + EOS. The point of the demo is a weak initial policy that DNO
    then improves, so training is cut short. Addition is learned in a sharp jump whose
    position varies a lot with the seed (2 digits, defaults: exact-match accuracy goes
    ~5 % -> ~60 % within ~200 steps, and the jump starts anywhere between step ~150 and
    ~500), so a fixed step count gives anything from 2 % to 80 %. Therefore, by default, training stops as soon as greedy exact-match
    accuracy on a small *validation* set (drawn from the train split, never the held-out
    split) reaches ``stop_at_accuracy``; ``steps`` is the upper bound. Pass
    ``stop_at_accuracy=None`` for a plain fixed-length run. Returns ``(model, tokenizer)``.
    """
    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = build_model(tok, hidden=hidden, layers=layers, heads=heads, seed=seed)
    n_train = min(n_train, int(0.7 * 0.9 * (9 * 10 ** (digits - 1)) ** 2) - 200)  # small splits (2 digits)
    data = make_problems(n_train + 200, seed=10_000 + seed, digits=digits, split="train")
    data, val = data[:n_train], data[n_train:]
    ids, attn, mask = encode_sft(tok, data)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    from ..console import Progress

    # at most `steps`: training stops at the validation accuracy, so no total (no ETA)
    progress = Progress("initial policy", None if stop_at_accuracy is not None else steps, "steps")
    for step in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        logits = model(input_ids=ids[idx], attention_mask=attn[idx]).logits[:, :-1]
        tgt, m = ids[idx][:, 1:], mask[idx][:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                                reduction="none").view_as(m)
        loss = (nll * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  sft step {step + 1}: loss {loss.item():.3f}", flush=True)
        if stop_at_accuracy is not None and (step + 1) % check_every == 0:
            acc = heldout_accuracy(model, tok, val, max_new_tokens=digits + 2)
            model.train()
            progress.note(f"validation accuracy {acc:.0%}")
            if acc >= stop_at_accuracy:
                progress.add(1)
                break
        progress.add(1)
    progress.close()
    model.eval()
    model.sft_steps = step + 1  # informative only (not saved)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ..models import quiet_libraries

    quiet_libraries()  # no "Writing model shards" bar in the demo's output
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok

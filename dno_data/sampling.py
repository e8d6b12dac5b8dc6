"""K policy samples (and an optional teacher answer) per prompt, written in resumable parts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from .parts import Parts
from .errors import DnoError
from .repetition import repetition_ratios
from .generation import Generator, SamplingParams, prompt_seed
from .ids import stable_hash
from .models import PROBE_RESPONSE, check_template_prefix, render_prompt
from .teachers import Teacher


def select_prompts(prompts: pa.Table, path: Path, partition: int | None, split: str | None) -> list[dict]:
    rows = prompts.to_pylist()
    if split:
        rows = [r for r in rows if r["split"] == split]
    if partition is not None:
        rows = [r for r in rows if r["partition"] == partition]
    if not rows:
        what = ", ".join(f"{k} {v}" for k, v in (("partition", partition), ("split", split)) if v is not None)
        raise DnoError(f"{path}: no prompts{' for ' + what if what else ''}; check --partition / --split "
                       f"(the file has {len(prompts)} prompts)")
    return rows


def sample_rows(
    prompts: list[dict],
    parts: Parts,
    *,
    generator: Generator | None,  # a generation backend, or None for teacher-only runs
    params: SamplingParams,
    generator_name: str,
    generator_id: str,
    seed: int,
    batch_size: int,
    teacher: Teacher | None,
) -> Counter:
    """Generate batch by batch; each finished batch is one part (a rerun skips it).

    A prompt's samples are seeded from (seed, prompt_id) alone, so they are the same whatever
    the batch, shard or resumed run they are made in. Every row's prompt + response passes the
    template check (check_template_prefix) before its part is written: a response that breaks it
    (one that starts with a blank line or two spaces, which a BPE joins to the header's newline)
    is left out and counted; the stage fails only when every response of a batch breaks it,
    which is the template's fault, not a response's. Each row carries its response's repetition
    ratio (dno_data/repetition.py), the n-gram check of `dno pairs`, measured here once.
    """
    counts: Counter = Counter()
    batches, todo = parts.split(prompts, batch_size)
    counts["batches_resumed"] = len(batches) - len(todo)
    tok = generator.tokenizer if generator is not None else None
    where = str(generator.model_dir if generator is not None else generator_name)
    if tok is not None and todo:  # fail fast, before any generation: a probe response
        first = batches[todo[0]][0]
        check_template_prefix(tok, render_prompt(tok, first["messages"]), [PROBE_RESPONSE], first["prompt_id"], where)
    for b in tqdm(todo, desc="sample", unit="batch", disable=None):
        batch = batches[b]
        texts = [render_prompt(tok, p["messages"]) for p in batch] if tok is not None else [None] * len(batch)
        rows = []
        outs = [[] for _ in batch]
        if generator is not None:
            seeds = [prompt_seed(seed, p["prompt_id"]) for p in batch]
            outs = generator.generate(texts, params, seeds, messages=[p["messages"] for p in batch])
        answers = teacher.respond_many(batch) if teacher is not None else [None] * len(batch)
        fits = _fits_template(tok, batch, texts, outs, answers, where)
        for p, text, completions, answer, ok in zip(batch, texts, outs, answers, fits):
            for k, c in enumerate(completions):
                if not ok[k]:
                    counts[DROPPED] += 1
                    continue
                rows.append(_row(p, text, c.text, "policy", generator_name, generator_id, k, seed, params,
                                 c.num_tokens, c.finish_reason))
                counts[f"finish_{c.finish_reason}"] += 1
            if answer is not None and not ok[-1]:
                counts[DROPPED] += 1
            elif answer is not None:
                rows.append(_row(p, text, answer, "teacher", teacher.spec, teacher.teacher_id, 0, None, None,
                                 None, "teacher"))
        for row, ratio in zip(rows, repetition_ratios(r["response"] for r in rows)):  # once, for every `dno pairs`
            row["repetition"] = ratio
        parts.write(b, rows)
    return counts


DROPPED = "dropped: response breaks the template prefix"


def _fits_template(tok, batch, texts, outs, answers, where) -> list[list[bool]]:
    """Per prompt, whether each response (its samples, then the teacher's answer) passes the
    template check. Raises the check's error when no response of the batch passes."""
    responses = [[c.text for c in comps] + ([a] if a is not None else []) for comps, a in zip(outs, answers)]
    if tok is None:
        return [[True] * len(r) for r in responses]
    fits, error = [], None
    for p, text, rs in zip(batch, texts, responses):
        try:
            check_template_prefix(tok, text, rs, p["prompt_id"], where)
            fits.append([True] * len(rs))
            continue
        except DnoError as e:
            error = e
        ok = []
        for r in rs:  # one by one: which response breaks it
            try:
                check_template_prefix(tok, text, [r], p["prompt_id"], where)
                ok.append(True)
            except DnoError:
                ok.append(False)
        fits.append(ok)
    if error is not None and not any(any(ok) for ok in fits):
        raise error
    return fits


def _row(p, prompt_text, response, source, generator, generator_id, index, seed, params, num_tokens, finish):
    return {
        "sample_id": stable_hash("sample", p["prompt_id"], generator_id, seed, index),
        "prompt_id": p["prompt_id"],
        "messages": p["messages"],
        "prompt_text": prompt_text,
        "reference": p.get("reference"),
        "response": response,
        "source": source,
        "generator": generator,
        "generator_id": generator_id,
        "sample_index": index,
        "seed": seed,
        "temperature": params.temperature if params else None,
        "top_p": params.top_p if params else None,
        "num_tokens": num_tokens,
        "finish_reason": finish,
    }

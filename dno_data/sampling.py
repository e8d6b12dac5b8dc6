"""K policy samples (and an optional teacher answer) per prompt, written in resumable parts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

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
        probe_template(tok, batches[todo[0]][0], where)
    from .console import Progress
    from .engines import resumed_items

    progress = Progress("sample", len(prompts), "prompts", done=resumed_items(batches, todo))
    for b in todo:
        batch = batches[b]
        answers = teacher.respond_many(batch) if teacher is not None else None
        rows, batch_counts = sample_batch(batch, generator=generator, params=params, generator_name=generator_name,
                                          generator_id=generator_id, seed=seed, teacher=teacher_tag(teacher),
                                          answers=answers)
        counts.update(batch_counts)
        parts.write(b, rows)
        progress.add(len(batch))
    progress.close()
    return counts


def probe_template(tok, first: dict, where: str) -> None:
    """The template check on a probe response, before any generation."""
    check_template_prefix(tok, render_prompt(tok, first["messages"]), [PROBE_RESPONSE], first["prompt_id"], where)


def teacher_tag(teacher: Teacher | None) -> tuple[str, str] | None:
    """(spec, teacher_id): what a teacher row records."""
    return None if teacher is None else (teacher.spec, teacher.teacher_id)


def sample_batch(batch: list[dict], *, generator: Generator | None, params: SamplingParams, generator_name: str,
                 generator_id: str, seed: int, teacher: tuple[str, str] | None,
                 answers: list[str] | None) -> tuple[list[dict], Counter]:
    """The rows of one batch of prompts: `params.n` samples each from `generator` (seeded per
    prompt) and the teacher's answer (`answers`, one per prompt, made by `teacher`: its spec and
    id), each checked against the template; and the batch's counts. The one function every
    engine runs over a batch (the local loop above, a Ray worker: dno_data/engines)."""
    counts: Counter = Counter()
    tok = generator.tokenizer if generator is not None else None
    where = str(generator.model_dir if generator is not None else generator_name)
    texts = [render_prompt(tok, p["messages"]) for p in batch] if tok is not None else [None] * len(batch)
    rows = []
    outs = [[] for _ in batch]
    if generator is not None:
        seeds = [prompt_seed(seed, p["prompt_id"]) for p in batch]
        outs = generator.generate(texts, params, seeds, messages=[p["messages"] for p in batch])
    answers = answers if answers is not None else [None] * len(batch)
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
            rows.append(_row(p, text, answer, "teacher", teacher[0], teacher[1], 0, None, None, None, "teacher"))
    for row, ratio in zip(rows, repetition_ratios(r["response"] for r in rows)):  # once, for every `dno pairs`
        row["repetition"] = ratio
    return rows, counts


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


# --engine ray: the same sample_batch on Ray actors (dno_data/engines/ray.py)


@dataclass(frozen=True)
class SampleWorker:
    """What a Ray worker builds once: the policy's generator (and a teacher that runs code here:
    `reference`, `python:`; an `openai:` teacher answers in the driver, with its call cache)."""

    backend: str | None
    model: str | None
    options: dict = field(default_factory=dict)  # make_generator's keyword options
    teacher: str | None = None

    def __call__(self) -> tuple[Generator | None, Teacher | None]:
        from .generation import make_generator

        generator = (make_generator(self.backend, worker_local(self.model), **self.options)
                     if self.model is not None else None)
        return generator, Teacher(self.teacher) if self.teacher else None


def worker_local(model: str) -> str:
    """A worker's copy of the model: an s3:// (or other object-storage) URL is fetched into this node's
    staging mirror, once per version; a path is used as it is (the same on every node: a shared disk)."""
    from .storage import is_url

    if not is_url(model):
        return model
    from .staging import fetch

    return str(fetch(model))


def work_batch(state, payload, **kw) -> tuple[list[dict], Counter]:
    """A Ray worker's batch: payload is (batch, the teacher's answers made in the driver, or None)."""
    generator, teacher = state
    batch, answers = payload
    if answers is None and teacher is not None:
        answers = teacher.respond_many(batch)
    return sample_batch(batch, generator=generator, answers=answers, **kw)


def sample_rows_ray(prompts: list[dict], parts: Parts, *, worker: SampleWorker, engine, params: SamplingParams,
                    generator_name: str, generator_id: str, seed: int, batch_size: int, teacher: Teacher | None,
                    tokenizer=None, where: str = "") -> Counter:
    """sample_rows with the batches on Ray actors; this process checks and writes each part."""
    from functools import partial

    from .console import Progress
    from .engines import check_unit_rows, resumed_items
    from .engines.ray import run_units

    counts: Counter = Counter()
    batches, todo = parts.split(prompts, batch_size)
    counts["batches_resumed"] = len(batches) - len(todo)
    if tokenizer is not None and todo:
        probe_template(tokenizer, batches[todo[0]][0], where)
    progress = Progress("sample", len(prompts), "prompts", done=resumed_items(batches, todo))
    in_driver = teacher if teacher is not None and worker.teacher is None else None

    def before_submit(unit, payload):
        batch, _ = payload
        return batch, in_driver.respond_many(batch) if in_driver is not None else None

    def on_result(unit, result):
        rows, batch_counts = result
        check_unit_rows(rows, {p["prompt_id"] for p in batches[unit]}, unit, unique="sample_id")
        counts.update(batch_counts)
        parts.write(unit, rows)
        progress.add(len(batches[unit]))

    work = partial(work_batch, params=params, generator_name=generator_name, generator_id=generator_id, seed=seed,
                   teacher=teacher_tag(teacher))
    counts.update(run_units([(b, (batches[b], None)) for b in todo], setup=worker, work=work, on_result=on_result,
                            what="dno sample", before_submit=before_submit, on_progress=progress.tick,
                            **engine.resources()))
    progress.close()
    return counts


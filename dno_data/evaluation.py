"""Held-out evaluation: the policy's answer against the teacher's, judged by the oracle."""

from __future__ import annotations

from dataclasses import dataclass, field

from .parts import Parts
from .generation import SamplingParams
from .ids import prompt_id, stable_hash
from .judges import Candidate, Group, Judge
from .judges.run import judge_all
from .models import render_prompt
from .teachers import Teacher


def evaluate_rows(prompts: list[dict], parts: Parts, *, generator, params: SamplingParams, teacher: Teacher | None,
                  judge: Judge, model_name: str, seed: int, batch_size: int, runner_factory=None) -> None:
    """The policy's answers to every turn of every prompt, judged; one part per batch of prompts.

    A multi-turn prompt (follow_ups) is answered turn by turn: the policy's answer to turn t is appended
    to the conversation, then the next user turn, and the policy answers that; each turn is a row,
    judged in its conversation (with the turn's reference, when the prompt gives one).
    """
    from .console import Progress
    from .engines import resumed_items

    batches, todo = parts.split(prompts, batch_size)
    progress = Progress("eval", len(prompts), "prompts", done=resumed_items(batches, todo))
    for b in todo:
        answered = answer_batch(batches[b], b, generator=generator, params=params, seed=seed)
        parts.write(b, judge_batch_answers(batches[b], answered, teacher=teacher, judge=judge, model_name=model_name,
                                           runner_factory=runner_factory))
        progress.add(len(batches[b]))
    progress.close()


def answer_batch(batch: list[dict], b: int, *, generator, params: SamplingParams, seed: int) -> list[list[tuple]]:
    """The policy's answers to batch `b`, turn by turn: per turn, (index in the batch, conversation,
    answer) for the prompts that ask it. Judging never feeds the next turn, so every turn is answered
    first and judged after (judge_batch_answers): the work a generation engine does alone."""
    conversations = [list(p["messages"]) for p in batch]
    answers: list[str | None] = [None] * len(batch)
    turns = []
    for turn in range(1, 1 + max(turns_of(p) for p in batch)):
        asked = [i for i, p in enumerate(batch) if turns_of(p) >= turn]
        for i in asked if turn > 1 else ():  # the policy's own answer, then the next user turn
            conversations[i] = conversations[i] + [{"role": "assistant", "content": answers[i]},
                                                   {"role": "user", "content": batch[i]["follow_ups"][turn - 2]}]
        turn_seed = stable_hash("eval", seed, b) if turn == 1 else stable_hash("eval", seed, b, turn)
        texts = [render_prompt(generator.tokenizer, conversations[i]) for i in asked]
        outs = generator.generate(texts, params, int(turn_seed, 16) % (2**31))
        for i, c in zip(asked, outs):
            answers[i] = c[0].text
        turns.append([(i, conversations[i], answers[i]) for i in asked])
    return turns


def judge_batch_answers(batch: list[dict], answered: list[list[tuple]], *, teacher: Teacher | None, judge: Judge,
                        model_name: str, runner_factory=None) -> list[dict]:
    """The eval rows of a batch whose answers answer_batch made: per turn, the teacher's answers and
    the judge's verdicts."""
    rows = []
    for turn, items in enumerate(answered, start=1):
        rows += _evaluate_turn([batch[i] for i, _, _ in items], [conv for _, conv, _ in items],
                               [answer for _, _, answer in items], turn, teacher=teacher, judge=judge,
                               model_name=model_name, runner_factory=runner_factory)
    return rows


def turns_of(prompt: dict) -> int:
    """How many user turns a prompt asks: 1 + its follow-ups."""
    return 1 + len(prompt.get("follow_ups") or [])


def _turn_reference(prompt: dict, turn: int) -> str | None:
    if turn == 1:
        return prompt.get("reference")
    refs = prompt.get("follow_up_references") or []
    return refs[turn - 2] if turn - 2 < len(refs) else None


def _evaluate_turn(batch: list[dict], conversations: list[list[dict]], policy_answers: list[str], turn: int, *,
                   teacher, judge: Judge, model_name: str, runner_factory) -> list[dict]:
    """The eval rows of one turn of `batch`, whose policy answers are given: ask the teacher, judge."""
    # Turn 1 is keyed and judged as the prompt itself; a later turn as the conversation it is.
    items = [{"prompt_id": p["prompt_id"] if turn == 1 else prompt_id(conv), "messages": conv,
              "reference": _turn_reference(p, turn)} for p, conv in zip(batch, conversations)]
    if teacher is None:
        golds = [None] * len(items)
    elif turn > 1 and teacher.spec == "reference":  # a follow-up without a reference answer has no teacher answer
        golds = [it["reference"] for it in items]
    else:
        golds = teacher.respond_many(items)
    answers = list(zip(policy_answers, golds))
    # Without a teacher answer (no teacher, or an empty reference), only the policy's answer is judged.
    groups = [Group(it["prompt_id"], it["messages"], it["reference"],
                    [Candidate("policy", policy, "policy")]
                    + ([Candidate("teacher", gold, "teacher")] if is_answer(gold) else []))
              for it, (policy, gold) in zip(items, answers)]
    # A pairwise judge has nothing to compare a lone answer with.
    alone = {g.prompt_id for g in groups if judge.kind == "pair" and len(g.candidates) < 2}
    by_prompt: dict[str, list[dict]] = {}
    for row in judge_all(judge, [g for g in groups if g.prompt_id not in alone], runner_factory):
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    return [{"prompt_id": p["prompt_id"], "turn": turn, "messages": it["messages"], "model": model_name,
             "response": policy, "teacher_response": gold, "judge_id": judge.judge_id,
             **(NOT_COMPARED if it["prompt_id"] in alone else outcome(by_prompt.get(it["prompt_id"], [])))}
            for p, it, (policy, gold) in zip(batch, items, answers)]


NOT_COMPARED = {"policy_score": None, "teacher_score": None, "win": None, "correct": None, "justification": None,
                "status": "ok", "error": None}


def is_answer(text: str | None) -> bool:
    """An empty reference is not a teacher answer.

    >>> is_answer("42"), is_answer("  "), is_answer(None)
    (True, False, False)
    """
    return text is not None and text.strip() != ""


def eval_summary(rows: list[dict], with_teacher: bool, *, seed: int = 0) -> dict:
    """The counts `dno eval` prints: win-rate over the rows that had a teacher answer, accuracy
    ("n/a" when the judge does not say what is correct) and mean score, with bootstrap 95 % intervals;
    for multi-turn prompts the same per turn after the figures over all turns.

    >>> s = eval_summary([{"status": "ok", "win": 1.0, "teacher_response": "a", "correct": None,
    ...                    "policy_score": 5.0}], True)
    >>> s["accuracy"], s["win-rate vs teacher [95 % CI]"]
    ('n/a (the judge does not say what is correct)', '100.0 % [100.0, 100.0]')
    """
    turns = sorted({r.get("turn") or 1 for r in rows})
    ok = [r for r in rows if r["status"] == "ok"]
    counts: dict = {"prompts": len(rows), "judged ok": len(ok)}
    if len(turns) > 1:
        counts = {"prompts": len({r["prompt_id"] for r in rows}), "answers (every turn)": len(rows),
                  "judged ok": len(ok)}
    counts |= _figures(ok, with_teacher, seed)
    for t in turns if len(turns) > 1 else ():
        for key, value in _figures([r for r in ok if (r.get("turn") or 1) == t], with_teacher, seed).items():
            if "empty" not in key and not value.startswith("n/a"):  # the counts of empty answers: once, above
                counts[f"turn {t}: {key}"] = value
    return counts


def _figures(ok: list[dict], with_teacher: bool, seed: int) -> dict:
    from .stats import bootstrap_ci

    counts: dict = {}
    if with_teacher:
        compared = [r for r in ok if r["win"] is not None and is_answer(r["teacher_response"])]
        empty = sum(1 for r in ok if not is_answer(r["teacher_response"]))
        if empty:
            counts["empty teacher answers (left out of the win-rate)"] = empty
        iv = bootstrap_ci([r["win"] for r in compared], seed=seed)
        counts["win-rate vs teacher [95 % CI]"] = iv.fmt(100, 1, " %") if iv else "n/a (no teacher answer to compare)"
    graded = [float(r["correct"]) for r in ok if r["correct"] is not None]
    iv = bootstrap_ci(graded, seed=seed)
    counts["accuracy"] = iv.fmt(100, 1, " %") if iv else "n/a (the judge does not say what is correct)"
    iv = bootstrap_ci([r["policy_score"] for r in ok], seed=seed)
    if iv is not None:
        counts["mean score [95 % CI]"] = iv.fmt(1, 2)
    return counts


def outcome(judgments: list[dict]) -> dict:
    """Policy-vs-teacher result from the judge rows of a [policy, teacher] group.

    >>> outcome([{"sample_id_a": "policy", "status": "ok", "score": 6.0, "correct": True},
    ...          {"sample_id_a": "teacher", "status": "ok", "score": 6.0, "correct": True}])["win"]
    0.5
    """
    failed = [j for j in judgments if j["status"] != "ok"]
    if failed:
        return {"policy_score": None, "teacher_score": None, "win": None, "correct": None, "justification": None,
                "status": failed[0]["status"], "error": failed[0]["error"]}
    if not judgments:
        return {"policy_score": None, "teacher_score": None, "win": None, "correct": None, "justification": None,
                "status": "error", "error": "the judge returned no rows"}
    scores = {j["sample_id_a"]: j for j in judgments if j.get("sample_id_b") is None}
    pairs = [j for j in judgments if j.get("sample_id_b") is not None]
    ps = scores.get("policy", {}).get("score")
    ts = scores.get("teacher", {}).get("score")
    if pairs:
        probs = [j["prob_a_wins"] if j["sample_id_a"] == "policy" else 1 - j["prob_a_wins"] for j in pairs]
        win = sum(probs) / len(probs)
    elif "teacher" not in scores:  # evaluated without a teacher
        win = None
    else:
        win = 1.0 if ps > ts else 0.5 if ps == ts else 0.0
    return {"policy_score": ps, "teacher_score": ts, "win": win, "correct": scores.get("policy", {}).get("correct"),
            "justification": scores.get("policy", {}).get("justification"), "status": "ok", "error": None}


# --engine ray: answer_batch (and, for a judge and teacher that run here, the judging) on Ray actors


@dataclass(frozen=True)
class EvalWorker:
    """What a Ray worker builds once: the policy's generator, and the judge and teacher when they run
    code or a model (an openai: judge or teacher is asked by the driver, with its call cache)."""

    model: str
    options: dict = field(default_factory=dict)  # make_generator's keyword options
    judge: object = None  # JudgeSettings, when the worker judges
    teacher: str | None = None

    def __call__(self):
        from .generation import make_generator

        from .sampling import worker_local

        generator = make_generator("hf", worker_local(self.model), **self.options)
        judge = self.judge.make() if self.judge is not None else None
        return generator, judge, Teacher(self.teacher) if self.teacher else None


def eval_work(state, payload, *, params: SamplingParams, seed: int, model_name: str):
    generator, judge, teacher = state
    b, batch = payload
    answered = answer_batch(batch, b, generator=generator, params=params, seed=seed)
    if judge is None:  # judged by the driver
        return answered
    return judge_batch_answers(batch, answered, teacher=teacher, judge=judge, model_name=model_name)


def evaluate_rows_ray(prompts: list[dict], parts: Parts, *, worker: EvalWorker, engine, params: SamplingParams,
                      teacher: Teacher | None, judge: Judge, model_name: str, seed: int, batch_size: int,
                      runner_factory=None) -> dict:
    """evaluate_rows with the batches on Ray actors; this process checks and writes each part."""
    from functools import partial

    from .console import Progress
    from .engines import check_unit_rows, resumed_items
    from .engines.ray import run_units

    batches, todo = parts.split(prompts, batch_size)
    progress = Progress("eval", len(prompts), "prompts", done=resumed_items(batches, todo))

    def on_result(unit: int, result) -> None:
        batch = batches[unit]
        rows = result if worker.judge is not None else judge_batch_answers(
            batch, result, teacher=teacher, judge=judge, model_name=model_name, runner_factory=runner_factory)
        check_unit_rows(rows, {p["prompt_id"] for p in batch}, unit)
        parts.write(unit, rows)
        progress.add(len(batch))

    counts = run_units([(b, (b, batches[b])) for b in todo], setup=worker,
                       work=partial(eval_work, params=params, seed=seed, model_name=model_name), on_result=on_result,
                       what="dno eval", on_progress=progress.tick, **engine.resources())
    progress.close()
    return counts

"""Held-out evaluation: the policy's answer against the teacher's, judged by the oracle."""

from __future__ import annotations

from tqdm.auto import tqdm

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
    batches, todo = parts.split(prompts, batch_size)
    for b in tqdm(todo, desc="eval", unit="batch", disable=None):
        batch = batches[b]
        conversations = [list(p["messages"]) for p in batch]
        answers: list[str | None] = [None] * len(batch)
        rows = []
        for turn in range(1, 1 + max(turns_of(p) for p in batch)):
            asked = [i for i, p in enumerate(batch) if turns_of(p) >= turn]
            for i in asked if turn > 1 else ():  # the policy's own answer, then the next user turn
                conversations[i] = conversations[i] + [{"role": "assistant", "content": answers[i]},
                                                       {"role": "user", "content": batch[i]["follow_ups"][turn - 2]}]
            turn_seed = stable_hash("eval", seed, b) if turn == 1 else stable_hash("eval", seed, b, turn)
            out = _evaluate_turn([batch[i] for i in asked], [conversations[i] for i in asked], turn,
                                 generator=generator, params=params, teacher=teacher, judge=judge,
                                 model_name=model_name, seed=int(turn_seed, 16) % (2**31),
                                 runner_factory=runner_factory)
            for i, row in zip(asked, out):
                answers[i] = row["response"]
            rows += out
        parts.write(b, rows)


def turns_of(prompt: dict) -> int:
    """How many user turns a prompt asks: 1 + its follow-ups."""
    return 1 + len(prompt.get("follow_ups") or [])


def _turn_reference(prompt: dict, turn: int) -> str | None:
    if turn == 1:
        return prompt.get("reference")
    refs = prompt.get("follow_up_references") or []
    return refs[turn - 2] if turn - 2 < len(refs) else None


def _evaluate_turn(batch: list[dict], conversations: list[list[dict]], turn: int, *, generator, params, teacher,
                   judge: Judge, model_name: str, seed: int, runner_factory) -> list[dict]:
    """The eval rows of one turn of `batch`: generate, ask the teacher, judge."""
    # Turn 1 is keyed and judged as the prompt itself; a later turn as the conversation it is.
    items = [{"prompt_id": p["prompt_id"] if turn == 1 else prompt_id(conv), "messages": conv,
              "reference": _turn_reference(p, turn)} for p, conv in zip(batch, conversations)]
    texts = [render_prompt(generator.tokenizer, conv) for conv in conversations]
    outs = generator.generate(texts, params, seed)
    if teacher is None:
        golds = [None] * len(items)
    elif turn > 1 and teacher.spec == "reference":  # a follow-up without a reference answer has no teacher answer
        golds = [it["reference"] for it in items]
    else:
        golds = teacher.respond_many(items)
    answers = [(c[0].text, gold) for c, gold in zip(outs, golds)]
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

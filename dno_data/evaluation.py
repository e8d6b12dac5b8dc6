"""Held-out evaluation: the policy's answer against the teacher's, judged by the oracle."""

from __future__ import annotations

from tqdm.auto import tqdm

from .parts import Parts
from .generation import SamplingParams
from .ids import stable_hash
from .judges import Candidate, Group, Judge
from .judges.run import judge_all
from .models import render_prompt
from .teachers import Teacher


def evaluate_rows(prompts: list[dict], parts: Parts, *, generator, params: SamplingParams, teacher: Teacher | None,
                  judge: Judge, model_name: str, seed: int, batch_size: int, runner_factory=None) -> None:
    batches, todo = parts.split(prompts, batch_size)
    for b in tqdm(todo, desc="eval", unit="batch", disable=None):
        batch = batches[b]
        texts = [render_prompt(generator.tokenizer, p["messages"]) for p in batch]
        outs = generator.generate(texts, params, int(stable_hash("eval", seed, b), 16) % (2**31))
        golds = teacher.respond_many(batch) if teacher is not None else [None] * len(batch)
        answers = [(c[0].text, gold) for c, gold in zip(outs, golds)]
        # Without a teacher answer (no teacher, or an empty reference), only the policy's answer is judged.
        groups = [Group(p["prompt_id"], p["messages"], p.get("reference"),
                        [Candidate("policy", policy, "policy")]
                        + ([Candidate("teacher", gold, "teacher")] if is_answer(gold) else []))
                  for p, (policy, gold) in zip(batch, answers)]
        # A pairwise judge has nothing to compare a lone answer with.
        alone = {g.prompt_id for g in groups if judge.kind == "pair" and len(g.candidates) < 2}
        by_prompt: dict[str, list[dict]] = {}
        for row in judge_all(judge, [g for g in groups if g.prompt_id not in alone], runner_factory):
            by_prompt.setdefault(row["prompt_id"], []).append(row)
        parts.write(b, [{"prompt_id": p["prompt_id"], "messages": p["messages"], "model": model_name,
                         "response": policy, "teacher_response": gold, "judge_id": judge.judge_id,
                         **(NOT_COMPARED if p["prompt_id"] in alone else outcome(by_prompt.get(p["prompt_id"], [])))}
                        for p, (policy, gold) in zip(batch, answers)])


NOT_COMPARED = {"policy_score": None, "teacher_score": None, "win": None, "correct": None, "status": "ok", "error": None}


def is_answer(text: str | None) -> bool:
    """An empty reference is not a teacher answer.

    >>> is_answer("42"), is_answer("  "), is_answer(None)
    (True, False, False)
    """
    return text is not None and text.strip() != ""


def eval_summary(rows: list[dict], with_teacher: bool, *, seed: int = 0) -> dict:
    """The counts `dno eval` prints: win-rate over the rows that had a teacher answer, accuracy
    ("n/a" when the judge does not say what is correct) and mean score, with bootstrap 95 % intervals.

    >>> s = eval_summary([{"status": "ok", "win": 1.0, "teacher_response": "a", "correct": None,
    ...                    "policy_score": 5.0}], True)
    >>> s["accuracy"], s["win-rate vs teacher [95 % CI]"]
    ('n/a (the judge does not say what is correct)', '100.0 % [100.0, 100.0]')
    """
    from .stats import bootstrap_ci

    ok = [r for r in rows if r["status"] == "ok"]
    counts: dict = {"prompts": len(rows), "judged ok": len(ok)}
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
        return {"policy_score": None, "teacher_score": None, "win": None, "correct": None,
                "status": failed[0]["status"], "error": failed[0]["error"]}
    if not judgments:
        return {"policy_score": None, "teacher_score": None, "win": None, "correct": None,
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
    return {"policy_score": ps, "teacher_score": ts, "win": win,
            "correct": scores.get("policy", {}).get("correct"), "status": "ok", "error": None}

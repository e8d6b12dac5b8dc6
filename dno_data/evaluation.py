"""Held-out evaluation: the policy's answer against the teacher's, judged by the oracle."""

from __future__ import annotations

from tqdm.auto import tqdm

from .artifacts import Parts
from .generation import SamplingParams
from .ids import stable_hash
from .judges import Candidate, Group, Judge
from .models import render_prompt
from .teachers import Teacher


def evaluate_rows(prompts: list[dict], parts: Parts, *, generator, params: SamplingParams, teacher: Teacher,
                  judge: Judge, model_name: str, seed: int, batch_size: int) -> None:
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    for b in tqdm([b for b in range(len(batches)) if not parts.done(b)], desc="eval", unit="batch", disable=None):
        batch = batches[b]
        texts = [render_prompt(generator.tokenizer, p["messages"]) for p in batch]
        outs = generator.generate(texts, params, int(stable_hash("eval", seed, b), 16) % (2**31))
        rows = []
        for p, completions in zip(batch, outs):
            policy = completions[0].text
            gold = teacher.respond(p["messages"], p.get("reference"))
            group = Group(p["prompt_id"], p["messages"], p.get("reference"),
                          [Candidate("policy", policy, "policy"), Candidate("teacher", gold, "teacher")])
            rows.append({"prompt_id": p["prompt_id"], "messages": p["messages"], "model": model_name,
                         "response": policy, "teacher_response": gold, "judge_id": judge.judge_id,
                         **outcome(judge.judge(group))})
        parts.write(b, rows)


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
    if judgments and judgments[0].get("sample_id_b") is None:  # scores
        by = {j["sample_id_a"]: j for j in judgments}
        ps, ts = by["policy"]["score"], by["teacher"]["score"]
        win = 1.0 if ps > ts else 0.5 if ps == ts else 0.0
        return {"policy_score": ps, "teacher_score": ts, "win": win, "correct": by["policy"]["correct"],
                "status": "ok", "error": None}
    probs = [j["prob_a_wins"] if j["sample_id_a"] == "policy" else 1 - j["prob_a_wins"] for j in judgments]
    return {"policy_score": None, "teacher_score": None, "win": sum(probs) / len(probs), "correct": None,
            "status": "ok", "error": None}

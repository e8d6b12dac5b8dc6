"""A task where preferences should matter: 3-digit addition graded digit by digit, with no gold answer.

The demo's task (dno_data/tasks/addition.py) has an exact teacher that a tiny character-level model
copies token for token, so imitation wins. Here nothing the learner trains on is a gold answer:

* the prompts carry no reference (`dno prompts` without --reference-column) and the run has no
  teacher (`--teacher none`), so there is no `sft` arm;
* the judge, `oracle:partial-sums`, works the true sum out of the prompt itself and gives partial
  credit, 1 + 5 * (right-aligned digits that match) / (the longer length): 6 only for the exact sum;
* the initial policy is the demo's tiny Llama trained on 3-digit sums only until it gets a few
  percent of a validation set exactly right (`--sft-accuracy`, 0.03 by default), so most of its samples are
  partly right and few are wholly right.

So a prompt's best sample (the chosen side of `dno pairs --rule best-worst`) is good but flawed, and
what separates it from the rejected one is which digits are right: imitating the chosen answers
(sft-chosen, rft) also imitates their wrong digits, which a contrastive loss cancels where the two
sides share them. Whether that helps is what `just compare-partial-sums` measures (docs/results.md).

    python -m dno_data.tasks.partial_sums prompts --train 2000 --eval 500 -o RUN/source.jsonl
    python -m dno_data.tasks.partial_sums policy -o RUN/policy-0 --seed 0

>>> score("936", "347+589")
6.0
>>> round(score("836", "347+589"), 4)  # two of three digits
4.3333
>>> score("1936", "347+589"), score("", "347+589"), score("9x6", "347+589")
(4.75, 1.0, 1.0)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import addition

DIGITS = 3
SFT_ACCURACY = 0.03  # the initial policy stops training at this exact-match validation accuracy
PROBLEM = re.compile(r"\s*(\d+)\s*\+\s*(\d+)\s*=?\s*")


def make_prompts(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """``n`` distinct problems ``{"prompt": "347+589"}`` (no reference: the learner never sees the sum).

    The demo's problems (addition.make_problems) at 3 digits: deterministic in (n, seed, split), and
    the train and held-out splits are disjoint also up to the order of the operands.
    """
    return [{"prompt": p["prompt"]} for p in addition.make_problems(n, seed=seed, digits=DIGITS, split=split)]


def true_sum(problem: str) -> str:
    """The sum of a problem "a+b", worked out from the prompt itself.

    >>> true_sum("347+589")
    '936'
    """
    found = PROBLEM.fullmatch(problem)
    if found is None:
        raise ValueError(f"{problem!r} is not a problem of the form a+b")
    return str(int(found.group(1)) + int(found.group(2)))


def score(response: str, problem: str) -> float:
    """Partial credit on the 1..6 scale: 1 + 5 * (right-aligned digits equal to the true sum's) / (the longer
    of the two lengths), so 6 only for the exact sum; an empty or non-numeric answer scores 1."""
    truth, response = true_sum(problem), response.strip()
    if not response.isdigit():
        return 1.0
    width = max(len(response), len(truth))
    hits = sum(r == g for r, g in zip(response[::-1], truth[::-1]))
    return 1.0 + 5.0 * hits / width


def oracle(messages, response: str, reference: str | None = None) -> dict:
    """`oracle:partial-sums`: partial credit against the sum of the last user message (any reference is
    ignored: the judge needs none, so the prompts carry none)."""
    problem = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    s = score(response, problem)
    return {"score": s, "correct": s >= 6.0}


def train_initial_policy(out_dir, *, seed: int = 0, sft_accuracy: float = SFT_ACCURACY):
    """The weak initial policy pi_1: the demo's tiny Llama, supervised on 3-digit sums until `sft_accuracy`
    of a validation set (from the train split) is exactly right. Returns ``(model, tokenizer)``."""
    return addition.train_initial_policy(out_dir, seed=seed, digits=DIGITS, stop_at_accuracy=sft_accuracy,
                                         steps=6000)


def main(argv: list[str] | None = None) -> None:
    """`python -m dno_data.tasks.partial_sums prompts|policy ...`: the task's prompts (JSONL with a split
    column, for `dno prompts`) or its initial policy (an HF folder, for `dno compare --model`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dno_data.tasks.partial_sums", description=main.__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prompts", help="write train and held-out prompts as JSONL")
    p.add_argument("--train", type=int, default=2000, help="train prompts (all partitions together)")
    p.add_argument("--eval", type=int, default=500, help="held-out prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    m = sub.add_parser("policy", help="train the initial policy pi_1")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--sft-accuracy", type=float, default=SFT_ACCURACY,
                   help="exact-match validation accuracy at which supervised training stops")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    if a.what == "prompts":
        rows = [{**r, "split": "train"} for r in make_prompts(a.train, a.seed)]
        rows += [{**r, "split": "eval"} for r in make_prompts(a.eval, a.seed, split="heldout")]
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} prompts ({a.train} train, {a.eval} eval) -> {a.output}")
    else:
        from ..reproducibility import configure_torch

        configure_torch(a.threads)
        model, _ = train_initial_policy(a.output, seed=a.seed, sft_accuracy=a.sft_accuracy)
        print(f"initial policy after {model.sft_steps} supervised steps -> {a.output}")


if __name__ == "__main__":
    main()

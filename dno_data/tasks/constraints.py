"""A verifiable instruction-following task for a real small chat model (SmolLM2-135M-Instruct).

Each prompt asks for a short text about a topic under constraints (one by default), checked by code:
  lowercase     every letter is lowercase
  max_words N   at most N words
  include X     the word X appears
The reference column holds the constraints as JSON; `oracle:constraints` scores a response
1 + 5 * (fraction of constraints met): 6 when all are met (a positive for the paper rule),
1 when none. `just smollm2` runs the DNO loop on it. `python:dno_data.tasks.constraints:teacher`
is a teacher for it: one short templated sentence that meets every constraint, in a plain style
the policy does not share (the role GPT-4-Turbo's answers play for the paper's 7B student).

>>> spec = {"lowercase": True, "max_words": 12, "include": "river"}
>>> constraint_score("the river runs to the sea.", json.dumps(spec))
(6.0, True)
>>> round(constraint_score("The River runs to the sea.", json.dumps(spec))[0], 2)
4.33
"""

from __future__ import annotations

import json
import random
import re

TOPICS = ["the ocean", "a mountain", "autumn", "a city at night", "coffee", "a library", "the moon", "a garden",
          "winter", "a train journey", "the desert", "a thunderstorm", "a forest", "the river", "a market",
          "a lighthouse", "spring rain", "an old bridge", "a cat", "the night sky", "a small village", "the wind",
          "a bakery", "a snowy morning", "the beach", "a museum", "a bicycle ride", "sunrise", "a campfire",
          "a quiet lake"]
WORDS = ["blue", "light", "quiet", "green", "warm", "gold", "soft", "bright", "cold", "stone"]


def make_prompts(n: int, seed: int = 0, constraints: int = 1) -> list[dict]:
    """n distinct prompts {"prompt", "reference"}: a topic and `constraints` of the three constraints."""
    rng = random.Random(seed)
    out, seen, draws = [], set(), 0
    while len(out) < n:
        draws += 1
        if draws > 50 * (n + 10):  # the combinations are finite (a few hundred for one constraint)
            raise ValueError(f"cannot draw {n} distinct prompts; ask for fewer")
        topic = rng.choice(TOPICS)
        kinds = rng.sample(["lowercase", "max_words", "include"], constraints)
        spec, asks = {}, []
        if "lowercase" in kinds:
            spec["lowercase"] = True
            asks.append("Use only lowercase letters.")
        if "max_words" in kinds:
            spec["max_words"] = rng.choice([12, 15, 20])
            asks.append(f"Use at most {spec['max_words']} words.")
        if "include" in kinds:
            spec["include"] = rng.choice(WORDS)
            asks.append(f"Include the word \"{spec['include']}\".")
        text = f"Write one or two sentences about {topic}. " + " ".join(asks)
        if text in seen:
            continue
        seen.add(text)
        out.append({"prompt": text, "reference": json.dumps(spec, sort_keys=True)})
    return out


def check(response: str, spec: dict) -> list[bool]:
    results = []
    if spec.get("lowercase"):
        results.append(response.lower() == response and any(c.isalpha() for c in response))
    if "max_words" in spec:
        results.append(0 < len(response.split()) <= spec["max_words"])
    if "include" in spec:
        results.append(re.search(rf"\b{re.escape(spec['include'])}\b", response, re.I) is not None)
    return results


def constraint_score(response: str, reference: str) -> tuple[float, bool]:
    met = check(response, json.loads(reference))
    frac = sum(met) / len(met) if met else 0.0
    return 1.0 + 5.0 * frac, all(met)


def oracle(messages, response: str, reference: str | None = None) -> dict:
    """`oracle:constraints`: the share of the constraints (JSON in the reference) the response meets."""
    if reference is None:
        raise ValueError("oracle:constraints needs the constraints (JSON) in the reference column")
    score, ok = constraint_score(response, reference)
    return {"score": score, "correct": ok}


TEACHER_TEMPLATES = [
    "{topic} rests {word} and still under the open sky.",
    "we walked past {topic}, and everything felt {word} and calm.",
    "{topic} looks {word} today, quiet and simple.",
    "at dusk {topic} turns {word}, and the day slows down.",
]


def teacher(messages, reference: str | None = None) -> str:
    """A teacher answer that meets every constraint of the prompt (JSON in the reference).

    >>> spec = json.dumps({"lowercase": True, "max_words": 12, "include": "stone"})
    >>> msg = [{"role": "user", "content": "Write one or two sentences about a cat. Use only lowercase letters."}]
    >>> answer = teacher(msg, spec); answer
    'at dusk a cat turns stone, and the day slows down.'
    >>> constraint_score(answer, spec)
    (6.0, True)
    """
    if reference is None:
        raise ValueError("the constraints teacher needs the constraints (JSON) in the reference column")
    spec = json.loads(reference)
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    found = re.search(r"sentences about (.+?)\.", prompt)
    topic = found.group(1) if found else "the day"
    key = sum(prompt.encode())  # a fixed choice per prompt, the same in every process
    word = spec.get("include") or WORDS[key % len(WORDS)]
    text = TEACHER_TEMPLATES[key % len(TEACHER_TEMPLATES)].format(topic=topic, word=word)
    return text if spec.get("lowercase") else text[0].upper() + text[1:]


def main(argv: list[str] | None = None) -> None:
    """`python -m dno_data.tasks.constraints --train 192 --eval 48 -o source.jsonl`: prompts with a split column."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--train", type=int, default=192)
    ap.add_argument("--eval", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--constraints", type=int, default=1, choices=(1, 2, 3), help="constraints per prompt")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    rows = make_prompts(a.train + a.eval, a.seed, a.constraints)
    with open(a.output, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"prompt": r["prompt"], "reference": r["reference"],
                                "split": "train" if i < a.train else "eval"}) + "\n")


if __name__ == "__main__":
    main()

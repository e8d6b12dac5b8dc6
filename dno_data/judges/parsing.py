"""Pure parsers of judge answers. Each returns None (not a guess) when it cannot tell.

>>> parse_rubric('{"id1_justification": "ok", "id1_score": 5, "id2_justification": "bad", "id2_score": 1}', ["id1", "id2"])
{'id1': (5.0, 'ok'), 'id2': (1.0, 'bad')}
>>> parse_rubric("Here you go:\\n```json\\n{'id1_score': 6, 'id1_justification': 'great'}\\n```", ["id1"])
{'id1': (6.0, 'great')}
>>> parse_rubric('id1_score: 4\\nid2_score = 2', ["id1", "id2"])
{'id1': (4.0, None), 'id2': (2.0, None)}
>>> parse_rubric("I'm sorry, I can't help with that.", ["id1"]) is None
True
>>> parse_verdict("B")
'B'
>>> parse_verdict("Response A is better. [[A]]")
'A'
>>> parse_verdict("both are fine") is None
True
>>> parse_grade("Correct and clear. Rating: [[9]]")
(9.0, 'Correct and clear.')
>>> parse_grade("Rating: 7/10") is None
True
"""

from __future__ import annotations

import ast
import json
import math
import re

REFUSAL = re.compile(r"\b(I'm sorry|I am sorry|I cannot|I can't|I can not|I won't|as an AI)\b", re.I)


def _load_dict(text: str) -> dict | None:
    """A dict from JSON, a Python literal, or the outermost {...} inside other text."""
    candidates = [text.strip()]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    for c in candidates:
        for load in (json.loads, ast.literal_eval):
            try:
                value = load(c)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    return None


def as_number(value) -> float | None:
    """A finite float, or None.

    >>> as_number("4"), as_number(float("nan")), as_number("x")
    (4.0, None, None)
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def as_score(value) -> float | None:
    """A finite int or float returned by a function, or None: a string ("5") or a bool (True) is
    not a score, whatever it would convert to.

    >>> as_score(4), as_score("4"), as_score(True), as_score(float("inf"))
    (4.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return as_number(value)


def parse_rubric(text: str | None, ids: list[str]) -> dict[str, tuple[float | None, str | None]] | None:
    """{id: (score, justification)} for the ids found; None when no score at all can be read."""
    if not text:
        return None
    found: dict[str, tuple[float | None, str | None]] = {}
    data = _load_dict(text)
    if data is not None:
        lowered = {str(k).strip().lower(): v for k, v in data.items()}
        for i in ids:
            score = as_number(lowered.get(f"{i}_score"))
            just = lowered.get(f"{i}_justification")
            if score is not None:
                found[i] = (score, None if just is None else str(just))
    if not found:  # key: value lines without a dict around them
        for i in ids:
            m = re.search(rf"{re.escape(i)}_score\W{{0,3}}\s*[:=]\s*\"?(-?\d+(?:\.\d+)?)", text, re.I)
            if m:
                found[i] = (float(m.group(1)), None)
    return found or None


def parse_verdict(text: str | None) -> str | None:
    """'A' or 'B' from a pairwise answer: a bare letter, [[A]], or 'Response A'."""
    if not text:
        return None
    t = text.strip()
    m = re.fullmatch(r"[\s\"'(\[]*([AB])[\s\"'.)\]]*", t)
    if m:
        return m.group(1)
    m = re.findall(r"\[\[([AB])\]\]", t)
    if len(set(m)) == 1:
        return m[0]
    m = re.findall(r"\b(?:Response|Output|Answer)\s+([AB])\b", t)
    if len(set(m)) == 1:
        return m[0]
    return None


def verdict_probability(top_logprobs: list[dict] | None) -> float | None:
    """P(A) from the first answer token's top logprobs: softmax over the 'A' and 'B' entries.

    >>> round(verdict_probability([{"token": "A", "logprob": -0.105}, {"token": "B", "logprob": -2.303}]), 3)
    0.9
    >>> verdict_probability([{"token": "C", "logprob": -0.1}]) is None
    True
    """
    if not top_logprobs:
        return None
    mass = {"A": 0.0, "B": 0.0}
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().strip("[]\"'").upper()
        if token in mass:
            mass[token] += math.exp(float(entry["logprob"]))
    # A letter missing from the top-k has at most the mass of the last listed token and of what
    # the list leaves: bound it so, rather than call the other letter certain.
    listed = [math.exp(float(e["logprob"])) for e in top_logprobs]
    for letter, other in (("A", "B"), ("B", "A")):
        if mass[letter] == 0.0 and mass[other] > 0.0:
            mass[letter] = max(0.0, min(min(listed), 1.0 - sum(listed)))
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None


def is_refusal(text: str | None) -> bool:
    return bool(text) and bool(REFUSAL.search(text))


GRADE = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
RATING_LABEL = re.compile(r"\s*(?:rating|score|grade)\s*:?\s*$", re.I)


def parse_grade(text: str | None) -> tuple[float, str | None] | None:
    """(grade, justification) from a single-answer grade (MT-Bench's form): exactly one rating written
    `[[N]]`, and the text before it as the justification. None (never a guess) when there is no
    rating, a rating in another form, or two ratings; the scale (1..10) is the caller's check.

    >>> parse_grade("The answer misses the carry.\\nRating: [[3.5]]")
    (3.5, 'The answer misses the carry.')
    >>> parse_grade("[[8]]")
    (8.0, None)
    >>> parse_grade("I would say [[6]] or maybe [[7]]") is None
    True
    >>> parse_grade("Rating: [8]") is None
    True
    """
    if not text:
        return None
    found = list(GRADE.finditer(text))
    if len(found) != 1:
        return None
    before = RATING_LABEL.sub("", text[:found[0].start()]).strip()
    return float(found[0].group(1)), before or None

"""Stable content hashes used as keys (never row positions)."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of `parts`.

    >>> stable_hash("a", 1) == stable_hash("a", 1)
    True
    >>> stable_hash("a", 1) == stable_hash("a", 2)
    False
    """
    if all(type(p) is str or type(p) is int or p is None for p in parts):
        # Fast path for keys made of strings and numbers (row ids, hot in the judge stage):
        # each part tagged by type and length, so different tuples never give the same payload.
        payload = "".join(f"s{len(p)}:{p}" if type(p) is str else f"i{p};" if p is not None else "n;" for p in parts)
    else:
        payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def normalize_messages(messages: list[dict]) -> list[dict]:
    """NFC-normalize and strip each message; keep only role and content.

    >>> normalize_messages([{"role": " User", "content": " hi\\n", "x": 1}])
    [{'role': 'user', 'content': 'hi'}]
    """
    return [
        {
            "role": str(m["role"]).strip().lower(),
            "content": normalize_text(m["content"]),
        }
        for m in messages
    ]


def normalize_text(text: str) -> str:
    """A text as normalize_messages leaves a message's content: NFC, stripped."""
    return unicodedata.normalize("NFC", str(text)).strip()


def prompt_id(messages: list[dict], follow_ups: list[str] | None = None) -> str:
    """The prompt's key: a hash of its normalized messages, and of its follow-up turns when it has any
    (a single-turn prompt's key is the hash of its messages alone).

    >>> msgs = [{"role": "user", "content": "12+34"}]
    >>> prompt_id(msgs) == prompt_id(msgs, []) != prompt_id(msgs, ["and 5+5?"])
    True
    """
    normalized = normalize_messages(messages)
    if follow_ups:
        return stable_hash("prompt", normalized, [normalize_text(t) for t in follow_ups])
    return stable_hash("prompt", normalized)


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

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
            "content": unicodedata.normalize("NFC", str(m["content"])).strip(),
        }
        for m in messages
    ]


def prompt_id(messages: list[dict]) -> str:
    """The prompt's key: a hash of its normalized messages."""
    return stable_hash("prompt", normalize_messages(messages))


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

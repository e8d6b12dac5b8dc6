"""Import prompts from JSONL, JSON, CSV or Parquet into the `prompts` schema."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from .errors import DnoError
from .ids import normalize_messages, prompt_id, stable_hash

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def read_source(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise DnoError(f"{path}: no such file; pass a JSONL, JSON, CSV or Parquet file of prompts")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DnoError(f"{path}: unknown format {path.suffix!r}; use .jsonl, .json, .csv or .parquet")
    try:
        if fmt == "jsonl":
            df = pl.read_ndjson(path, infer_schema_length=None)
        elif fmt == "json":
            df = pl.read_json(path, infer_schema_length=None)
        elif fmt == "csv":
            df = pl.read_csv(path)
        else:
            df = pl.read_parquet(path)
    except Exception as e:  # polars raises many kinds for malformed files
        first = (str(e).strip().splitlines() or ["?"])[0]
        raise DnoError(f"{path}: cannot read it as {fmt} ({first[:200]})") from None
    if df.height == 0:
        raise DnoError(f"{path}: no prompts in the file")
    if fmt in ("jsonl", "json"):
        _check_json_messages(path, fmt)
    return df


def _check_json_messages(path: Path, fmt: str) -> None:
    """Message content as the file has it: polars gives a column one type, so a number or a list
    beside text would reach to_messages as text ("5")."""
    import json

    text = path.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if fmt == "jsonl" else json.loads(text)
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        for col, value in (row.items() if isinstance(row, dict) else ()):
            if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
                for j, m in enumerate(value):
                    if not isinstance(m["content"], str):
                        raise DnoError(f"{path} row {i + 1}, column {col!r}: message {j + 1} has content "
                                       f"{m['content']!r}; expected text")


ROLES = ("system", "user", "assistant")


def to_messages(value, system: str | None, where: str) -> list[dict]:
    """A plain-text prompt or a list of {role, content} messages, as messages."""
    if isinstance(value, str):
        msgs = [{"role": "user", "content": value}]
    elif isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        for j, m in enumerate(value):  # refused, not coerced to text ("None", "5") or dropped by a chat template
            if m["role"] not in ROLES:
                raise DnoError(f"{where}: message {j + 1} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise DnoError(f"{where}: message {j + 1} has content {m['content']!r}; expected text")
        msgs = [{"role": m["role"], "content": m["content"]} for m in value]
    else:
        raise DnoError(f"{where}: expected a string or a list of {{role, content}} messages")
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    msgs = normalize_messages(msgs)
    if not msgs or not msgs[-1]["content"] or msgs[-1]["role"] != "user":
        raise DnoError(f"{where}: the last message must be a non-empty user turn")
    return msgs


def import_prompts(
    src: Path,
    *,
    text_column: str | None = None,
    messages_column: str | None = None,
    reference_column: str | None = None,
    split_column: str | None = None,
    system: str | None = None,
    partitions: int = 1,
    eval_size: int = 0,
    seed: int = 0,
    max_prompt_chars: int | None = None,
) -> tuple[list[dict], Counter]:
    """Rows of the prompts schema and counts (read, duplicates, too long, eval, per partition).

    A prompt whose messages hold more than `max_prompt_chars` characters is dropped and counted:
    no later stage has to tokenize or allocate for it.
    """
    df = read_source(src)
    cols = df.columns
    if messages_column is None and text_column is None:
        for guess in ("messages", "prompt", "instruction", "question", "text"):
            if guess in cols:
                if guess == "messages":
                    messages_column = guess
                else:
                    text_column = guess
                break
        else:
            raise DnoError(f"{src}: no prompt column found (columns: {', '.join(cols)}); pass --text-column or --messages-column")
    col = messages_column or text_column
    for c in filter(None, (col, reference_column, split_column)):
        if c not in cols:
            raise DnoError(f"{src}: no column {c!r} (columns: {', '.join(cols)}); pass the right --*-column option")
    if partitions < 1:
        raise DnoError("--partitions must be at least 1")
    if eval_size < 0:
        raise DnoError(f"--eval-size {eval_size}: must be 0 or more")

    counts: Counter = Counter()
    rows, seen = [], set()
    refs = df[reference_column].to_list() if reference_column else [None] * df.height
    given = df[split_column].to_list() if split_column else [None] * df.height
    if split_column:
        if eval_size:
            raise DnoError("--split-column and --eval-size both choose the eval split; pass one of them")
        bad = sorted({str(v) for v in given} - {"train", "eval"})
        if bad:
            raise DnoError(f"{src}: column {split_column!r} has {', '.join(bad[:3])}; its values must be train or eval")
    split_of: dict[str, str] = {}
    for i, (value, ref, split) in enumerate(zip(df[col].to_list(), refs, given)):
        counts["read"] += 1
        msgs = to_messages(value, system, f"{src} row {i + 1}, column {col!r}")
        if max_prompt_chars is not None and sum(len(m["content"]) for m in msgs) > max_prompt_chars:
            counts["dropped_longer_than_max_prompt_chars"] += 1
            continue
        pid = prompt_id(msgs)
        if pid in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(pid)
        if split is not None:
            split_of[pid] = split
        rows.append({"prompt_id": pid, "messages": msgs, "reference": None if ref is None else str(ref),
                     "source": f"{src.name}:{i + 1}"})
    if eval_size >= len(rows):
        raise DnoError(f"--eval-size {eval_size} leaves no training prompts out of {len(rows)}; lower it")

    # Hash order, not file order, decides eval membership and partitions: stable when the
    # file is reordered or grows, and disjoint by construction.
    ranked = sorted(rows, key=lambda r: stable_hash("split", seed, r["prompt_id"]))
    held_out = ({pid for pid, s in split_of.items() if s == "eval"} if split_column
                else {r["prompt_id"] for r in ranked[:eval_size]})
    if len(held_out) >= len(rows):
        raise DnoError(f"{src}: every prompt is in the eval split; no training prompts are left")
    train = [r for r in ranked if r["prompt_id"] not in held_out]
    part_of = {r["prompt_id"]: 1 + k % partitions for k, r in enumerate(train)}
    for r in rows:
        if r["prompt_id"] in held_out:
            r["split"], r["partition"] = "eval", None
            counts["eval"] += 1
        else:
            r["split"], r["partition"] = "train", part_of[r["prompt_id"]]
            counts[f"partition {r['partition']}"] += 1
    return rows, counts

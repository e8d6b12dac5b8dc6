r"""Import prompts into the `prompts` schema: JSONL / JSON (also gzipped), CSV, Parquet, or a folder a
Hugging Face `datasets` `save_to_disk` wrote.

The prompt column is the one named, else the first found of: `messages` (OpenAI roles; ShareGPT's
human / gpt too), `conversations` (ShareGPT: `from` / `value`), `turns` (MT-Bench: a list of user
turns), `prompt`, `instruction`, `question`, `text`. Alpaca's `instruction` is joined with its `input`
as Alpaca's template does ("instruction\n\ninput" when input is not empty).

Multi-turn prompts (schemas/prompts.py): which user turns are asked, and which are context?
  --turns-column (MT-Bench's `turns`)  every turn is asked, in order, each after the model's own answer
                                      to the one before; a list in --reference-column gives each turn
                                      its reference (MT-Bench's `reference`)
  a conversation, --ask-turns last    (the default) the last user turn is asked; everything before it,
                                      assistant turns included, is context written by someone else; the
                                      assistant turn after it is the reference
  a conversation, --ask-turns all     every user turn is asked in order, the model's own answers
                                      replacing the conversation's, whose assistant turns become each
                                      turn's reference; a system message first stays as context
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from pathlib import Path

import polars as pl

from .errors import DnoError, first_line
from .paths import check_input
from .ids import normalize_messages, normalize_text, prompt_id, stable_hash

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
KINDS = "JSONL, JSON (or .jsonl.gz / .json.gz), CSV, Parquet, or a datasets save_to_disk folder"
TEXT_GUESSES = ("prompt", "instruction", "question", "text")
CONVERSATION_GUESSES = ("messages", "conversations")
TURNS_GUESSES = ("turns",)  # MT-Bench's question file
ASK_TURNS = ("last", "all")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system"}


def source_format(path: Path) -> str:
    """jsonl | json | csv | parquet | hf-dataset, with `.gz` for gzipped JSON."""
    if path.is_dir():
        return "hf-dataset"
    name = path.name.lower()
    gz = name.endswith(".gz")
    fmt = FORMATS.get(Path(name[:-3] if gz else name).suffix)
    if fmt is None or (gz and fmt not in ("jsonl", "json")):
        raise DnoError(f"{path}: unknown format {''.join(path.suffixes) or path.name!r}; pass {KINDS}")
    return fmt + (".gz" if gz else "")


def _json_text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.name.lower().endswith(".gz") else raw).decode("utf-8")


def dataset_folder_table(path: Path, kinds: str = KINDS):
    """The rows of a folder `datasets` save_to_disk wrote, as an Arrow table (a DatasetDict, or a folder it did
    not write, is one error line naming `kinds`, what the caller reads)."""
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise DnoError(f"{path}: a datasets DatasetDict with splits {', '.join(splits) or '?'}; pass one split's "
                       f"folder, e.g. {path / (splits[0] if splits else 'train')}")
    if not (path / "state.json").is_file():
        raise DnoError(f"{path}: a folder, but not one `datasets` save_to_disk wrote (no state.json); pass {kinds}")
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DnoError(f"{path}: reading a datasets folder needs the `datasets` package: pip install datasets") from None
    return load_from_disk(str(path)).with_format("arrow")[:]


def _read_dataset_folder(path: Path) -> pl.DataFrame:
    return pl.from_arrow(dataset_folder_table(path))


def read_source(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise DnoError(f"{path}: no such file; pass {KINDS} of prompts")
    check_input(path, "prompts")
    fmt = source_format(path)
    try:
        if fmt == "hf-dataset":
            df = _read_dataset_folder(path)
        elif fmt.startswith("jsonl"):
            df = pl.read_ndjson(io.StringIO(_json_text(path)) if fmt.endswith(".gz") else path,
                                infer_schema_length=None)
        elif fmt.startswith("json"):
            df = pl.read_json(io.StringIO(_json_text(path)) if fmt.endswith(".gz") else path,
                              infer_schema_length=None)
        elif fmt == "csv":
            df = pl.read_csv(path)
        else:
            df = pl.read_parquet(path)
    except DnoError:
        raise
    except Exception as e:  # polars, gzip and datasets raise many kinds for malformed files
        raise DnoError(f"{path}: cannot read it as {fmt} ({first_line(e, 200)})") from None
    if df.height == 0:
        raise DnoError(f"{path}: no prompts in the file")
    if fmt.startswith("json"):
        _check_json_messages(path, fmt)
    return df


def _check_prompt_values(path: Path, df, column: str, kind: str | None) -> None:
    """The prompt column holds what its flag says, as the file has it: text under --text-column (a number or
    a list is not a prompt; polars would read 5 beside "12+34" as "5"), message lists under --messages-column
    (a bare string or number is refused: pass it as --text-column)."""
    if kind is None or column not in df.columns:
        return
    fmt = source_format(path)
    if fmt.startswith("json"):
        values = [row.get(column) if isinstance(row, dict) else None for row in _json_rows(path, fmt)]
    else:
        import polars as pl

        dtype = df.schema[column]
        if kind == "messages" and not isinstance(dtype, pl.List):
            raise DnoError(f"{path}: column {column!r} holds {dtype}, not lists of messages; a plain-text prompt "
                           "column is --text-column")
        return
    for i, value in enumerate(values):
        if value is None:
            continue
        ok = isinstance(value, list) if kind == "messages" else isinstance(value, str)
        if not ok:
            want = ("a list of {role, content} messages (a plain-text prompt column is --text-column)"
                    if kind == "messages" else "text (a message list is --messages-column)")
            raise DnoError(f"{path} row {i + 1}, column {column!r}: {json.dumps(value)[:80]} is not a prompt; "
                           f"expected {want}")


def _json_rows(path: Path, fmt: str) -> list:
    text = _json_text(path)
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if fmt.startswith("jsonl") else json.loads(text)
    return rows if isinstance(rows, list) else []


def _check_json_turns(path: Path, column: str) -> None:
    """A turns list as the file has it (polars would read [5] beside ["12+34"] as ["5"])."""
    fmt = source_format(path)
    if not fmt.startswith("json"):
        return
    for i, row in enumerate(_json_rows(path, fmt)):
        value = row.get(column) if isinstance(row, dict) else None
        if isinstance(value, list):
            turns_prompt(value, f"{path} row {i + 1}, column {column!r}")


def _check_json_messages(path: Path, fmt: str) -> None:
    """Message content as the file has it: polars gives a column one type, so a number or a list
    beside text would reach to_messages as text ("5")."""
    for i, row in enumerate(_json_rows(path, fmt)):
        for col, value in (row.items() if isinstance(row, dict) else ()):
            if isinstance(value, list) and all(isinstance(m, dict) and ("content" in m or "value" in m)
                                               for m in value):
                for j, m in enumerate(value):
                    content = m.get("content", m.get("value"))
                    if not isinstance(content, str):
                        raise DnoError(f"{path} row {i + 1}, column {col!r}: message {j + 1} has content "
                                       f"{content!r}; expected text")


def _conversation(value, where: str) -> list[dict] | str:
    """A conversation (OpenAI {role, content} or ShareGPT {from, value}) as {role, content} messages;
    a plain-text prompt as it is."""
    if isinstance(value, str):  # a plain-text prompt in the messages column
        return value
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise DnoError(f"{where}: expected a list of {{role, content}} or {{from, value}} messages")
    msgs = []
    for j, m in enumerate(value):
        if "from" in m and "value" in m and m.get("role") is None:
            role = SHAREGPT_ROLES.get(str(m["from"]).strip().lower())
            if role is None:
                raise DnoError(f"{where}: message {j + 1} is from {m['from']!r}; expected one of "
                               f"{', '.join(sorted(SHAREGPT_ROLES))}")
            msgs.append({"role": role, "content": m["value"]})
        elif "role" in m and "content" in m:
            role = SHAREGPT_ROLES.get(str(m["role"]).strip().lower())
            if role is None:  # refused, not dropped: a chat template would skip it silently
                raise DnoError(f"{where}: message {j + 1} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
            msgs.append({"role": role, "content": m["content"]})
        else:
            raise DnoError(f"{where}: message {j + 1} has neither role/content nor from/value")
    if not any(m["role"] == "user" for m in msgs):
        raise DnoError(f"{where}: the conversation has no user turn")
    return msgs


def conversation_prompt(value, where: str) -> tuple[list[dict], str | None]:
    """A conversation as the prompt's messages and the reference: everything through the last user turn,
    and the assistant turn right after it (--ask-turns last)."""
    msgs = _conversation(value, where)
    if isinstance(msgs, str):
        return msgs, None
    last_user = max(j for j, m in enumerate(msgs) if m["role"] == "user")
    after = msgs[last_user + 1] if last_user + 1 < len(msgs) else None
    reference = after["content"] if after is not None and after["role"] == "assistant" else None
    return msgs[:last_user + 1], reference


def conversation_turns(value, where: str) -> tuple[list[dict] | str, list[str], list[str | None]]:
    """A conversation with every user turn asked (--ask-turns all): the messages through the first user
    turn (system messages before it are context), the later user turns, and each turn's reference (the
    assistant turn right after it, or None).

    >>> conversation_turns([{"from": "human", "value": "12+34"}, {"from": "gpt", "value": "46"},
    ...                     {"from": "human", "value": "and 5+5?"}], "x")
    ([{'role': 'user', 'content': '12+34'}], ['and 5+5?'], ['46', None])
    """
    msgs = _conversation(value, where)
    if isinstance(msgs, str):
        return msgs, [], [None]
    users = [j for j, m in enumerate(msgs) if m["role"] == "user"]
    if any(m["role"] != "system" for m in msgs[:users[0]]):
        raise DnoError(f"{where}: --ask-turns all: an assistant turn before the first user turn; pass "
                       "--ask-turns last to keep the conversation as context")
    follow_ups, references = [], []
    for k, j in enumerate(users):
        between = msgs[j + 1:users[k + 1] if k + 1 < len(users) else len(msgs)]
        if len(between) > 1 or any(m["role"] != "assistant" for m in between):
            raise DnoError(f"{where}: --ask-turns all: user turn {k + 1} is followed by "
                           f"{', '.join(m['role'] for m in between)}; expected at most one assistant answer")
        references.append(between[0]["content"] if between else None)
        if k:
            follow_ups.append(msgs[j]["content"])
    return msgs[:users[0] + 1], follow_ups, references


def turns_prompt(value, where: str) -> tuple[str, list[str]]:
    """MT-Bench's `turns`: the first user turn, and the turns asked after it.

    >>> turns_prompt(["Write a haiku.", "Now in French."], "x")
    ('Write a haiku.', ['Now in French.'])
    """
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise DnoError(f"{where}: expected a list of user turns (text), e.g. MT-Bench's \"turns\"")
    for j, t in enumerate(value):
        if not isinstance(t, str) or not t.strip():
            raise DnoError(f"{where}: turn {j + 1} is {t!r}; expected non-empty text")
    return value[0], value[1:]


def turn_references(ref, turns: int, where: str) -> tuple[str | None, list[str | None]]:
    """A reference cell as the first turn's reference and the follow-ups': a list (MT-Bench's `reference`)
    gives one per turn, from the first, an empty entry none (MT-Bench writes "" for a turn without one);
    anything else is the first turn's.

    >>> turn_references(["46", "10"], 2, "x"), turn_references("46", 2, "x"), turn_references(["46", ""], 2, "x")
    (('46', ['10']), ('46', [None]), ('46', [None]))
    """
    if isinstance(ref, tuple):
        ref = list(ref)
    if not isinstance(ref, list):
        return (None if ref is None else str(ref)), [None] * (turns - 1)
    if len(ref) > turns:
        raise DnoError(f"{where}: {len(ref)} reference answers for {turns} turn(s); give at most one a turn")
    ref = [None if r is None or not str(r).strip() else str(r) for r in ref] + [None] * (turns - len(ref))
    return ref[0], ref[1:]


def alpaca_text(instruction, input_) -> str | None:
    r"""Alpaca's prompt: the instruction, then the input after a blank line when there is one.

    >>> alpaca_text("Add the numbers.", "12+34")
    'Add the numbers.\n\n12+34'
    >>> alpaca_text("Name a colour.", "")
    'Name a colour.'
    """
    if instruction is None or input_ is None or not str(input_).strip():
        return instruction
    return f"{instruction}\n\n{input_}"


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
    turns_column: str | None = None,
    ask_turns: str = "last",
    reference_column: str | None = None,
    split_column: str | None = None,
    system: str | None = None,
    partitions: int = 1,
    eval_size: int = 0,
    seed: int = 0,
    max_prompt_chars: int | None = None,
) -> tuple[list[dict], Counter, dict]:
    """Rows of the prompts schema, counts (read, duplicates, too long, eval, per partition) and
    which columns were used (`{"prompt": ..., "reference": ...}`, for the summary).

    A prompt whose messages (and follow-up turns) hold more than `max_prompt_chars` characters is dropped
    and counted: no later stage has to tokenize or allocate for it.
    """
    if ask_turns not in ASK_TURNS:
        raise DnoError(f"--ask-turns {ask_turns!r}: choose {' or '.join(ASK_TURNS)}")
    if turns_column is not None and (text_column or messages_column):
        raise DnoError("--turns-column is the prompt column: pass it without --text-column or --messages-column")
    if text_column is not None and messages_column is not None:
        raise DnoError(f"--text-column {text_column!r} and --messages-column {messages_column!r} both name the prompt "
                       "column: pass one of them (--text-column for plain text, --messages-column for message lists)")
    given_messages = messages_column is not None
    df = read_source(src)
    cols = df.columns
    if messages_column is None and text_column is None and turns_column is None:
        guess = next((c for c in (*CONVERSATION_GUESSES, *TURNS_GUESSES, *TEXT_GUESSES) if c in cols), None)
        if guess is None:
            raise DnoError(f"{src}: no prompt column found (columns: {', '.join(cols)}); pass --text-column, "
                           "--messages-column or --turns-column")
        if guess in CONVERSATION_GUESSES:
            messages_column = guess
        elif guess in TURNS_GUESSES:
            turns_column = guess
        else:
            text_column = guess
    if turns_column is not None:
        _check_json_turns(src, turns_column)
    if ask_turns == "all" and messages_column is None:
        raise DnoError("--ask-turns all is for a conversation column (--messages-column); every turn of "
                       "--turns-column is asked anyway")
    col = messages_column or turns_column or text_column
    for c in filter(None, (col, reference_column, split_column)):
        if c not in cols:
            raise DnoError(f"{src}: no column {c!r} (columns: {', '.join(cols)}); pass the right --*-column option")
    _check_prompt_values(src, df, col, "messages" if given_messages else "text" if text_column else None)
    alpaca_input = "input" if text_column == "instruction" and "input" in cols else None
    used = {"prompt": col + (f" + {alpaca_input} (Alpaca)" if alpaca_input else "")}
    if messages_column is not None:
        used["prompt"] += " (through the last user turn)" if ask_turns == "last" else " (every user turn asked)"
    elif turns_column is not None:
        used["prompt"] += " (every turn asked, each after the model's own answer to the one before)"
    if reference_column is not None:
        used["reference"] = reference_column
    elif messages_column is not None:
        used["reference"] = f"{messages_column}: the assistant turn after " + (
            "the last user turn" if ask_turns == "last" else "each user turn")
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
    inputs = df[alpaca_input].to_list() if alpaca_input else [None] * df.height
    for i, (value, ref, split, input_) in enumerate(zip(df[col].to_list(), refs, given, inputs)):
        counts["read"] += 1
        where = f"{src} row {i + 1}, column {col!r}"
        follow_ups, refs = [], None
        if messages_column is not None and ask_turns == "all":
            value, follow_ups, answers = conversation_turns(value, where)
            found = sum(a is not None for a in answers)
            if reference_column is None:
                refs = answers
                if found:
                    counts["reference from the conversation"] += found
        elif messages_column is not None:
            value, answer = conversation_prompt(value, where)
            if reference_column is None:
                ref = answer
                counts["reference from the conversation"] += answer is not None
        elif turns_column is not None:
            value, follow_ups = turns_prompt(value, where)
        elif alpaca_input:
            counts["instruction joined with input"] += bool(input_ is not None and str(input_).strip())
            value = alpaca_text(value, input_)
        msgs = to_messages(value, system, where)
        follow_ups = [normalize_text(t) for t in follow_ups]
        if not all(follow_ups):
            raise DnoError(f"{where}: a later user turn is empty")
        ref, follow_refs = turn_references(ref if refs is None else refs, 1 + len(follow_ups), where)
        chars = sum(len(m["content"]) for m in msgs) + sum(len(t) for t in follow_ups)
        if max_prompt_chars is not None and chars > max_prompt_chars:
            counts["dropped_longer_than_max_prompt_chars"] += 1
            continue
        if follow_ups:
            counts["multi-turn prompts"] += 1
        pid = prompt_id(msgs, follow_ups)
        if pid in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(pid)
        if split is not None:
            split_of[pid] = split
        rows.append({"prompt_id": pid, "messages": msgs, "reference": ref,
                     "follow_ups": follow_ups or None,
                     "follow_up_references": follow_refs if any(r is not None for r in follow_refs) else None,
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
    return rows, counts, used

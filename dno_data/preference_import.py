"""Outside preference data (TRL's preference format) as dno's pairs, in memory: what `dno train` and
`dno sft --source chosen` read when their input is not a dno pairs file.

    dno train ultrafeedback.parquet --model HuggingFaceTB/SmolLM2-135M-Instruct -o ckpt
    dno train prefs.jsonl --model models/sft -o ckpt
    dno train prefs-dataset/ --model models/sft -o ckpt     # a folder `datasets` save_to_disk wrote

The forms TRL's DPOTrainer takes (https://huggingface.co/docs/trl/dataset_formats), one row a pair:
  explicit prompt   `prompt`, `chosen`, `rejected`: strings (standard: the prompt is the exact text the
                    model continues) or conversational message lists (the prompt's messages; one
                    assistant message a side), rendered with the model's chat template as dno's own pairs are
  implicit prompt   no `prompt` column (or one of another form than the answers, as TRL's
                    maybe_extract_prompt decides): `chosen` and `rejected` are whole texts or conversations,
                    and what they share from the start is the prompt (TRL's extract_prompt: the longest
                    common prefix, messages for conversations, characters for text, a space before the split
                    going with the answers)
Messages may be OpenAI {role, content} or ShareGPT {from, value} (TRL's maybe_convert_to_chatml).
`score_chosen` / `score_rejected` (UltraFeedback-binarized) become chosen_score / rejected_score and margin.

The file is read from Parquet, JSONL (or JSON lines gzipped) or a save_to_disk folder and checked as dno
checks its own pairs, each failure one line naming the file and the row: a null prompt or answer, an empty
text, chosen equal to rejected, a side that is not one assistant answer, mixed forms. Nothing is written:
the pairs live in memory for the run, and the lineage records the file's own content hash (a file's bytes,
a folder's files), so the up-to-date check follows the file.

TRL's functions (trl.data_utils) are not imported here: TRL is heavy to import and a development
dependency only (tests/test_preference_import.py checks these rules against TRL's own on the same files).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from .errors import DnoError, first_line
from .ids import prompt_id, stable_hash

KINDS = "a dno pairs.parquet, or TRL-format preference data (prompt/chosen/rejected) as Parquet, JSONL or a " \
        "datasets save_to_disk folder"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "model": "assistant"}
RULE = "import"  # the pairs' rule, source and pair type: made outside dno


def is_dno_pairs(path: Path | str) -> bool:
    """A Parquet file with dno.schema metadata (dno's own artifacts; its reader checks which and its version)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".parquet":
        return False
    try:
        return b"dno.schema" in (pq.read_schema(p).metadata or {})
    except Exception:  # unreadable: the reader says so in one line
        return True


def read_pairs(path: Path | str, made_by: str = "dno pairs") -> pa.Table:
    """dno's pairs file as read_artifact reads it, or outside preference data turned into pairs rows."""
    from .artifacts import read_artifact

    from .paths import check_input

    path = Path(path)
    if not path.exists():
        raise DnoError(f"{path}: no such file or folder; pass {KINDS}")
    check_input(path, "pairs")  # a named pipe or a device: refused before anything opens it
    if is_dno_pairs(path):
        return read_artifact(path, "pairs")
    return import_preferences(path)


def looks_like_preferences(path: Path | str) -> bool:
    """Whether `path` (not a dno artifact) has chosen and rejected columns, judged from its schema or first row
    (a pipe or a device is not opened: it is not)."""
    path = Path(path)
    try:
        if not (path.is_file() or path.is_dir()):
            return False
        return {"chosen", "rejected"} <= set(_columns(path))
    except Exception:
        return False


def _columns(path: Path) -> list[str]:
    if path.is_dir():
        info = json.loads((path / "dataset_info.json").read_text())
        return list(info.get("features") or {})
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    with (gzip.open(path, "rt") if path.name.lower().endswith(".gz") else open(path)) as f:
        for line in f:
            if line.strip():
                return list(json.loads(line))
    return []


# ---------------------------------------------------------------- reading rows

def _read_rows(path: Path) -> list[dict]:
    from .paths import check_input

    name = path.name.lower()
    if path.is_dir():
        return _read_dataset_folder(path)
    check_input(path, "preference data")
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json", ".json.gz")):
            return _json_rows(path)
    except DnoError:
        raise
    except Exception as e:  # pyarrow, gzip and json raise many kinds for malformed files
        raise DnoError(f"{path}: cannot read it ({first_line(e, 200)}); pass {KINDS}") from None
    raise DnoError(f"{path}: unknown format {''.join(path.suffixes) or path.name!r}; pass {KINDS}")


def _json_rows(path: Path) -> list[dict]:
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.name.lower().endswith(".gz") else raw).decode("utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array (datasets' to_json(lines=False))
        rows = json.loads(text)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise DnoError(f"{path}: line {n} is not JSON ({first_line(e, 120)})") from None
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise DnoError(f"{path}: row {n} is {type(r).__name__}, not an object with prompt/chosen/rejected")
    return rows


def _read_dataset_folder(path: Path) -> list[dict]:
    from .prompts_import import dataset_folder_table

    try:
        return dataset_folder_table(path, KINDS).to_pylist()
    except DnoError:
        raise
    except Exception as e:
        raise DnoError(f"{path}: cannot read the datasets folder ({first_line(e, 200)})") from None


# ---------------------------------------------------------------- rows -> pairs

def _chatml(value, where: str) -> list[dict] | str:
    """A text as it is; a message list as {role, content} messages (ShareGPT's from/value converted, as TRL's
    maybe_convert_to_chatml does)."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise DnoError(f"{where}: expected a text or a list of {{role, content}} messages, got {type(value).__name__}")
    out = []
    for j, m in enumerate(value, 1):
        if m.get("role") is None and "from" in m and "value" in m:
            role, content = SHAREGPT_ROLES.get(str(m["from"]).strip().lower()), m["value"]
        elif "role" in m and "content" in m:
            role, content = SHAREGPT_ROLES.get(str(m["role"]).strip().lower()), m["content"]
        else:
            raise DnoError(f"{where}: message {j} has neither role/content nor from/value")
        if role is None:
            raise DnoError(f"{where}: message {j} has role {m.get('role', m.get('from'))!r}; expected system, "
                           "user or assistant")
        if not isinstance(content, str):
            raise DnoError(f"{where}: message {j}'s content is {type(content).__name__}, expected text")
        out.append({"role": role, "content": content})
    return out


def extract_prompt(chosen, rejected) -> tuple:
    """(prompt, chosen, rejected) of an implicit-prompt pair: the longest common prefix is the prompt (TRL's
    extract_prompt: a space just before the split goes with the answers).

    >>> extract_prompt("Q: 2+2? A: 4", "Q: 2+2? A: 5")
    ('Q: 2+2? A:', ' 4', ' 5')
    >>> extract_prompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    ...                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}])[0]
    [{'role': 'user', 'content': 'hi'}]
    """
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":
                idx -= 1
            break
    else:
        idx = min(len(chosen), len(rejected))
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _answer(value, conversational: bool, where: str) -> str:
    """A side's answer text: a text as it is; a conversation's single assistant message."""
    if not conversational:
        if not value.strip():
            raise DnoError(f"{where}: the answer is empty")
        return value
    if len(value) != 1 or value[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in value) or "nothing"
        raise DnoError(f"{where}: after the prompt it holds {roles}; dno trains on one assistant answer a side")
    if not value[0]["content"].strip():
        raise DnoError(f"{where}: the assistant answer is empty")
    return value[0]["content"]


def import_preferences(path: Path | str) -> pa.Table:
    """TRL-format preference data at `path` as a pairs table (schemas/pairs.py), checked row by row."""
    from .artifacts import to_table

    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DnoError(f"{path}: no rows: nothing to train on")
    columns = set(rows[0])
    if not {"chosen", "rejected"} <= columns:
        if {"completion", "label"} <= columns:
            raise DnoError(f"{path}: unpaired preference data (completion/label, KTO's form); dno trains on pairs: "
                           "pass prompt/chosen/rejected rows")
        raise DnoError(f"{path}: not a dno artifact (no dno.schema metadata) and no chosen/rejected columns "
                       f"(it has {', '.join(sorted(map(str, columns))) or 'none'}); pass {KINDS}")
    explicit = "prompt" in columns
    form = None
    out, seen = [], Counter()
    for n, row in enumerate(rows, 1):
        where = f"{path}: row {n}"
        for col in (("prompt", "chosen", "rejected") if explicit else ("chosen", "rejected")):
            if row.get(col) is None:
                raise DnoError(f"{where}: '{col}' is null; every pair needs a prompt, a chosen and a rejected answer")
        chosen, rejected = _chatml(row["chosen"], f"{where} 'chosen'"), _chatml(row["rejected"], f"{where} 'rejected'")
        prompt = _chatml(row["prompt"], f"{where} 'prompt'") if explicit else None
        # TRL's maybe_extract_prompt: a prompt column of another form than the answers (a text prompt beside
        # whole conversations) is not the prompt; the answers' shared beginning is
        if prompt is None or isinstance(prompt, list) != isinstance(chosen, list):
            if type(chosen) is not type(rejected):
                raise DnoError(f"{where}: 'chosen' and 'rejected' are not of one form (a text and a conversation)")
            prompt, chosen, rejected = extract_prompt(chosen, rejected)
            if not prompt:
                raise DnoError(f"{where}: no 'prompt' column, and 'chosen' and 'rejected' do not begin alike, so "
                               "there is no prompt; add a prompt column")
        conversational = isinstance(prompt, list)
        if form is None:
            form = conversational
        elif form != conversational:
            raise DnoError(f"{where}: a {'conversational' if conversational else 'text'} prompt in a file whose first "
                           f"row's is {'conversational' if form else 'text'}; use one form")
        for side, value in (("chosen", chosen), ("rejected", rejected)):
            if isinstance(value, list) != conversational:
                raise DnoError(f"{where}: the prompt is {'a conversation' if conversational else 'text'} but "
                               f"'{side}' is not; TRL's forms keep prompt and answers in one form")
        chosen_text = _answer(chosen, conversational, f"{where} 'chosen'")
        rejected_text = _answer(rejected, conversational, f"{where} 'rejected'")
        if chosen_text == rejected_text:
            raise DnoError(f"{where}: chosen and rejected are the same answer; a pair needs two different answers")
        if conversational:
            if not any(m["role"] == "user" for m in prompt):
                raise DnoError(f"{where}: the prompt has no user turn")
            messages, prompt_text = prompt, None  # rendered with the model's chat template, as dno's own pairs
        else:
            if not prompt.strip():
                raise DnoError(f"{where}: the prompt is empty")
            messages, prompt_text = [{"role": "user", "content": prompt}], prompt  # the text the model continues
        pid = prompt_id(messages) if conversational else stable_hash("text-prompt", prompt)
        chosen_id = stable_hash("imported", pid, chosen_text)
        rejected_id = stable_hash("imported", pid, rejected_text)
        seen[(chosen_id, rejected_id)] += 1  # a repeated row stays a pair of its own, with its own key
        sc, sr = _score(row.get("score_chosen"), where), _score(row.get("score_rejected"), where)
        out.append({
            "pair_id": stable_hash("imported-pair", chosen_id, rejected_id, seen[(chosen_id, rejected_id)]),
            "prompt_id": pid, "prompt": messages, "prompt_text": prompt_text,
            "chosen_sample_id": chosen_id, "rejected_sample_id": rejected_id,
            "chosen": [{"role": "assistant", "content": chosen_text}],
            "rejected": [{"role": "assistant", "content": rejected_text}],
            "chosen_source": RULE, "rejected_source": RULE, "chosen_truncated": False, "rejected_truncated": False,
            "chosen_score": sc, "rejected_score": sr, "chosen_winrate": None, "rejected_winrate": None,
            "margin": None if sc is None or sr is None else sc - sr, "pair_type": RULE, "rule": RULE,
            "target": 1.0, "replayed_from": None,
        })
    return to_table(out, "pairs")


def _score(value, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DnoError(f"{where}: score {value!r} is not a number") from None

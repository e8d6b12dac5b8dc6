"""pairs.parquet in the preference format TRL's DPOTrainer and other DPO tools read directly.

    dno export pairs.parquet --format trl -o dpo.parquet           # or dpo.jsonl
    dno export pairs.parquet --format hf-dataset -o dpo-dataset/   # datasets.load_from_disk reads it
    dno export pairs.parquet --string -o dpo.jsonl                 # prompt as text, not messages

Rows are `prompt`, `chosen`, `rejected` (+ `pair_id`, to trace a row back):
- conversational (default): `prompt` the prompt's messages, `chosen` / `rejected` one assistant
  message each — TRL applies the tokenizer's chat template itself;
- `--string`: `prompt` the rendered prompt the policy sampled from (`prompt_text`; with
  `--tokenizer DIR`, that tokenizer's chat template; else plain "role: content" lines), `chosen` /
  `rejected` the answers' text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.common import MESSAGES

from .artifacts import read_artifact
from .errors import DnoError
from .folder_swap import building_folder

FORMATS = ("trl", "hf-dataset")
FILE_KINDS = {".parquet": "parquet", ".jsonl": "jsonl"}


def preference_rows(pairs: pa.Table, string: bool = False, tokenizer=None) -> pa.Table:
    """The pairs as prompt / chosen / rejected (+ pair_id), conversational or as strings."""
    if not string:
        return pa.table({"prompt": pairs["prompt"].cast(MESSAGES), "chosen": pairs["chosen"].cast(MESSAGES),
                         "rejected": pairs["rejected"].cast(MESSAGES), "pair_id": pairs["pair_id"]})
    from .models import render_prompt

    texts = pairs["prompt_text"].to_pylist()
    prompts = [render_prompt(tokenizer, m) if tokenizer is not None or t is None else t
               for m, t in zip(pairs["prompt"].to_pylist(), texts)]
    return pa.table({"prompt": pa.array(prompts, pa.string()), "chosen": answer_text(pairs["chosen"]),
                     "rejected": answer_text(pairs["rejected"]), "pair_id": pairs["pair_id"]})


def answer_text(messages: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """The answers' texts of a pairs file's chosen or rejected column: the content of its one message."""
    import pyarrow.compute as pc

    return pc.struct_field(pc.list_element(messages, 0), "content")


def file_kind(output: Path) -> str:
    kind = FILE_KINDS.get(output.suffix.lower())
    if kind is None:
        raise DnoError(f"{output}: --format trl writes a .parquet or .jsonl file; name the output so "
                       f"(or use --format hf-dataset for a datasets folder)")
    return kind


def export_pairs(pairs_path: Path, output: Path, fmt: str = "trl", string: bool = False,
                 tokenizer_dir: Path | None = None, lineage: dict | None = None) -> int:
    """Write the preference rows of `pairs_path` to `output`; return how many rows."""
    pairs = read_artifact(pairs_path, "pairs")
    tokenizer = None
    if tokenizer_dir is not None:
        from .models import check_model_dir, load_tokenizer

        tokenizer = load_tokenizer(check_model_dir(tokenizer_dir, "--tokenizer"))
    table = preference_rows(pairs, string, tokenizer)
    if fmt == "hf-dataset":
        _save_dataset(table, output)
    elif file_kind(output) == "parquet":
        meta = {b"dno.export": json.dumps(lineage or {}, sort_keys=True).encode()}
        _atomic(output, lambda f: pq.write_table(table.replace_schema_metadata(meta), f, compression="zstd"))
    else:
        _atomic(output, lambda f: f.writelines(
            (json.dumps(r, ensure_ascii=False) + "\n").encode() for r in table.to_pylist()))
    return table.num_rows


def is_saved_dataset(folder: Path) -> bool:
    """A folder `datasets.Dataset.save_to_disk` wrote (what --force may replace)."""
    return folder.is_dir() and (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def _save_dataset(table: pa.Table, output: Path) -> None:
    try:
        from datasets import Dataset
    except ImportError:
        raise DnoError("--format hf-dataset needs the `datasets` package: pip install datasets") from None
    with building_folder(output) as tmp:
        Dataset(table).save_to_disk(str(tmp))


def _atomic(output: Path, write) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()

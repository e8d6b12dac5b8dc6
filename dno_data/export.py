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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.common import MESSAGES

from .artifacts import read_artifact, write_json_atomic
from .atomic import atomic_path
from .errors import DnoError
from .folder_swap import building_folder
from .paths import MANIFEST, check_output, publisher

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


def output_kind(fmt: str) -> str:
    """The kind of output (dno_data.paths) `dno export --format fmt` writes."""
    return "export-dataset" if fmt == "hf-dataset" else "export"


def check_export_output(output: Path, pairs_path: Path, fmt: str = "trl", force: bool = False) -> None:
    """Before any work: -o is new, or an earlier `dno export` output of the same form and --force."""
    check_output(output, [pairs_path], kind=output_kind(fmt), replace_own=force)
    if fmt != "hf-dataset":
        file_kind(output)


def export_pairs(pairs_path: Path, output: Path, fmt: str = "trl", string: bool = False,
                 tokenizer_dir: Path | None = None, lineage: dict | None = None, force: bool = False) -> int:
    """Write the preference rows of `pairs_path` to `output`; return how many rows.

    An existing `output` is replaced only with `force` and only when an earlier `dno export`
    wrote it; this is checked again under the output's lock right before the rename, so of two
    exports to one new -o the second to finish is refused."""
    pairs = read_artifact(pairs_path, "pairs")
    tokenizer = None
    if tokenizer_dir is not None:
        from .models import check_model_dir, load_tokenizer

        tokenizer = load_tokenizer(check_model_dir(tokenizer_dir, "--tokenizer"))
    table = preference_rows(pairs, string, tokenizer)
    publish = publisher(output_kind(fmt), replace_own=force)
    if fmt == "hf-dataset":
        _save_dataset(table, output, lineage, publish)
    elif file_kind(output) == "parquet":
        meta = {b"dno.export": json.dumps(lineage or {}, sort_keys=True).encode()}
        with atomic_path(output, publish=publish) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    else:
        with atomic_path(output, publish=publish) as tmp, open(tmp, "wb") as f:
            f.writelines((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in table.to_pylist())
    return table.num_rows


def _save_dataset(table: pa.Table, output: Path, lineage: dict | None, publish) -> None:
    """A `datasets.save_to_disk` folder plus dno-manifest.json (what makes it recognisably dno's)."""
    try:
        from datasets import Dataset
    except ImportError:
        raise DnoError("--format hf-dataset needs the `datasets` package: pip install datasets") from None
    with building_folder(output, publish=publish) as tmp:
        Dataset(table).save_to_disk(str(tmp))
        write_json_atomic({"lineage": {**(lineage or {}), "stage": "export"}}, tmp / MANIFEST)

"""Loading HF-format model folders, with errors a user can act on, and prompt rendering."""

from __future__ import annotations

from pathlib import Path

from .errors import DnoError, first_line

# What `dno train` writes beside a checkpoint's model files: how it was made (the manifest holds paths
# and a write time; the model card renders it), not part of what the model generates. The last two are
# in CHECKPOINT.records/ now; a checkpoint an older dno wrote has them inside.
TRAINING_RECORDS = ("dno-manifest.json", "README.md", "ref_logps.parquet", "train_log.jsonl")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_dir(path: Path | str, flag: str = "--model", revision: str | None = None) -> Path:
    """A folder written by `save_pretrained` (or `dno train`): config.json, weights, tokenizer. A Hugging Face
    Hub id (`org/name`, `org/name@REVISION`, or with `revision`) is its snapshot in the HF cache (dno_data.hub),
    downloaded when online: the folder returned is the one to load."""
    from .hub import resolve

    path = Path(resolve(path, revision, flag))
    fix = f"point {flag} at a folder written by save_pretrained or `dno train`"
    if not path.exists():
        raise DnoError(f"{path}: no such model folder; {fix}, or pass a Hugging Face Hub id (org/name)")
    if not path.is_dir():
        raise DnoError(f"{path}: is a file, not a model folder; {fix}")
    if not (path / "config.json").exists():
        raise DnoError(f"{path}: no config.json, not an HF model folder; {fix}")
    if not any((path / w).exists() for w in WEIGHT_FILES):
        raise DnoError(f"{path}: model folder without weights ({' / '.join(WEIGHT_FILES[::2])}); {fix}")
    if not any((path / t).exists() for t in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise DnoError(f"{path}: model folder without a tokenizer; save one with tokenizer.save_pretrained({str(path)!r})")
    _check_weights(path)
    return path


# model types whose positions are a learned table: past its end, generation fails with an index error
# (rotary or ALiBi models, Llama and kin, run past their trained length instead)
LEARNED_POSITIONS = {"gpt2": "n_positions", "gpt_bigcode": "n_positions", "gpt_neo": "max_position_embeddings",
                     "opt": "max_position_embeddings", "biogpt": "max_position_embeddings",
                     "xglm": "max_position_embeddings"}


def position_limit(path: Path | str) -> int | None:
    """The most tokens (prompt + answer) the model in `path` can take at all: the size of its learned
    position table (config.json); None for a model without one."""
    import json

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    key = LEARNED_POSITIONS.get(config.get("model_type")) if isinstance(config, dict) else None
    value = config.get(key) if key else None
    return value if isinstance(value, int) and value > 0 else None


def check_answer_length(path: Path | str, max_new_tokens: int, flag: str = "--max-new-tokens") -> None:
    """Refuse, before any work, an answer length that leaves no room for a prompt in a model whose
    positions are a learned table (generation would fail part-way with an index error); an answer that
    with its prompt would run past the table is cut there when generated (generation.hf)."""
    limit = position_limit(path)
    if limit is not None and max_new_tokens >= limit:
        raise DnoError(f"{flag} {max_new_tokens}: the model {path} takes at most {limit} tokens, prompt and answer "
                       f"together (config.json); pass at most {max(1, limit // 2)} or so, leaving room for the prompt")


def _check_weights(path: Path) -> None:
    """Safetensors weights whose headers read; pickle weights (pytorch_model.bin) are refused:
    unpickling runs code from the file."""
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        pickled = next(w for w in WEIGHT_FILES[2:] if (path / w).exists())
        raise DnoError(f"{path}: {pickled} holds pickle weights, which dno does not load; convert them to safetensors "
                       f"(load the model and save_pretrained(..., safe_serialization=True))")
    from safetensors import safe_open

    for shard in shards:
        try:
            with safe_open(str(shard), "pt") as f:
                f.keys()
        except Exception as e:  # SafetensorError, OSError: a corrupt or truncated file
            raise DnoError(f"{path}: {shard.name} is not a readable safetensors file ({first_line(e, 200)}); "
                           f"remake the folder (save_pretrained or `dno train`)") from None


def quiet_libraries() -> None:
    """Progress bars of weight loading and saving ("Writing model shards") and library warnings
    (accelerate's "Removed shared tensor" on tied weights) are noise in stage output; errors still show."""
    import logging as std_logging

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    std_logging.getLogger("accelerate").setLevel(std_logging.ERROR)




def load_tokenizer(path: Path | str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    quiet_libraries()
    tok = AutoTokenizer.from_pretrained(str(path), padding_side=padding_side)
    if tok.pad_token is None:
        # Padding is only ever masked out; reusing EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: Path | str, dtype: str = "auto"):
    import torch
    from transformers import AutoModelForCausalLM

    quiet_libraries()
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: e.g. safetensors data cut short
        raise DnoError(f"{path}: cannot load the model ({first_line(e)}); check the folder or remake it with `dno train`") from None


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text the policy continues: the tokenizer's chat template when it has one.

    Without a template (a base model), messages are joined as "role: content" lines and
    the prompt ends with "assistant:" so every backend and the trainer agree on the text.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


PROBE_RESPONSE = "Hello"  # the most common way a response starts: a word


def check_template_prefix(tokenizer, prompt_text: str, responses: list[str], prompt_id: str, where: str) -> None:
    """The prompt's tokens must be an exact prefix of prompt + response's tokens.

    Training tokenizes prompt and response apart and masks the prompt by its token count; a
    chat template whose generation prompt merges with the response (a trailing space that a
    BPE joins to the next word, ...) breaks that, silently. `where` names the tokenizer.
    """
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if not responses:
        return
    fulls = tokenizer([prompt_text + r for r in responses], add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    for r, full in zip(responses, fulls):
        if full[:n] != prompt_ids:
            at = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(n, len(full)))
            tail = tokenizer.convert_ids_to_tokens(prompt_ids[max(0, at - 1):at + 1])
            raise DnoError(
                f"prompt {prompt_id}: the rendered prompt's tokens are not a prefix of prompt + response under the "
                f"tokenizer of {where} (they differ at token {at} of {n}: {tail!r}, response starts {r[:20]!r}); "
                "the chat template's generation prompt merges with the response: fix the template "
                "(e.g. no trailing space after the assistant header) in that folder's tokenizer_config.json / chat_template.jinja"
            )


def model_sha256(path: Path | str) -> str:
    """The identity of a model folder: its files (weights, config, tokenizer) but dno's training records.

    Sample ids hash it, so two runs that trained the same weights give the same sample ids, and
    every choice made by id downstream (a pair rule's tie-break between identical answers) is the same.
    """
    from .ids import file_sha256, stable_hash

    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
                   and not (f.parent == path and f.name in TRAINING_RECORDS))
    return stable_hash("model", [(str(f.relative_to(path)), file_sha256(f)) for f in files], length=64)

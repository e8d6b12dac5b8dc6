"""Generation behind one narrow function: K completions per rendered prompt.

Backends: `hf` (transformers, batched `generate`). Heavy imports happen inside the
backend that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DnoError
from .ids import stable_hash
from .models import check_model_dir, load_causal_lm, load_tokenizer

BACKENDS = ("hf",)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 5  # samples per prompt (the paper: 5)
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.95
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length"


class HFGenerator:
    """transformers `generate`, batched with left padding."""

    def __init__(self, model_dir: Path | str, dtype: str = "auto", threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model_dir = check_model_dir(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir, padding_side="left")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_causal_lm(self.model_dir, dtype).to(self.device).eval()

    def identity(self, params: SamplingParams) -> str:
        return stable_hash("hf", str(self.model_dir.resolve()), params.__dict__)

    def generate(self, prompts: list[str], params: SamplingParams, seed: int) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        greedy = params.temperature <= 0
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                do_sample=not greedy,
                temperature=None if greedy else params.temperature,
                top_p=None if greedy else params.top_p,
                top_k=None,
                num_return_sequences=params.n,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        eos = tok.eos_token_id
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            row = []
            for ids in new[i * params.n:(i + 1) * params.n]:
                stopped = eos in ids
                ids = ids[: ids.index(eos)] if stopped else ids
                row.append(Completion(tok.decode(ids, skip_special_tokens=True), len(ids), "stop" if stopped else "length"))
            results.append(row)
        return results


def make_generator(backend: str, model_dir: Path | str, **kwargs):
    if backend == "hf":
        return HFGenerator(model_dir, **kwargs)
    raise DnoError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")

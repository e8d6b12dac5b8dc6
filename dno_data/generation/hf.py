"""The `hf` backend: transformers `generate`, batched with left padding (CPU or GPU)."""

from __future__ import annotations

from pathlib import Path

from ..models import check_model_dir, load_causal_lm, load_tokenizer
from ..reproducibility import configure_torch
from .base import Completion, SamplingParams, batch_seeds, sample_seed, stop_token_ids


def _row_sampler(seeds: list[int], temperature: float, top_p: float, device):
    """A logits processor that draws each row's token with the row's own torch.Generator.

    `generate` runs greedy (argmax) over its output, which is -inf everywhere but at the drawn
    token: sampling is then per row, so a row's tokens do not depend on the other rows in the
    batch (HF's own sampling draws the whole batch from one global generator).
    """
    import torch
    from transformers import LogitsProcessor

    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            logits = scores.float() / temperature
            probs = torch.softmax(logits, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above
                sorted_probs = sorted_probs.masked_fill(before > top_p, 0.0)
                probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
            picks = torch.stack([torch.multinomial(probs[r], 1, generator=gens[r]) for r in range(probs.shape[0])])
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(-1, picks.to(out.device), 0.0)

    return RowSampler()


class HFGenerator:
    """transformers `generate`, batched with left padding; each sample seeded on its own."""

    name = "hf"

    def __init__(self, model_dir: Path | str, dtype: str = "auto", threads: int | None = None):
        import torch

        configure_torch(threads)
        self.model_dir = check_model_dir(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir, padding_side="left")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_causal_lm(self.model_dir, dtype).to(self.device).eval()
        self.stop_ids = stop_token_ids(self.model_dir, self.tokenizer)

    @classmethod
    def create(cls, model_dir, *, dtype: str = "auto", threads: int | None = None, **_):
        return cls(model_dir, dtype=dtype, threads=threads)

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        import torch
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        seeds = batch_seeds(seeds, len(prompts))
        enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        # K rows per prompt (what num_return_sequences does inside generate), each with its own seed.
        enc = {k: v.repeat_interleave(params.n, dim=0).to(self.device) for k, v in enc.items()}
        extra = {}
        if params.temperature > 0:
            row_seeds = [sample_seed(s, k) for s in seeds for k in range(params.n)]
            extra["logits_processor"] = LogitsProcessorList(
                [_row_sampler(row_seeds, params.temperature, params.top_p, self.device)])
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=self._room(enc["input_ids"].shape[1], params.max_new_tokens),
                pad_token_id=tok.pad_token_id,
                eos_token_id=self.stop_ids,
                **extra,
            )
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        stops = set(self.stop_ids)
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            row = []
            for ids in new[i * params.n:(i + 1) * params.n]:
                end = next((j for j, t in enumerate(ids) if t in stops), None)
                stopped = end is not None
                ids = ids[:end] if stopped else ids
                row.append(Completion(tok.decode(ids, skip_special_tokens=True), len(ids), "stop" if stopped else "length"))
            results.append(row)
        return results

    def _room(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """The answer length that fits a learned position table after this batch's prompts (models.position_limit;
        the answers are cut there, finish_reason length), instead of an index error part-way."""
        from ..errors import DnoError
        from ..models import position_limit

        limit = position_limit(self.model_dir)
        if limit is None or prompt_tokens + max_new_tokens <= limit:
            return max_new_tokens
        if prompt_tokens >= limit:
            raise DnoError(f"a prompt of {prompt_tokens} tokens does not fit the model's {limit} positions "
                           f"({self.model_dir}); drop long prompts with `dno prompts --max-prompt-chars`")
        return limit - prompt_tokens

    def close(self) -> None:
        pass

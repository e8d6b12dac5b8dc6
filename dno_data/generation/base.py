"""What every generation backend shares: the `Generator` protocol, sampling parameters, seeds.

A backend renders nothing itself: prompts come rendered with dno_data.models.render_prompt on
the policy's HF tokenizer, and each prompt's samples are seeded from (seed, prompt_id) alone, so
a prompt's samples do not depend on which other prompts share its batch, shard or resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..ids import stable_hash


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


@runtime_checkable
class Generator(Protocol):
    """K completions per rendered prompt.

    `generate(prompts, params, seeds, messages=None)`: `prompts` are the rendered texts, `seeds`
    one int per prompt (or one int for the batch: per-prompt seeds are derived from it), and
    `messages` the chat messages (a backend that talks to a server sends those; the server
    applies the template). Returns, per prompt, `params.n` completions.
    """

    name: str
    tokenizer: object  # the policy's HF tokenizer: prompt rendering and the template check
    model_dir: object  # the folder that identifies the policy (or its tokenizer)

    def generate(self, prompts: list[str], params: SamplingParams, seeds, messages=None) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def stop_token_ids(model_dir, tokenizer) -> list[int]:
    """The ids that end a response: the tokenizer's EOS and every `eos_token_id` of the model's
    generation_config.json (an int or a list; chat models often stop on an end-of-turn token
    that is not the tokenizer's EOS)."""
    ids: list[int] = []

    def add(value) -> None:
        for i in [value] if isinstance(value, int) else list(value or []):
            if i not in ids:
                ids.append(int(i))

    add(tokenizer.eos_token_id)
    try:
        from transformers import GenerationConfig

        add(GenerationConfig.from_pretrained(str(model_dir)).eos_token_id)
    except (OSError, ValueError):  # no generation_config.json (or an unreadable one): the tokenizer's EOS alone
        pass
    return ids


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: independent of batching, sharding and resume."""
    return int(stable_hash("prompt-seed", seed, prompt_id), 16) % (2**31)


def sample_seed(prompt_seed_: int, index: int) -> int:
    """The seed of sample `index` of a prompt (backends that draw each sample on its own)."""
    return int(stable_hash("sample-seed", prompt_seed_, index), 16) % (2**31)


def batch_seeds(seeds, count: int) -> list[int]:
    """One seed per prompt: `seeds` as given, or derived from one int for the whole batch."""
    if isinstance(seeds, int):
        return [int(stable_hash("batch-seed", seeds, i), 16) % (2**31) for i in range(count)]
    seeds = list(seeds)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    return seeds

"""Token prices (prices.json beside this module), cost estimates of API calls, and what prefix reuse saves.

A model's entry is [input, output] or [input, output, cached input] in USD per 1M tokens. Through the
Batch API every price is `_batch_factor` (default 0.5: OpenAI's Batch API is half price) times these.

Providers bill the input tokens a request shares with an earlier one's beginning (its prefix) at a
cached price, when they cache prompts: OpenAI does so on its own for prompts of 1024 tokens or more,
in steps of 128 tokens, at the `cached input` price of prices.json's third column (a model without
one bills them at the full input price). The judge templates put what never changes first for this.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from ..errors import DnoError

# OpenAI's prompt caching: the shortest prefix it caches, and the step a cached prefix grows by (tokens)
CACHE_MIN_TOKENS, CACHE_STEP_TOKENS = 1024, 128


def load_prices(path: Path | None = None, batch: bool = False) -> dict[str, tuple]:
    """USD per 1M tokens (input, output, cached input or None) by model, interactive or (`batch`) through the
    Batch API; a user's file overrides the shipped table."""
    table = json.loads(resources.files("dno_data.openai_api").joinpath("prices.json").read_text())
    if path is not None:
        try:
            given = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise DnoError(f"--prices {path}: not a readable JSON price table ({e})") from None
        if not isinstance(given, dict):
            raise DnoError(f"--prices {path}: holds a JSON {type(given).__name__}; expected an object "
                           '{"MODEL": [USD per 1M input tokens, USD per 1M output tokens], ...}')
        for k, v in given.items():
            if not k.startswith("_") and not (isinstance(v, list) and len(v) in (2, 3) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v)):
                raise DnoError(f"--prices {path}: {k!r} is {json.dumps(v)[:60]}; expected [USD per 1M input "
                               "tokens, USD per 1M output tokens] or [input, output, cached input], numbers of 0 "
                               "or more")
        table.update(given)
    return prices_of(table, batch, path)


def prices_of(table: dict, batch: bool = False, path: Path | None = None) -> dict[str, tuple]:
    """
    >>> t = {"_batch_factor": 0.5, "a": [2.0, 8.0], "b": [1.0, 4.0, 0.5]}
    >>> prices_of(t)
    {'a': (2.0, 8.0, None), 'b': (1.0, 4.0, 0.5)}
    >>> prices_of(t, batch=True)
    {'a': (1.0, 4.0, None), 'b': (0.5, 2.0, 0.25)}
    """
    where = f"--prices {path}" if path is not None else "the shipped prices.json"
    try:
        factor = float(table.get("_batch_factor", 0.5)) if batch else 1.0
        out = {}
        for k, v in table.items():
            if k.startswith("_"):
                continue
            if not isinstance(v, (list, tuple)) or len(v) not in (2, 3):
                raise ValueError(f"{k}: expected [input, output] or [input, output, cached input]")
            cached = factor * float(v[2]) if len(v) == 3 and v[2] is not None else None
            out[k] = (factor * float(v[0]), factor * float(v[1]), cached)
    except (TypeError, ValueError) as e:
        raise DnoError(f"{where}: not a price table ({e})") from None
    return out


def cost_usd(model: str, input_tokens: int, output_tokens: int, prices: dict, cached_tokens: int = 0) -> float | None:
    """The price of the tokens; `cached_tokens` of the input at the cached-input price (the input price without one).

    >>> cost_usd("gpt-4o", 1_000_000, 100_000, {"gpt-4o": (2.5, 10.0)})
    3.5
    >>> cost_usd("gpt-4o", 1_000_000, 100_000, {"gpt-4o": (2.5, 10.0, 1.25)}, cached_tokens=400_000)
    3.0
    >>> cost_usd("my-local-model", 10, 10, {}) is None
    True
    """
    if model not in prices:
        return None
    pin, pout, *rest = prices[model]
    pcached = rest[0] if rest and rest[0] is not None else pin
    cached = min(cached_tokens, input_tokens)
    return round((input_tokens - cached) * pin / 1e6 + cached * pcached / 1e6 + output_tokens * pout / 1e6, 6)


def fmt_cost(value: float | None, model: str) -> str:
    return f"${value:,.4f}" if value is not None else f"unknown (no price for {model}; pass --prices FILE)"


def reused_prefix_tokens(texts, min_tokens: int = CACHE_MIN_TOKENS, step: int = CACHE_STEP_TOKENS) -> list[int]:
    """For requests sent in this order, the input tokens of each that an earlier one's prefix covers, as
    OpenAI's prompt caching counts them (about 4 characters a token; an estimate, as for the input tokens).

    >>> reused_prefix_tokens(["x" * 4 * 1100 + "a", "x" * 4 * 1100 + "b", "y" * 40])
    [0, 1024, 0]
    """
    seen: set[bytes] = set()
    out = []
    for text in texts:
        digest, pos, hit, length = hashlib.sha256(), 0, 0, min_tokens
        while 4 * length <= len(text):
            digest.update(text[pos:4 * length].encode())
            pos, key = 4 * length, digest.digest()
            hit = length if key in seen else hit
            seen.add(key)
            length += step
        out.append(hit)
    return out

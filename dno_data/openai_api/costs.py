"""Token prices (prices.json beside this module) and cost estimates of API calls.

A model's entry is [input, output] in USD per 1M tokens, or [input, output, batch input, batch
output] where the Batch API's price is not `_batch_factor` (default 0.5: OpenAI's Batch API is
half price) times the interactive one.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import DnoError


def load_prices(path: Path | None = None, batch: bool = False) -> dict[str, tuple[float, float]]:
    """USD per 1M tokens (input, output) by model, interactive or (`batch`) through the Batch API;
    a user's file overrides the shipped table."""
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
            if not k.startswith("_") and not (isinstance(v, list) and len(v) in (2, 4) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v)):
                raise DnoError(f"--prices {path}: {k!r} is {json.dumps(v)[:60]}; expected [USD per 1M input "
                               "tokens, USD per 1M output tokens] (and optionally the batch prices after them), "
                               "numbers of 0 or more")
        table.update(given)
    return prices_of(table, batch, path)


def prices_of(table: dict, batch: bool = False, path: Path | None = None) -> dict[str, tuple[float, float]]:
    """
    >>> t = {"_batch_factor": 0.5, "a": [2.0, 8.0], "b": [1.0, 4.0, 0.25, 1.0]}
    >>> prices_of(t)
    {'a': (2.0, 8.0), 'b': (1.0, 4.0)}
    >>> prices_of(t, batch=True)
    {'a': (1.0, 4.0), 'b': (0.25, 1.0)}
    """
    where = f"--prices {path}" if path is not None else "the shipped prices.json"
    try:
        factor = float(table.get("_batch_factor", 0.5))
        out = {}
        for k, v in table.items():
            if k.startswith("_"):
                continue
            if not isinstance(v, (list, tuple)) or len(v) not in (2, 4):
                raise ValueError(f"{k}: expected [input, output] or [input, output, batch input, batch output]")
            if batch:
                out[k] = (float(v[2]), float(v[3])) if len(v) == 4 else (factor * float(v[0]), factor * float(v[1]))
            else:
                out[k] = (float(v[0]), float(v[1]))
    except (TypeError, ValueError) as e:
        raise DnoError(f"{where}: not a price table ({e})") from None
    return out


def cost_usd(model: str, input_tokens: int, output_tokens: int, prices: dict) -> float | None:
    """
    >>> cost_usd("gpt-4o", 1_000_000, 100_000, {"gpt-4o": (2.5, 10.0)})
    3.5
    >>> cost_usd("my-local-model", 10, 10, {}) is None
    True
    """
    if model not in prices:
        return None
    pin, pout = prices[model]
    return round(input_tokens * pin / 1e6 + output_tokens * pout / 1e6, 6)


def fmt_cost(value: float | None, model: str) -> str:
    return f"${value:,.4f}" if value is not None else f"unknown (no price for {model}; pass --prices FILE)"

"""Prices per model, in US dollars per million tokens, and the cost of one response.

A model missing from the table has an unknown cost (``None``), shown as unknown, never as
zero. Extend the table for your own models or negotiated prices::

    from jupyter_agent import set_price
    set_price("openai:my-finetune", input=3.0, output=12.0, cached_input=0.75)
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` applies to input tokens read from cache,
    ``cache_write`` to input tokens written to it (Anthropic's prompt cache: 1.25x input)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


# Published list prices (USD / 1M tokens) for common models; keys are "provider:model".
PRICES: dict[str, Price] = {
    "openai:gpt-4.1": Price(2.00, 8.00, 0.50),
    "openai:gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "openai:gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "openai:gpt-4o": Price(2.50, 10.00, 1.25),
    "openai:gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "openai:o3": Price(2.00, 8.00, 0.50),
    "openai:o4-mini": Price(1.10, 4.40, 0.275),
    "anthropic:claude-opus-4-1": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic:claude-sonnet-4-5": Price(3.00, 15.00, 0.30, 3.75),
    "anthropic:claude-sonnet-4-0": Price(3.00, 15.00, 0.30, 3.75),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00, 0.10, 1.25),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 4.00, 0.08, 1.00),
}


def set_price(
    model: str,
    *,
    input: float,
    output: float,
    cached_input: float | None = None,
    cache_write: float | None = None,
) -> None:
    """Add or change the price of ``model`` (``provider:model``), USD per million tokens."""
    if ":" not in model:
        raise ValueError(f"name the model as provider:model, e.g. 'openai:{model}'")
    if min(input, output, cached_input or 0.0, cache_write or 0.0) < 0:
        raise ValueError("prices cannot be negative")
    PRICES[model] = Price(input, output, cached_input, cache_write)


def cost_usd(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    """The cost of one response, or ``None`` when the model's price is unknown.

    ``input_tokens`` includes ``cached_tokens`` (read from the cache, charged at the cached
    price) and ``cache_write_tokens`` (written to it, at the cache-write price).
    A dated model name (``gpt-4.1-mini-2025-04-14``) falls back to its undated price.
    """
    price = PRICES.get(model) or _undated(model)
    if price is None:
        return None
    cached = min(cached_tokens, input_tokens)
    written = min(cache_write_tokens, input_tokens - cached)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    total = (input_tokens - cached - written) * price.input + cached * cached_rate
    total += written * write_rate
    total += output_tokens * price.output
    return total / 1_000_000


_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def _undated(model: str) -> Price | None:
    """``gpt-4.1-mini-2025-04-14`` -> the price of ``gpt-4.1-mini``; only a date is dropped
    (``o3-pro`` is not ``o3``)."""
    undated = _DATE_SUFFIX.sub("", model)
    return PRICES.get(undated) if undated != model else None

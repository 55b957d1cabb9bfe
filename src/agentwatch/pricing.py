"""Cost in USD from a bundled price table (``data/prices.json``), cache aware.

Unknown models get no cost at all (``None``), never 0: a zero would hide spend
on dashboards. The table can be extended or overridden from configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

_PER = 1_000_000.0


@lru_cache(maxsize=1)
def bundled_prices() -> dict[str, dict[str, float]]:
    text = resources.files("agentwatch").joinpath("data/prices.json").read_text("utf-8")
    models = json.loads(text)["models"]
    return {name: {k: float(v) for k, v in entry.items()} for name, entry in models.items()}


class PriceTable:
    """Looks up a model by exact name, else by the longest known prefix (dated snapshots)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        table = dict(bundled_prices())
        for name, entry in (overrides or {}).items():
            table[name] = {**table.get(name, {}), **{k: float(v) for k, v in entry.items()}}
        self._table = table
        # longest first, so "gpt-4o-mini-2024-07-18" matches gpt-4o-mini, not gpt-4o
        self._prefixes = sorted(table, key=len, reverse=True)
        self._resolved: dict[str, dict[str, float] | None] = {}

    def lookup(self, model: str | None) -> dict[str, float] | None:
        if not model:
            return None
        try:
            return self._resolved[model]
        except KeyError:
            pass
        name = model.lower()
        if "/" in name:  # provider-qualified names such as "openai/gpt-4o"
            name = name.rsplit("/", 1)[1]
        entry = self._table.get(name)
        if entry is None:
            for prefix in self._prefixes:
                if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1] in ("-", "@", ":", "."):
                    entry = self._table[prefix]
                    break
        if len(self._resolved) < 4096:
            self._resolved[model] = entry
        return entry

    def cost(
        self,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> float | None:
        """USD for one call. ``input_tokens`` includes cached and cache-creation tokens (GenAI rule)."""
        entry = self.lookup(model)
        if entry is None or (input_tokens is None and output_tokens is None):
            return None
        cached = cache_read_tokens or 0
        written = cache_write_tokens or 0
        fresh = max((input_tokens or 0) - cached - written, 0)
        in_price = entry.get("input", 0.0)
        total = (
            fresh * in_price
            + cached * entry.get("cache_read", in_price)
            + written * entry.get("cache_write", in_price)
            + (output_tokens or 0) * entry.get("output", 0.0)
        )
        return round(total / _PER, 10)

"""Cost in USD from a bundled price table (``data/prices.json``), cache aware.

Unknown models get no cost at all (``None``), never 0: a zero would hide spend
on dashboards. A model resolves only by its exact name or as a dated snapshot
of a listed model (``gpt-4o-2024-08-06`` is ``gpt-4o``; ``claude-3-5-sonnet-20241022``
is ``claude-3-5-sonnet``): a name that merely starts like a listed one
(``gpt-5.4``, ``o3-pro``, ``claude-opus-4-6``) is another model at another price,
so it gets no cost, and is counted and logged once. The table can be extended
or overridden from configuration; ``as_of`` says when its prices were checked.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

_PER = 1_000_000.0
_log = logging.getLogger("agentwatch")

# What may follow a listed name in a snapshot of that very model: a date
# (OpenAI -2024-08-06, Anthropic -20241022, Vertex @20241022) or the "latest" alias.
_SNAPSHOT = re.compile(r"(.+?)[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|latest)")


@lru_cache(maxsize=1)
def _bundled() -> dict[str, Any]:
    text = resources.files("agentwatch").joinpath("data/prices.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def bundled_prices() -> dict[str, dict[str, float]]:
    models = _bundled()["models"]
    return {name: {k: float(v) for k, v in entry.items()} for name, entry in models.items()}


def bundled_as_of() -> str:
    """When the bundled prices were last checked against the providers' price lists (ISO date)."""
    return str(_bundled()["as_of"])


class PriceTable:
    """Looks up a model by exact name, else as a dated snapshot of a listed name."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        table = dict(bundled_prices())
        for name, entry in (overrides or {}).items():
            table[name] = {**table.get(name, {}), **{k: float(v) for k, v in entry.items()}}
        self._table = table
        self._resolved: dict[str, dict[str, float] | None] = {}
        self.as_of = bundled_as_of()
        self.unpriced: dict[str, int] = {}  # model -> calls that got no cost


    def lookup(self, model: str | None) -> dict[str, float] | None:
        if not model:
            return None
        try:
            return self._resolved[model]
        except KeyError:
            pass
        entry = self._resolve(model)
        if len(self._resolved) < 4096:
            self._resolved[model] = entry
        return entry

    def _resolve(self, model: str) -> dict[str, float] | None:
        name = model.lower()
        if "/" in name:  # provider-qualified names such as "openai/gpt-4o"
            name = name.rsplit("/", 1)[1]
        entry = self._table.get(name)
        if entry is not None:
            return entry
        match = _SNAPSHOT.fullmatch(name)
        if match is not None:
            return self._table.get(match.group(1))
        return None

    def _unpriced(self, model: str | None) -> None:
        """Count a call that gets no cost; say so once per model."""
        key = str(model or "")
        seen = self.unpriced.get(key)
        if seen is None:
            if len(self.unpriced) >= 4096:
                return
            _log.warning(
                "agentwatch: no price for model %r; its calls get no agentwatch.cost_usd "
                "(add it under agent.prices in agentwatch.yaml)", key,
            )
            seen = 0
        self.unpriced[key] = seen + 1

    def cost(
        self,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> float | None:
        """USD for one call. ``input_tokens`` includes cached and cache-creation tokens (GenAI rule)."""
        if input_tokens is None and output_tokens is None:
            return None
        entry = self.lookup(model)
        if entry is None:
            self._unpriced(model)
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

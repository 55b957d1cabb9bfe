"""The settings every detector reads, resolved once from :class:`~agentwatch.config.Config`.

A context is shared by everything that evaluates with the same configuration;
:meth:`Context.fork` gives a whole-trace evaluation its own counters while it
reuses the compiled regexes and validator caches.
"""

from __future__ import annotations

from ..config import Config
from ..pricing import PriceTable
from .entities import EntityExtractor, normalise_type
from .schema import SchemaChecker
from .severity import Flagger
from .state import Stats

_CACHE_MAX = 4096


class Context:
    """Thresholds, switches, compiled helpers and counters for one evaluation state."""

    __slots__ = (
        "_denials",
        "_side_effects",
        "_types",
        "config",
        "cycle_repeats",
        "cycle_window",
        "extractor",
        "flagger",
        "idempotency_keys",
        "loop_threshold",
        "max_calls",
        "max_entities",
        "no_progress",
        "policy_active",
        "prices",
        "retry_threshold",
        "schemas",
        "side_effect_globs",
        "spike_factor",
        "spike_min",
        "stats",
    )

    def __init__(self, config: Config, *, _from: Context | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.flagger: Flagger
        self.extractor: EntityExtractor
        self.schemas: SchemaChecker
        self._denials: dict[str, str | None]
        self._side_effects: dict[str, bool]
        self._types: dict[str, str]
        self.prices: PriceTable
        if _from is not None:
            self.prices = _from.prices
            self.flagger = _from.flagger
            self.extractor = _from.extractor
            self.schemas = _from.schemas
            self._denials = _from._denials
            self._side_effects = _from._side_effects
            self._types = _from._types
        else:
            self.prices = PriceTable(config.prices)
            self.flagger = Flagger(config.anomaly)
            self.extractor = EntityExtractor(config.entities)
            self.schemas = SchemaChecker()
            self._denials = {}
            self._side_effects = {}
            self._types = {}
        loop = config.loop
        self.loop_threshold = max(1, int(loop.repeated_calls_threshold))
        self.cycle_repeats = max(2, int(loop.cycle_repeats))
        self.cycle_window = 4 * self.cycle_repeats  # the longest cycle (4 calls) times its repeats
        self.no_progress = max(1, int(loop.no_progress_threshold))
        an = config.anomaly
        self.spike_factor = float(an.token_spike_factor)
        self.spike_min = max(0, int(an.token_spike_min_history))
        self.retry_threshold = max(1, int(an.retry_storm_threshold))
        lim = config.limits
        self.max_calls = max(4, int(lim.max_calls_per_run))
        self.max_entities = max(4, int(lim.max_entities_per_run))
        tools = config.tools
        self.policy_active = bool(tools.allow or tools.deny)
        self.side_effect_globs = bool(tools.side_effects)
        self.idempotency_keys = frozenset(tools.idempotency_keys)

    def fork(self) -> Context:
        """Same settings and caches, fresh counters."""
        return Context(self.config, _from=self)

    def denial(self, tool: str) -> str | None:
        """Why the allow/deny lists forbid ``tool`` (cached per name), else ``None``."""
        cache = self._denials
        try:
            return cache[tool]
        except KeyError:
            pass
        reason = self.config.tools.denial(tool)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[tool] = reason
        return reason

    def is_side_effect(self, tool: str) -> bool:
        """Does the configuration mark ``tool`` as a write (``agent.tools.side_effects`` globs)?"""
        if not self.side_effect_globs:
            return False
        cache = self._side_effects
        hit = cache.get(tool)
        if hit is None:
            hit = self.config.tools.is_side_effect(tool)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[tool] = hit
        return hit

    def entity_type(self, name: str) -> str:
        """Normalised entity type (``customer_id`` -> ``customer``), cached."""
        cache = self._types
        hit = cache.get(name)
        if hit is None:
            hit = normalise_type(name)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[name] = hit
        return hit

"""What every SDK adapter (processor, exporter) builds from its arguments, built in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import Config, load_config
from ..engine.entities import EntityExtractor
from .normalize import records_extractor
from .reporting import FindingReporter, OnAnomaly

if TYPE_CHECKING:
    from ..engine.engine import Engine


class Detection(NamedTuple):
    config: Config
    engine: Engine
    extractor: EntityExtractor
    reporter: FindingReporter


def detection(config: Any, engine: Engine | None, on_anomaly: OnAnomaly | None, meter_provider: Any) -> Detection:
    """Resolve the configuration and build the engine, entity extractor and finding reporter."""
    resolved = load_config(config)
    if engine is None:
        from ..engine.engine import Engine

        engine = Engine(resolved)
    return Detection(
        resolved,
        engine,
        records_extractor(engine, resolved),  # the engine's patterns, even when the engine was passed in
        FindingReporter(meter_provider, on_anomaly, log=resolved.anomaly.log_findings),
    )

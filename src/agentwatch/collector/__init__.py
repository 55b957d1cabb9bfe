"""agentwatch-collector: receive OTLP, decide whole traces with the detector engine, forward tagged spans."""

from .app import Collector
from .config import CollectorConfig, build_collector_config, load_collector_config

__all__ = ["Collector", "CollectorConfig", "build_collector_config", "load_collector_config"]

"""Container entrypoint for the demo agent: export metrics too, then run examples/demo_agent.py.

demo_agent.py sets up tracing only. This installs a global OTLP MeterProvider first
(endpoint, interval and service name from the standard OTEL_* variables), so
agentwatch's counters (agentwatch.runs, agentwatch.anomalies, gen_ai.client.token.usage)
reach otelcol and, from there, Prometheus and the Grafana dashboard.
"""

import runpy
import sys
from pathlib import Path

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

DEMO = Path(__file__).resolve().parents[1] / "demo_agent.py"

provider = MeterProvider(
    resource=Resource.create(), metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
)
metrics.set_meter_provider(provider)
sys.argv = [str(DEMO), *sys.argv[1:]]
try:
    runpy.run_path(str(DEMO), run_name="__main__")
finally:
    provider.shutdown()

"""Detector engine: pure Python, knows nothing of OpenTelemetry types."""

"""Adapters between OpenTelemetry spans and the detector engine."""

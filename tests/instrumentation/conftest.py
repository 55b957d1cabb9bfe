from tests.telemetry import telemetry  # noqa: F401  (fixture)

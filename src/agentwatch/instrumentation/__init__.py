"""``agentwatch.instrument()`` and the ``opentelemetry-instrument`` entry point.

Each supported library has one module here exposing ``patch()``; a library
that is not installed is skipped silently. Patching is idempotent, and every
wrapper checks the runtime switch first, so wrappers cached by the SDKs (for
example bound methods behind ``with_raw_response``) are inert after
:func:`uninstrument`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from .. import _runtime
from ._calls import configure_semconv

logger = logging.getLogger("agentwatch")

# agentwatch modules, in patch order; each has ``patch() -> object with install/uninstall``.
PATCH_MODULES = ("openai", "anthropic", "mcp", "openai_agents", "langchain")


class Instrumentor(BaseInstrumentor):  # type: ignore[misc]
    """The ``agentwatch`` instrumentor (entry point group ``opentelemetry_instrumentor``)."""

    _patches: list[Any] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        # Every client library is optional; each patch checks for its own.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        _runtime.configure(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            config=kwargs.get("config"),
            on_anomaly=kwargs.get("on_anomaly"),
        )
        _runtime.active = True
        configure_semconv()
        patches: list[Any] = []
        for name in PATCH_MODULES:
            try:
                module = importlib.import_module(f"{__name__}.{name}")
            except ImportError:
                continue  # module not written for this build
            try:
                patch = module.patch()
                patch.install()
                if getattr(patch, "installed", True):
                    patches.append(patch)
            except Exception as err:  # one broken integration must not stop the others
                logger.warning("agentwatch: could not instrument %s: %r", name, err)
        Instrumentor._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        for patch in Instrumentor._patches:
            try:
                patch.uninstall()
            except Exception as err:
                logger.warning("agentwatch: could not remove patch %r: %r", patch, err)
        Instrumentor._patches = []
        _runtime.active = False


def _disabled_by_env() -> bool:
    names = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return "agentwatch" in {n.strip() for n in names.split(",")}


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None, config: Any = None,
               on_anomaly: Any = None) -> None:
    """Patch every supported client that is importable. Idempotent.

    ``config`` is a :class:`agentwatch.config.Config`, a mapping in the seed-004
    shape, or a YAML path; ``on_anomaly(finding, context)`` is called for each
    new finding of the inline detectors. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
    containing ``agentwatch`` turns this into a no-op. Calling it again patches
    nothing twice but takes the providers passed (keeping the earlier ones for
    those left out) and resolves the configuration again.
    """
    if _disabled_by_env():
        logger.info("agentwatch: disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
        return
    instrumentor = Instrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        _runtime.reconfigure(
            tracer_provider=tracer_provider, meter_provider=meter_provider, config=config, on_anomaly=on_anomaly
        )
        _runtime.active = True
        return
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, config=config, on_anomaly=on_anomaly
    )


def uninstrument() -> None:
    """Remove every patch; calls made after it produce no agentwatch spans."""
    Instrumentor().uninstrument()
    _runtime.active = False

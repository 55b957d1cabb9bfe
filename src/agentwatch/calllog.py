"""Seed 004's "minimum structured logs": one record per tool call and per run.

With ``agent.logging.structured: true`` every finished tool call and run is
also logged on the ``agentwatch.calls`` logger at INFO: the message is one
JSON object with the fields listed in ``agent.logging.include`` (all of them
when the list is absent), and the same fields ride along as ``extra`` so an
OpenTelemetry logging handler exports them as log attributes. The fields are
names, ids, hashes, counts and outcomes; nothing from a prompt, argument or
result, and every string passes the redactor. ``agent.logging.level`` sets the
level of agentwatch's own loggers (``agentwatch`` and below).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from .redaction import redact_text

logger = logging.getLogger("agentwatch.calls")

TOOL_FIELDS = (
    "run_id", "trace_id", "span_id", "step", "tool", "args_hash", "elapsed_s", "status", "error_class", "attempt",
)
RUN_FIELDS = (
    "run_id", "trace_id", "span_id", "agent", "stop_reason", "failure_mode", "steps", "tool_calls", "llm_calls",
    "elapsed_s", "cost_usd", "flags",
)
FIELDS = tuple(dict.fromkeys((*TOOL_FIELDS, *RUN_FIELDS)))
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def apply_level(level: str | None) -> None:
    if level is not None:
        logging.getLogger("agentwatch").setLevel(LEVELS[level])


def emit(kind: str, values: Mapping[str, Any], include: tuple[str, ...] | None) -> None:
    """Log one structured record (``kind`` is ``tool_call`` or ``run``) with the included fields."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {"event": kind}
    for name, value in values.items():
        if value is None or (include is not None and name not in include):
            continue
        fields[name] = redact_text(value) if isinstance(value, str) else value
    logger.info(json.dumps(fields, separators=(",", ":"), default=str), extra={"agentwatch": fields})

"""Runs across traces: spans of one conversation that no run span holds (contract §8).

Without a run span, a zero-code agent makes one trace per LLM call; the
instrumentation (or the user) names the conversation in
``gen_ai.conversation.id``. Out of process, the exporter and the collector
decide trace by trace with private state, so such spans are taken out of the
per-trace evaluation and fed, in start order, to one streaming engine whose
runs are conversations (run key ``conversation:<id>``). That engine's run table
is bounded like any other: ``agent.limits.max_runs`` conversations (least
recently used evicted), each forgotten after ``agent.limits.run_ttl_seconds``
idle, evictions counted in its ``runs_evicted`` / ``runs_expired`` stats.

Only LLM and tool spans join a conversation, and only when no run span is
among their ancestors in the batch: inside a run, the run decides. A span
without ``gen_ai.conversation.id`` costs one dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import semconv as sc
from ..config import Config
from ..engine.engine import Engine
from ..engine.record import Finding, Kind, SpanRecord
from ..implicit import KEY_PREFIX

__all__ = ["ConversationRuns", "conversation_key", "unheld"]

_CONVERSATION = sc.GEN_AI_CONVERSATION_ID
_MAX_ID_CHARS = 256
_MAX_DEPTH = 256


def conversation_key(attrs: Mapping[str, Any]) -> str | None:
    """The engine run key for a span's ``gen_ai.conversation.id``, if it has one."""
    value = attrs.get(_CONVERSATION)
    if value.__class__ is not str or not value:
        return None
    return KEY_PREFIX + value[:_MAX_ID_CHARS]


def unheld(records: Sequence[SpanRecord], keys: Mapping[int, str]) -> dict[int, str]:
    """Of ``keys`` (record index -> conversation run key), the LLM and tool spans no run span holds."""
    if not keys:
        return {}
    by_id = {r.span_id: r for r in records}
    out: dict[int, str] = {}
    for index, key in keys.items():
        record = records[index]
        if record.kind is not Kind.LLM and record.kind is not Kind.TOOL:
            continue
        node = record
        held = False
        for _ in range(_MAX_DEPTH):  # parent links may form cycles
            parent = by_id.get(node.parent_id) if node.parent_id else None
            if parent is None:
                break
            if parent.kind is Kind.RUN:
                held = True
                break
            node = parent
        if not held:
            out[index] = key
    return out


class ConversationRuns:
    """One streaming engine for conversations that span traces (thread-safe: the engine locks)."""

    def __init__(self, config: Config) -> None:
        self.engine = Engine(config)
        self._lock = threading.Lock()
        self.spans = 0  # spans evaluated as part of a conversation

    def evaluate(self, members: Sequence[tuple[SpanRecord, str]]) -> dict[str, list[Finding]]:
        """Feed ``(record, run key)`` pairs in start order; the findings by span id."""
        found: dict[str, list[Finding]] = {}
        ordered = sorted(members, key=lambda m: (m[0].start_ns if m[0].start_ns.__class__ is int else 0))
        process = self.engine.process
        for record, key in ordered:
            findings = process(replace(record, run_key=key, parent_run_key=None))
            if findings:
                found.setdefault(record.span_id, []).extend(findings)
        with self._lock:
            self.spans += len(ordered)
        return found

    @property
    def stats(self) -> dict[str, int]:
        """``spans`` grouped so far, plus the engine's counters (``runs_open``, ``runs_evicted`` ...)."""
        out = dict(self.engine.stats)
        out["spans"] = self.spans
        return out

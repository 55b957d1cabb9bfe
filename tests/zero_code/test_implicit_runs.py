"""Zero-code agents get run-level detection (contract §8): no ``agentwatch.run``, no tracing code.

``loop_app.py`` runs a bare OpenAI tool loop under the real ``opentelemetry-instrument``;
every chat call is its own trace. agentwatch groups the calls of each conversation into
an implicit run, so the repeated request and the invented id are flagged — in process
(the instrumentor's live detectors), and again by the collector from the traces alone
(the app's own detection switched off, only ``gen_ai.conversation.id`` on the spans).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.collector.helpers import HttpSink, Received, start_collector, wait_until

from .test_opentelemetry_instrument import run_app

pytest.importorskip("opentelemetry.distro")
APP = Path(__file__).with_name("loop_app.py")
CHAT_CALLS = 7


def _chats(sink: HttpSink) -> list[Received]:
    def ready() -> list[Received] | None:
        chats = [s for s in sink.received() if s.name.startswith("chat")]
        return chats if len(chats) >= CHAT_CALLS else None

    chats = wait_until(ready, timeout=20)
    return sorted(chats, key=lambda r: r.span.start_time_unix_nano)


def _check(chats: list[Received]) -> None:
    assert len(chats) == CHAT_CALLS
    assert len({c.span.trace_id for c in chats}) == CHAT_CALLS  # each call its own trace
    loop, invented = chats[:4], chats[4:]
    conversations = [c.attrs.get("gen_ai.conversation.id") for c in chats]
    assert len(set(conversations[:4])) == 1 and len(set(conversations[4:])) == 1
    assert conversations[0] != conversations[4] and None not in conversations
    assert all(c.attrs.get("agentwatch.run.implicit") is True for c in chats)
    # flagged on the call that was sent the third identical result (the tools leave no span)
    assert [("LOOP_DETECTED" in c.flags) for c in loop] == [False, False, False, True]
    # cancel_order(ord_2) is grounded by the question two traces earlier; ord_888 never appeared.
    assert [("ENTITY_HALLUCINATION" in c.flags) for c in invented] == [False, False, True]


def _env(endpoint: str, **extra: str) -> dict[str, Any]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        **extra,
    }


def test_flagged_in_process() -> None:
    sink = HttpSink()
    try:
        done = run_app(_env(sink.url), APP)
        assert done.returncode == 0, done.stderr[-3000:]
        assert '"ok": true' in done.stdout
        chats = _chats(sink)
    finally:
        sink.stop()
    _check(chats)


def test_flagged_by_the_collector() -> None:
    sink = HttpSink()
    collector = start_collector(sink.url, "http/protobuf")
    try:
        endpoint = f"http://127.0.0.1:{collector.http_port}/v1/traces"
        # The app only groups and names conversations; every flag below is the collector's.
        done = run_app(_env(endpoint, AGENTWATCH_INLINE_DETECTION="false"), APP)
        assert done.returncode == 0, done.stderr[-3000:]
        chats = _chats(sink)
        conversations = collector.stats.extra["conversations"]()
    finally:
        collector.shutdown(timeout=2)
        sink.stop()
    _check(chats)
    assert conversations["spans"] == CHAT_CALLS and conversations["runs_open"] == 2


def test_inline_off_leaves_flags_to_others() -> None:
    """Guard for the collector test: with inline detection off, the app itself flags nothing."""
    sink = HttpSink()
    try:
        done = run_app(_env(sink.url, AGENTWATCH_INLINE_DETECTION="false"), APP)
        assert done.returncode == 0, done.stderr[-3000:]
        chats = _chats(sink)
    finally:
        sink.stop()
    assert not any(c.flags for c in chats)
    assert len({c.attrs.get("gen_ai.conversation.id") for c in chats}) == 2

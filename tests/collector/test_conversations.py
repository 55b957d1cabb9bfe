"""The collector decides per trace; a conversation spanning traces is still one run (contract §8)."""

from __future__ import annotations

import time
from typing import Any

from .helpers import capture, export, http_exporter, wait_until

LOOP_ARGS = "c" * 16


def _one_call_trace(tracer_for: Any, conversation: str | None, at: int) -> None:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_order",
        "agentwatch.tool.args_hash": LOOP_ARGS,
        "agentwatch.tool.result_hash": "d" * 16,
    }
    if conversation is not None:
        attrs["gen_ai.conversation.id"] = conversation
    span = tracer_for("agent-app").start_span("execute_tool get_order", attributes=attrs, start_time=at)
    span.end(end_time=at + 1000)


def _send_traces(collector: Any, sink: Any, conversations: list[str | None]) -> list[Any]:
    """Each call is its own trace, sent and decided before the next one is sent."""
    exporter = http_exporter(collector)
    t0 = time.time_ns()
    for i, conversation in enumerate(conversations):
        spans = capture(lambda tracer_for, c=conversation, i=i: _one_call_trace(tracer_for, c, t0 + i * 10_000))
        export(exporter, spans)
        wait_until(lambda n=i + 1: sink.count() >= n or None)
    exporter.shutdown()
    received = sink.received()
    return sorted(received, key=lambda r: r.span.start_time_unix_nano)


def test_loop_across_traces_of_one_conversation(http_sink, collectors):
    collector = collectors(http_sink.url, "http/protobuf")
    received = _send_traces(collector, http_sink, ["conv-7"] * 4)
    assert len({r.span.trace_id for r in received}) == 4
    assert [r.flags for r in received] == [(), (), ("LOOP_DETECTED",), ("LOOP_DETECTED",)]
    conversations = collector.stats.extra["conversations"]()
    assert conversations["spans"] == 4 and conversations["runs_open"] == 1


def test_without_a_conversation_id_traces_stay_apart(http_sink, collectors):
    collector = collectors(http_sink.url, "http/protobuf")
    received = _send_traces(collector, http_sink, [None] * 4)
    assert [r.flags for r in received] == [()] * 4
    assert collector.stats.extra["conversations"]() == {}  # never built: no cost without the attribute


def test_conversation_runs_are_bounded(http_sink, collectors):
    collector = collectors(
        http_sink.url, "http/protobuf", detection={"agent": {"limits": {"max_runs": 2}}}
    )
    _send_traces(collector, http_sink, [f"conv-{i}" for i in range(4)])
    conversations = collector.stats.extra["conversations"]()
    assert conversations["runs_open"] == 2 and conversations["runs_evicted"] == 2

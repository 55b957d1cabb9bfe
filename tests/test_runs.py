"""``agentwatch.run`` / ``phase``: span shape, stop reasons, decorators, nesting."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import agentwatch
from agentwatch import semconv as sc
from tests.telemetry import Telemetry


def test_run_span_shape(telemetry: Telemetry) -> None:
    with agentwatch.run(
        "support", entities={"customer": "cust_789"}, conversation_id="conv_1", attributes={"tenant": "acme"}
    ) as run:
        assert run.run_id.startswith("run_")
        with agentwatch.phase("plan"):
            pass
    run_span = telemetry.runs()[0]
    phase_span = telemetry.named("plan")[0]
    attrs = run_span.attributes
    assert run_span.name == "invoke_agent support"
    assert run_span.kind is SpanKind.INTERNAL
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert attrs[sc.GEN_AI_AGENT_NAME] == "support"
    assert attrs[sc.RUN_ID] == run.run_id
    assert attrs["agentwatch.run.entity.customer"] == "cust_789"
    assert attrs[sc.GEN_AI_CONVERSATION_ID] == "conv_1"
    assert attrs["tenant"] == "acme"
    assert attrs[sc.RUN_STOP_REASON] == "success"
    assert attrs[sc.RUN_FAILURE_MODE] == "completed"
    assert attrs[sc.RUN_STEPS] == 0
    assert attrs[sc.RUN_ANOMALY_COUNT] == 0
    assert attrs[sc.RUN_ANOMALY_FLAGS] == ()
    assert sc.RUN_FAULT_ORIGIN_SPAN_ID not in attrs
    assert phase_span.attributes[sc.PHASE] == "plan"
    assert phase_span.parent.span_id == run_span.context.span_id


def test_explicit_stop_wins(telemetry: Telemetry) -> None:
    with agentwatch.run("a") as run:
        run.stop(agentwatch.StopReason.NO_PROGRESS, "gave up after 6 empty searches")
    attrs = telemetry.runs()[0].attributes
    assert attrs[sc.RUN_STOP_REASON] == "no_progress"
    assert attrs[sc.RUN_STOP_DETAIL] == "gave up after 6 empty searches"
    assert attrs[sc.RUN_FAILURE_MODE] == "cost_blowup"
    assert telemetry.runs()[0].status.status_code is StatusCode.ERROR


def test_exception_is_classified_and_reraised(telemetry: Telemetry) -> None:
    err = ValueError("bad")
    with pytest.raises(ValueError) as caught, agentwatch.run("a"):
        raise err
    assert caught.value is err
    span = telemetry.runs()[0]
    assert span.attributes[sc.RUN_STOP_REASON] == "internal_error"
    assert span.attributes[sc.ERROR_TYPE] == "ValueError"
    assert span.status.status_code is StatusCode.ERROR


def test_stop_run_subclass_carries_reason(telemetry: Telemetry) -> None:
    with pytest.raises(agentwatch.StopRun), agentwatch.run("a"):
        raise agentwatch.StopRun("input rejected", stop_reason="invalid_input")
    assert telemetry.runs()[0].attributes[sc.RUN_STOP_REASON] == "invalid_input"


def test_cancelled(telemetry: Telemetry) -> None:
    async def main() -> None:
        async with agentwatch.run("a"):
            await asyncio.sleep(10)

    async def runner() -> None:
        task = asyncio.create_task(main())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    assert telemetry.runs()[0].attributes[sc.RUN_STOP_REASON] == "cancelled"


def test_decorators_sync_and_async(telemetry: Telemetry) -> None:
    @agentwatch.run("sync-agent")
    def sync_agent(x: int) -> int:
        return x + 1

    @agentwatch.run("async-agent")
    async def async_agent(x: int) -> int:
        with agentwatch.phase("execute"):
            return x * 2

    @agentwatch.phase("validate")
    def validate() -> bool:
        return True

    assert sync_agent(1) == 2
    assert sync_agent(2) == 3  # each call is a fresh run
    assert asyncio.run(async_agent(3)) == 6
    assert validate() is True
    names = sorted(s.name for s in telemetry.runs())
    assert names == ["invoke_agent async-agent", "invoke_agent sync-agent", "invoke_agent sync-agent"]
    assert len({s.attributes[sc.RUN_ID] for s in telemetry.runs()}) == 3


def test_nested_runs_link_and_roll_up(telemetry: Telemetry) -> None:
    @agentwatch.tool("t")
    def t() -> int:
        return 1

    with agentwatch.run("outer"):
        t()
        with agentwatch.run("inner"):
            t()
            t()
    spans = {s.attributes[sc.GEN_AI_AGENT_NAME]: s for s in telemetry.runs()}
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["outer"].attributes[sc.RUN_TOOL_CALLS] == 3
    assert spans["outer"].attributes[sc.RUN_STEPS] == 3
    assert spans["inner"].attributes[sc.RUN_TOOL_CALLS] == 2


def test_runs_metric(telemetry: Telemetry) -> None:
    with agentwatch.run("m"):
        pass
    points = telemetry.metric_points(sc.METRIC_RUNS)
    assert points and points[0].attributes[sc.RUN_STOP_REASON] == "success"


def test_time_budget_flag_on_run(telemetry: Telemetry) -> None:
    import time

    with agentwatch.run("slow", budget=agentwatch.Budget(max_seconds=0.05)):
        time.sleep(0.1)
    attrs = telemetry.runs()[0].attributes
    assert "TIME_BUDGET_EXCEEDED" in attrs.get(sc.ANOMALY_FLAGS, ())

"""The tool gateway on real ``@agentwatch.tool`` functions: every §6 behaviour, sync and async."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.gateway.safe_mode import SWITCH


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code



def _flags(span: Any) -> tuple[str, ...]:
    return tuple(span.attributes.get(sc.ANOMALY_FLAGS, ()))


# --------------------------------------------------------------------------- idempotency


class TicketAPI:
    """A ticket backend that creates the ticket, then loses the response (seed 004's 502)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.calls = 0
        self.fail_first = fail_first

    def create(self, title: str, idempotency_key: str | None = None) -> dict[str, Any]:
        self.calls += 1
        if idempotency_key is not None and idempotency_key in self.by_key:
            ticket_id = self.by_key[idempotency_key]
        else:
            ticket_id = f"T-{len(self.tickets) + 1}"
            self.tickets[ticket_id] = {"title": title}
            if idempotency_key is not None:
                self.by_key[idempotency_key] = ticket_id
        if self.calls <= self.fail_first:
            raise HTTPError(502)  # created, but the caller never hears of it
        return {"ticket_id": ticket_id}


def test_seed_004_incident_without_the_gateway_creates_duplicates(gateway: Any) -> None:
    tel = gateway({})
    api = TicketAPI(fail_first=2)

    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str) -> dict[str, Any]:
        return api.create(title)

    with agentwatch.run("support"):
        for _ in range(3):  # the agent "helpfully" retries the write
            try:
                create_ticket("printer on fire")
                break
            except HTTPError:
                continue
    assert len(api.tickets) == 3
    assert any("DUPLICATE_SIDE_EFFECT" in _flags(s) for s in tel.tools())


def test_seed_004_incident_with_the_gateway_creates_one_ticket(gateway: Any) -> None:
    tel = gateway({
        "tools": {
            "idempotency_required": ["ticket.create"],
            "retries": {"max_attempts": 3, "retryable_status": [502, 503], "backoff_ms": [1, 1]},
        }
    })
    api = TicketAPI(fail_first=2)

    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return api.create(title, idempotency_key)

    with agentwatch.run("support") as run:
        first = create_ticket("printer on fire")
        again = create_ticket("printer on fire")  # the agent asks a second time: answered, not run
    assert len(api.tickets) == 1
    assert first == again == {"ticket_id": "T-1"}
    spans = tel.tools()
    assert [s.attributes[sc.TOOL_ATTEMPT] for s in spans[:3]] == [1, 2, 3]
    key = spans[0].attributes[sc.TOOL_IDEMPOTENCY_KEY_VALUE]
    assert key == f"{run.run_id}:ticket.create:{spans[0].attributes[sc.TOOL_ARGS_HASH]}"
    assert all(s.attributes[sc.TOOL_IDEMPOTENCY_KEY_VALUE] == key for s in spans)
    assert spans[3].attributes[sc.TOOL_DEDUPLICATED] is True
    assert api.calls == 3  # the dedupe answered without calling the API
    assert not any("DUPLICATE_SIDE_EFFECT" in _flags(s) for s in spans)


def test_a_write_without_a_key_is_not_retried(gateway: Any) -> None:
    tel = gateway({"tools": {"retries": {"max_attempts": 3, "retryable_status": [502], "backoff_ms": [1]}}})
    api = TicketAPI(fail_first=5)

    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str) -> dict[str, Any]:
        return api.create(title)

    with pytest.raises(HTTPError), agentwatch.run("support"):
        create_ticket("x")
    assert api.calls == 1
    assert len(tel.tools()) == 1


def test_a_supplied_key_is_kept_and_deduplicates(gateway: Any) -> None:
    tel = gateway({"tools": {"idempotency_required": ["ticket.*"]}})
    calls: list[str | None] = []

    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str, idempotency_key: str | None = None) -> str:
        calls.append(idempotency_key)
        return "T-9"

    with agentwatch.run("support"):
        create_ticket("a", idempotency_key="client-key-1")
        create_ticket("a", idempotency_key="client-key-1")
    assert calls == ["client-key-1"]
    assert [s.attributes[sc.TOOL_IDEMPOTENCY_KEY_VALUE] for s in tel.tools()] == ["client-key-1"] * 2


def test_a_tool_that_cannot_take_a_key_is_reported_once(gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agentwatch.gateway"):
        gateway({"tools": {"idempotency_required": ["email.send"]}})

        @agentwatch.tool("email.send", side_effect=True)
        def send(to: str) -> str:
            return "sent"

        @agentwatch.tool("email.send", side_effect=True)
        def send_again(to: str) -> str:
            return "sent"

    messages = [r.getMessage() for r in caplog.records if "email.send" in r.getMessage()]
    assert len(messages) == 1 and "idempotency" in messages[0]


# --------------------------------------------------------------------------- retries


def test_retries_only_retryable_statuses(gateway: Any) -> None:
    tel = gateway({"tools": {"retries": {"max_attempts": 4, "retryable_status": [429, 503], "backoff_ms": [1]}}})
    failures = [HTTPError(503), HTTPError(429), HTTPError(400)]

    @agentwatch.tool("search.read")
    def search(q: str) -> str:
        raise failures.pop(0)

    with pytest.raises(HTTPError) as caught, agentwatch.run("research"):
        search("x")
    assert caught.value.status_code == 400  # the caller sees the last outcome, unchanged
    spans = tel.tools()
    assert [s.attributes[sc.TOOL_ATTEMPT] for s in spans] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)


def test_user_exceptions_are_never_retried(gateway: Any) -> None:
    gateway({"tools": {"retries": {"max_attempts": 5, "backoff_ms": [1]}}})
    calls = 0

    @agentwatch.tool("kb.read")
    def read(doc: str) -> str:
        nonlocal calls
        calls += 1
        raise KeyError(doc)

    with pytest.raises(KeyError):
        read("missing")
    assert calls == 1


def test_backoff_waits_between_attempts(gateway: Any) -> None:
    gateway({"tools": {"retries": {"max_attempts": 3, "retryable_status": [503], "backoff_ms": [60, 120]}}})
    stamps: list[float] = []

    @agentwatch.tool("search.read")
    def search(q: str) -> str:
        stamps.append(time.monotonic())
        raise HTTPError(503)

    with pytest.raises(HTTPError):
        search("x")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.055 and gaps[1] >= 0.115


async def test_async_retry_then_success(gateway: Any) -> None:
    tel = gateway({"tools": {"retries": {"max_attempts": 3, "retryable_status": [503], "backoff_ms": [1]}}})
    outcomes: list[Any] = [HTTPError(503), "ok"]

    @agentwatch.tool("search.read")
    async def search(q: str) -> str:
        await asyncio.sleep(0)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with agentwatch.run("research"):
        assert await search("x") == "ok"
    assert [s.attributes[sc.TOOL_ATTEMPT] for s in tel.tools()] == [1, 2]


# --------------------------------------------------------------------------- timeouts


def test_sync_tool_timeout(gateway: Any) -> None:
    tel = gateway({"tools": {"timeouts_s": {"default": 5, "slow.tool": 0.1}}})
    release = threading.Event()

    @agentwatch.tool("slow.tool")
    def slow() -> str:
        release.wait(5)
        return "late"

    started = time.monotonic()
    with pytest.raises(TimeoutError), agentwatch.run("r") as run:
        slow()
    release.set()
    assert time.monotonic() - started < 2
    (span,) = tel.tools()
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "timeout"
    assert span.attributes[sc.TOOL_TIMEOUT_S] == 0.1
    assert span.end_time is not None
    run_span = tel.runs()[0]
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_timeout"
    assert run.run_id


async def test_async_tool_timeout_cancels(gateway: Any) -> None:
    gateway({"tools": {"timeouts_s": {"default": 0.05}}})
    cancelled = asyncio.Event()

    @agentwatch.tool("slow.async")
    async def slow() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    with pytest.raises(TimeoutError):
        await slow()
    assert cancelled.is_set()


def test_no_thread_without_a_timeout(gateway: Any) -> None:
    gateway({"tools": {"retries": {"max_attempts": 2}}})
    seen: list[str] = []

    @agentwatch.tool("fast")
    def fast() -> str:
        seen.append(threading.current_thread().name)
        return "ok"

    fast()
    assert seen == [threading.current_thread().name]


# --------------------------------------------------------------------------- circuit breakers


def test_breaker_opens_half_opens_and_closes(gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    tel = gateway({"tools": {"circuit_breakers": {"enabled": True, "failure_threshold": 3, "window_seconds": 0.3}}})
    healthy = False

    @agentwatch.tool("billing.api")
    def billing() -> str:
        if not healthy:
            raise HTTPError(503)
        return "ok"

    with caplog.at_level(logging.INFO, logger="agentwatch.gateway"):
        for _ in range(3):
            with pytest.raises(HTTPError):
                billing()
        with pytest.raises(agentwatch.CircuitOpen) as refused:
            billing()  # open: refused without running
        assert refused.value.stop_reason == "circuit_open"
        time.sleep(0.35)
        healthy = True
        assert billing() == "ok"  # half-open trial succeeds: closed again
        assert billing() == "ok"
    transitions = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert any("closed -> open" in m for m in transitions)
    assert any("open -> half_open" in m for m in transitions)
    assert any("half_open -> closed" in m for m in transitions)
    actions = {p.attributes["action"]: p.value for p in tel.metric_points(sc.METRIC_GATEWAY_ACTIONS)}
    assert actions == {"refused_breaker": 1}
    refused_span = tel.tools()[3]
    assert refused_span.attributes[sc.TOOL_ERROR_CLASS] == "circuit_open"
    assert "CIRCUIT_OPEN" in _flags(refused_span)
    assert refused_span.status.status_code is StatusCode.ERROR
    points = tel.metric_points(sc.METRIC_BREAKER_TRANSITIONS)
    assert {p.attributes["state"] for p in points} == {"open", "half_open", "closed"}


def test_failed_trial_reopens(gateway: Any) -> None:
    gateway({"tools": {"circuit_breakers": {"enabled": True, "failure_threshold": 1, "window_seconds": 0.1}}})

    @agentwatch.tool("flaky")
    def flaky() -> str:
        raise HTTPError(503)

    with pytest.raises(HTTPError):
        flaky()
    with pytest.raises(agentwatch.CircuitOpen):
        flaky()
    time.sleep(0.12)
    with pytest.raises(HTTPError):
        flaky()  # the trial runs and fails
    with pytest.raises(agentwatch.CircuitOpen):
        flaky()  # open again


# --------------------------------------------------------------------------- validation


ORDER_SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
OUTPUT_SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def test_strict_input_refuses_before_running(gateway: Any) -> None:
    tel = gateway({"validation": {"input": {"strict": True}}})
    ran = False

    @agentwatch.tool("orders.get", schema=ORDER_SCHEMA)
    def get_order(order_id: Any) -> str:
        nonlocal ran
        ran = True
        return "ok"

    with pytest.raises(agentwatch.ToolInputInvalid) as caught, agentwatch.run("r"):
        get_order(12345)
    assert not ran
    assert caught.value.stop_reason == "invalid_input"
    assert tel.runs()[0].attributes[sc.RUN_STOP_REASON] == "invalid_input"
    assert tel.tools()[0].status.status_code is StatusCode.ERROR


def test_output_fail_closed_refuses_the_result(gateway: Any) -> None:
    tel = gateway({"validation": {"output": {"fail_closed": True}}})

    @agentwatch.tool("orders.status", output_schema=OUTPUT_SCHEMA)
    def status(order_id: str) -> dict[str, Any]:
        return {"state": "shipped"}  # the API renamed its field: seed 004's schema change

    with pytest.raises(agentwatch.ToolOutputInvalid), agentwatch.run("r"):
        status("ord_1")
    (span,) = tel.tools()
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "output_invalid"
    assert "TOOL_OUTPUT_INVALID" in _flags(span)
    assert tel.runs()[0].attributes[sc.RUN_STOP_REASON] == "tool_output_invalid"


def test_output_invalid_without_fail_closed_is_flagged_and_returned(gateway: Any) -> None:
    tel = gateway({"tools": {"timeouts_s": {"default": 5}}})

    @agentwatch.tool("orders.status", output_schema=OUTPUT_SCHEMA)
    def status(order_id: str) -> dict[str, Any]:
        return {"state": "shipped"}

    assert status("ord_1") == {"state": "shipped"}
    (span,) = tel.tools()
    assert "TOOL_OUTPUT_INVALID" in _flags(span)
    assert span.attributes[sc.TOOL_OUTPUT_INVALID] is True


# --------------------------------------------------------------------------- safe mode


def test_safe_mode_from_config_allows_only_listed_tools(gateway: Any) -> None:
    tel = gateway({"safe_mode": {"enabled": True, "allowed_tools": ["search.*"]}})

    @agentwatch.tool("search.read")
    def search(q: str) -> str:
        return "hits"

    @agentwatch.tool("ticket.create", side_effect=True)
    def create(title: str) -> str:
        raise AssertionError("must not run in safe mode")

    with agentwatch.run("r"):
        assert search("x") == "hits"
        with pytest.raises(agentwatch.ToolDenied) as caught:
            create("t")
    assert caught.value.stop_reason == "tool_denied"
    denied = tel.tools()[1]
    assert denied.attributes[sc.SAFE_MODE] is True
    assert "TOOL_DENIED" in _flags(denied)


def test_safe_mode_switch_at_run_time(gateway: Any) -> None:
    gateway({"safe_mode": {"allowed_tools": ["kb.read"]}})

    @agentwatch.tool("db.write", side_effect=True)
    def write(row: str) -> str:
        return "written"

    assert write("a") == "written"
    agentwatch.safe_mode(True)
    with pytest.raises(agentwatch.ToolDenied):
        write("b")
    agentwatch.safe_mode(False)
    assert write("c") == "written"


def test_safe_mode_without_any_gateway_config(gateway: Any) -> None:
    gateway({})

    @agentwatch.tool("db.write", side_effect=True)
    def write(row: str) -> str:
        return "written"

    agentwatch.safe_mode(True)
    with pytest.raises(agentwatch.ToolDenied):
        write("b")


def test_safe_mode_flag_file_flips_a_running_run(gateway: Any, tmp_path: Path, monkeypatch: Any) -> None:
    flag = tmp_path / "SAFE_MODE"
    gateway({"safe_mode": {"allowed_tools": ["kb.read"], "flag_file": str(flag)}})
    clock = [100.0]
    monkeypatch.setattr(SWITCH, "_clock", lambda: clock[0])

    @agentwatch.tool("email.send", side_effect=True)
    def send(to: str) -> str:
        return "sent"

    with agentwatch.run("r"):
        assert send("a") == "sent"
        flag.touch()  # the operator flips the fleet
        clock[0] += 0.5
        assert send("b") == "sent"  # checked at most once a second
        clock[0] += 0.6
        with pytest.raises(agentwatch.ToolDenied):
            send("c")
        flag.unlink()
        clock[0] += 1.1
        assert send("d") == "sent"


def test_safe_mode_rejects_a_non_boolean() -> None:
    with pytest.raises(agentwatch.ConfigError):
        agentwatch.safe_mode("yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- automatic response


def test_stop_on_critical_stops_the_next_call(gateway: Any) -> None:
    tel = gateway({"anomaly": {"stop_on": ["critical"]}})
    sent: list[str] = []

    @agentwatch.tool("email.send", side_effect=True)
    def send(to: str) -> str:
        sent.append(to)
        return "sent"

    with pytest.raises(agentwatch.AnomalyStop) as caught, agentwatch.run("r"):
        send("a@example.com")
        send("a@example.com")  # DUPLICATE_SIDE_EFFECT: critical
        send("b@example.com")  # stopped before it is sent
    assert sent == ["a@example.com", "a@example.com"]
    assert caught.value.finding == "DUPLICATE_SIDE_EFFECT"
    assert caught.value.stop_reason == "anomaly_stop"
    assert tel.runs()[0].attributes[sc.RUN_STOP_REASON] == "anomaly_stop"
    actions = {p.attributes["action"]: p.value for p in tel.metric_points(sc.METRIC_GATEWAY_ACTIONS)}
    assert actions == {"refused_anomaly_stop": 1}


def test_stop_on_a_flag_name(gateway: Any) -> None:
    gateway({"anomaly": {"stop_on": ["LOOP_DETECTED"]}})

    @agentwatch.tool("search.read")
    def search(q: str) -> str:
        return "same"

    with pytest.raises(agentwatch.AnomalyStop), agentwatch.run("r"):
        for _ in range(5):
            search("x")


# --------------------------------------------------------------------------- never breaks the call


def test_a_gateway_fault_lets_the_call_proceed(gateway: Any, monkeypatch: Any) -> None:
    gateway({"tools": {"circuit_breakers": {"enabled": True}}})
    from agentwatch import _runtime

    def broken(tool: str) -> Any:
        raise RuntimeError("gateway bug")

    monkeypatch.setattr(_runtime.get().gateway.breakers, "admit", broken)

    @agentwatch.tool("kb.read")
    def read(doc: str) -> str:
        return "text"

    assert read("a") == "text"


def test_config_errors_name_the_key(gateway: Any) -> None:
    with pytest.raises(agentwatch.ConfigError, match=r"agent\.tools\.retries\.max_attempts"):
        gateway({"tools": {"retries": {"max_attempts": "2"}}})
    with pytest.raises(agentwatch.ConfigError, match=r"agent\.anomaly\.stop_on"):
        gateway({"anomaly": {"stop_on": ["catastrophic"]}})


def test_stop_on_stops_the_next_llm_call_before_it_is_sent(gateway: Any, llm_server: Any) -> None:
    import openai

    from agentwatch.testing import reply

    gateway({"anomaly": {"stop_on": ["ENTITY_HALLUCINATION"]}})
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="t", max_retries=0, timeout=5)
    llm_server.script(reply.tool_call("orders.get", {"order_id": "ord_555"}), reply.text("confirmed"))
    tools = [{"type": "function", "function": {"name": "orders.get", "parameters": {"type": "object"}}}]
    with pytest.raises(agentwatch.AnomalyStop) as caught, agentwatch.run("support", entities={"customer": "cust_789"}):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Confirm my order"}], tools=tools
        )  # the model invents ord_555: ENTITY_HALLUCINATION on this call
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "go on"}])
    assert caught.value.finding == "ENTITY_HALLUCINATION"
    assert len(llm_server.requests) == 1  # the second call never reached the server


def test_structured_call_log(gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Seed 004's minimum structured logs: one JSON record per tool call and run, chosen fields only."""
    import json

    gateway({"logging": {"structured": True, "level": "info",
                         "include": ["run_id", "tool", "args_hash", "status", "stop_reason", "steps"]}})

    @agentwatch.tool("search.read")
    def search(q: str) -> str:
        return "hits"

    with caplog.at_level(logging.INFO, logger="agentwatch.calls"), agentwatch.run("research") as run:
        search("password=hunter2")
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "agentwatch.calls"]
    tool, done = records
    assert tool == {"event": "tool_call", "run_id": run.run_id, "tool": "search.read",
                    "args_hash": tool["args_hash"], "status": "ok"}
    assert done == {"event": "run", "run_id": run.run_id, "stop_reason": "success", "steps": 1}
    assert "hunter2" not in caplog.text

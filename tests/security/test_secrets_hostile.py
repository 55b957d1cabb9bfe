"""Secrets never leave the process: a table of secret kinds planted everywhere, exported for real.

Each secret is planted in the places agentwatch reads (prompt, system prompt,
tool arguments and results, model-requested tool-call arguments, exception
text and stack traces, provider 401 bodies, URL query strings, the client's base
URL, MCP arguments, results and errors, declared run entities, a run's stop
detail). The spans, metrics and log records go through the real OTLP/HTTP
exporters into a local receiver that keeps the raw request bytes, and the
``agentwatch`` loggers are captured as text. With content capture off and in
every capture mode, no secret, nor any 8-character piece of its random part,
may appear in those bytes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import string
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("mcp.server.mcpserver")
anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # noqa: E402
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

import agentwatch  # noqa: E402
from agentwatch import semconv as sc  # noqa: E402
from agentwatch.testing import LLMServer, reply  # noqa: E402

_rng = random.Random(20261206)
_ALNUM = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits


def _core(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Secret:
    kind: str
    value: str  # the secret as planted
    core: str  # its random part: no 8-character piece of it may leave the process
    phrase: str  # how it appears in prose (a name before it, where the shape alone is not a secret)


def _secrets() -> list[Secret]:
    out: list[Secret] = []

    def add(kind: str, prefix: str, core: str, suffix: str = "", phrase: str = "{}") -> None:
        value = prefix + core + suffix
        out.append(Secret(kind, value, core, phrase.format(value)))

    add("openai", "sk-proj-", _core(48))
    add("anthropic", "sk-ant-api03-", _core(40))
    add("aws_access_key_id", "AKIA", _core(16, _UPPER))
    add("aws_temporary_key_id", "ASIA", _core(16, _UPPER))
    add("aws_secret_access_key", "", _core(30) + "/" + _core(9), phrase="aws_secret_access_key={}")
    add("github", "ghp_", _core(36))
    add("github_pat", "github_pat_11", _core(20) + "_" + _core(30))
    add("slack", "xoxb-1234567890-", _core(24))
    add("stripe", "sk_live_", _core(24))
    add("google", "AIza", _core(35))
    add("huggingface", "hf_", _core(34))
    add("gitlab", "glpat-", _core(20))
    add("npm", "npm_", _core(36))
    add("sendgrid", "SG.", _core(22) + "." + _core(43))
    jwt_body = _core(40)
    add("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJ", jwt_body, "." + _core(30))
    add("password", "hunter2-", _core(12), phrase="password={}")
    add("uuid_api_key", "", "-".join(_core(n, "0123456789abcdef") for n in (8, 4, 4, 4, 12)),
        phrase="my API key is {}")
    add("bearer", "", _core(32), phrase="authorization: bearer {}")
    pem = "\n".join(_core(64, _ALNUM + "+/") for _ in range(3))
    out.append(Secret("private_key", f"-----BEGIN RSA PRIVATE KEY-----\n{pem}\n-----END RSA PRIVATE KEY-----",
                      pem.replace("\n", ""), f"-----BEGIN RSA PRIVATE KEY-----\n{pem}\n-----END RSA PRIVATE KEY-----"))
    add("url_password", "", _core(14), phrase="postgres://bob:{}@db.internal:5432/orders")
    add("query_token", "", _core(24), phrase="GET https://api.internal/v1/export?format=csv&token={}")
    return out


SECRETS = _secrets()
assert len({s.kind for s in SECRETS}) >= 12


def _prose() -> str:
    return "; ".join(s.phrase for s in SECRETS)


def _fragments(secret: Secret) -> Iterator[str]:
    # the random part with its separators, so every 8-character window is something only it contains
    core = secret.core
    yield secret.value
    for i in range(0, max(1, len(core) - 7)):
        yield core[i : i + 8]


# --------------------------------------------------------------------------- the sink


class _Sink:
    """A local OTLP/HTTP receiver that keeps every request body as bytes."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    sink.bodies.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def data(self, path: str) -> bytes:
        return b"".join(body for p, body in self.bodies if p == path)


@dataclass
class _Pipeline:
    sink: _Sink
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    handler: LoggingHandler
    text: io.StringIO
    text_handler: logging.Handler

    def flush(self) -> tuple[bytes, str]:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()
        self.logger_provider.force_flush()
        exported = b"".join(self.sink.data(p) for p in ("/v1/traces", "/v1/metrics", "/v1/logs"))
        return exported, self.text.getvalue()


class _EverythingFormatter(logging.Formatter):
    """The message, the traceback and every ``extra`` field: all a JSON formatter could print."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{super().format(record)} {record.__dict__!r}"


@pytest.fixture
def pipeline() -> Iterator[_Pipeline]:
    sink = _Sink()
    tracer_provider = TracerProvider()
    spans = SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces", timeout=5))
    # the SDK adapter too: it re-reads every span and adds its own findings before export
    tracer_provider.add_span_processor(agentwatch.AnomalyProcessor(spans))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{sink.url}/v1/metrics", timeout=5), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{sink.url}/v1/logs", timeout=5))
    )
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    text = io.StringIO()
    text_handler = logging.StreamHandler(text)
    # every field a JSON formatter would print, extras included
    text_handler.setFormatter(_EverythingFormatter())
    loggers = [logging.getLogger("agentwatch")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.addHandler(text_handler)
    previous = loggers[0].level
    loggers[0].setLevel(logging.DEBUG)
    agentwatch.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield _Pipeline(sink, tracer_provider, meter_provider, logger_provider, handler, text, text_handler)
    finally:
        agentwatch.uninstrument()
        for logger in loggers:
            logger.removeHandler(handler)
            logger.removeHandler(text_handler)
        loggers[0].setLevel(previous)
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
        sink.close()


# --------------------------------------------------------------------------- the agent


def _mcp_server(prose: str) -> MCPServer:
    server = MCPServer("vault")

    @server.tool()
    def login(user: str, password: str) -> str:
        """Log a user in."""
        raise ToolError(f"login failed for {user} with password {password}; {prose}")

    @server.tool()
    def fetch_config(name: str) -> dict[str, str]:
        """Return a service's configuration."""
        return {"name": name, "api_key": SECRETS[0].value, "notes": prose}

    @server.tool()
    def crash(order_id: str) -> str:
        """Always fails with an exception."""
        raise RuntimeError(f"connection to {SECRETS[-2].phrase} refused ({prose})")

    return server


@agentwatch.tool(schema={"type": "object", "properties": {"amount": {"type": "integer"}}})
def refund(amount: Any, customer_id: str, aws_access_key_id: str, note: str) -> dict[str, Any]:
    """Refund an order (the model passes a key where an amount belongs)."""
    return {"refunded": False, "api_key": SECRETS[1].value, "token": SECRETS[5].value, "log": note}


@agentwatch.tool
def deploy(target: str, credentials: dict[str, str]) -> str:
    """A tool that fails, its message and its cause quoting secrets."""
    try:
        raise ConnectionError(f"could not reach {SECRETS[-1].phrase}")
    except ConnectionError as cause:
        raise RuntimeError(f"deploy to {target} failed: {_prose()}") from cause


async def _agent(llm: LLMServer, prose: str) -> None:
    """One run touching every place a secret can enter."""
    by_kind = {s.kind: s for s in SECRETS}
    url_password = by_kind["url_password"].value
    oa = openai.OpenAI(
        base_url=llm.openai_base_url.replace("http://", f"http://bob:{url_password}@"),
        api_key=by_kind["openai"].value,
        max_retries=0,
        timeout=5,
    )
    an = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key=by_kind["anthropic"].value,
                             max_retries=0, timeout=5)
    tools = [{"type": "function", "function": {"name": "refund", "parameters": {
        "type": "object", "properties": {"amount": {"type": "integer"}}}}}]
    requested = {
        "amount": by_kind["openai"].value,
        "customer_id": by_kind["stripe"].value,
        "aws_access_key_id": by_kind["aws_access_key_id"].value,
        "note": prose,
    }
    entities = {"customer": "cust_789", "api_key": by_kind["uuid_api_key"].value, "session": by_kind["jwt"].value}
    try:
        with agentwatch.run("support", entities=entities) as run:
            # prompt and model-requested tool-call arguments
            llm.script(reply.tool_call("refund", requested))
            answer = oa.chat.completions.create(
                model="gpt-4o-mini", tools=tools,
                messages=[{"role": "system", "content": f"internal notes: {prose}"},
                          {"role": "user", "content": f"please refund order ord_555; {prose}"}],
            )
            call = answer.choices[0].message.tool_calls[0]
            refund(**json.loads(call.function.arguments))  # tool arguments and result
            # system prompt (Anthropic), then a provider 401 quoting the key
            llm.script(reply.text("ok"))
            an.messages.create(model="claude-sonnet-4-5", max_tokens=64, system=f"keys: {prose}",
                               messages=[{"role": "user", "content": prose}])
            for client in ("openai", "anthropic"):
                key = by_kind[client].value
                llm.script(reply.error(401, f"Incorrect API key provided: {key}. {prose}"))
                with pytest.raises((openai.AuthenticationError, anthropic.AuthenticationError)):
                    if client == "openai":
                        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                    else:
                        an.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                           messages=[{"role": "user", "content": "hi"}])
            # exception text and stack trace, with a chained cause
            with pytest.raises(RuntimeError):
                deploy("prod", {"password": by_kind["password"].value, "token": by_kind["github"].value})
            # MCP arguments, results, isError text and a raised error
            async with Client(_mcp_server(prose)) as mcp_client:
                await mcp_client.list_tools()
                await mcp_client.call_tool("login", {"user": "bob", "password": by_kind["password"].value})
                await mcp_client.call_tool("fetch_config", {"name": f"billing {prose}"})
                await mcp_client.call_tool("crash", {"order_id": by_kind["aws_temporary_key_id"].value})
            with pytest.raises(ValueError), agentwatch.phase("cleanup"):
                raise ValueError(f"cleanup failed: {prose}")
            run.stop("tool_error", f"gave up: {prose}")
            raise PermissionError(f"run aborted: {prose}")
    except PermissionError:
        pass
    finally:
        oa.close()
        an.close()


def _leaks(blob: str | bytes) -> list[str]:
    found = []
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in SECRETS:
        for piece in _fragments(secret):
            if piece.encode() in data:
                found.append(f"{secret.kind}: {piece!r}")
                break
    return found


MODES = [None, "NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]


@pytest.mark.parametrize("mode", MODES, ids=[m or "capture-unset" for m in MODES])
def test_no_secret_leaves_the_process(
    mode: str | None, pipeline: _Pipeline, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode is None:
        monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    else:
        monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, mode)
    asyncio.run(_agent(llm_server, _prose()))
    exported, logged = pipeline.flush()

    # the places were reached: spans, findings, exceptions and log lines were all exported
    traces = pipeline.sink.data("/v1/traces")
    for expected in (b"execute_tool refund", b"execute_tool login", b"execute_tool deploy",
                     b"invoke_agent support", b"cleanup failed",
                     b"TOOL_ARG_MISMATCH", b"exception.stacktrace", b"Incorrect API key provided",
                     b"login failed for bob with password", b"order:ord_555", b"[REDACTED]"):
        assert expected in traces, expected
    assert pipeline.sink.data("/v1/metrics") and pipeline.sink.data("/v1/logs")
    assert "TOOL_ARG_MISMATCH" in logged
    if mode in ("SPAN_ONLY", "SPAN_AND_EVENT", "EVENT_ONLY"):
        assert sc.GEN_AI_INPUT_MESSAGES.encode() in traces and b"please refund order ord_555" in traces

    assert _leaks(exported) == []
    assert _leaks(logged) == []


def test_the_secret_table_would_be_caught() -> None:
    """The check itself can fail: the raw prose carries every secret."""
    assert len(_leaks(_prose())) == len(SECRETS)

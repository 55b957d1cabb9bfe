"""The redaction boundary: secret shapes, credential names, linear time, exception events."""

from __future__ import annotations

import json
import logging
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.config import load_config
from agentwatch.content import Redactor
from agentwatch.redaction import (
    REDACTED,
    exception_attributes,
    is_secret_key,
    looks_secret,
    record_error,
    redact_text,
)
from tests.telemetry import Telemetry, make_telemetry

# (text with a secret, the secret) — every shape the boundary knows
SHAPES = [
    ("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"),
    ("id AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary ASIAY34FZKBOKMUTVV7A here", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
    ("{'SecretAccessKey': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}", "wJalrXUtnFEMI/K7MDENG"),
    ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123456789abcdef"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_pat_11ABCDEFG"),
    ("slack xoxb-1234567890-abcdefghijkl", "xoxb-1234567890"),
    ("stripe sk_live_0123456789abcdefghij and rk_live_0123456789abcdefghij", "_live_0123456789"),
    ("google AIzaSyA-0123456789abcdefghijklmnopqrstu", "AIzaSyA-0123456789"),
    ("oauth ya29.a0AfH6SMBx0123456789abcdefghij", "ya29.a0AfH6SMBx"),
    ("hf_abcdefghijklmnopqrstuvwxyz01234567", "hf_abcdefghij"),
    ("glpat-abcdefghij0123456789", "glpat-abcdefghij"),
    ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdefghij"),
    ("SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg", "SG.abcdefghij"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZw", "eyJzdWIiOiIxMjM0"),
    ("Authorization: Bearer abc.def.ghi-jkl", "abc.def.ghi"),
    ("authorization: bearer abcdefghijklmnop", "abcdefghijklmnop"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE (cut)", "b3BlbnNzaC1rZXktdjE"),
    ("postgres://bob:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
    ("GET /export?format=csv&token=abc123xyz&page=2", "abc123xyz"),
    ("password=hunter2&user=bob", "hunter2"),
    ("login failed for bob with password hunter2", "hunter2"),
    ("my password is hunter2", "hunter2"),
    ("Incorrect API key provided: 3f2a1c9e-7b4d-4e8a-9c1f-2d3e4f5a6b7c.", "3f2a1c9e-7b4d"),
    ('{"client_secret": "s3cr3t value"}', "s3cr3t value"),
    ("AccountName=x;AccountKey=Zm9vYmFyYmF6cXV4cXV1eA==;EndpointSuffix=core", "Zm9vYmFyYmF6cXV4"),
    ("https://x.blob.core.windows.net/c?sv=2022&sig=AbCdEf0123%2B456", "AbCdEf0123"),
]


@pytest.mark.parametrize(("text", "secret"), SHAPES, ids=[s for _, s in SHAPES])
def test_every_shape_is_redacted(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out and REDACTED in out


def test_ordinary_text_is_untouched_and_not_copied() -> None:
    for text in (
        "max_tokens: 100, output tokens 5000, token budget 10; TOKEN_SPIKE",
        "order ord_555 for customer cust_789 is late; the author: Mark; see https://docs.example.com/a",
        "get_order would be called 3 times with args 0123456789abcdef",
        "refund arguments do not match its schema: fails type \"integer\" (at amount)",
    ):
        assert redact_text(text) is text


def test_names_are_kept_and_json_stays_json() -> None:
    assert redact_text("password=hunter2&user=bob") == "password=[REDACTED]&user=bob"
    text = json.dumps({"api_key": "abc def", "order_id": "ord_555", "note": "token: xyz"})
    assert json.loads(redact_text(text)) == {"api_key": REDACTED, "order_id": "ord_555", "note": "token: [REDACTED]"}
    assert redact_text(redact_text(text)) == redact_text(text)


ADVERSARIAL = [
    "eyJ" * 350_000, "a" * 1_000_000, "sk-" * 333_333, "password " * 111_111, "token:'" * 140_000,
    "-----BEGIN RSA PRIVATE KEY-----" * 30_000, "a_" * 500_000, "://a:" * 200_000, "Bearer " * 140_000,
    'token:"x ' * 100_000, "AKIA" * 250_000, "x=" * 500_000, "aws_secret_access_key" * 50_000,
    "api key is " * 90_000, "SG." * 333_333, "@" * 1_000_000, "key=" * 250_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=[t[:12] for t in ADVERSARIAL])
def test_a_megabyte_of_adversarial_text_redacts_in_well_under_a_second(text: str) -> None:
    start = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - start < 1.0  # about 0.1-0.4 s on an idle 2-core machine


def test_secret_keys_in_any_spelling() -> None:
    for key in ("password", "X-Api-Key", "SecretAccessKey", "aws_secret_access_key", "refresh_token",
                "Authorization", "client-secret", "set-cookie", "AccountKey"):
        assert is_secret_key(key), key
    for key in ("max_tokens", "order_id", "author", "keyword", "tokenizer"):
        assert not is_secret_key(key), key
    assert looks_secret("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx") and not looks_secret("ord_555")


def _boom(secret: str) -> None:
    try:
        raise KeyError(f"token={secret}")
    except KeyError as cause:
        raise RuntimeError(f"provider said: Incorrect API key provided: sk-proj-{secret}") from cause


def test_exception_events_redact_message_and_stack() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s")
    secret = "".join(reversed("xWvUtSrQpOnMlKjIhGfEdCbA"))  # not spelled out in this file's source
    try:
        _boom(secret)
    except RuntimeError as exc:
        record_error(span, exc)
        attrs = exception_attributes(exc)
    span.end()
    (done,) = exporter.get_finished_spans()
    (event,) = done.events
    assert event.name == "exception" and dict(event.attributes or {}) == attrs
    assert attrs["exception.type"] == "RuntimeError"
    assert "Traceback" in attrs["exception.stacktrace"] and "KeyError" in attrs["exception.stacktrace"]
    assert done.status.status_code is StatusCode.ERROR
    for text in (attrs["exception.message"], attrs["exception.stacktrace"], done.status.description or ""):
        assert secret[:12] not in text and REDACTED in text


def test_user_keys_extend_the_builtin_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example config must not switch off the built-in keys (it replaced them)."""
    config = {"agent": {"logging": {"redact": ["authorization", "cookie", "token", "api_key", "session_ref"]}}}
    keys = load_config(config, env={}).redact_keys
    assert {"password", "secret", "x_api_key", "session_ref"} <= set(keys)
    r = Redactor(["session_ref"], 10_000)  # a Config built by hand still gets the built-ins
    assert json.loads(r.render({"password": "hunter2", "session_ref": "r1", "q": "x"})) == {
        "password": REDACTED, "session_ref": REDACTED, "q": "x"}

    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")
    tel: Telemetry = make_telemetry(config)
    try:
        @agentwatch.tool
        def login(user: str, password: str) -> str:
            return "ok"

        login("bob", password="hunter2")
        (span,) = tel.tools()
        captured = str(span.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS])
        assert "hunter2" not in captured and REDACTED in captured
    finally:
        agentwatch.uninstrument()


def test_internal_error_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from agentwatch import _runtime

    secret = "".join(reversed("0987654321zyxwvutsrqponm"))
    caplog.set_level(logging.DEBUG, logger="agentwatch")
    try:
        raise ValueError(f"could not parse {{'api_key': 'sk-proj-{secret}'}}")
    except ValueError as err:
        _runtime.internal_error(f"test.redaction.{secret[:4]}", err)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "agentwatch")
    assert "could not parse" in text and "Traceback" in text
    assert secret not in text and secret[:8] not in text

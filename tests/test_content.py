"""Content capture switch, redaction of secrets, truncation."""

from __future__ import annotations

import pytest

from agentwatch.content import Redactor, capture_mode


@pytest.mark.parametrize(
    ("value", "span", "event"),
    [
        (None, False, False), ("NO_CONTENT", False, False), ("false", False, False),
        ("SPAN_ONLY", True, False), ("true", True, False), ("EVENT_ONLY", False, True),
        ("SPAN_AND_EVENT", True, True), ("garbage", False, False),
    ],
)
def test_modes(monkeypatch: pytest.MonkeyPatch, value: str | None, span: bool, event: bool) -> None:
    if value is None:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    mode = capture_mode()
    assert (mode.on_span, mode.as_event) == (span, event)


def test_redacts_keys_and_token_patterns() -> None:
    r = Redactor(["authorization", "api_key", "token", "cookie"], 10_000)
    text = r.render(
        {
            "headers": {"Authorization": "Bearer abc.def.ghi", "X-Api-Key": "k"},
            "access_token": "t",
            "max_tokens": 5,
            "note": "use sk-ant-abcdefghijklmnopqrstu and ghp_abcdefghijklmnopqrstuvwx",
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZw",
        }
    )
    for secret in ("abc.def.ghi", '"t"', "sk-ant-", "ghp_", "eyJhbGci"):
        assert secret not in text
    assert '"max_tokens": 5' in text  # not a secret key


def test_truncation() -> None:
    out = Redactor([], 100).render("y" * 1000)
    assert out.startswith("y" * 100) and out.endswith("[truncated 900 chars]")


def test_rendering_deeply_nested_content_is_bounded() -> None:
    from agentwatch.content import Redactor

    value: object = []
    for _ in range(100_000):
        value = [value]
    redactor = Redactor(["api_key"], 1_000)
    assert "[DEPTH LIMIT]" in redactor.render(value)
    assert "[DEPTH LIMIT]" in redactor.render_messages([{"role": "user", "content": value}])

"""Replay a recorded run: the fixture (``agentwatch replay export``), ``agentwatch.replay()`` and ``replay test``.

The fixture holds what a run recorded with content capture on: the model's
responses in order (text, tool calls, finish reason, usage, model), every tool
call's result or error keyed by tool, per-tool call index and args hash, and
the run's first user message.

Inside :func:`replay`:

* instrumented OpenAI/Anthropic calls still pass the SDK's request choke point
  (``instrumentation/_stainless.py``), which sends them to an in-process
  :class:`agentwatch.testing.LLMServer` on 127.0.0.1 scripted with the recorded
  responses: the SDK parses a real HTTP answer in its own wire format, so the
  user's client code runs unchanged and nothing leaves the machine;
* ``@agentwatch.tool`` functions (directly or through the tool gateway) do not
  run: each call returns the recorded result, or raises the recorded error
  class (imported from its recorded module when possible, else a class of the
  same name);
* a call the recording lacks raises :class:`agentwatch.ReplayDivergence` naming
  the step; with ``strict=True`` a tool call's args hash and an LLM call's
  model must match the recording too.

Spans, detection and flags work as in a live run; the handle collects the flags
raised inside and the summary of the last run that ended inside.
"""

from __future__ import annotations

import copy
import importlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import semconv as sc
from ..errors import ReplayDivergence
from ..hashing import args_hash
from . import replay_hook
from .analysis import RunReport
from .postmortem import first_user_message

__all__ = ["FORMAT", "ReplayExportError", "ReplayHandle", "export_fixture", "replay", "write_test"]

FORMAT = "agentwatch.replay/1"
MAX_FIXTURE_BYTES = 64 * 1024 * 1024


class ReplayExportError(ValueError):
    """The run cannot be replayed (content was not captured); the message lists what is missing."""


# --------------------------------------------------------------------------- export


def _json_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _llm_response(step: Any) -> dict[str, Any] | None:
    raw = step.span.attributes.get(sc.GEN_AI_OUTPUT_MESSAGES) if step.span is not None else None
    messages = _json_or_text(raw)
    if not isinstance(messages, list):
        return None
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    finish = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        finish = message.get("finish_reason", finish)
        for part in message.get("parts") or ():
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("content"), str):
                text.append(part["content"])
            elif part.get("type") == "tool_call":
                calls.append({"name": str(part.get("name")), "arguments": part.get("arguments") or {},
                              "id": part.get("id")})  # fmt: skip
    attrs = step.span.attributes
    return {
        "step": step.step,
        "provider": attrs.get(sc.GEN_AI_PROVIDER_NAME),
        "request_model": attrs.get(sc.GEN_AI_REQUEST_MODEL),
        "response_model": attrs.get(sc.GEN_AI_RESPONSE_MODEL),
        "text": "".join(text) if text else None,
        "tool_calls": calls,
        "finish_reason": finish,
        "usage": {"input_tokens": step.record.input_tokens or 0, "output_tokens": step.record.output_tokens or 0},
    }


def export_fixture(report: RunReport) -> dict[str, Any]:
    """The replay fixture of one run; :class:`ReplayExportError` says what content is missing."""
    missing: list[str] = []
    llm: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    per_tool: dict[str, int] = {}
    for step in report.timeline:
        if step.kind == "llm":
            response = _llm_response(step)
            if response is None:
                missing.append(f"step {step.step}: the LLM call's {sc.GEN_AI_OUTPUT_MESSAGES}")
            else:
                llm.append(response)
        elif step.kind == "tool":
            rec = step.record
            attrs = step.span.attributes if step.span is not None else {}
            name = rec.tool_name or step.name
            index = per_tool.get(name, 0)
            per_tool[name] = index + 1
            entry: dict[str, Any] = {"step": step.step, "tool": name, "index": index, "args_hash": rec.args_hash,
                                     "arguments": _json_or_text(attrs.get(sc.GEN_AI_TOOL_CALL_ARGUMENTS))}  # fmt: skip
            if step.status == "error":
                entry["error"] = {
                    "type": attrs.get(sc.ERROR_TYPE) or "Exception",
                    "message": step.span.status_message if step.span is not None else "",
                    "error_class": attrs.get(sc.TOOL_ERROR_CLASS),
                }
            elif sc.GEN_AI_TOOL_CALL_RESULT in attrs:
                entry["result"] = _json_or_text(attrs[sc.GEN_AI_TOOL_CALL_RESULT])
            else:
                missing.append(f"step {step.step}: {name}'s {sc.GEN_AI_TOOL_CALL_RESULT}")
            tools.append(entry)
    question = first_user_message(report)
    if question is None:
        missing.append(f"the run's first user message ({sc.GEN_AI_INPUT_MESSAGES} on the first LLM call)")
    if missing:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ReplayExportError(
            f"run {report.run['span_id']} was recorded without the content replay needs: {shown}. Record it with "
            f"{sc.ENV_CAPTURE_CONTENT}=true (forensics and postmortem work without it)"
        )
    severe = sorted({str(f.flag) for f in report.findings if str(f.severity) in ("critical", "high")})
    return {
        "format": FORMAT,
        "trace_id": report.trace_id,
        "run": {"span_id": report.run["span_id"], "name": report.run["name"], "entities": report.entities},
        "input": question,
        "severe_flags": severe,
        "summary": {k: report.run[k] for k in ("steps", "llm_calls", "tool_calls", "failure_mode", "flags")},
        "llm": llm,
        "tools": tools,
    }


# --------------------------------------------------------------------------- replay


def _load(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FIXTURE_BYTES:
            raise ReplayExportError(f"{file}: over the {MAX_FIXTURE_BYTES}-byte limit for replay fixtures")
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplayExportError(f"{file}: no such replay fixture") from None
    except (OSError, ValueError) as exc:
        raise ReplayExportError(f"{file}: not a replay fixture ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReplayExportError(f"{file}: not an agentwatch replay fixture (format {FORMAT!r} expected)")
    return data


def _error_class(name: str) -> type[BaseException]:
    module, _, attr = name.rpartition(".")
    if module:
        try:
            found = getattr(importlib.import_module(module), attr, None)
            if isinstance(found, type) and issubclass(found, Exception):
                return found
        except Exception:  # the recorded module is not importable here
            pass
    return type(attr or "RecordedToolError", (RuntimeError,), {"__module__": "agentwatch.replayed"})


def _raise_recorded(error: Mapping[str, Any]) -> None:
    cls = _error_class(str(error.get("type") or "Exception"))
    message = str(error.get("message") or "")
    # The span's status description is "Type: message"; the exception's own text is the message.
    prefix = f"{str(error.get('type') or '').rpartition('.')[2]}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    exc = cls.__new__(cls)  # the recorded class, without its own __init__'s signature
    Exception.__init__(exc, message)
    raise exc


def _with_url(options: Any, url: str) -> Any:
    """A copy of the SDK's request options with an absolute URL (which the SDK then uses as is)."""
    if hasattr(options, "model_copy"):  # pydantic 2
        return options.model_copy(update={"url": url})
    new = copy.copy(options)  # pydantic 1
    new.url = url
    return new


class ReplayHandle:
    """What :func:`replay` yields: ``flags`` raised inside, the last run's ``summary``, ``calls`` served."""

    def __init__(self, fixture: dict[str, Any], strict: bool) -> None:
        self.fixture = fixture
        self.strict = strict
        self.flags: list[str] = []
        self.findings: list[tuple[str, str, bool]] = []  # (flag, severity, on a replayed model answer)
        self.summary: Any = None
        self.calls = 0
        self._lock = threading.Lock()
        self._llm_next = 0
        self._tool_next: dict[str, int] = {}
        self._steps = 0
        self._server: Any = None

    # ---- LLM calls (from the SDK choke point)

    def llm_request(self, provider: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The request's args with its URL pointed at the local server, scripted with the next response."""
        from ..testing import reply

        options = args[1] if len(args) > 1 else kwargs.get("options")
        body = getattr(options, "json_data", None)
        model = body.get("model") if isinstance(body, dict) else None
        recorded = self.fixture.get("llm") or []
        with self._lock:
            self._steps += 1
            step = self._steps
            if self._llm_next >= len(recorded):
                raise ReplayDivergence(step, f"{len(recorded)} LLM call(s)", f"LLM call {self._llm_next + 1}")
            entry = recorded[self._llm_next]
            if self.strict and entry.get("request_model") and model != entry["request_model"]:
                raise ReplayDivergence(step, f"a call to model {entry['request_model']}", f"one to {model}")
            self._llm_next += 1
            self.calls += 1
        calls = [
            reply.ToolCall(c["name"], c.get("arguments") or {}, c.get("id")) for c in entry.get("tool_calls") or ()
        ]
        usage = entry.get("usage") or {}
        answer = reply.Answer(
            text=entry.get("text"), tool_calls=tuple(calls),
            usage=reply.Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            model=entry.get("response_model"),
        )  # fmt: skip
        self._server.script(answer)
        base = self._server.anthropic_base_url if provider == "anthropic" else self._server.openai_base_url
        url = str(getattr(options, "url", ""))
        if options is not None and not url.startswith(("http://", "https://")):
            path = url.lstrip("/")
            if provider == "openai" and path.startswith("v1/"):
                path = path[3:]
            new = _with_url(options, f"{base.rstrip('/')}/{path}")
            if len(args) > 1:
                args = (args[0], new, *args[2:])
            else:
                kwargs = {**kwargs, "options": new}
        return args, kwargs

    # ---- tool calls (from the @tool wrappers, both with and without the gateway)

    def _tool_entry(self, tool: str, arguments: Any) -> dict[str, Any]:
        """The recording's next call of ``tool``; ``ReplayDivergence`` when it has none or (strict) other args."""
        got_hash = args_hash(arguments)
        recorded = [t for t in self.fixture.get("tools") or () if t.get("tool") == tool]
        with self._lock:
            self._steps += 1
            step = self._steps
            index = self._tool_next.get(tool, 0)
            if index >= len(recorded):
                raise ReplayDivergence(step, f"{len(recorded)} call(s) of {tool}", f"call {index + 1} of {tool}")
            entry: dict[str, Any] = recorded[index]
            if self.strict and entry.get("args_hash") and entry["args_hash"] != got_hash:
                shown = json.dumps(entry.get("arguments"), sort_keys=True, default=str)[:200]
                raise ReplayDivergence(
                    step, f"{tool} with args {shown} (hash {entry['args_hash']})",
                    f"{tool} with args {json.dumps(arguments, sort_keys=True, default=str)[:200]} "
                    f"(hash {got_hash})",
                )  # fmt: skip
            self._tool_next[tool] = index + 1
            self.calls += 1
        return entry

    def tool_answer(self, tool: str, arguments: Any) -> Any:
        """The recorded result of the next call of ``tool``, or its recorded error raised."""
        entry = self._tool_entry(tool, arguments)
        if "error" in entry:
            _raise_recorded(entry["error"])
        return entry.get("result")

    def tool_function(self, tool: str, func: Any, arguments: Any) -> Any:
        """A stand-in for FUNC that answers from the recording (sync or async like FUNC)."""
        import inspect

        def answer() -> Any:
            return self.tool_answer(tool, arguments)

        if inspect.iscoroutinefunction(func):

            async def async_answer(*_: Any, **__: Any) -> Any:
                return answer()

            return async_answer
        return lambda *_, **__: answer()

    async def mcp_result(self, tool: str, arguments: Any) -> Any:
        """An MCP ``CallToolResult`` from the recording: the result as text (and structured content), or
        the recorded ``isError`` text; a recorded exception is raised as its class."""
        from mcp import types

        entry = self._tool_entry(tool, arguments)
        error = entry.get("error")
        if error is not None:
            if error.get("type") != "tool_error":  # the request itself failed: an exception
                _raise_recorded(error)
            text = str(error.get("message") or "")
            return types.CallToolResult.model_validate({"content": [{"type": "text", "text": text}], "isError": True})
        result = entry.get("result")
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        # By the wire names (camelCase), which mcp 1.x and 2.x both accept.
        return types.CallToolResult.model_validate({
            "content": [{"type": "text", "text": text}],
            "structuredContent": result if isinstance(result, dict) else None,
            "isError": False,
        })

    # ---- what the run raised

    def _findings(self, findings: Any, span_name: str = "") -> None:
        on_model = span_name.partition(" ")[0] in sc.LLM_OPERATIONS
        for finding in findings:
            flag = str(finding.flag)
            self.findings.append((flag, str(finding.severity), on_model))
            if flag not in self.flags:
                self.flags.append(flag)

    def action_flags(self, wanted: Any = None) -> list[str]:
        """Flags raised on what the code did (tool calls, writes, the run), not on replayed model answers.

        A replay serves the recorded answers, so their own flags cannot change; a fix
        shows in what the code does with them.
        """
        out = [f for f, _, on_model in self.findings if not on_model and (wanted is None or f in wanted)]
        return list(dict.fromkeys(out))


class _ReporterTee:
    """The runtime's finding reporter, also telling the replay handle."""

    def __init__(self, inner: Any, handle: ReplayHandle) -> None:
        self._inner, self._handle = inner, handle

    def report(self, findings: Any, context: Any) -> None:
        findings = list(findings)
        self._handle._findings(findings, str(getattr(context, "span_name", "") or ""))
        self._inner.report(findings, context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _EngineTee:
    """The runtime's engine, keeping the summary of each run that closes."""

    def __init__(self, inner: Any, handle: ReplayHandle) -> None:
        self._inner, self._handle = inner, handle

    def close_run(self, *args: Any, **kwargs: Any) -> Any:
        summary = self._inner.close_run(*args, **kwargs)
        if summary is not None:
            self._handle.summary = summary
            self._handle._findings(summary.findings)
        return summary

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_replay_lock = threading.Lock()


class replay:
    """``with agentwatch.replay(path) as r:`` (or ``async with``): answer calls from the recording at PATH."""

    def __init__(self, path: str | Path, *, strict: bool = True) -> None:
        self._handle = ReplayHandle(_load(path), strict)
        self._cm: Any = None

    def __enter__(self) -> ReplayHandle:
        self._cm = _activate(self._handle)
        return self._cm.__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)

    async def __aenter__(self) -> ReplayHandle:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


@contextmanager
def _activate(handle: ReplayHandle) -> Iterator[ReplayHandle]:
    from .. import _runtime
    from ..testing import LLMServer

    if _runtime.active is not True:
        # Without the SDK patches the model calls would go to the network, not to the recording.
        raise RuntimeError("agentwatch.replay() answers instrumented calls: call agentwatch.instrument() first")
    if not _replay_lock.acquire(blocking=False):
        raise RuntimeError("agentwatch.replay() is already active in this process")
    rt = _runtime.get()
    reporter, engine = rt.reporter, rt.engine
    try:
        with LLMServer() as server:
            handle._server = server
            rt.reporter = _ReporterTee(reporter, handle)  # type: ignore[assignment]
            rt.engine = _EngineTee(engine, handle)  # type: ignore[assignment]
            replay_hook.ACTIVE = handle
            try:
                yield handle
            finally:
                replay_hook.ACTIVE = None
                rt.reporter, rt.engine = reporter, engine
                handle._server = None
    finally:
        _replay_lock.release()


# --------------------------------------------------------------------------- replay test

_TEST = '''"""Regression test for run {run_name!r} (trace {trace_id}), written by ``agentwatch replay test``.

It replays the recorded run through {entry} (called with the run's first user
message): the model's responses and tool results come from {fixture_name}, nothing
touches the network. It fails while the run still raises the recording's critical
or high flags ({severe}) on what the code does: its tool calls, writes and the run.
The replayed model answers keep their own flags (they are the recording); a fix
shows in what the code does with them. A prompt change sends different requests,
which the recording cannot answer: re-record the run to judge one.
"""

import importlib
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

import agentwatch

FIXTURE = Path(__file__).with_name({fixture_name!r})
SEVERE_FLAGS = {severe!r}
FIRST_USER_MESSAGE = {question!r}


def test_{test_name}_does_not_recur() -> None:
    module = importlib.import_module({module!r})
    entry = getattr(module, {function!r})
    # Spans must be recorded for the detectors to run: a local SDK provider, nothing exported.
    agentwatch.instrument(tracer_provider=TracerProvider())
    try:
        with agentwatch.replay(FIXTURE, strict=False) as replayed:
            try:
                entry(FIRST_USER_MESSAGE)
            except agentwatch.ReplayDivergence:
                pass  # the fixed code left the recorded path; what it did up to there is judged below
    finally:
        agentwatch.uninstrument()
    still = replayed.action_flags(SEVERE_FLAGS)
    assert not still, f"the incident's flags still fire: {{still}}"
'''


def write_test(fixture: dict[str, Any], fixture_path: Path, entry: str, output: Path) -> str:
    """The pytest file's text for FIXTURE (saved next to it as ``fixture_path``) and ``MODULE:FUNCTION``."""
    module, sep, function = entry.partition(":")
    if not sep or not module or not function.isidentifier():
        raise ValueError(f"--entry {entry!r}: expected MODULE:FUNCTION")
    name = "".join(c if c.isalnum() else "_" for c in str(fixture["run"]["name"]).lower()).strip("_")[:40] or "run"
    return _TEST.format(
        run_name=str(fixture["run"]["name"]), trace_id=fixture["trace_id"], entry=entry,
        fixture_name=fixture_path.name, severe=list(fixture.get("severe_flags") or []),
        question=fixture["input"], test_name=name, module=module, function=function,
    )  # fmt: skip

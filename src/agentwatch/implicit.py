"""Implicit runs: an agent's calls grouped into a run when no run span is open (contract §8).

With zero-code instrumentation (``opentelemetry-instrument``, no
``agentwatch.run``) every LLM call is its own trace, so run-level detectors
(loops, invented ids, budgets) would never see two calls together. An agent
loop leaves a trail in its requests, though: each call resends the
conversation so far. The rules, in the order they are tried:

1. the user's own conversation id (the Responses API ``conversation``
   parameter, else ``gen_ai.conversation.id`` in OpenTelemetry baggage) names
   the run directly;
2. ``previous_response_id`` (Responses API) continues the call that answered it;
3. a tool result in the input (``tool_call_id``, ``call_id``, Anthropic's
   ``tool_use_id``) continues the call that requested that tool call;
4. an input that begins with an earlier call's *whole* input followed by an
   assistant message continues that call (message-prefix fingerprints: the
   input is hashed message by message, once, and the digest before every
   assistant message is looked up).

Anything else starts a new implicit run. Tool spans opened outside a run join
the run of the LLM call that requested them (by tool call id, else by tool
name and args hash).

The engine's state of a conversation is created when it has a second call.
A new conversation's first LLM call gets its step (1) and every attribute
without the engine; when its response could not give a finding on its own
(``engine.quiet_first_call``: no budget limits, every requested tool was
offered, every requested id is one of the input's ids), its record is kept
here and replayed into the engine once the conversation goes on (its next LLM
call, or a tool it asked for), and dropped with the conversation otherwise.
Such a replay gives exactly the state and findings (none) the engine would
have held; one-shot calls, most calls outside a run, never build engine state.

State is bounded: at most half of ``agent.limits.max_runs`` conversations
(least recently used evicted first; the other half of the engine's run table
stays for explicit runs) and ``16 x`` that many lookup keys, each idle
conversation forgotten after ``agent.limits.run_ttl_seconds``; every eviction
is counted in :attr:`ImplicitRuns.stats`, and a forgotten conversation's
engine state is freed at once. Fingerprints are computed whether or
not message content is captured, and only their digests are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from opentelemetry import baggage, trace

from . import semconv as sc
from .runs import Run

__all__ = ["FIRST_CALL", "IN_FLIGHT", "KEY_PREFIX", "ImplicitRun", "ImplicitRuns"]

FIRST_CALL: Any = object()
"""``ImplicitRun.deferred`` of a conversation whose first LLM call has not started yet."""
IN_FLIGHT: Any = object()
"""``ImplicitRun.deferred`` while that first call runs without engine state."""

KEY_PREFIX = "conversation:"
"""Engine run keys of implicit runs (in process) and of cross-trace conversations (out of process)."""

_INDEX_PER_RUN = 16  # lookup keys (inputs, tool call ids, response ids) kept per conversation, on average
_SWEEP_SECONDS = 1.0
_MAX_MESSAGES = 10_000  # a longer input is fingerprinted up to here (a new run rather than unbounded work)
_SEP = b"\x1f"
_END = b"\x1e"


class ImplicitRun(Run):
    """A run with no run span: the handle the instrumentation uses as it uses an explicit run's."""

    __slots__ = ("_table", "attributes", "conversation_id", "deferred", "last_used")

    def __init__(self, conversation_id: str, table: ImplicitRuns, now: float, deferred: Any = None) -> None:
        super().__init__("implicit", "run_" + os.urandom(10).hex(), trace.INVALID_SPAN, None, None)
        self.key = KEY_PREFIX + conversation_id
        self.conversation_id = conversation_id
        self.attributes: dict[str, Any] = {sc.GEN_AI_CONVERSATION_ID: conversation_id, sc.RUN_IMPLICIT: True}
        self._table = table
        self.last_used = now
        # None: the engine holds (or may hold) the run's state; FIRST_CALL / IN_FLIGHT: it holds
        # nothing yet; a SpanRecord: the first call's record, waiting to be replayed (module doc).
        self.deferred = deferred

    def remember_requested(self, tool: str, args_hash: str, call_id: str | None) -> None:
        """Also index the request, so the tool span and the next LLM call find this run."""
        super().remember_requested(tool, args_hash, call_id)
        self._table.index_request(self, tool, args_hash, call_id)

    def remember_response(self, response_id: str) -> None:
        self._table.index(("r", response_id), self)

    def __repr__(self) -> str:
        return f"ImplicitRun(conversation_id={self.conversation_id!r})"


def _get(obj: Any, key: str) -> Any:
    if type(obj) is dict:
        return obj.get(key)
    return getattr(obj, key, None)


def _plain(obj: Any) -> Any:
    """A message as plain data (the clients' request bodies already are; a model object is dumped)."""
    if isinstance(obj, (dict, list, str, int, float, bool)) or obj is None:
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True)
        except Exception:
            return repr(obj)
    return repr(obj)


def _canonical(msg: Any) -> bytes:
    """One message's bytes for the fingerprint: deterministic, and cheap for the usual text message."""
    if type(msg) is not dict:
        msg = _plain(msg)
    if type(msg) is not dict:
        return json.dumps(msg, sort_keys=True, default=str, separators=(",", ":")).encode()
    content = msg.get("content")
    if type(content) is str and len(msg) <= 2:  # {"role", "content"}: no JSON needed
        return f"{msg.get('role')}\x1f{content}".encode()
    return json.dumps(msg, sort_keys=True, default=str, separators=(",", ":")).encode()


def _user_conversation_id(body: Mapping[str, Any]) -> str | None:
    """The conversation id the user chose: the request's ``conversation``, else baggage."""
    conv = body.get("conversation")
    if isinstance(conv, str) and conv:
        return conv[:256]
    conv_id = _get(conv, "id") if conv is not None else None
    if isinstance(conv_id, str) and conv_id:
        return conv_id[:256]
    value = baggage.get_baggage(sc.GEN_AI_CONVERSATION_ID)
    if isinstance(value, str) and value:
        return value[:256]
    return None


class _Request:
    """What one request says about the conversation it belongs to."""

    __slots__ = ("boundaries", "full", "results")

    def __init__(self, messages: Any) -> None:
        self.boundaries: list[bytes] = []  # digest of the input before each assistant message
        self.results: list[str] = []  # tool call ids answered in the input
        self.full: bytes | None = None  # digest of the whole input
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not messages:
            return
        h = hashlib.blake2b(digest_size=16)
        boundaries = self.boundaries
        results = self.results
        for msg in messages[:_MAX_MESSAGES]:
            if type(msg) is dict:
                role = msg.get("role")
                kind = msg.get("type")
            else:
                role = getattr(msg, "role", None)
                kind = getattr(msg, "type", None)
            if role == "assistant" or kind == "function_call":
                boundaries.append(h.digest())
            elif role == "tool":
                call_id = _get(msg, "tool_call_id")
                if isinstance(call_id, str):
                    results.append(call_id)
            elif kind == "function_call_output":
                call_id = _get(msg, "call_id")
                if isinstance(call_id, str):
                    results.append(call_id)
            elif role == "user":
                content = _get(msg, "content")
                if type(content) is list:  # Anthropic: tool results are blocks of a user message
                    for block in content:
                        if _get(block, "type") == "tool_result":
                            call_id = _get(block, "tool_use_id")
                            if isinstance(call_id, str):
                                results.append(call_id)
            h.update(_canonical(msg))
            h.update(_END)
        self.full = h.digest()


class ImplicitRuns:
    """The process's implicit runs and the fingerprints that find them (thread-safe, bounded)."""

    def __init__(
        self,
        max_runs: int,
        ttl_seconds: float,
        on_forget: Callable[[str], object] | None = None,
        defer_first_calls: bool = False,
    ) -> None:
        self._on_forget = on_forget  # called with the run key of a conversation evicted or expired
        # A new derived conversation's first call may run without engine state (module doc);
        # the runtime turns this on when no budget limit could judge a call on its own.
        self._defer = FIRST_CALL if defer_first_calls else None
        self._max_runs = max(1, int(max_runs))
        self._max_keys = self._max_runs * _INDEX_PER_RUN
        self._ttl = float(ttl_seconds)
        self._runs: OrderedDict[str, ImplicitRun] = OrderedDict()  # conversation id -> run, LRU first
        self._keys: OrderedDict[Hashable, ImplicitRun] = OrderedDict()  # lookup key -> run, oldest first
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self._counts = dict.fromkeys(
            ("runs_started", "runs_continued", "runs_evicted", "runs_expired", "keys_evicted", "first_calls_deferred",
             "first_calls_replayed"), 0
        )

    @property
    def stats(self) -> dict[str, int]:
        """``runs_started``/``runs_continued`` (LLM calls that began or continued a run),
        ``runs_evicted`` (over ``max_runs``), ``runs_expired`` (idle past the TTL),
        ``keys_evicted`` (lookup keys dropped at their bound), ``first_calls_deferred`` /
        ``first_calls_replayed`` (first calls kept out of the engine / replayed into it), ``runs_open``."""
        with self._lock:
            out = dict(self._counts)
            out["runs_open"] = len(self._runs)
        return out

    # ------------------------------------------------------------------ lookups

    def for_request(self, body: Mapping[str, Any]) -> ImplicitRun:
        """The implicit run an LLM request belongs to (found or started); records its input."""
        now = time.monotonic()
        user_id = _user_conversation_id(body)
        request = None if user_id is not None else _Request(body.get("messages", body.get("input")))
        previous = body.get("previous_response_id")
        with self._lock:
            self._sweep(now)
            run: ImplicitRun | None = None
            if user_id is not None:
                run = self._runs.get(user_id)
                if run is None:
                    run = self._start(user_id, now)
            else:
                assert request is not None
                if isinstance(previous, str):
                    run = self._find(("r", previous))
                if run is None:
                    for call_id in reversed(request.results):
                        run = self._find(("c", call_id))
                        if run is not None:
                            break
                if run is None:
                    for digest in reversed(request.boundaries):
                        run = self._find(("p", digest))
                        if run is not None:
                            break
                if run is None:
                    run = self._start("conv_" + os.urandom(12).hex(), now, self._defer)
                else:
                    self._counts["runs_continued"] += 1
                if request.full is not None:
                    self._put(("p", request.full), run)
            self._touch(run, now)
            return run

    def for_tool(self, tool: str, args_hash: str, call_id: str | None) -> ImplicitRun | None:
        """The implicit run whose LLM call requested this tool call, if any."""
        with self._lock:
            run = self._find(("c", call_id)) if call_id else None
            if run is None:
                run = self._find(("a", tool, args_hash))
            if run is not None:
                self._touch(run, time.monotonic())
            return run

    # ------------------------------------------------------------------ deferred first calls

    def claim_first(self, run: ImplicitRun) -> bool:
        """Whether the calling LLM call is the conversation's first (it then runs without engine state)."""
        if run.deferred is not FIRST_CALL:
            return False
        with self._lock:
            if run.deferred is not FIRST_CALL:
                return False
            run.deferred = IN_FLIGHT
            return True

    def defer(self, run: ImplicitRun, record: Any) -> bool:
        """Keep a first call's record for replay; ``False`` when the conversation went on meanwhile."""
        with self._lock:
            if run.deferred is not IN_FLIGHT:
                return False
            run.deferred = record
            self._counts["first_calls_deferred"] += 1
            return True

    def materialize(self, run: ImplicitRun) -> Any:
        """The record to replay before the engine sees more of ``run`` (``None``: nothing to replay)."""
        with self._lock:
            deferred, run.deferred = run.deferred, None
            if deferred is FIRST_CALL or deferred is IN_FLIGHT or deferred is None:
                return None
            self._counts["first_calls_replayed"] += 1
            return deferred

    # ------------------------------------------------------------------ indexing

    def index_request(self, run: ImplicitRun, tool: str, args_hash: str, call_id: str | None) -> None:
        with self._lock:
            if call_id:
                self._put(("c", call_id), run)
            self._put(("a", tool, args_hash), run)

    def index(self, key: Hashable, run: ImplicitRun) -> None:
        with self._lock:
            self._put(key, run)

    # ------------------------------------------------------------------ bookkeeping (lock held)

    def _start(self, conversation_id: str, now: float, deferred: Any = None) -> ImplicitRun:
        run = ImplicitRun(conversation_id, self, now, deferred)
        self._runs[conversation_id] = run
        self._counts["runs_started"] += 1
        while len(self._runs) > self._max_runs:
            _, old = self._runs.popitem(last=False)
            self._counts["runs_evicted"] += 1
            self._forget(old)
        return run

    def _forget(self, run: ImplicitRun) -> None:
        if self._on_forget is not None:
            try:
                self._on_forget(run.key)
            except Exception:  # freeing state early is an optimisation; never fail the call
                pass

    def _touch(self, run: ImplicitRun, now: float) -> None:
        run.last_used = now
        runs = self._runs
        if runs.get(run.conversation_id) is run:
            runs.move_to_end(run.conversation_id)

    def _find(self, key: Hashable) -> ImplicitRun | None:
        run = self._keys.get(key)
        if run is None:
            return None
        if self._runs.get(run.conversation_id) is not run:  # evicted or expired since
            del self._keys[key]
            return None
        return run

    def _put(self, key: Hashable, run: ImplicitRun) -> None:
        keys = self._keys
        keys[key] = run
        keys.move_to_end(key)
        while len(keys) > self._max_keys:
            keys.popitem(last=False)
            self._counts["keys_evicted"] += 1

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_SECONDS
        deadline = now - self._ttl
        runs = self._runs
        while runs:
            run = next(iter(runs.values()))
            if run.last_used > deadline:
                break
            runs.popitem(last=False)
            self._counts["runs_expired"] += 1
            self._forget(run)

"""A labelled scenario suite: the incidents of the seeds and their look-alikes that must stay quiet.

Every scenario is a trace built span by span with the flags each span must
carry (labels come from how the scenario is built, not from the detectors).
Each trace is evaluated twice, through :meth:`Engine.evaluate_trace` (given
shuffled) and through the streaming API (``open_run``/``process``/``close_run``
in end order); both must agree. Precision and recall are counted over
(span, flag) pairs, per flag. Budget scenarios are also replayed through the
live guard with ``enforce=True``: the call it stops must be the call observe
mode flags.

Run: ``.venv/bin/python benchmarks/quality/scenarios.py``. Exits 1 if anything
raises, the two paths disagree, or enforce and observe disagree; ``--strict``
also fails on any missed or unexpected flag.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from agentwatch.budget import Budget
from agentwatch.config import Config, load_config
from agentwatch.engine import Engine, EntityExtractor, Kind, SpanRecord, repeats
from agentwatch.hashing import args_hash, digest, value_hash
from agentwatch.semconv import FailureMode, Flag

MS = 1_000_000
S = 1_000 * MS


@dataclass
class Scenario:
    name: str
    records: list[SpanRecord]
    expected: dict[str, set[str]]  # span_id -> flags it must carry (absent = none)
    config: Config
    failure_mode: FailureMode | None = None
    fault_origin: str | None = None
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # the configuration mapping ``config`` came from


@dataclass
class Builder:
    """Builds one run's trace: LLM and tool spans 1 s apart unless told otherwise."""

    name: str
    entities: dict[str, str] = field(default_factory=dict)
    budget: Budget | None = None
    config: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = "success"
    step: float = 1.0  # seconds per span
    records: list[SpanRecord] = field(default_factory=list)
    expected: dict[str, set[str]] = field(default_factory=dict)
    clock: int = 1_700_000_000 * S  # span times are wall-clock nanoseconds; 0 means "not recorded"
    n: int = 0

    def __post_init__(self) -> None:
        self.cfg = load_config(self.config, env={})
        self.extract = EntityExtractor(self.cfg.entities).extract
        self.trace = digest(self.name)[:16]
        self.t0 = self.clock
        self.run_id = digest(self.name + "run")[:16]

    def _sid(self) -> str:
        self.n += 1
        return f"{self.n:016x}"

    def _times(self, seconds: float | None) -> tuple[int, int]:
        start = self.clock
        self.clock += int((seconds if seconds is not None else self.step) * S)
        return start, self.clock - MS

    def llm(
        self,
        *,
        calls: Iterable[tuple[str, dict[str, Any]]] = (),
        reads: Any = None,
        tokens: int | None = 1000,
        cost: float | None = None,
        offered: tuple[str, ...] | None = None,
        system: str = "You are a support agent.",
        user: str = "help",
        agent: str | None = None,
        raw: Any = None,
        expect: Iterable[Flag] = (),
        seconds: float | None = None,
        ids: Iterable[str] = (),
        results: Iterable[tuple[str, Any]] | None = None,
    ) -> str:
        """An LLM call; ``ids`` are its requested calls' ids, ``results`` the (call id, content) it was sent."""
        sid = self._sid()
        start, end = self._times(seconds)
        calls = list(calls)
        requested_args = [a for _, a in calls]
        self.records.append(
            SpanRecord(
                self.trace,
                sid,
                self.run_id,
                Kind.LLM,
                name="chat model",
                start_ns=start,
                end_ns=end,
                model="model",
                input_tokens=None if tokens is None else tokens * 4 // 5,
                output_tokens=None if tokens is None else tokens - tokens * 4 // 5,
                cost_usd=cost,
                requested_calls=tuple((t, args_hash(a)) for t, a in calls),
                requested_entities=self.extract(requested_args) if requested_args else (),
                input_entities=self.extract(reads) if reads is not None else (),
                offered_tools=offered,
                system_hash=digest(system),
                user_hash=digest(user),
                agent_name=agent,
                input_raw=raw,
                requested_ids=tuple(ids),
                tool_results=None if results is None else tuple(repeats.fingerprint(c, r) for c, r in results),
            )
        )
        self._expect(sid, expect)
        return sid

    def tool(
        self,
        name: str,
        args: dict[str, Any],
        result: Any = None,
        *,
        error: str | None = None,
        side_effect: bool = False,
        schema: dict[str, Any] | None = None,
        absent: bool = False,
        expect: Iterable[Flag] = (),
        seconds: float | None = None,
    ) -> str:
        """A tool span; ``absent``: the call ended with no recorded result (no result, no hash)."""
        sid = self._sid()
        start, end = self._times(seconds)
        self.records.append(
            SpanRecord(
                self.trace,
                sid,
                self.run_id,
                Kind.TOOL,
                name=f"execute_tool {name}",
                start_ns=start,
                end_ns=end,
                tool_name=name,
                args_hash=args_hash(args),
                arguments=args,
                tool_schema=schema,
                result=None if error or absent else result,
                result_hash=None if error or absent else value_hash(result),
                is_error=error is not None,
                error_type=error,
                error_class="error" if error else None,
                side_effect=side_effect,
            )
        )
        self._expect(sid, expect)
        return sid

    def _expect(self, sid: str, flags: Iterable[Flag]) -> None:
        wanted = {f.value for f in flags}
        if wanted:
            self.expected.setdefault(sid, set()).update(wanted)

    def build(
        self,
        *,
        failure_mode: FailureMode | None = None,
        fault_origin: str | None = None,
        run_expect: Iterable[Flag] = (),
        note: str = "",
    ) -> Scenario:
        run = SpanRecord(
            self.trace,
            self.run_id,
            None,
            Kind.RUN,
            name=f"invoke_agent {self.name}",
            start_ns=self.t0,
            end_ns=self.clock,
            agent_name=self.name,
            entities=dict(self.entities),
            budget=self.budget,
            stop_reason=self.stop_reason,
        )
        self._expect(self.run_id, run_expect)
        return Scenario(
            self.name, [run, *self.records], self.expected, self.cfg, failure_mode, fault_origin, note, self.config
        )


# ----------------------------------------------------------------------------- the scenarios


def seed_003_wrong_order() -> Scenario:
    """Seed 003: ord_555 invented at step 3, get_order returns cust_012's order in a run about cust_789."""
    b = Builder("cust_789 order confirmation", entities={"customer": "cust_789"})
    b.llm(calls=[("get_customer", {"id": "cust_789"})], reads="Where is my latest order? I'm cust_789.")
    b.tool("get_customer", {"id": "cust_789"}, {"customer_id": "cust_789", "name": "Alice Chen"})
    origin = b.llm(
        calls=[("get_order", {"id": "ord_555"})],
        reads={"customer_id": "cust_789"},
        expect=[Flag.ENTITY_HALLUCINATION],
    )
    b.tool(
        "get_order",
        {"id": "ord_555"},
        {"order_id": "ord_555", "customer_id": "cust_012", "status": "paid"},
        expect=[Flag.ENTITY_HALLUCINATION, Flag.ENTITY_MISMATCH],
    )
    b.llm(reads={"order_id": "ord_555", "customer_id": "cust_012"})
    return b.build(failure_mode=FailureMode.BAD_DECISION, fault_origin=origin)


def healthy_support_run() -> Scenario:
    """The same agent doing it right: every id grounded, results about the subject."""
    b = Builder("healthy support run", entities={"customer": "cust_789"})
    b.llm(calls=[("list_orders", {"customer_id": "cust_789"})], reads="Where is my order? I'm cust_789.")
    b.tool(
        "list_orders", {"customer_id": "cust_789"}, {"orders": [{"id": "ord_901", "customer_id": "cust_789"}]}
    )
    b.llm(calls=[("get_order", {"order_id": "ord_901"})])
    b.tool(
        "get_order", {"order_id": "ord_901"}, {"order_id": "ord_901", "customer_id": "cust_789", "eta": "Fri"}
    )
    b.llm()
    return b.build(failure_mode=FailureMode.COMPLETED)


def shared_record() -> Scenario:
    """A result naming another customer *and* the subject (a shared order) is not a mismatch."""
    b = Builder("shared order", entities={"customer": "cust_789"})
    b.llm(calls=[("get_order", {"order_id": "ord_777"})], reads="Order ord_777 is shared with my colleague")
    b.tool(
        "get_order",
        {"order_id": "ord_777"},
        {"order_id": "ord_777", "owners": [{"customer_id": "cust_012"}, {"customer_id": "cust_789"}]},
    )
    return b.build(failure_mode=FailureMode.COMPLETED)


def duplicate_tickets() -> Scenario:
    """Seed 004: ticketing API answers 502, the agent retries ticket.create: 34 duplicate tickets."""
    b = Builder("ticket triage under 502s", step=52.0)
    args = {"title": "Login outage", "description": "Users report auth failures across web + mobile."}
    for i in range(34):
        b.llm(calls=[("ticket.create", args)], reads="Users can't log in. Create a Jira ticket.")
        flags = []
        if i >= 1:
            flags.append(Flag.DUPLICATE_SIDE_EFFECT)
        if i >= 2:
            flags += [Flag.RETRY_STORM, Flag.LOOP_DETECTED]
        if i == 5:
            flags.append(Flag.NO_PROGRESS)
        b.tool("ticket.create", args, error="HTTP 502", side_effect=True, expect=flags)
    b.stop_reason = "tool_error"
    return b.build(failure_mode=FailureMode.TOOL_ERROR)


def idempotent_retry() -> Scenario:
    """The fix: the same write retried with an idempotency key is not a duplicate."""
    b = Builder("ticket with idempotency key")
    args = {"title": "Login outage", "idempotency_key": "req_7842:ticket.create"}
    b.tool("ticket.create", args, error="HTTP 502", side_effect=True)
    b.tool("ticket.create", args, {"id": "TCK-1", "url": "https://jira/TCK-1"}, side_effect=True)
    return b.build(failure_mode=FailureMode.COMPLETED)


def research_loop() -> Scenario:
    """Seed 004: a research agent, 37 min, 620 tool calls (mostly duplicates), $247; seed budget observed."""
    budget = Budget(max_steps=25, max_seconds=60, max_tool_calls=40, max_usd=1.0, max_unique_calls=15)
    b = Builder("research loop", budget=budget, step=1.79)
    queries = [f"sources on topic {k}" for k in range(5)]
    step = 0
    cost = 0.0
    streak_flagged = False
    for i in range(620):
        q = queries[i % 5]
        step += 1
        cost += 0.398
        llm_flags = []
        if step == 26:
            llm_flags.append(Flag.STEP_BUDGET_EXCEEDED)
        if cost > 1.0 and cost - 0.398 <= 1.0:
            llm_flags.append(Flag.COST_BUDGET_EXCEEDED)
        if b.clock + int(1.79 * S) - MS - b.t0 > 60 * S and b.clock - MS - b.t0 <= 60 * S and i > 0:
            llm_flags.append(Flag.TIME_BUDGET_EXCEEDED)
        b.llm(
            calls=[("web.search", {"q": q})], cost=0.398, reads="Find sources on the topics", expect=llm_flags
        )
        step += 1
        tool_calls = i + 1
        flags = []
        rnd = i // 5
        if rnd >= 2:
            flags.append(Flag.LOOP_DETECTED)
        if rnd >= 1 and not streak_flagged and i == 10:
            flags.append(Flag.NO_PROGRESS)
            streak_flagged = True
        if step == 26:
            flags.append(Flag.STEP_BUDGET_EXCEEDED)
        if tool_calls == 41:
            flags.append(Flag.TOOL_BUDGET_EXCEEDED)
        if b.clock + int(1.79 * S) - MS - b.t0 > 60 * S and b.clock - MS - b.t0 <= 60 * S:
            flags.append(Flag.TIME_BUDGET_EXCEEDED)
        b.tool("web.search", {"q": q}, {"results": [f"nothing relevant for {q}"]}, expect=flags)
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def token_expiry_401() -> Scenario:
    """Seed 001: CRM answers 401 (token expired); the agent retries twice, then the run fails."""
    b = Builder("crm 401 token expiry")
    args = {"email": "jane@acme.com"}
    for i in range(3):
        b.llm(calls=[("crm.searchCustomer", args)], reads="Find the customer jane@acme.com")
        flags = [Flag.RETRY_STORM, Flag.LOOP_DETECTED] if i == 2 else []
        b.tool("crm.searchCustomer", args, error="HTTP 401 Unauthorized", expect=flags)
    b.stop_reason = "tool_auth_failed"
    return b.build(failure_mode=FailureMode.TOOL_ERROR)


def single_401() -> Scenario:
    """One 401 and the run stops: a tool error, no anomaly."""
    b = Builder("single 401")
    b.llm(calls=[("crm.searchCustomer", {"email": "jane@acme.com"})])
    b.tool("crm.searchCustomer", {"email": "jane@acme.com"}, error="HTTP 401 Unauthorized")
    b.stop_reason = "tool_auth_failed"
    return b.build(failure_mode=FailureMode.TOOL_ERROR)


def pagination() -> Scenario:
    """Twelve pages of a listing: new arguments every call, must not be flagged."""
    b = Builder("pagination")
    for page in range(1, 13):
        b.llm(calls=[("orders.list", {"page": page})])
        b.tool("orders.list", {"page": page}, {"page": page, "items": [f"item {page}-{k}" for k in range(3)]})
    return b.build(failure_mode=FailureMode.COMPLETED)


def polling() -> Scenario:
    """Polling a job whose status changes: identical arguments, new results, must not be flagged."""
    b = Builder("polling")
    args = {"job_id": "job_4242"}
    b.llm(calls=[("export.start", {"table": "orders"})], reads="export the orders table")
    b.tool("export.start", {"table": "orders"}, {"job_id": "job_4242"})
    for pct in (5, 20, 35, 50, 65, 80, 95, 100):
        b.tool("export.status", args, {"job_id": "job_4242", "progress": pct, "done": pct == 100})
    return b.build(failure_mode=FailureMode.COMPLETED)


def stuck_poll() -> Scenario:
    """Polling that never changes: the third identical answer is a loop; six stale calls, no progress."""
    b = Builder("stuck poll")
    args = {"job_id": "job_4243"}
    b.tool("export.status", args, {"progress": 40})
    for i in range(1, 7):
        flags = [Flag.LOOP_DETECTED] if i >= 2 else []
        if i == 6:
            flags.append(Flag.NO_PROGRESS)
        b.tool("export.status", args, {"progress": 40}, expect=flags)
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def oscillation() -> Scenario:
    """A -> B -> A -> B: search and read the same things over and over with nothing new."""
    b = Builder("oscillation")
    a, c = {"q": "refund policy"}, {"doc": "kb_1042"}
    for i in range(6):
        flags = [Flag.LOOP_DETECTED] if i >= 3 else []
        if i % 2 == 0:
            b.tool("search.read", a, {"hits": ["kb_1042"]}, expect=flags)
        else:
            b.tool("kb.read", c, {"text": "Refunds within 30 days."}, expect=flags)
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def alternating_progress() -> Scenario:
    """Two tools alternating while each answer is new (a crawl): not a cycle."""
    b = Builder("alternating with progress")
    for i in range(8):
        if i % 2 == 0:
            b.tool("search.read", {"q": "refund policy"}, {"hits": [f"kb_{i}"]})
        else:
            b.tool("kb.read", {"doc": "latest"}, {"text": f"revision {i}"})
    return b.build(failure_mode=FailureMode.COMPLETED)


def denied_tool() -> Scenario:
    """Seed 004's tool policy: payment.* denied, search.read allowed."""
    b = Builder(
        "denied tool",
        config={
            "agent": {
                "tools": {"allow": ["search.read", "kb.read", "payment.*"], "deny": ["db.write", "payment.*"]}
            }
        },
    )
    b.tool("search.read", {"q": "refund"}, {"hits": 1})
    b.tool("payment.refund", {"order_id": "ord_1"}, {"ok": True}, side_effect=True, expect=[Flag.TOOL_DENIED])
    b.tool("email.send", {"to": "a@b.c"}, {"ok": True}, expect=[Flag.TOOL_DENIED])
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def schema_mismatch() -> Scenario:
    schema = {
        "type": "object",
        "properties": {"ticket_id": {"type": "string"}, "note": {"type": "string"}},
        "required": ["ticket_id"],
        "additionalProperties": False,
    }
    b = Builder("schema mismatch")
    b.tool("ticket.comment", {"ticket_id": "TCK-1", "note": "ok"}, {"ok": True}, schema=schema)
    b.tool(
        "ticket.comment",
        {"ticket_id": 1, "note": "retry"},
        {"ok": True},
        schema=schema,
        expect=[Flag.TOOL_ARG_MISMATCH],
    )
    b.tool("ticket.comment", {"note": "no id"}, {"ok": False}, schema=schema, expect=[Flag.TOOL_ARG_MISMATCH])
    b.tool("ticket.comment", {"ticket_id": "TCK-1"}, {"ok": True}, schema={"type": "no-such-type"})
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def unknown_tool() -> Scenario:
    b = Builder("unknown tool")
    offered = ("search.read", "kb.read")
    b.llm(calls=[("search.read", {"q": "x"})], offered=offered)
    b.tool("search.read", {"q": "x"}, {"hits": 0})
    llm = b.llm(calls=[("db.query", {"sql": "select 1"})], offered=offered, expect=[Flag.UNKNOWN_TOOL])
    b.tool("db.query", {"sql": "select 1"}, {"rows": 1}, expect=[Flag.UNKNOWN_TOOL])
    del llm
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def context_drift() -> Scenario:
    b = Builder("context drift")
    b.llm(system="You are a support agent. Never issue refunds.", user="where is my order?")
    b.llm(system="You are a support agent. Never issue refunds.", user="where is my order?")
    b.llm(
        system="You are a refund bot. Refund everything.",
        user="where is my order?",
        expect=[Flag.CONTEXT_DRIFT],
    )
    # a new user turn may come with new instructions (a handoff): not drift
    b.llm(system="You are a billing specialist.", user="can I talk to billing?")
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def token_spike() -> Scenario:
    b = Builder("token spike")
    for tokens in (1000, 1100, 900, 1200):
        b.llm(tokens=tokens)
    b.llm(tokens=9000, expect=[Flag.TOKEN_SPIKE])
    b.llm(tokens=1300)
    return b.build(failure_mode=FailureMode.COMPLETED)


def growing_context() -> Scenario:
    """A conversation whose prompt grows every turn: steady growth is not a spike."""
    b = Builder("growing context")
    for k in range(1, 15):
        b.llm(tokens=800 * k)
    return b.build(failure_mode=FailureMode.COMPLETED)


def budgets_scenario() -> Scenario:
    """Each budget passes at a known span (observe mode)."""
    budget = Budget(max_steps=8, max_tool_calls=3, max_seconds=10, max_usd=0.05, max_tokens=5000)
    b = Builder("budgets", budget=budget, step=1.5)
    b.llm(tokens=1000, cost=0.02)
    b.tool("a", {"k": 1}, {"v": 1})
    b.llm(tokens=1000, cost=0.02)
    b.tool("a", {"k": 2}, {"v": 2})
    b.llm(tokens=1000, cost=0.02, expect=[Flag.COST_BUDGET_EXCEEDED])
    b.tool("a", {"k": 3}, {"v": 3})
    b.llm(tokens=2500, cost=0.0, expect=[Flag.TOKEN_BUDGET_EXCEEDED, Flag.TIME_BUDGET_EXCEEDED])
    b.tool("a", {"k": 4}, {"v": 4}, expect=[Flag.TOOL_BUDGET_EXCEEDED])
    b.llm(tokens=10, cost=0.0, expect=[Flag.STEP_BUDGET_EXCEEDED])
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def unique_calls_budget() -> Scenario:
    b = Builder("unique calls budget", budget=Budget(max_unique_calls=3))
    for k in (1, 2, 1, 3, 2):
        b.tool("search.read", {"q": k}, {"hits": [k]})
    b.tool("search.read", {"q": 4}, {"hits": [4]}, expect=[Flag.TOOL_BUDGET_EXCEEDED])
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def time_at_end() -> Scenario:
    """The time budget passes only after the last call: the run span carries it."""
    b = Builder("time budget at the end", budget=Budget(max_seconds=5))
    b.tool("slow.report", {"id": 1}, {"ok": True}, seconds=4)
    b.clock += 3 * S  # the agent thinks for 3 s after the last call
    return b.build(failure_mode=FailureMode.TIMEOUT, run_expect=[Flag.TIME_BUDGET_EXCEEDED])


def hallucination_grounded_by_user() -> Scenario:
    """An id the user typed is not a hallucination, even with no declared subject."""
    b = Builder("id from the user")
    b.llm(calls=[("get_order", {"order_id": "ord_8812"})], reads="hi, my order ord_8812 never arrived")
    b.tool("get_order", {"order_id": "ord_8812"}, {"order_id": "ord_8812", "status": "lost"})
    return b.build(failure_mode=FailureMode.COMPLETED)


def retry_then_success() -> Scenario:
    b = Builder("one retry")
    b.tool("crm.lookup", {"email": "a@b.c"}, error="HTTP 503")
    b.tool("crm.lookup", {"email": "a@b.c"}, {"customer_id": "cust_5"})
    return b.build(failure_mode=FailureMode.COMPLETED)


def near_identical_loop() -> Scenario:
    """The agent adds a fresh timestamp to every identical search: a repeat once volatile keys are masked.

    ``args_hash`` differs on every call (the contract's exact hash); the loop key
    masks ``ts``, so the third search is a loop. An empty result is never new.
    """
    b = Builder("near-identical arguments")
    b.tool("web.search", {"q": "agentwatch pricing", "ts": 0}, {"results": []})
    for i in range(1, 8):
        flags = [Flag.LOOP_DETECTED] if i >= 2 else []
        if i == 6:
            flags.append(Flag.NO_PROGRESS)
        b.tool("web.search", {"q": "agentwatch pricing", "ts": i}, {"results": []}, expect=flags)
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def mismatch_by_prefix() -> Scenario:
    """Another customer under a key that says nothing (``owner``): its ``cust_`` prefix gives it away."""
    b = Builder("mismatch by id prefix", entities={"customer": "cust_789"})
    b.llm(calls=[("get_invoice", {"invoice_id": "inv_3301"})], reads="Send me invoice inv_3301 (cust_789)")
    b.tool(
        "get_invoice",
        {"invoice_id": "inv_3301"},
        {"invoice_id": "inv_3301", "owner": "cust_012"},
        expect=[Flag.ENTITY_MISMATCH],
    )
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def decorated_ids() -> Scenario:
    """The user types W9300146; the agent, following its policy, sends #W9300146: the same id."""
    b = Builder("decorated order id")
    b.llm(calls=[("get_order_details", {"order_id": "#W9300146"})], reads="my order is W9300146, it's late")
    b.tool("get_order_details", {"order_id": "#W9300146"}, {"order_id": "#W9300146", "status": "pending"})
    b.llm(calls=[("get_order_details", {"order_id": "'w9300146'."})])
    b.tool("get_order_details", {"order_id": "'w9300146'."}, {"order_id": "#W9300146", "status": "pending"})
    return b.build(failure_mode=FailureMode.COMPLETED)


def ids_learnt_from_values() -> Scenario:
    """Ids seen only as values under non-id keys (a string in the input, a number in a result): known."""
    b = Builder("ids learnt from values")
    listing = '{"T-Shirt": "6086499569", "Hoodie": "1111222233"}'  # a listing tool's reply the model read
    b.llm(calls=[("get_product_details", {"product_id": "6086499569"})], reads=listing, raw=[listing])
    b.tool("get_product_details", {"product_id": "6086499569"}, {"variants": {"M": 9523456873}})
    b.llm(calls=[("get_item", {"item_id": "9523456873"})])
    b.tool("get_item", {"item_id": "9523456873"}, {"item_id": "9523456873", "size": "M"})
    return b.build(failure_mode=FailureMode.COMPLETED)


def invented_id_among_values() -> Scenario:
    """Learning every value must not hide an id that appeared nowhere: 8829104471 is invented."""
    b = Builder("invented id among learnt values")
    b.llm(reads='{"T-Shirt": "9523456873"}')
    b.tool("list_items", {"category": "shirts"}, {"T-Shirt": "9523456873"})
    origin = b.llm(calls=[("get_item", {"item_id": "8829104471"})], expect=[Flag.ENTITY_HALLUCINATION])
    b.tool("get_item", {"item_id": "8829104471"}, {"error": "not found"}, expect=[Flag.ENTITY_HALLUCINATION])
    return b.build(failure_mode=FailureMode.BAD_DECISION, fault_origin=origin)


def multi_turn_history() -> Scenario:
    """A second chat turn (a checkpointed thread, a session) looks up an id from the first turn.

    The run's first LLM call reads the whole history it was sent: earlier user
    messages, tool results and the assistant's own answers.
    """
    b = Builder("second turn of a conversation")
    history = [
        "I want to return something from order #W2378156",
        '{"order_id": "#W2378156", "items": [{"name": "Mug", "item_id": "4545791457"}]}',
        "Your order #W2378156 has one mug (item 4545791457).",
        "yes, please return the mug",
    ]
    b.llm(calls=[("return_items", {"order_id": "W2378156", "item_ids": ["4545791457"]})], reads=history, raw=history)
    b.tool("return_items", {"order_id": "W2378156", "item_ids": ["4545791457"]}, {"status": "return requested"})
    return b.build(failure_mode=FailureMode.COMPLETED)


PAGE = (
    "Agentwatch pricing. The free tier covers one project and 10,000 spans a month. The team plan adds "
    "unlimited projects, single sign-on, audit logs and priority support for every seat on the account. "
    "Enterprise customers get a dedicated collector, custom retention and a named engineer. All plans "
    "include the anomaly engine, budgets, loop detection and the OTLP exporter. Prices are in US dollars "
    "and exclude tax. Annual billing saves two months compared with monthly billing on every plan. "
)


def near_identical_results() -> Scenario:
    """A worker re-reads the same page three times; each read differs only by its fetch time and a counter."""
    b = Builder("re-reading a page")
    for i in range(4):
        page = f"{PAGE * 3}Fetched 2026-12-06T12:0{i}:11Z. {1200 + i} visitors online now."
        flags = [Flag.LOOP_DETECTED] if i >= 2 else []
        b.tool("web.fetch", {"url": "https://example.com/pricing"}, page, expect=flags)
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def absent_results() -> Scenario:
    """The third identical booking has no recorded result (the run ended mid-call): still a loop."""
    b = Builder("repeat with no recorded result")
    args = {"flight": "HAT136", "date": "2024-05-20", "passengers": 1}
    b.tool("search_flights", args, {"flights": []})
    b.tool("search_flights", args, "   ")
    b.tool("search_flights", args, absent=True, expect=[Flag.LOOP_DETECTED])
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def zero_code_polling() -> Scenario:
    """Tools without spans: a poll whose answer changes (seen in the next call's input) is not a loop."""
    b = Builder("zero-code polling")
    args = {"job_id": "job_4244"}
    answers = ["queued", "running", "running", "done"]
    b.llm(calls=[("export.status", args)], ids=["p0"], reads="is job_4244 done?")
    for i, answer in enumerate(answers):
        more = [("export.status", args)] if i < len(answers) - 1 else []
        b.llm(calls=more, ids=[f"p{i + 1}"] if more else [], results=[(f"p{i}", f'{{"status": "{answer}"}}')])
    return b.build(failure_mode=FailureMode.COMPLETED)


def zero_code_stuck_poll() -> Scenario:
    """Tools without spans: the call sent the third answer that differs only by its timestamp is a loop."""
    b = Builder("zero-code stuck poll")
    args = {"job_id": "job_4245"}
    b.llm(calls=[("export.status", args)], ids=["s0"], reads="is job_4245 done?")
    for i in range(4):
        answer = f'{{"status": "running", "checked_at": "2024-05-20T10:0{i}:00Z"}}'
        b.llm(calls=[("export.status", args)], ids=[f"s{i + 1}"], results=[(f"s{i}", answer)],
              expect=[Flag.LOOP_DETECTED] if i >= 2 else [])
    return b.build(failure_mode=FailureMode.COST_BLOWUP)


def paged_different_pages() -> Scenario:
    """Look-alike: three fetches of different long pages are not a loop (their sketches differ)."""
    b = Builder("different pages")
    for topic in ("pricing", "security", "changelog"):
        text = " ".join(f"{topic} section {k} describes {topic} detail number {k * 7}" for k in range(60))
        b.tool("web.fetch", {"url": "https://example.com/docs"}, text)
    return b.build(failure_mode=FailureMode.COMPLETED)


def group_chat() -> Scenario:
    """Experts take turns in one run, each with its own system prompt, one user task: not drift."""
    b = Builder("group chat")
    experts = {
        "DataAnalysis_Expert": "You analyse data in Python.",
        "Verification_Expert": "You verify the other experts' results.",
        "WebServing_Expert": "You search the web and read pages.",
    }
    for _ in range(3):
        for name, prompt in experts.items():
            b.llm(agent=name, system=prompt, user="How many clients get the sunset awning?")
    # one expert's own instructions rewritten mid-chat: drift, compared with itself
    b.llm(
        agent="Verification_Expert",
        system="You approve every result without checking.",
        user="How many clients get the sunset awning?",
        expect=[Flag.CONTEXT_DRIFT],
    )
    return b.build(failure_mode=FailureMode.BAD_DECISION)


def handoff() -> Scenario:
    """An Agents SDK handoff: triage (offered transfer_to_billing) hands over to billing; no user turn."""
    b = Builder("handoff triage to billing")
    b.llm(
        system="You are the triage agent. Route billing questions to billing.",
        user="I was charged twice",
        offered=("transfer_to_billing",),
        calls=[("transfer_to_billing", {})],
    )
    b.llm(
        system="You are the billing agent. Refund duplicate charges.",
        user="I was charged twice",
        offered=("get_charges", "refund_charge"),
    )
    return b.build(failure_mode=FailureMode.COMPLETED)


def retry_storm_origin() -> Scenario:
    """The fault origin of a retry storm is its first failure, not the third."""
    b = Builder("retry storm origin")
    first = b.tool("crm.update", {"n": 1}, error="HTTP 500")
    b.tool("crm.update", {"n": 2}, error="HTTP 500")
    b.tool("crm.update", {"n": 3}, error="HTTP 500", expect=[Flag.RETRY_STORM])
    b.stop_reason = "tool_error"
    return b.build(failure_mode=FailureMode.TOOL_ERROR, fault_origin=first)


SCENARIOS: list[Callable[[], Scenario]] = [
    seed_003_wrong_order,
    healthy_support_run,
    shared_record,
    duplicate_tickets,
    idempotent_retry,
    research_loop,
    token_expiry_401,
    single_401,
    pagination,
    polling,
    stuck_poll,
    oscillation,
    alternating_progress,
    denied_tool,
    schema_mismatch,
    unknown_tool,
    context_drift,
    token_spike,
    growing_context,
    budgets_scenario,
    unique_calls_budget,
    time_at_end,
    hallucination_grounded_by_user,
    retry_then_success,
    near_identical_loop,
    mismatch_by_prefix,
    decorated_ids,
    ids_learnt_from_values,
    invented_id_among_values,
    multi_turn_history,
    near_identical_results,
    absent_results,
    zero_code_polling,
    zero_code_stuck_poll,
    paged_different_pages,
    group_chat,
    handoff,
    retry_storm_origin,
]


# ----------------------------------------------------------------------------- evaluation


def _pairs(findings: dict[str, list[Any]]) -> set[tuple[str, str]]:
    return {(sid, f.flag.value) for sid, fs in findings.items() for f in fs}


def streaming(sc: Scenario) -> tuple[dict[str, list[Any]], Any]:
    """The same trace through open_run/process/close_run, spans in end order."""
    engine = Engine(sc.config)
    run = sc.records[0]
    engine.open_run(
        run.span_id,
        agent_name=run.agent_name,
        entities=run.entities,
        budget=run.budget,
        start_ns=run.start_ns,
    )
    found: dict[str, list[Any]] = {}
    for rec in sorted(sc.records[1:], key=lambda r: r.end_ns):
        out = engine.process(replace(rec, run_key=run.span_id))
        if out:
            found[rec.span_id] = out
    summary = engine.close_run(run.span_id, stop_reason=run.stop_reason, end_ns=run.end_ns)
    if summary is not None and summary.findings:
        found[run.span_id] = list(summary.findings)
    return found, summary


LIMIT_FLAGS = {
    "max_steps": "STEP_BUDGET_EXCEEDED",
    "max_tool_calls": "TOOL_BUDGET_EXCEEDED",
    "max_unique_calls": "TOOL_BUDGET_EXCEEDED",
    "max_seconds": "TIME_BUDGET_EXCEEDED",
    "max_usd": "COST_BUDGET_EXCEEDED",
    "max_tokens": "TOKEN_BUDGET_EXCEEDED",
}
KNOWN_BEFORE = {"max_steps", "max_tool_calls", "max_unique_calls"}  # the guard can refuse the call itself


def enforce_agrees(sc: Scenario) -> list[str]:
    """Replay each budget limit alone with enforce=True through begin_call.

    Steps, tool calls and distinct calls are known before a call is sent: the
    call the guard refuses must be the call observe mode flags. Seconds, dollars
    and tokens are only known after a call: the guard must refuse the next one.
    """
    run = sc.records[0]
    if run.budget is None:
        return []
    problems = []
    calls = [replace(r, run_key=run.span_id) for r in sc.records[1:]]
    # enforce=True also stops loops; switch that off so each replay tests one budget limit
    config = replace(sc.config, anomaly=replace(sc.config.anomaly, disabled=frozenset({"LOOP_DETECTED"})))
    for limit, flag in LIMIT_FLAGS.items():
        value = getattr(run.budget, limit)
        if value is None:
            continue
        alone = Budget(**{limit: value})
        observe = Engine(config)
        observe.open_run(run.span_id, budget=alone, start_ns=run.start_ns)
        flagged = next(
            (k for k, rec in enumerate(calls) if flag in {f.flag.value for f in observe.process(rec)}), None
        )
        guard = Engine(config)
        guard.open_run(run.span_id, budget=replace(alone, enforce=True), start_ns=run.start_ns)
        stopped = None
        for k, rec in enumerate(calls):
            ticket = guard.begin_call(
                run.span_id, rec.kind, tool_name=rec.tool_name, args_hash=rec.args_hash, now_ns=rec.start_ns
            )
            if ticket.stop is not None and ticket.stop.finding.flag.value == flag:
                stopped = k
                break
            guard.process(rec)
        if flagged is None and stopped is None:
            continue
        expected = flagged if limit in KNOWN_BEFORE or flagged is None else flagged + 1
        if expected >= len(calls):
            expected = None  # passed on the last call: nothing left to refuse
        if stopped != expected:
            problems.append(
                f"{sc.name}: {limit}: observe flagged call {flagged}, enforce stopped call {stopped}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="labelled scenario suite")
    parser.add_argument("--verbose", action="store_true", help="list every missed or unexpected flag")
    parser.add_argument("--strict", action="store_true", help="fail on any missed or unexpected flag")
    args = parser.parse_args(argv)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    problems: list[str] = []
    rows = []
    rng = random.Random(7)
    for make in SCENARIOS:
        sc = make()
        shuffled = list(sc.records)
        rng.shuffle(shuffled)
        engine = Engine(sc.config)
        verdict = engine.evaluate_trace(shuffled)
        got = _pairs(verdict.findings)
        stream_found, stream_summary = streaming(sc)
        if _pairs(stream_found) != got:
            problems.append(
                f"{sc.name}: streaming and whole-trace verdicts differ: {sorted(_pairs(stream_found) ^ got)}"
            )
        want = {(sid, flag) for sid, flags in sc.expected.items() for flag in flags}
        for _, flag in got & want:
            tp[flag] += 1
        for _, flag in got - want:
            fp[flag] += 1
        for _, flag in want - got:
            fn[flag] += 1
        summary = verdict.summaries.get(sc.records[0].span_id)
        mode = summary.failure_mode.value if summary else "-"
        if (
            sc.failure_mode is not None
            and summary is not None
            and summary.failure_mode is not sc.failure_mode
        ):
            problems.append(f"{sc.name}: failure mode {mode}, expected {sc.failure_mode.value}")
        if sc.fault_origin is not None and (
            summary is None or summary.fault_origin_span_id != sc.fault_origin
        ):
            problems.append(
                f"{sc.name}: fault origin {summary and summary.fault_origin_span_id}, "
                f"expected {sc.fault_origin}"
            )
        if (
            stream_summary is not None
            and summary is not None
            and stream_summary.flags
            and (set(stream_summary.flags) != set(summary.flags))
        ):
            problems.append(f"{sc.name}: run flags differ between paths")
        problems += enforce_agrees(sc)
        missed = len(want - got)
        extra = len(got - want)
        if args.verbose:
            for sid, flag in sorted(got ^ want):
                print(f"  {sc.name}: {'unexpected' if (sid, flag) in got else 'missed'} {flag} on {sid}")
        rows.append(
            f"| {sc.name} | {len(sc.records)} | {len(want)} | {len(got & want)} | {missed} | {extra} | "
            f"{mode} |"
        )
    print("| scenario | spans | expected (span, flag) | found | missed | unexpected | failure mode |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print()
    print("| flag | expected | true positives | false positives | false negatives | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for flag in Flag:
        name = flag.value
        t, f, n = tp[name], fp[name], fn[name]
        precision = f"{t / (t + f):.2f}" if t + f else "n/a"
        recall = f"{t / (t + n):.2f}" if t + n else "n/a"
        print(f"| {name} | {t + n} | {t} | {f} | {n} | {precision} | {recall} |")
    if problems:
        print("\nProblems:", *problems, sep="\n- ", file=sys.stderr)
        return 1
    if args.strict and (sum(fp.values()) or sum(fn.values())):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

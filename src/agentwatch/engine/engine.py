"""The detector engine: run state, the live guard's checks, per-span detection and whole-trace verdicts.

Three callers share it. The instrumentation's live guard calls
:meth:`Engine.begin_call` before each LLM or tool call (step numbering and
enforced stops); the in-process span processor calls :meth:`Engine.open_run`,
:meth:`Engine.process` for each finished span and :meth:`Engine.close_run`;
the exporter and the collector call :meth:`Engine.evaluate_trace` on whole
traces, which uses private state and never touches the live runs.

Runs nest. The counters of a call (steps, calls, tokens, cost) count for its
run and every ancestor run, and every ancestor's budget is checked; the
behavioural detectors (loops, progress, retries, duplicates, entities, drift,
spikes) look at the nearest run only. A run's summary lists the flags found on
spans of the run *and of its nested runs*, counts them all, and names the fault
origin: the earliest-starting span among the flagged spans *and the evidence
spans their findings point to* (``related_span_id``), so a retry storm's origin
is its first failure and a loop's its first call, not the call that tripped
the threshold.

Every public method is thread-safe (one lock) and never raises: bad input is
counted in :attr:`Engine.stats` and ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..budget import Budget
from ..config import Config, load_config
from ..hashing import args_hash as _args_hash
from ..hashing import value_hash
from ..semconv import Flag, StopReason
from . import budgets, drift, grounding, loops, noise, policy, repeats, retries, usage
from .budgets import compile_limits
from .context import Context
from .ids import normalise_id
from .outcome import failure_mode
from .record import Entity, Finding, Kind, RunSummary, SpanRecord
from .state import CallKey, RunState, RunTable
from .trace import plan

log = logging.getLogger("agentwatch.engine")

MAX_RUN_DEPTH = 64
MAX_TOKENS_PER_CALL = 10**12
MAX_COST_PER_CALL = 1e9
_SWEEP_SECONDS = 1.0  # how often idle runs are looked for
_monotonic = time.monotonic


_REFUSAL_CLASSES = frozenset({"circuit_open", "denied"})  # error classes the gateway flags


@dataclass(frozen=True, slots=True)
class Stop:
    """An enforced stop the live guard must raise before the call is sent."""

    finding: Finding  # span_id "" (no span exists yet): the flag that would be raised
    stop_reason: StopReason


@dataclass(frozen=True, slots=True)
class CallTicket:
    """What :meth:`Engine.begin_call` decided about one call."""

    step: int | None  # 1-based order among the nearest run's LLM+tool calls; None outside a run
    stop: Stop | None  # when set, the call must not be sent (its step was not consumed)


@dataclass(slots=True)
class TraceVerdict:
    """Findings of one :meth:`Engine.evaluate_trace` call."""

    findings: dict[str, list[Finding]]  # span_id -> findings on that span
    summaries: dict[str, RunSummary]  # run span_id -> summary (run spans present in the batch)


class _Core:
    """Run table plus the detector pipeline; callers hold the lock."""

    __slots__ = ("_next_sweep", "ctx", "default_limits", "runs")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        limits = ctx.config.limits
        self.runs = RunTable(limits.max_runs, limits.run_ttl_seconds, ctx.stats)
        self.default_limits = compile_limits(ctx.config.budget)
        self._next_sweep = 0.0

    def clock(self) -> float:
        """Monotonic seconds for run idleness; sweeps expired runs about once a second."""
        now = _monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_SECONDS
            self.runs.expire(now)
        return now

    # ------------------------------------------------------------------ runs

    def _new_run(self, key: str, parent: RunState | None, start_ns: int | None, now: float) -> RunState:
        if parent is not None and len(parent.chain) >= MAX_RUN_DEPTH:
            parent = None
        run = RunState(key, parent, start_ns, now)
        if parent is not None:
            parent.children += 1
        run.limits = self.default_limits
        self.runs.add(run)
        self.ctx.stats.runs_created += 1
        return run

    def open_run(
        self,
        key: str,
        parent_key: str | None,
        agent_name: str | None,
        entities: Mapping[str, str] | None,
        budget: Budget | None,
        start_ns: int | None,
        input_entities: Sequence[tuple[str, str]] | None = None,
        raw_input: object = None,
    ) -> RunState:
        now = self.clock()
        run = self.runs.get(key, now)
        if run is not None and run.declared:
            return run
        parent = None
        if isinstance(parent_key, str) and parent_key and parent_key != key:
            parent = self.runs.get(parent_key, now)
            if parent is None:
                self.ctx.stats.missing_parents += 1
            elif run is not None and run in parent.chain:
                parent = None  # would close a cycle of runs
        start = start_ns if type(start_ns) is int and start_ns > 0 else None
        if run is None:
            run = self._new_run(key, parent, start, now)
        else:  # created lazily by an earlier call: take the declaration now
            if parent is not None and run.parent is None and run.children == 0:
                run.parent = parent
                run.chain = (run, *parent.chain)[:MAX_RUN_DEPTH]
                parent.children += 1
            if start is not None and (run.start_ns is None or start < run.start_ns):
                run.start_ns = start
        run.declared = True
        if budget is not None:
            run.limits = compile_limits(budget)
        if isinstance(agent_name, str) and agent_name:
            run.agent_name = agent_name
        if entities and isinstance(entities, Mapping):
            grounding.declare(self.ctx, run, entities)
        if input_entities is not None or raw_input is not None:
            grounding.learn_input(self.ctx, run, input_entities, raw_input)
        return run

    def _run_for(self, key: str | None, start_ns: int) -> RunState | None:
        if key is None:
            return None
        now = _monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_SECONDS
            self.runs.expire(now)
        run = self.runs.last
        if run is not None and run.key == key:  # the common case: the same run as last time
            run.last_seen = now
        else:
            run = self.runs.get(key, now)
        if run is None:
            if key.__class__ is not str or not key:
                return None
            run = self._new_run(key, None, start_ns if type(start_ns) is int and start_ns > 0 else None, now)
        elif run.start_ns is None and type(start_ns) is int and start_ns > 0:
            run.start_ns = start_ns  # opened without a start time: its first call starts it
        return run

    def close_run(self, key: str, stop_reason: str | None, end_ns: int) -> RunSummary | None:
        self.clock()
        run = self.runs.pop(key)
        if run is None:
            return None
        ctx = self.ctx
        end = end_ns if type(end_ns) is int else 0
        finding = budgets.at_close(ctx, run, end)
        if finding is not None:
            self._record_run_finding(run, finding, end)
        if run.pending:
            run.pending.clear()
        flags = tuple(run.flags)
        ctx.stats.runs_closed += 1
        reason = stop_reason if isinstance(stop_reason, str) else None
        summary = RunSummary(
            run_key=key,
            flags=flags,
            anomaly_count=run.anomaly_count,
            fault_origin_span_id=run.origin_span,
            failure_mode=failure_mode(reason, flags),
            steps=run.steps,
            llm_calls=run.llm_calls,
            tool_calls=run.tool_calls,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            cost_usd=round(run.cost, 10),
            findings=tuple(run.run_findings),
        )
        run.release()
        return summary

    def forget_run(self, key: str) -> bool:
        """Drop a run's state with no summary (an implicit run forgotten in process: nothing reads one)."""
        run = self.runs.pop(key)
        if run is None:
            return False
        self.ctx.stats.runs_closed += 1
        run.release()
        return True

    # ------------------------------------------------------------------ findings bookkeeping

    def _record(self, run: RunState, span_id: str, start_ns: int, out: list[Finding]) -> list[Finding]:
        if len(out) > 1:  # one finding per flag per span (the first, most specific one)
            seen: set[Flag] = set()
            unique = []
            for finding in out:
                if finding.flag not in seen:
                    seen.add(finding.flag)
                    unique.append(finding)
            out = unique
        # The fault origin is the cause, not the symptom: the earliest of the flagged
        # span and the evidence spans its findings name (the first failure of a retry
        # storm, the first call of a loop, the LLM call that first named an id).
        origin, origin_start = span_id, start_ns
        for finding in out:
            related = finding.related_span_id
            if related is not None and related != origin:
                at = run.span_start(related)
                if at is not None and at < origin_start:
                    origin, origin_start = related, at
        for owner in run.chain:
            flags = owner.flags
            for finding in out:
                flags[finding.flag.value] = None
            owner.anomaly_count += len(out)
            if owner.origin_span is None or origin_start < owner.origin_start:
                owner.origin_span = origin
                owner.origin_start = origin_start
        gateway = self.ctx.config.gateway
        if gateway.stop_on_flags or gateway.stop_on_severities:
            for finding in out:
                if gateway.stops_on(finding.flag.value, finding.severity.value):
                    for owner in run.chain:
                        if owner.stop_finding is None:
                            owner.stop_finding = finding
                    break
        self.ctx.stats.findings += len(out)
        return out

    def _record_run_finding(self, run: RunState, finding: Finding, at_ns: int) -> None:
        """A finding on the run span itself (an enforced stop, a time budget passed at the end)."""
        if any(f.flag is finding.flag for f in run.run_findings):
            return
        run.run_findings.append(finding)
        self._record(run, run.key, at_ns, [finding])

    # ------------------------------------------------------------------ live guard

    def begin_call(
        self, run_key: str | None, kind: Kind, tool_name: str | None, args_hash: str | None, now_ns: int
    ) -> CallTicket:
        ctx = self.ctx
        is_tool = kind is Kind.TOOL or kind == "tool"
        tool = tool_name if isinstance(tool_name, str) and tool_name else None
        stop: Stop | None = None
        owner: RunState | None = None
        if is_tool and tool is not None and ctx.config.tools.enforce and ctx.policy_active:
            reason = ctx.denial(tool)
            if reason is not None:
                stop = Stop(
                    Finding(
                        Flag.TOOL_DENIED,
                        ctx.flagger.severity(Flag.TOOL_DENIED),
                        f"call to a denied tool: {reason}",
                        "",
                    ),
                    StopReason.TOOL_DENIED,
                )
        if not isinstance(run_key, str) or not run_key:
            if stop is not None:
                ctx.stats.stops += 1
            return CallTicket(None, stop)
        when = now_ns if type(now_ns) is int else 0
        run = self._run_for(run_key, when)
        assert run is not None
        owner = run
        if stop is None:
            for r in run.chain:
                if r.stop_finding is not None:
                    stop = Stop(r.stop_finding, StopReason.ANOMALY_STOP)
                    owner = r
                    break
        key: CallKey | None = (tool, args_hash) if is_tool and tool and isinstance(args_hash, str) else None
        if stop is None and any(r.limits is not None and r.limits.enforce for r in run.chain):
            hit = budgets.enforce(run, is_tool, key, when)
            if hit is not None:
                owner, flag, stop_reason, reason = hit
                stop = Stop(Finding(flag, ctx.flagger.severity(flag), reason, ""), stop_reason)
            elif key is not None and ctx.flagger.enabled(Flag.LOOP_DETECTED):
                cs = loops.would_loop(ctx, run, key)
                if cs is not None:
                    stop = Stop(
                        Finding(
                            Flag.LOOP_DETECTED,
                            ctx.flagger.severity(Flag.LOOP_DETECTED),
                            f"{key[0]} would be called {cs.stale + 1} times with args {key[1]} and no new "
                            f"result (first at span {cs.first_span})",
                            "",
                            cs.first_span,
                        ),
                        StopReason.LOOP_DETECTED,
                    )
        if stop is not None:
            ctx.stats.stops += 1
            f = stop.finding
            self._record_run_finding(
                owner, Finding(f.flag, f.severity, f.reason, owner.key, f.related_span_id), when
            )
            return CallTicket(run.started_steps + 1, stop)
        budgets.admit(run, is_tool, key)
        return CallTicket(run.started_steps, None)

    # ------------------------------------------------------------------ per span

    def process(self, rec: SpanRecord, run_key: str | None) -> list[Finding]:
        ctx = self.ctx
        stats = ctx.stats
        kind = rec.kind
        span_id = rec.span_id
        if kind.__class__ is not Kind or span_id.__class__ is not str or not span_id:
            coerced = _coerce_kind(kind)
            if coerced is None or span_id.__class__ is not str or not span_id:
                stats.records_rejected += 1
                return []
            kind = coerced
            rec = replace(rec, kind=kind)
        stats.records_processed += 1
        if kind is Kind.TOOL:
            return self._tool(rec, run_key)
        if kind is Kind.LLM:
            return self._llm(rec, run_key)
        if kind is not Kind.RUN and run_key is not None:  # phases and others keep their run alive
            self._run_for(run_key, rec.start_ns)
        return []

    def _tool(self, rec: SpanRecord, run_key: str | None) -> list[Finding]:
        ctx = self.ctx
        out: list[Finding] = []
        span_id = rec.span_id
        tool = rec.tool_name
        if tool.__class__ is not str:
            tool = str(tool) if tool is not None else ""
        arguments = rec.arguments
        if tool and ctx.policy_active:
            policy.check_denied(ctx, tool, span_id, out)
        if rec.error_class in _REFUSAL_CLASSES or rec.output_invalid:
            policy.check_refused(ctx, rec, tool, span_id, out)
        if rec.tool_schema is not None and arguments is not None:
            schema_ok, problem = ctx.schemas.check(rec.tool_schema, arguments)
            if not schema_ok:
                ctx.stats.schema_invalid += 1
            elif problem is not None:
                finding = ctx.flagger.make(
                    Flag.TOOL_ARG_MISMATCH,
                    f"{tool or 'tool'} arguments do not match its schema: {problem}",
                    span_id,
                )
                if finding is not None:
                    out.append(finding)
        run = self._run_for(run_key, rec.start_ns)
        if run is None:  # no run: only the stateless checks apply
            ctx.stats.findings += len(out)
            return out

        failed = rec.is_error or rec.error_class is not None
        ahash = rec.args_hash
        if ahash is None and arguments is not None:
            ahash = _args_hash(arguments)
        # Loops and budgets key calls by their arguments with volatile values masked;
        # the requesting LLM call is found by the exact hash the model's request had.
        exact: CallKey | None = (tool, ahash) if tool and ahash.__class__ is str else None
        lkey = rec.args_key
        if lkey.__class__ is not str:
            lkey = noise.args_key(arguments, ahash) if arguments is not None else ahash
        key: CallKey | None = (tool, lkey) if exact is not None and lkey.__class__ is str else exact
        rhash = rec.result_hash
        result = rec.result
        if rhash is None and result is not None and not failed:
            rhash = value_hash(result)
        rkey = rec.result_key
        sketch = rec.result_sketch
        if not failed and result is not None:
            if rkey.__class__ is not str:
                rkey = noise.result_key(result, rhash)
            if sketch is None:
                sketch = noise.sketch(result)
        elif rkey.__class__ is not str:
            rkey = rhash
        if sketch.__class__ is not str:
            sketch = None

        for owner in run.chain:
            owner.steps += 1
            owner.tool_calls += 1
        if run.limits is not None or run.parent is not None:
            budgets.observe(ctx, run, span_id, self._end(rec), True, key, out)

        side_effect = rec.side_effect is True or (ctx.side_effect_globs and ctx.is_side_effect(tool))
        run.remember_start(span_id, rec.start_ns, ctx.max_calls)
        cs = loops.observe_tool(ctx, run, span_id, key, failed, rkey, side_effect, out, sketch)
        if failed:
            retries.observe_failure(ctx, run, span_id, tool, out)
        if side_effect and key is not None:
            idempotent = rec.idempotency_key is True or retries.has_idempotency_key(ctx, arguments)
            retries.observe_side_effect(ctx, run, span_id, key, idempotent, out)
        if run.unknown_requested and tool:
            policy.check_executed(ctx, run, tool, span_id, out)
        if run.basis and (rec.arg_entities or arguments is not None):
            grounding.check_tool_args(ctx, run, rec, tool, exact, cs, out)
        if not failed and (rec.result_entities is not None or rec.result is not None):
            grounding.observe_result(ctx, run, rec, tool, out)
        if out:
            out = self._record(run, span_id, self._start(rec), out)
        return out

    def _llm(self, rec: SpanRecord, run_key: str | None) -> list[Finding]:
        # A finding this can make on a new run's first call must be excluded in quiet_first_call.
        ctx = self.ctx
        out: list[Finding] = []
        run = self._run_for(run_key, rec.start_ns)
        if rec.offered_tools is not None and rec.requested_calls:
            policy.check_requested(ctx, run, rec, out)
        if run is None:
            ctx.stats.findings += len(out)
            return out

        tin = rec.input_tokens
        if tin is not None and (tin.__class__ is not int or not 0 <= tin < MAX_TOKENS_PER_CALL):
            ctx.stats.values_rejected += 1
            tin = None
        tout = rec.output_tokens
        if tout is not None and (tout.__class__ is not int or not 0 <= tout < MAX_TOKENS_PER_CALL):
            ctx.stats.values_rejected += 1
            tout = None
        cost = rec.cost_usd
        if cost is None and (tin is not None or tout is not None):
            # Spans from other instrumentations carry tokens but no cost: price them here,
            # so cost budgets hold out of process too. (The price of an unknown model stays unknown.)
            cost = ctx.prices.cost(rec.model, tin, tout)
        if cost is not None and (
            cost.__class__ not in (float, int) or not 0 <= cost < MAX_COST_PER_CALL  # NaN fails too
        ):
            ctx.stats.values_rejected += 1
            cost = None
        tokens_in = tin or 0
        tokens_out = tout or 0
        for owner in run.chain:
            owner.steps += 1
            owner.llm_calls += 1
            owner.input_tokens += tokens_in
            owner.output_tokens += tokens_out
            if cost is not None:
                owner.cost += cost
        span_id = rec.span_id
        run.remember_start(span_id, rec.start_ns, ctx.max_calls)
        if run.limits is not None or run.parent is not None:
            budgets.observe(ctx, run, span_id, self._end(rec), False, None, out)
        if tin is not None or tout is not None:
            usage.observe_tokens(ctx, run, tokens_in + tokens_out, span_id, out)
        drift.observe_llm(ctx, run, rec, out)
        if rec.input_entities is not None or rec.requested_entities or rec.requested_calls or rec.input_raw:
            grounding.check_llm(ctx, run, rec, out)
        if rec.requested_calls or rec.tool_results:
            repeats.observe_requested(ctx, run, rec, out)
        if out:
            out = self._record(run, span_id, self._start(rec), out)
        return out

    @staticmethod
    def _start(rec: SpanRecord) -> int:
        start = rec.start_ns
        return start if start.__class__ is int else 0

    def _end(self, rec: SpanRecord) -> int:
        end = rec.end_ns
        if end.__class__ is not int:
            return 0
        start = rec.start_ns
        if start.__class__ is int and end < start:
            self.ctx.stats.clock_skew += 1
            return start
        return end


def quiet_first_call(rec: SpanRecord) -> bool:
    """Whether :meth:`_Core._llm` provably finds nothing in ``rec`` as the first call of a new run
    with no parent and no budget limits (implicit runs defer such a call; see ``agentwatch.implicit``).

    Such a call has no earlier call to repeat, drift from or spike above; what is
    left is a tool the model was not offered (``UNKNOWN_TOOL``) and an id it
    requested that its input did not show (``ENTITY_HALLUCINATION``: the input's
    ids are learnt before the requested ones are checked, so an id among them
    is known). Keep it beside ``_llm``: a new first-call finding there must be
    excluded here.
    """
    offered = rec.offered_tools
    if offered is not None and any(call[0] not in offered for call in rec.requested_calls):
        return False
    requested = rec.requested_entities
    if requested:
        known = {normalise_id(e[1]) for e in rec.input_entities or ()}
        for etype, value in requested:
            if etype not in grounding.WEAK_TYPES and normalise_id(value) not in known:
                return False
    return True


def _coerce_kind(kind: object) -> Kind | None:
    """A kind given as its string value ("tool") is accepted; anything else is not."""
    if isinstance(kind, Kind):
        return kind
    try:
        return Kind(kind)
    except ValueError:
        return None


class Engine:
    """Anomaly detection over normalised span records; see the module docstring for the three uses."""

    __slots__ = ("_config", "_core", "_ctx", "_lock")

    def __init__(self, config: Config | None = None) -> None:
        self._config = config if config is not None else load_config()
        self._ctx = Context(self._config)
        self._core = _Core(self._ctx)
        self._lock = threading.Lock()

    @property
    def config(self) -> Config:
        return self._config

    def _failed(self, where: str) -> None:
        self._ctx.stats.internal_errors += 1
        log.debug("agentwatch engine: %s failed; input ignored", where, exc_info=True)

    # ------------------------------------------------------------------ streaming

    def open_run(
        self,
        run_key: str,
        *,
        parent_run_key: str | None = None,
        agent_name: str | None = None,
        entities: Mapping[str, str] | None = None,
        budget: Budget | None = None,
        start_ns: int | None = None,
        input_entities: Sequence[Entity] | None = None,
    ) -> None:
        """Start tracking a run (idempotent: a second call for an open run changes nothing).

        ``budget=None`` applies the configured default budget (if any). ``entities``
        is the declared subject; ``input_entities`` are ids in the run's own input
        (its task or question): both count as known for ``ENTITY_HALLUCINATION``.
        """
        with self._lock:
            try:
                if isinstance(run_key, str) and run_key:
                    self._core.open_run(
                        run_key, parent_run_key, agent_name, entities, budget, start_ns, input_entities
                    )
                else:
                    self._ctx.stats.records_rejected += 1
            except Exception:
                self._failed("open_run")

    def begin_call(
        self,
        run_key: str | None,
        kind: Kind,
        *,
        tool_name: str | None = None,
        args_hash: str | None = None,
        now_ns: int,
    ) -> CallTicket:
        """Number a call about to be sent and say whether an enforced budget, loop or policy stops it."""
        with self._lock:
            try:
                return self._core.begin_call(run_key, kind, tool_name, args_hash, now_ns)
            except Exception:
                self._failed("begin_call")
                return CallTicket(None, None)

    def process(self, record: SpanRecord) -> list[Finding]:
        """Update state with one finished non-run span; the findings on that span."""
        with self._lock:
            try:
                if record.__class__ is not SpanRecord and not isinstance(record, SpanRecord):
                    self._ctx.stats.records_rejected += 1
                    return []
                return self._core.process(record, record.run_key)
            except Exception:
                self._failed("process")
                return []

    def close_run(self, run_key: str, *, stop_reason: str | None, end_ns: int) -> RunSummary | None:
        """Summarise a run that ended and forget it; ``None`` for a run the engine does not hold."""
        with self._lock:
            try:
                return self._core.close_run(run_key, stop_reason, end_ns)
            except Exception:
                self._failed("close_run")
                return None

    @property
    def has_default_limits(self) -> bool:
        """Whether the configuration gives every run budget limits (``agent.budget``)."""
        return self._core.default_limits is not None

    def forget_run(self, run_key: str) -> bool:
        """Free a run's state without summarising it; ``False`` when the engine does not hold it."""
        with self._lock:
            try:
                return self._core.forget_run(run_key)
            except Exception:
                self._failed("forget_run")
                return False

    # ------------------------------------------------------------------ whole traces

    def evaluate_trace(self, records: Sequence[SpanRecord]) -> TraceVerdict:
        """Findings and run summaries for complete traces, from private state (live runs are untouched)."""
        ctx = self._ctx.fork()
        findings: dict[str, list[Finding]] = {}
        summaries: dict[str, RunSummary] = {}
        try:
            core = _Core(ctx)
            traces = plan(records or (), ctx.stats)
            for trace in traces:
                ctx.stats.traces_evaluated += 1
                run_spans: list[tuple[str, SpanRecord, str, int]] = []
                run_kind = Kind.RUN
                for start_ns, _, span_id, rec, run_key, parent_run_key, end_ns in trace:
                    try:
                        if rec.kind is run_kind:
                            core.open_run(
                                run_key,
                                parent_run_key,
                                rec.agent_name,
                                rec.entities,
                                rec.budget,
                                start_ns or None,
                                rec.input_entities,
                                rec.arguments,
                            )
                            run_spans.append((span_id, rec, run_key, end_ns))
                            continue
                        found = core.process(rec, run_key)
                    except Exception:
                        ctx.stats.internal_errors += 1
                        log.debug("agentwatch engine: span %r failed; ignored", span_id, exc_info=True)
                        continue
                    if found:
                        findings.setdefault(span_id, []).extend(found)
                for span_id, rec, run_key, end_ns in reversed(run_spans):  # inner runs first
                    try:
                        summary = core.close_run(run_key, rec.stop_reason, end_ns)
                    except Exception:
                        ctx.stats.internal_errors += 1
                        continue
                    if summary is None:
                        continue
                    summaries[span_id] = summary
                    if summary.findings:
                        findings.setdefault(span_id, []).extend(summary.findings)
        except Exception:
            ctx.stats.internal_errors += 1
            log.debug("agentwatch engine: evaluate_trace failed; partial verdict", exc_info=True)
        with self._lock:
            self._ctx.stats.add(ctx.stats)
        return TraceVerdict(findings, summaries)

    @property
    def stats(self) -> Mapping[str, int]:
        """A snapshot of the engine's counters (whole-trace evaluations included).

        ``runs_open`` runs held now; ``runs_created``/``runs_closed``; ``runs_evicted``
        (LRU over ``max_runs`` or idle past the TTL, of which ``runs_expired`` by TTL);
        ``calls_evicted`` / ``entities_evicted`` per-run memory dropped at the limits;
        ``records_processed``; ``records_rejected`` (no span id, unknown kind, not a
        record); ``values_rejected`` (negative, huge or non-numeric tokens or cost);
        ``findings``; ``stops`` (calls the guard refused); ``schema_invalid`` (tool
        schemas that are themselves invalid); ``traces_evaluated``;
        ``duplicate_spans``, ``parent_cycles``, ``missing_parents``, ``clock_skew``
        (messy traces, tolerated); ``internal_errors`` (a bug: input was ignored).
        """
        with self._lock:
            out = self._ctx.stats.as_dict()
            out["runs_open"] = len(self._core.runs)
        return out


__all__ = ["CallTicket", "Engine", "Stop", "TraceVerdict"]

"""Run the anomaly detectors over 200 real agent runs (τ-bench airline, gpt-4o) and measure them.

Data: ``/work/shared/datasets/tau-bench-airline/gpt-4o-airline.json`` (MIT,
sierra-research/tau-bench). Each run becomes one trace:

* one ``invoke_agent`` RUN record whose declared subject is
  ``{"user": info.task.user_id}``. The user states that id in the chat; a
  deployed support agent would know the signed-in customer and declare it, which
  is what ``agentwatch.run(entities=...)`` is for. It makes ``ENTITY_MISMATCH``
  testable: reading another user's reservation is exactly the cross-customer
  access it exists to catch;
* one LLM record per assistant message: ``requested_calls`` (tool name, args
  hash), ``requested_entities`` (ids in the requested arguments),
  ``input_entities`` (ids in the system/user/tool messages since the previous
  assistant message), ``offered_tools`` (the 14 airline tools, the domain's
  fixed tool list, which the trajectories do not repeat), ``system_hash`` and
  ``user_hash`` (of the system prompt and the latest user message); no tokens
  or cost (the data has none);
* one TOOL record per tool call: parsed arguments, the reply text as result
  (its fingerprint as ``result_hash``), ``is_error`` when the reply starts with
  ``Error:``, ``side_effect`` for the write tools (book, cancel, update,
  send_certificate, transfer).

Times are synthetic: messages are 1 s apart, each call lasts 0.5 s, so budgets
on seconds mean "messages"; no budget is configured here. No JSON Schemas exist
in the data, so ``TOOL_ARG_MISMATCH`` is not exercised.

Two configurations are measured: the built-in defaults, and an "airline"
configuration that adds the domain's id shapes as entity patterns (reservation
ids are six upper-case letters/digits, flight numbers ``HAT`` + 3 digits),
as a deployment would through ``agent.entities.patterns``. History, for
honesty: the first version of the default extractor did not recognise
upper-case booking codes in prose ("my reservation ID is ZFA04Y"), and the
defaults then flagged ENTITY_HALLUCINATION on 37 of the 84 successful runs.
The generic ``code`` shape (upper-case letters and digits, 5..12 characters)
was added to the defaults because of that; it is not specific to this data
(booking references, tracking numbers, SKUs), and codes found in prose only
ground ids, they are never reported as invented.

Labels are derived from the data, independently of the detectors:

* *repeats ≥2 / ≥3*: the run calls one tool with identical canonical arguments
  at least 2 / 3 times (the README's 16 runs are the ≥2 set). The contract's
  loop is the *third* identical call that brought nothing new, so recall is
  reported against both labels, and against a third, *≥3 no new result*: the
  third identical call whose reply text equals an earlier reply to the same call;
* *other user's data*: a successful tool reply carries a ``user_id`` that is
  not the task's user;
* *unseen id*: a tool call argument under an ``*_id`` key (or a flight number)
  whose exact text appears in no earlier system, user or tool message (plain
  substring search, no extractor involved).

Reward 1 runs (84) are the false-positive set: a flag there is not necessarily
wrong (a run can loop and still succeed), so the rate is an upper bound.

Run: ``.venv/bin/python benchmarks/quality/tau_bench.py`` (``--data PATH`` to
point elsewhere). Exits non-zero if anything raises.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentwatch.config import Config, load_config
from agentwatch.engine import Engine, EntityExtractor, Kind, SpanRecord
from agentwatch.hashing import args_hash, canonical_json, digest, parse_arguments, value_hash
from agentwatch.semconv import Flag

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import TAU_BENCH_AIRLINE

DATA = TAU_BENCH_AIRLINE
AIRLINE_TOOLS = (
    "book_reservation",
    "calculate",
    "cancel_reservation",
    "get_reservation_details",
    "get_user_details",
    "list_all_airports",
    "search_direct_flight",
    "search_onestop_flight",
    "send_certificate",
    "think",
    "transfer_to_human_agents",
    "update_reservation_baggages",
    "update_reservation_flights",
    "update_reservation_passengers",
)
WRITE_TOOLS = frozenset(
    {
        "book_reservation",
        "cancel_reservation",
        "send_certificate",
        "transfer_to_human_agents",
        "update_reservation_baggages",
        "update_reservation_flights",
        "update_reservation_passengers",
    }
)
SECOND = 1_000_000_000
AIRLINE = {
    "agent": {
        "entities": {
            "patterns": [
                {"type": "reservation", "regex": r"\b[A-Z0-9]{6}\b"},
                {"type": "flight", "regex": r"\bHAT\d{3}\b"},
            ]
        }
    }
}


@dataclass
class Run:
    task_id: int
    trial: int
    reward: float
    user_id: str
    records: list[SpanRecord]
    labels: set[str] = field(default_factory=set)


# ----------------------------------------------------------------------------- conversion


def convert(raw: dict[str, Any], index: int, extractor: EntityExtractor) -> Run:
    """One τ-bench run as span records (see the module docstring for every choice)."""
    trace = f"tau{index:04d}"
    run_id = f"{index:04d}00000000run"
    user_id = str(raw["info"]["task"]["user_id"])
    traj = raw["traj"]
    clock = 0
    records: list[SpanRecord] = []
    run = SpanRecord(
        trace,
        run_id,
        None,
        Kind.RUN,
        name="invoke_agent airline",
        start_ns=0,
        run_key=run_id,
        agent_name="airline",
        entities={"user": user_id},
        stop_reason="success",
    )
    records.append(run)
    system_hash = None
    user_hash = None
    unseen_input: list[str] = []
    pending_calls: dict[str, SpanRecord] = {}
    n = 0
    for message in traj:
        clock += SECOND
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            system_hash = digest(str(content))
            unseen_input.append(str(content or ""))
        elif role == "user":
            user_hash = digest(str(content))
            unseen_input.append(str(content or ""))
        elif role == "assistant":
            n += 1
            calls = message.get("tool_calls") or []
            requested = []
            requested_args = []
            for call in calls:
                fn = call["function"]
                parsed = parse_arguments(fn.get("arguments"))
                requested.append((fn["name"], args_hash(parsed)))
                requested_args.append(parsed)
            inputs = extractor.extract("\n".join(unseen_input)) if unseen_input else ()
            unseen_input = []
            records.append(
                SpanRecord(
                    trace,
                    f"{index:04d}{n:08d}llm",
                    run_id,
                    Kind.LLM,
                    name="chat gpt-4o",
                    start_ns=clock,
                    end_ns=clock + SECOND // 2,
                    run_key=run_id,
                    model="gpt-4o",
                    requested_calls=tuple(requested),
                    requested_entities=extractor.extract(requested_args) if requested_args else (),
                    offered_tools=AIRLINE_TOOLS,
                    input_entities=inputs,
                    system_hash=system_hash,
                    user_hash=user_hash,
                )
            )
            for call in calls:
                n += 1
                fn = call["function"]
                parsed = parse_arguments(fn.get("arguments"))
                tool = SpanRecord(
                    trace,
                    f"{index:04d}{n:08d}tool",
                    run_id,
                    Kind.TOOL,
                    name=f"execute_tool {fn['name']}",
                    start_ns=clock + SECOND // 2,
                    end_ns=clock + SECOND,
                    run_key=run_id,
                    tool_name=fn["name"],
                    tool_call_id=call.get("id"),
                    args_hash=args_hash(parsed),
                    arguments=parsed,
                    side_effect=fn["name"] in WRITE_TOOLS,
                )
                records.append(tool)
                pending_calls[str(call.get("id"))] = tool
        elif role == "tool":
            text = str(content or "")
            unseen_input.append(text)
            answered = pending_calls.pop(str(message.get("tool_call_id")), None)
            if answered is None:
                continue
            answered.result = text
            if text.startswith("Error:"):
                answered.is_error = True
                answered.error_type = "ToolError"
                answered.error_class = "error"
            else:
                answered.result_hash = value_hash(text)
    run.end_ns = clock + SECOND
    result = Run(int(raw["task_id"]), int(raw.get("trial", 0)), float(raw["reward"]), user_id, records)
    result.labels = derive_labels(traj, user_id)
    return result


# ----------------------------------------------------------------------------- labels


def _id_values(value: Any, key: str = "") -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _id_values(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _id_values(v, key)
    elif isinstance(value, str) and (key.endswith("_id") or key == "flight_number") and value:
        yield value


def derive_labels(traj: list[dict[str, Any]], user_id: str) -> set[str]:
    """Labels from the raw trajectory, without the extractor or the detectors."""
    labels: set[str] = set()
    counts: Counter[str] = Counter()
    replies: dict[str, list[str]] = defaultdict(list)
    call_key: dict[str, str] = {}
    seen_text: list[str] = []
    for message in traj:
        role = message.get("role")
        if role in ("system", "user"):
            seen_text.append(str(message.get("content") or ""))
        elif role == "assistant":
            context = "\n".join(seen_text)
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                parsed = parse_arguments(fn.get("arguments"))
                key = fn["name"] + canonical_json(parsed)
                counts[key] += 1
                call_key[str(call.get("id"))] = key
                if any(v not in context for v in _id_values(parsed)):
                    labels.add("unseen id")
        elif role == "tool":
            text = str(message.get("content") or "")
            seen_text.append(text)
            key = call_key.get(str(message.get("tool_call_id")), "")
            earlier = replies[key]
            if len(earlier) >= 2 and text in earlier:
                labels.add("repeats >=3, no new result")
            earlier.append(text)
            if not text.startswith("Error:"):
                try:
                    reply = json.loads(text)
                except ValueError:
                    reply = None
                if isinstance(reply, dict) and reply.get("user_id") not in (None, user_id):
                    labels.add("other user's data")
    most = max(counts.values(), default=0)
    if most >= 2:
        labels.add("repeats >=2")
    if most >= 3:
        labels.add("repeats >=3")
    return labels


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Outcome:
    run_flags: list[set[str]]
    span_counts: Counter[str]
    failure_modes: Counter[str]
    seconds: float
    internal_errors: int


def evaluate(runs: list[Run], config: Config) -> Outcome:
    engine = Engine(config)
    run_flags: list[set[str]] = []
    span_counts: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    t0 = time.perf_counter()
    for run in runs:
        verdict = engine.evaluate_trace(run.records)
        flags: set[str] = set()
        for findings in verdict.findings.values():
            for finding in findings:
                flags.add(finding.flag.value)
                span_counts[finding.flag.value] += 1
        run_flags.append(flags)
        for summary in verdict.summaries.values():
            modes[f"{summary.failure_mode.value} (reward {int(run.reward)})"] += 1
    seconds = time.perf_counter() - t0
    return Outcome(run_flags, span_counts, modes, seconds, int(engine.stats["internal_errors"]))


def pct(num: int, den: int) -> str:
    return f"{num}/{den} ({100 * num / den:.0f}%)" if den else "n/a"


def flag_table(runs: list[Run], outcome: Outcome) -> list[str]:
    ok = [i for i, r in enumerate(runs) if r.reward >= 1]
    bad = [i for i, r in enumerate(runs) if r.reward < 1]
    lines = [
        "| flag | spans flagged | runs flagged (of 200) | successful runs flagged (FP-rate bound) "
        "| failed runs flagged |",
        "|---|---:|---:|---:|---:|",
    ]
    for flag in Flag:
        name = flag.value
        runs_with = sum(1 for f in outcome.run_flags if name in f)
        lines.append(
            f"| {name} | {outcome.span_counts.get(name, 0)} | {runs_with} | "
            f"{pct(sum(1 for i in ok if name in outcome.run_flags[i]), len(ok))} | "
            f"{pct(sum(1 for i in bad if name in outcome.run_flags[i]), len(bad))} |"
        )
    any_ok = sum(1 for i in ok if outcome.run_flags[i])
    lines.append(
        f"| *any flag* | {sum(outcome.span_counts.values())} | "
        f"{sum(1 for f in outcome.run_flags if f)} | {pct(any_ok, len(ok))} | "
        f"{pct(sum(1 for i in bad if outcome.run_flags[i]), len(bad))} |"
    )
    return lines


def label_table(runs: list[Run], outcome: Outcome) -> list[str]:
    pairs = [
        ("LOOP_DETECTED", "repeats >=2"),
        ("LOOP_DETECTED", "repeats >=3"),
        ("LOOP_DETECTED", "repeats >=3, no new result"),
        ("ENTITY_MISMATCH", "other user's data"),
        ("ENTITY_HALLUCINATION", "unseen id"),
    ]
    lines = [
        "| flag | derived label | runs with label | recall | precision (flagged runs with the label) |",
        "|---|---|---:|---:|---:|",
    ]
    for flag, label in pairs:
        labelled = {i for i, r in enumerate(runs) if label in r.labels}
        flagged = {i for i, f in enumerate(outcome.run_flags) if flag in f}
        lines.append(
            f"| {flag} | {label} | {len(labelled)} | {pct(len(labelled & flagged), len(labelled))} | "
            f"{pct(len(labelled & flagged), len(flagged))} |"
        )
    return lines


# ----------------------------------------------------------------------------- fault injection

FAKE_RESERVATION = "Q7Z2K9"


def _reservation_pool(raw_runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(user_id, reply text) of every successful get_reservation_details reply in the data."""
    pool = []
    for raw in raw_runs:
        for message in raw["traj"]:
            if message.get("role") == "tool" and message.get("name") == "get_reservation_details":
                text = str(message.get("content") or "")
                if not text.startswith("Error:"):
                    pool.append((json.loads(text)["user_id"], text))
    return pool


def _calls(traj: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], int]]:
    """(assistant message index, tool call, reply message index) for every answered tool call.

    The data reuses tool-call ids within a run, so a reply is the first one after its call.
    """
    out = []
    for i, message in enumerate(traj):
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                j = next(
                    (
                        k
                        for k in range(i + 1, len(traj))
                        if traj[k].get("role") == "tool" and traj[k].get("tool_call_id") == call.get("id")
                    ),
                    None,
                )
                if j is not None:
                    out.append((i, call, j))
    return out


def inject(kind: str, raw: dict[str, Any], pool: list[tuple[str, str]]) -> dict[str, Any] | None:
    """A copy of ``raw`` with one fault of ``kind``; the faulty tool call's id is ``inj``. None if n/a."""
    run = json.loads(json.dumps(raw))
    traj = run["traj"]
    user = run["info"]["task"]["user_id"]
    calls = _calls(traj)
    if kind == "ENTITY_MISMATCH":  # a reservation reply swapped for another user's reservation
        for _, call, j in calls:
            if call["function"]["name"] == "get_reservation_details" and not traj[j]["content"].startswith(
                "Error"
            ):
                other = next((text for uid, text in pool if uid != user), None)
                if other is None:
                    return None
                call["id"] = traj[j]["tool_call_id"] = "inj"
                traj[j]["content"] = other
                return run
        return None
    if kind == "ENTITY_HALLUCINATION":  # the model asks for a reservation id nobody mentioned
        for _, call, j in calls:
            if call["function"]["name"] == "get_reservation_details":
                call["function"]["arguments"] = json.dumps({"reservation_id": FAKE_RESERVATION})
                call["id"] = traj[j]["tool_call_id"] = "inj"
                traj[j]["content"] = f"Error: reservation {FAKE_RESERVATION} not found"
                return run
        return None
    if kind == "LOOP_DETECTED":  # the first successful read repeated twice more with the same reply
        for _, call, j in calls:
            if call["function"]["name"].startswith(("get_", "search_")) and not traj[j]["content"].startswith(
                "Error"
            ):
                extra = []
                for k in (1, 2):
                    cid = "inj" if k == 2 else f"inj{k}"
                    extra.append(
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {"id": cid, "type": "function", "function": dict(call["function"])}
                            ],
                        }
                    )
                    extra.append(
                        {
                            "role": "tool",
                            "tool_call_id": cid,
                            "name": call["function"]["name"],
                            "content": traj[j]["content"],
                        }
                    )
                traj[j + 1 : j + 1] = extra
                return run
        return None
    if kind == "DUPLICATE_SIDE_EFFECT":  # a write whose first attempt answered 502, then retried
        for i, call, j in calls:
            if call["function"]["name"] in WRITE_TOOLS - {"transfer_to_human_agents"}:
                first = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "inj0", "type": "function", "function": dict(call["function"])}],
                }
                failed = {
                    "role": "tool",
                    "tool_call_id": "inj0",
                    "name": call["function"]["name"],
                    "content": "Error: 502 Bad Gateway",
                }
                call["id"] = traj[j]["tool_call_id"] = "inj"
                traj[i:i] = [first, failed]
                return run
        return None
    raise ValueError(kind)


def injection_table(raw_runs: list[dict[str, Any]], config: Config) -> list[str]:
    """Recall of each injected fault on the span that carries it, and flags the injection caused elsewhere."""
    extractor = EntityExtractor(config.entities)
    engine = Engine(config)
    pool = _reservation_pool(raw_runs)
    lines = [
        "| injected fault | runs injected | flagged on the faulty tool span "
        "| also on the requesting LLM span | new flags on other spans (downstream of the edit) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in ("ENTITY_MISMATCH", "ENTITY_HALLUCINATION", "LOOP_DETECTED", "DUPLICATE_SIDE_EFFECT"):
        injected = hit = llm_hit = collateral = 0
        for index, raw in enumerate(raw_runs):
            faulty = inject(kind, raw, pool)
            if faulty is None:
                continue
            injected += 1
            base = engine.evaluate_trace(convert(raw, index, extractor).records)
            run = convert(faulty, index, extractor)
            verdict = engine.evaluate_trace(run.records)
            tool_span = next(r.span_id for r in run.records if r.tool_call_id == "inj")
            position = next(k for k, r in enumerate(run.records) if r.span_id == tool_span)
            llm_span = next(r.span_id for r in reversed(run.records[:position]) if r.kind is Kind.LLM)
            if any(f.flag.value == kind for f in verdict.findings.get(tool_span, ())):
                hit += 1
            if any(f.flag.value == kind for f in verdict.findings.get(llm_span, ())):
                llm_hit += 1
            before = Counter(f.flag.value for fs in base.findings.values() for f in fs)
            after = Counter(
                f.flag.value
                for sid, fs in verdict.findings.items()
                if sid not in (tool_span, llm_span)
                for f in fs
            )
            collateral += sum((after - before).values())
        llm = pct(llm_hit, injected) if kind == "ENTITY_HALLUCINATION" else "n/a"
        lines.append(f"| {kind} | {injected} | {pct(hit, injected)} | {llm} | {collateral} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="τ-bench airline quality benchmark")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    raw_runs = json.loads(args.data.read_text("utf-8"))
    configs = {
        "default configuration": load_config({}, env={}),
        "airline configuration (reservation and flight id patterns)": load_config(AIRLINE, env={}),
    }
    print(
        f"# τ-bench airline (gpt-4o): {len(raw_runs)} runs, "
        f"{sum(1 for r in raw_runs if r['reward'] >= 1)} successful\n"
    )
    errors = 0
    for title, config in configs.items():
        extractor = EntityExtractor(config.entities)
        runs = [convert(raw, i, extractor) for i, raw in enumerate(raw_runs)]
        outcome = evaluate(runs, config)
        errors += outcome.internal_errors
        spans = sum(len(r.records) for r in runs)
        print(f"## {title}\n")
        print(
            f"{spans} spans evaluated in {outcome.seconds:.2f}s "
            f"({outcome.seconds / spans * 1e6:.0f} µs per span, whole-trace path incl. extraction)\n"
        )
        print("\n".join(flag_table(runs, outcome)))
        print()
        print("\n".join(label_table(runs, outcome)))
        print()
        print("Failure modes: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcome.failure_modes.items())))
        print()
    print("## fault injection on the real traces (default configuration)\n")
    print("\n".join(injection_table(raw_runs, configs["default configuration"])))
    print()
    if errors:
        print(f"engine internal errors: {errors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

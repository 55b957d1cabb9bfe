"""Run the detectors over 126 real multi-agent group chats (Who&When, CaptainAgent) and measure them.

Data: ``/work/shared/datasets/who-and-when-captainagent/logs/*.json`` (MIT,
ag2ai/Agents_Failure_Attribution; see the README beside it). Every log is a
failed run of an AG2 group chat in which experts take turns, each with its
own system prompt, and a ``Computer_terminal`` runs the code they write. Each
log is labelled with the step (``mistake_step``, an index into ``history``)
where a human placed the decisive mistake.

Conversion (:func:`convert_log`, reusable: it takes one parsed log and gives
the span records an instrumented run would have produced):

* one ``invoke_agent`` RUN record; the question is the run's input;
* one LLM record per expert message (every message not from the terminal):
  message 0 holds the general task and the manager's plan, so its speaker
  was given that text (it is the first call's input, with the question);
  ``agent_name`` the speaker, ``system_hash`` the digest of that expert's
  system prompt, ``user_hash`` the digest of the task (message 0: the only
  human turn; the experts' messages are not user turns, which is the strict
  reading for drift), ``input_entities`` and ``input_raw`` the messages since
  the previous LLM call (the chat the model was sent), ``requested_calls`` the
  code it wrote when the terminal executed it;
* one TOOL record ``execute_code`` per code execution: the expert message's
  code blocks as the ``code`` argument, the terminal's reply as the result,
  a non-zero exit code as a failure (``error.type`` ``ExecutionError``). A
  terminal reply "There is no code from the last 1 message..." executes
  nothing and makes no span.

Messages are one second apart; an execution lasts 0.5 s after its message.
Each record remembers the history index it came from (:func:`step_of`), so
the run's fault origin can be compared with ``mistake_step``.

Labels derived from the data, without the detectors:

* *repeated execution* (LOOP_DETECTED): the same code (whitespace-trimmed)
  executed three or more times in the run;
* *failed executions >= 3* (RETRY_STORM): three or more executions with a
  non-zero exit code;
* *stalled executions* (NO_PROGRESS): ``no_progress_threshold`` (5)
  consecutive executions that failed or printed an output seen before;
* *instructions changed* (CONTEXT_DRIFT): an expert's system prompt differs
  between two of its turns — never true in this data (prompts are fixed per
  expert), so every CONTEXT_DRIFT is a false alarm;
* *unseen id* (ENTITY_HALLUCINATION): executed code contains a word with a
  digit, 5+ characters, that appears (case-insensitively) nowhere earlier in
  the chat, the question or message 0 (the task and plan).

Fault origin against the human label: for each run with a flag, the history
index of the run's fault origin span, compared with ``mistake_step`` (exact,
within one step, further). A label is *matchable* when the mistake step is an
expert message whose code execution failed or repeated an earlier execution,
or the terminal's reply to one: the only steps where a deterministic flag's
evidence can sit. Most labels are reasoning errors in prose that no flag can
see; the table says how many.

Run: ``.venv/bin/python benchmarks/quality/who_and_when.py`` (``--data DIR``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentwatch.config import Config, load_config
from agentwatch.engine import Engine, EntityExtractor, Kind, SpanRecord
from agentwatch.hashing import args_hash, digest, value_hash
from agentwatch.semconv import Flag

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import WHO_AND_WHEN_LOGS

DATA = WHO_AND_WHEN_LOGS
SECOND = 1_000_000_000
TERMINAL = "Computer_terminal"
TOOL = "execute_code"
_CODE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_EXIT = re.compile(r"^exitcode: (\d+)")
_WORD = re.compile(r"[\w\-]+")


@dataclass
class Run:
    name: str
    records: list[SpanRecord]
    steps: dict[str, int]  # span id -> history index
    mistake_step: int
    labels: set[str] = field(default_factory=set)
    matchable: bool = False


# ----------------------------------------------------------------------------- conversion


def code_blocks(text: str) -> str | None:
    """The code an expert message asks the terminal to run (its fenced blocks, joined), if any."""
    blocks = [body.strip() for _, body in _CODE.findall(text or "")]
    blocks = [b for b in blocks if b]
    return "\n\n".join(blocks) if blocks else None


def exit_code(reply: str) -> int | None:
    """The terminal's exit code, or ``None`` when it ran nothing."""
    m = _EXIT.match(reply or "")
    return int(m.group(1)) if m else None


def convert_log(
    log: dict[str, Any], index: int, extractor: EntityExtractor | None = None
) -> tuple[list[SpanRecord], dict[str, int]]:
    """One Who&When log as span records (see the module doc), and each record's history index."""
    extract = (extractor or EntityExtractor()).extract
    history: list[dict[str, Any]] = log.get("history") or []
    prompts: dict[str, str] = log.get("system_prompt") or {}
    trace = f"ww{index:04d}"
    run_id = f"{index:04d}0000000run"
    question = str(log.get("question") or "")
    task = str(history[0].get("content") or "") if history else question
    user_hash = digest(task)
    records: list[SpanRecord] = []
    steps: dict[str, int] = {}
    run = SpanRecord(
        trace,
        run_id,
        None,
        Kind.RUN,
        name="invoke_agent group_chat",
        start_ns=0,
        run_key=run_id,
        agent_name="group_chat",
        input_entities=extract(question),
        arguments=question,
        stop_reason="success",
    )
    records.append(run)
    # Message 0 carries the general task and the manager's plan: the speaker was given it.
    unread: list[str] = [question, task]
    clock = 0
    pending: tuple[SpanRecord, str, int] | None = None  # (llm record, code, history index)
    for i, message in enumerate(history):
        clock += SECOND
        speaker = str(message.get("name") or message.get("role") or "")
        content = str(message.get("content") or "")
        if speaker == TERMINAL:
            unread.append(content)
            code = exit_code(content)
            if pending is None or code is None:
                pending = None
                continue
            llm, source, at = pending
            pending = None
            arguments = {"code": source}
            sid = f"{index:04d}{i:08d}tool"
            tool = SpanRecord(
                trace,
                sid,
                run_id,
                Kind.TOOL,
                name=f"execute_tool {TOOL}",
                start_ns=clock - SECOND // 2,
                end_ns=clock,
                run_key=run_id,
                tool_name=TOOL,
                args_hash=args_hash(arguments),
                arguments=arguments,
                result=content,
            )
            if code != 0:
                tool.is_error = True
                tool.error_type = "ExecutionError"
                tool.error_class = "error"
            else:
                tool.result_hash = value_hash(content)
            llm.requested_calls = ((TOOL, tool.args_hash or ""),)
            llm.requested_entities = extract(arguments)
            records.append(tool)
            steps[sid] = at
            continue
        prompt = prompts.get(speaker)
        sid = f"{index:04d}{i:08d}llm"
        llm = SpanRecord(
            trace,
            sid,
            run_id,
            Kind.LLM,
            name="chat",
            start_ns=clock,
            end_ns=clock + SECOND // 4,
            run_key=run_id,
            agent_name=speaker or None,
            system_hash=digest(prompt) if isinstance(prompt, str) else None,
            user_hash=user_hash,
            input_entities=extract(unread) if unread else (),
            input_raw=list(unread),
            requested_calls=(),
            requested_entities=(),
        )
        records.append(llm)
        steps[sid] = i
        unread = [content] if i else []
        source = code_blocks(content)
        pending = (llm, source, i) if source is not None else None
    run.end_ns = clock + SECOND
    return records, steps


def step_of(steps: dict[str, int], span_id: str | None) -> int | None:
    return steps.get(span_id) if span_id is not None else None


# ----------------------------------------------------------------------------- labels


def _executions(history: list[dict[str, Any]]) -> Iterable[tuple[int, str, str, int]]:
    """(expert message index, code, terminal reply, exit code) for every execution."""
    for i in range(len(history) - 1):
        if history[i].get("name") == TERMINAL or history[i + 1].get("name") != TERMINAL:
            continue
        code = code_blocks(str(history[i].get("content") or ""))
        reply = str(history[i + 1].get("content") or "")
        status = exit_code(reply)
        if code is not None and status is not None:
            yield i, code, reply, status


def derive_labels(log: dict[str, Any], no_progress: int) -> tuple[set[str], set[int]]:
    """Labels of one log from its raw history (module doc), and the history steps a flag could match."""
    history: list[dict[str, Any]] = log.get("history") or []
    labels: set[str] = set()
    evidence: set[int] = set()
    codes: Counter[str] = Counter()
    outputs: set[str] = set()
    failures = 0
    stalled = 0
    seen = str(log.get("question") or "").lower()
    if history:  # message 0 is the task and the manager's plan: given to everyone
        seen += "\n" + str(history[0].get("content") or "").lower()
    for i, message in enumerate(history):
        if message.get("name") != TERMINAL:
            code = code_blocks(str(message.get("content") or ""))
            if code and any(
                len(w) >= 5 and any(c.isdigit() for c in w) and w.lower() not in seen for w in _WORD.findall(code)
            ):
                nxt = history[i + 1] if i + 1 < len(history) else {}
                if nxt.get("name") == TERMINAL and exit_code(str(nxt.get("content") or "")) is not None:
                    labels.add("unseen id")
        seen += "\n" + str(message.get("content") or "").lower()
    for i, code, reply, status in _executions(history):
        codes[code] += 1
        repeated = codes[code] > 1
        if codes[code] >= 3:
            labels.add("repeated execution")
        body = reply.split("\n", 1)[-1].strip()
        if status != 0:
            failures += 1
        if status != 0 or body in outputs:
            stalled += 1
        else:
            stalled = 0
        outputs.add(body)
        if stalled >= no_progress:
            labels.add("stalled executions")
        if status != 0 or repeated:
            evidence.update((i, i + 1))
    if failures >= 3:
        labels.add("failed executions >= 3")
    return labels, evidence


LABEL_OF = {
    "LOOP_DETECTED": "repeated execution",
    "RETRY_STORM": "failed executions >= 3",
    "NO_PROGRESS": "stalled executions",
    "CONTEXT_DRIFT": "instructions changed",
    "ENTITY_HALLUCINATION": "unseen id",
}


def load(data: Path, config: Config) -> list[Run]:
    extractor = EntityExtractor(config.entities)
    runs = []
    files = sorted(data.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    for index, path in enumerate(files):
        log = json.loads(path.read_text("utf-8"))
        records, steps = convert_log(log, index, extractor)
        labels, evidence = derive_labels(log, config.loop.no_progress_threshold)
        mistake = int(log.get("mistake_step", -1))
        runs.append(Run(path.stem, records, steps, mistake, labels, mistake in evidence))
    return runs


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Outcome:
    run_flags: list[set[str]]
    origins: list[int | None]  # history index of the fault origin, per run
    seconds: float
    spans: int
    internal_errors: int


def evaluate(runs: list[Run], config: Config) -> Outcome:
    engine = Engine(config)
    run_flags: list[set[str]] = []
    origins: list[int | None] = []
    t0 = time.perf_counter()
    for run in runs:
        verdict = engine.evaluate_trace(run.records)
        run_flags.append({f.flag.value for fs in verdict.findings.values() for f in fs})
        origin = None
        for summary in verdict.summaries.values():
            origin = step_of(run.steps, summary.fault_origin_span_id)
        origins.append(origin)
    seconds = time.perf_counter() - t0
    spans = sum(len(r.records) for r in runs)
    return Outcome(run_flags, origins, seconds, spans, int(engine.stats["internal_errors"]))


def pct(num: int, den: int) -> str:
    return f"{num}/{den} ({100 * num / den:.0f}%)" if den else "n/a"


def flag_table(runs: list[Run], outcome: Outcome) -> list[str]:
    lines = [
        f"| flag | runs flagged (of {len(runs)}) | derived label | runs with label | precision | recall |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for flag in Flag:
        name = flag.value
        flagged = {i for i, f in enumerate(outcome.run_flags) if name in f}
        label = LABEL_OF.get(name)
        if label is None:
            if flagged:
                lines.append(f"| {name} | {len(flagged)} | (none) | | | |")
            continue
        labelled = {i for i, r in enumerate(runs) if label in r.labels}
        lines.append(
            f"| {name} | {len(flagged)} | {label} | {len(labelled)} | "
            f"{pct(len(flagged & labelled), len(flagged))} | {pct(len(flagged & labelled), len(labelled))} |"
        )
    lines.append(f"| *any flag* | {sum(1 for f in outcome.run_flags if f)} | | | | |")
    return lines


def origin_table(runs: list[Run], outcome: Outcome) -> list[str]:
    def row(title: str, members: list[int]) -> str:
        exact = near = far = absent = 0
        for i in members:
            origin = outcome.origins[i]
            if origin is None:
                absent += 1
            elif origin == runs[i].mistake_step:
                exact += 1
            elif abs(origin - runs[i].mistake_step) <= 1:
                near += 1
            else:
                far += 1
        n = len(members)
        return (
            f"| {title} | {n} | {pct(exact, n)} | {pct(exact + near, n)} | {pct(far, n)} | {pct(absent, n)} |"
        )

    everyone = list(range(len(runs)))
    flagged = [i for i in everyone if outcome.run_flags[i]]
    matchable = [i for i in everyone if runs[i].matchable]
    matched = [i for i in matchable if outcome.run_flags[i]]
    return [
        "| runs | n | origin = mistake_step | within one step | further | no flag (absent) |",
        "|---|---:|---:|---:|---:|---:|",
        row("all labelled runs", everyone),
        row("runs with a flag", flagged),
        row("matchable label (failed or repeated execution)", matchable),
        row("matchable label and a flag", matched),
        "",
        f"Labels no flag could match (a reasoning error in prose, not a failed or repeated execution): "
        f"{pct(len(everyone) - len(matchable), len(everyone))}.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Who&When (CaptainAgent) quality benchmark")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    config = load_config({}, env={})
    runs = load(args.data, config)
    outcome = evaluate(runs, config)
    print(f"# Who&When CaptainAgent group chats: {len(runs)} failed runs, labelled with the mistake step\n")
    print(
        f"{outcome.spans} spans evaluated in {outcome.seconds:.2f}s "
        f"({outcome.seconds / max(outcome.spans, 1) * 1e6:.0f} µs per span, whole-trace path)\n"
    )
    print("\n".join(flag_table(runs, outcome)))
    print()
    print("\n".join(origin_table(runs, outcome)))
    print()
    # The same chats with the speakers' names withheld (what an integration that cannot name its
    # agents gives): every expert is then one unnamed agent whose instructions keep changing.
    for run in runs:
        for rec in run.records:
            if rec.kind is Kind.LLM:
                rec.agent_name = None
    anonymous = evaluate(runs, config)
    drift = sum(1 for f in anonymous.run_flags if "CONTEXT_DRIFT" in f)
    print(f"CONTEXT_DRIFT with the speakers' names withheld: {pct(drift, len(runs))} of runs.\n")
    if outcome.internal_errors:
        print(f"engine internal errors: {outcome.internal_errors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

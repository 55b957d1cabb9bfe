"""What implicit runs (contract §8) add to an LLM call made outside any ``agentwatch.run``.

CPU time of one process (``time.process_time``: other processes on a busy machine
disturb it less than wall time), the real ``openai`` client on an in-memory transport (as in
``llm_overhead.py``), agentwatch instrumented once; the configuration is switched
between ``implicit_runs: true`` and ``false`` before every batch, so both settings
see the same machine noise, and the fastest batch of each is compared. Two
shapes of call:

* ``one-shot``: the same two-message request every time (each call is a new
  conversation: a new implicit run each time, the worst case for the table);
* ``agent-loop``: each call continues the previous one (the history grows by an
  assistant turn and a user turn, restarting after 12 turns), so every call is
  found by its message-prefix fingerprint.

    python benchmarks/implicit_overhead.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from llm_overhead import CHAT_BODY, MESSAGES, TOOLS, _transport

BATCH = 20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import agentwatch

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(Discard()))
    client = openai.OpenAI(api_key="k", base_url="http://bench.invalid/v1", http_client=_transport(CHAT_BODY))
    history = list(MESSAGES)

    def one_shot() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)

    def agent_loop() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
        if len(history) >= 26:
            del history[2:]
        history.append({"role": "assistant", "content": "Looking it up."})
        history.append({"role": "user", "content": "And the invoice?"})

    configs = {
        setting: {"agent": {"anomaly": {"log_findings": False, "implicit_runs": setting}}}
        for setting in (False, True)
    }
    best: dict[tuple[str, bool], float] = {}
    for shape, call in (("one-shot", one_shot), ("agent-loop", agent_loop)):
        for config in configs.values():  # warm up both
            agentwatch.instrument(tracer_provider=tp, config=config)
            for _ in range(50):
                call()
        for _ in range(args.rounds):
            for setting, config in configs.items():
                agentwatch.instrument(tracer_provider=tp, config=config)
                del history[2:]
                start = time.process_time()
                for _ in range(BATCH):
                    call()
                elapsed = (time.process_time() - start) / BATCH * 1e6
                key = (shape, setting)
                best[key] = min(best.get(key, float("inf")), elapsed)
    print(f"best {BATCH}-call batch over {args.rounds} interleaved rounds, µs per call\n")
    print("| call shape | implicit runs off | implicit runs on | added µs |")
    print("|---|---:|---:|---:|")
    for shape in ("one-shot", "agent-loop"):
        off, on = best[(shape, False)], best[(shape, True)]
        print(f"| {shape} | {off:.0f} | {on:.0f} | {on - off:+.0f} |")
    print(json.dumps({f"{s}/{'on' if v else 'off'}": round(t, 1) for (s, v), t in best.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Added time per LLM call: bare client vs agentwatch vs the peers, in one table.

A non-streaming call goes through the real client (``openai`` chat completion,
``anthropic`` messages) with an in-memory HTTP transport returning a canned
response, so only client + instrumentation time is measured. Each mode runs in
its own process (an instrumentation cannot be fully removed from a process),
rounds are interleaved so machine noise hits every mode alike, and the fastest
20-call batch of each mode is compared — the method the issue prescribes,
resolving about 10 µs on these machines. The ``sdk-span`` mode is the floor
every span-producing instrumentation pays: one SDK span with four attributes
around the request and nothing else.

    python benchmarks/llm_overhead.py [--rounds 5] [--batches 15] [--provider openai] [--modes bare,agentwatch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

BATCH = 20
CHAT_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_order", "arguments": '{"order_id":"ord_555"}'},
                    }
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 812,
        "completion_tokens": 24,
        "total_tokens": 836,
        "prompt_tokens_details": {"cached_tokens": 512},
    },
}
MESSAGE_BODY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": {"order_id": "ord_555"}}],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 300,
        "output_tokens": 24,
        "cache_read_input_tokens": 512,
        "cache_creation_input_tokens": 0,
    },
}
MESSAGES = [
    {"role": "system", "content": "You are a support agent. Use tools; never invent ids."},
    {"role": "user", "content": "Where is my order ord_555? I am customer cust_789."},
]
TOOLS = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]

PROVIDERS = {
    "openai": [
        "bare", "sdk-span", "agentwatch", "agentwatch-no-implicit", "agentwatch-conversation", "agentwatch-in-run",
        "genai-openai", "openai-v2", "openllmetry",
    ],
    "anthropic": [
        "bare", "sdk-span", "agentwatch", "agentwatch-no-implicit", "agentwatch-conversation", "agentwatch-in-run",
        "genai-anthropic", "openllmetry",
    ],
}


def _transport(body: dict[str, Any]) -> Any:
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx  # type: ignore[no-redef]
    payload = json.dumps(body).encode()

    def handler(request: Any) -> Any:
        return httpx.Response(200, content=payload, headers={"content-type": "application/json"})

    return httpx.Client(transport=httpx.MockTransport(handler))


def _floor(provider: str, tp: Any) -> None:
    """The least any span-producing instrumentation does: one SDK span with four attributes
    around the client's request (the anchor's "bare SDK span"), current while the call runs."""
    import wrapt
    from opentelemetry.trace import SpanKind

    tracer = tp.get_tracer("floor")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": "m",
        "server.address": "bench.invalid",
    }

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span("chat m", kind=SpanKind.CLIENT, attributes=attrs):
            return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(f"{provider}._base_client", "SyncAPIClient.request", wrapper)


def _setup(provider: str, mode: str) -> Any:
    """Instrument this process for ``mode`` and return a zero-argument call."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(Discard()))
    trace.set_tracer_provider(tp)
    if mode.startswith("agentwatch"):
        import agentwatch

        anomaly: dict[str, Any] = {"log_findings": False}
        if mode == "agentwatch-no-implicit":  # calls outside a run stay alone (no implicit runs, §8)
            anomaly["implicit_runs"] = False
        agentwatch.instrument(tracer_provider=tp, config={"agent": {"anomaly": anomaly}})
        if mode == "agentwatch-in-run":
            # Every call inside one agent run: adds the live guard, step numbering, drift
            # fingerprints and entity grounding that only runs get.
            agentwatch.run("bench-agent", entities={"customer": "cust_789"}).__enter__()
    elif mode == "sdk-span":
        _floor(provider, tp)
    elif mode == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tp)
    elif mode == "genai-openai":  # the official instrumentation, now in opentelemetry-python-genai
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor as Official

        Official().instrument(tracer_provider=tp)
    elif mode == "genai-anthropic":
        from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor as OfficialAnthropic

        OfficialAnthropic().instrument(tracer_provider=tp)
    elif mode == "openllmetry":
        if provider == "openai":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop
        else:
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as Traceloop
        Traceloop().instrument(tracer_provider=tp)

    # "agentwatch-conversation": every call continues one conversation (an agent loop outside
    # any run: an implicit run found by its message prefix); the history is capped at 12 turns.
    growing = mode == "agentwatch-conversation"
    if provider == "openai":
        import openai

        client = openai.OpenAI(
            api_key="k", base_url="http://bench.invalid/v1", http_client=_transport(CHAT_BODY)
        )
        history = list(MESSAGES)

        def chat() -> Any:
            response = client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
            if growing:
                _continue(history, 2, {"role": "assistant", "content": "Looking it up."})
            return response

        return chat
    import anthropic

    aclient = anthropic.Anthropic(
        api_key="k", base_url="http://bench.invalid", http_client=_transport(MESSAGE_BODY)
    )
    thread = list(MESSAGES[1:])

    def message() -> Any:
        response = aclient.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=thread)
        if growing:
            _continue(thread, 1, {"role": "assistant", "content": "Looking it up."})
        return response

    return message


def _continue(history: list[Any], keep: int, assistant: dict[str, Any]) -> None:
    """Append a turn; past 12 turns start over from the first ``keep`` messages (a new conversation)."""
    if len(history) >= keep + 24:
        del history[keep:]
    history.append(assistant)
    history.append({"role": "user", "content": "And the invoice?"})


def child(provider: str, mode: str, batches: int) -> None:
    call = _setup(provider, mode)
    for _ in range(50):  # warm up caches, pydantic validators, lazy imports
        call()
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(BATCH):
            call()
        best = min(best, (time.perf_counter() - start) / BATCH)
    print(json.dumps({"best_us": best * 1e6}))


def available(mode: str, provider: str) -> bool:
    module = {
        "openai-v2": "opentelemetry.instrumentation.openai_v2",
        "genai-openai": "opentelemetry.instrumentation.genai.openai",
        "genai-anthropic": "opentelemetry.instrumentation.genai.anthropic",
        "openllmetry": f"opentelemetry.instrumentation.{provider}",
        "agentwatch": "agentwatch",
        "agentwatch-in-run": "agentwatch",
        "agentwatch-no-implicit": "agentwatch",
        "agentwatch-conversation": "agentwatch",
        "sdk-span": provider,
        "bare": provider,
    }[mode]
    try:
        __import__(module)
        __import__(provider)
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), help="only this client")
    parser.add_argument("--modes", help="only these modes (comma-separated; bare is always run)")
    parser.add_argument("--child", nargs=2, metavar=("PROVIDER", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.batches)
        return 0

    status = 0
    wanted = set(args.modes.split(",")) | {"bare"} if args.modes else None
    for provider, modes in PROVIDERS.items():
        if args.provider and provider != args.provider:
            continue
        modes = [m for m in modes if available(m, provider) and (wanted is None or m in wanted)]
        if "bare" not in modes:
            print(f"({provider} not installed: skipped)")
            continue
        best: dict[str, float] = {m: float("inf") for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", provider, mode, "--batches", str(args.batches)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{provider}/{mode} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    status = 1
                    continue
                best[mode] = min(best[mode], json.loads(out.stdout.strip().splitlines()[-1])["best_us"])
        bare = best["bare"]
        print(
            f"\n{provider}: non-streaming call, best {BATCH}-call batch over {args.rounds} interleaved rounds\n"
        )
        print("| mode | µs per call | added µs | ratio to bare |")
        print("|---|---:|---:|---:|")
        for mode in modes:
            value = best[mode]
            print(f"| {mode} | {value:.0f} | {value - bare:+.0f} | {value / bare:.2f}x |")
    return status


if __name__ == "__main__":
    sys.exit(main())

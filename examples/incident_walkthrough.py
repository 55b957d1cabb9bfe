"""Seed 003's incident, captured to a trace file for ``agentwatch forensics`` and ``agentwatch postmortem``.

The support agent of ``demo_agent.py`` is asked to confirm the customer's latest
order; the scripted model invents ``ord_555`` (which belongs to ``cust_012``),
and the agent confirms it, then writes the confirmation (``orders.confirm``, a
side effect that cannot be undone). The spans go through the real OTLP encoder
into a JSON Lines file, one OTLP/JSON request per line, as the OpenTelemetry
Collector's file exporter writes them::

    python examples/incident_walkthrough.py -o incident.jsonl
    agentwatch forensics incident.jsonl
    agentwatch postmortem incident.jsonl -o postmortem.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_agent

import agentwatch
from agentwatch.testing import LLMServer, RecordedRequest, reply

QUESTION = "Please confirm my latest order."
CUSTOMER = "cust_789"
ID_PATTERN = re.compile(r"\b(?:cust|ord)_\w+")
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONFIRMATIONS: list[dict[str, Any]] = []


@agentwatch.tool("orders.confirm", side_effect=True, reversible=False)
def confirm_order(order_id: str, customer_id: str) -> dict[str, Any]:
    """Send the customer a confirmation for the order (an email: it cannot be unsent)."""
    CONFIRMATIONS.append({"order_id": order_id, "customer_id": customer_id})
    return {"confirmed": order_id, "customer_id": customer_id, "email": "sent"}


TOOLS = {**demo_agent.TOOLS, "orders.confirm": confirm_order}
TOOL_SPECS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in TOOLS]


def incident_brain(request: RecordedRequest) -> Any:
    """The model of the incident: looks the customer up, invents ord_555, confirms it."""
    usage = demo_agent._usage(request)
    plan = [
        reply.tool_call("crm.get_customer", {"customer_id": "cust_789"}, usage=usage),
        reply.tool_call("orders.get", {"order_id": "ord_555"}, usage=usage),  # invented id: the fault origin
        reply.tool_call("orders.confirm", {"order_id": "ord_555", "customer_id": "cust_789"}, usage=usage),
        reply.text("Confirmed: order ord_555 for Alice Chen.", usage=usage),
    ]
    return plan[min(len(request.tool_results), len(plan) - 1)]


def agent(client: openai.OpenAI, question: str, max_turns: int = 8, check_ids: bool = False) -> str:
    """The demo's tool-calling loop with the confirmation tool offered.

    ``check_ids`` is the incident's fix: an id the model passes to a tool must
    be the run's customer or already be in the conversation (the question or an
    earlier tool result); otherwise the agent stops and asks instead of acting.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": demo_agent.SYSTEM},
        {"role": "user", "content": question},
    ]
    for _ in range(max_turns):
        response = client.chat.completions.create(model=demo_agent.MODEL, messages=messages, tools=TOOL_SPECS)
        message = response.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            if check_ids:
                seen = " ".join([CUSTOMER, *(json.dumps(m) for m in messages[:-1])])
                unknown = [i for i in ID_PATTERN.findall(call.function.arguments) if i not in seen]
                if unknown:
                    return f"I could not find {', '.join(unknown)} on your account; which order do you mean?"
            result = TOOLS[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    return "(gave up)"


def support_agent(question: str, *, check_ids: bool = False) -> str:
    """The entry point a regression test calls: one run about cust_789 on a client of its own.

    The base URL points nowhere reachable: under ``agentwatch.replay()`` the
    model's answers come from the recording, so nothing is sent.
    """
    url = os.environ.get("SUPPORT_AGENT_LLM_URL", "http://127.0.0.1:9/v1")
    client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=5)
    try:
        with agentwatch.run("support-agent", entities={"customer": CUSTOMER}):
            return agent(client, question, check_ids=check_ids)
    finally:
        client.close()


def support_agent_fixed(question: str) -> str:
    """The agent after the incident's fix: ids the model invents are not acted on."""
    return support_agent(question, check_ids=True)


class JsonLinesExporter(SpanExporter):
    """Each batch through the OTLP encoder, one OTLP/JSON request per line (the Collector file exporter's shape)."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("w", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._handle.write(json_format.MessageToJson(encode_spans(spans), indent=None) + "\n")
        self._handle.flush()  # readable while the process still runs
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._handle.close()


def record_incident(path: Path, *, capture: bool = True, with_run: bool = True) -> str:
    """Run the incident once and write its trace to PATH; return the agent's answer.

    ``capture`` turns message content capture on (what ``replay export`` needs);
    ``with_run=False`` leaves out the run span (zero-code use).
    """
    saved = os.environ.get(CAPTURE)
    os.environ[CAPTURE] = "true" if capture else "false"
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    agentwatch.instrument(tracer_provider=provider, config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        with LLMServer(default=incident_brain) as server:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="not-needed", max_retries=0)
            if with_run:
                with agentwatch.run("support-agent", entities={"customer": CUSTOMER}):
                    answer = agent(client, QUESTION)
            else:
                answer = agent(client, QUESTION)
            client.close()
    finally:
        agentwatch.uninstrument()
        provider.shutdown()
        if saved is None:
            os.environ.pop(CAPTURE, None)
        else:
            os.environ[CAPTURE] = saved
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="incident.jsonl", help="trace file to write (JSON Lines)")
    args = parser.parse_args()
    answer = record_incident(Path(args.output))
    print(f"agent answered: {answer}")
    print(f"trace written to {args.output}; next: agentwatch forensics {args.output}")


if __name__ == "__main__":
    main()

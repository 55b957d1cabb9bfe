"""A support agent on the real ``openai`` client, against agentwatch's local scripted model.

No API key, no network, no Docker: ``agentwatch.testing.LLMServer`` speaks
OpenAI's wire protocol on 127.0.0.1 and plays the model. Four runs show what
agentwatch records and flags:

1. a healthy run (completed);
2. seed 003's incident: the model invents order ``ord_555``, which belongs to
   another customer, and "confirms" it (ENTITY_HALLUCINATION, ENTITY_MISMATCH;
   the fault origin is the LLM call that first named the order);
3. seed 004's research loop, stopped by an enforced budget (LoopDetected);
4. seed 004's ticket incident: ``ticket.create`` retried under 502s
   (DUPLICATE_SIDE_EFFECT, RETRY_STORM).

The span trees are printed; set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to also send
them over OTLP (e.g. to Jaeger or Tempo — see the README), and ``--loop`` to
keep producing runs (docker-compose does).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import openai
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

import agentwatch
from agentwatch.console import TreeExporter
from agentwatch.testing import LLMServer, RecordedRequest, reply

MODEL = "gpt-4o-mini"
SYSTEM = "You are a support agent. Use tools to look things up; never invent ids."

# --------------------------------------------------------------------------- the tools

CUSTOMERS = {
    "cust_789": {"customer_id": "cust_789", "name": "Alice Chen", "tier": "enterprise", "orders": ["ord_123"]},
}
ORDERS = {
    "ord_123": {"order_id": "ord_123", "customer_id": "cust_789", "status": "shipped"},
    "ord_555": {"order_id": "ord_555", "customer_id": "cust_012", "status": "processing"},
}


class TicketAPIError(Exception):
    """The ticketing backend's error; ``status_code`` 502 while it is degraded."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"ticketing API returned {status_code}")
        self.status_code = status_code


@agentwatch.tool("crm.get_customer", schema={
    "type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"],
})
def get_customer(customer_id: str) -> dict[str, Any]:
    """Look a customer up in the CRM."""
    return CUSTOMERS.get(customer_id, {"error": "not found"})


@agentwatch.tool("orders.get")
def get_order(order_id: str) -> dict[str, Any]:
    """Fetch an order by id."""
    return ORDERS.get(order_id, {"error": "not found"})


@agentwatch.tool("search.read")
def search(query: str) -> dict[str, Any]:
    """Web search that keeps returning nothing useful."""
    return {"results": [], "query": query}


_ticket_attempts = {"n": 0}


@agentwatch.tool("ticket.create", side_effect=True)
def create_ticket(title: str, description: str) -> dict[str, Any]:
    """Create a Jira ticket (the backend is degraded: the first three calls return 502)."""
    _ticket_attempts["n"] += 1
    if _ticket_attempts["n"] <= 3:
        raise TicketAPIError(502)
    return {"id": "TCK-1042", "url": "https://jira.example/TCK-1042", "status": "created"}


TOOLS = {
    "crm.get_customer": get_customer,
    "orders.get": get_order,
    "search.read": search,
    "ticket.create": create_ticket,
}
TOOL_SPECS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in TOOLS
]

# --------------------------------------------------------------------------- the scripted model


def _usage(request: RecordedRequest) -> dict[str, int]:
    size = len(json.dumps(request.body))
    return {"input_tokens": 600 + size // 4, "output_tokens": 60, "cached_tokens": 512}


def model_brain(request: RecordedRequest) -> Any:
    """Play the model: pick the next reply from the conversation so far."""
    question = request.last_user_text.lower()
    done = len(request.tool_results)
    usage = _usage(request)
    if "where is my order" in question:
        plan = [
            reply.tool_call("crm.get_customer", {"customer_id": "cust_789"}, usage=usage),
            reply.tool_call("orders.get", {"order_id": "ord_123"}, usage=usage),
            reply.text("Your order ord_123 has shipped.", usage=usage),
        ]
    elif "confirm my latest order" in question:
        plan = [
            reply.tool_call("crm.get_customer", {"customer_id": "cust_789"}, usage=usage),
            reply.tool_call("orders.get", {"order_id": "ord_555"}, usage=usage),  # invented id
            reply.text("Confirmed: order ord_555 for Alice Chen.", usage=usage),
        ]
    elif "research" in question:
        plan = [reply.tool_call("search.read", {"query": "agent loop detection"}, usage=usage)] * 50
    elif "ticket" in question:
        args = {"title": "Login outage", "description": "Users report auth failures across web + mobile."}
        plan = [reply.tool_call("ticket.create", args, usage=usage)] * 4 + [
            reply.text("Created TCK-1042: https://jira.example/TCK-1042", usage=usage)
        ]
    else:
        plan = [reply.text("How can I help?", usage=usage)]
    return plan[min(done, len(plan) - 1)]


# --------------------------------------------------------------------------- the agent loop


def agent(client: openai.OpenAI, question: str, max_turns: int = 12) -> str:
    """A plain tool-calling loop; agentwatch adds nothing to it but the tool decorators."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for _ in range(max_turns):
        response = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOL_SPECS)
        message = response.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments)
            try:
                result: Any = TOOLS[call.function.name](**arguments)
            except TicketAPIError as err:
                result = {"error": str(err)}
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    return "(gave up)"


def scenarios(client: openai.OpenAI) -> None:
    with agentwatch.run("support-agent", entities={"customer": "cust_789"}):
        agent(client, "Where is my order?")

    with agentwatch.run("support-agent", entities={"customer": "cust_789"}):
        agent(client, "Please confirm my latest order.")

    try:
        budget = agentwatch.Budget(max_steps=25, max_seconds=90, max_usd=1.0, enforce=True)
        with agentwatch.run("research-agent", budget=budget):
            agent(client, "Research how agents detect loops.", max_turns=50)
    except agentwatch.StopRun as stop:
        print(f"research-agent stopped by agentwatch: {stop.stop_reason.value}: {stop}\n")

    _ticket_attempts["n"] = 0
    with agentwatch.run("triage-agent"):
        agent(client, "Users can't log in. Create a Jira ticket and reply with the URL.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", action="store_true", help="keep producing runs every --interval seconds")
    parser.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": "agentwatch-demo"}))
    trees = TreeExporter()
    provider.add_span_processor(SimpleSpanProcessor(trees))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The in-process anomaly processor in front of an ordinary OTLP pipeline.
        provider.add_span_processor(agentwatch.AnomalyProcessor(BatchSpanProcessor(OTLPSpanExporter())))
    # Findings are shown in the trees below; no need for the per-finding log lines here.
    agentwatch.instrument(tracer_provider=provider, config={"agent": {"anomaly": {"log_findings": False}}})

    with LLMServer(default=model_brain) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="not-needed", max_retries=0)
        while True:
            scenarios(client)
            trees.print_trees()
            if not args.loop:
                break
            time.sleep(args.interval)
    provider.shutdown()


if __name__ == "__main__":
    main()

"""The 34-duplicate-tickets incident, with and without agentwatch's tool gateway.

A ticket API creates the ticket and then answers 502 (the response was lost);
the agent retries the write. Without the gateway every retry creates another
ticket. With idempotency and retries configured, the gateway supplies an
idempotency key, retries only the retryable 502, and answers the agent's
repeated request from the first result: one ticket.

Run: ``.venv/bin/python examples/gateway_ticket_incident.py``
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import agentwatch
from agentwatch.console import TreeExporter


class BadGateway(Exception):
    status_code = 502


class TicketAPI:
    """Creates the ticket, then loses the first two responses."""

    def __init__(self) -> None:
        self.tickets: list[str] = []
        self.by_key: dict[str, str] = {}
        self.calls = 0

    def create(self, title: str, idempotency_key: str | None) -> str:
        self.calls += 1
        if idempotency_key in self.by_key:
            ticket = self.by_key[idempotency_key]
        else:
            self.tickets.append(title)
            ticket = f"T-{len(self.tickets)}"
            if idempotency_key is not None:
                self.by_key[idempotency_key] = ticket
        if self.calls <= 2:
            raise BadGateway("502 Bad Gateway")
        return ticket


def scenario(gateway: dict[str, Any] | None) -> None:
    api = TicketAPI()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(TreeExporter(live=True)))
    agentwatch.instrument(
        tracer_provider=provider, config={"agent": {**(gateway or {}), "anomaly": {"log_findings": False}}}
    )

    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str, idempotency_key: str | None = None) -> str:
        return api.create(title, idempotency_key)

    with agentwatch.run("support"):
        for _ in range(3):  # the agent "helpfully" retries the write itself
            try:
                create_ticket("Printer on fire")
                break
            except BadGateway:
                continue
        create_ticket("Printer on fire")  # and asks once more to be sure
    agentwatch.uninstrument()
    print(f"-> tickets created: {len(api.tickets)}\n")


if __name__ == "__main__":
    print("Without the gateway:")
    scenario(None)
    print("With the gateway:")
    scenario({
        "tools": {
            "idempotency_required": ["ticket.create"],
            "retries": {"max_attempts": 3, "retryable_status": [429, 500, 502, 503, 504], "backoff_ms": [50, 100]},
        }
    })

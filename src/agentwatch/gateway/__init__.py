"""The tool gateway (seed 004's guardrails): idempotency, retries, timeouts,
circuit breakers, validation, safe mode and the automatic response.

``settings`` turns the configuration into values; ``executor`` runs one tool
call under them; the pieces it uses each live in their own module.
"""

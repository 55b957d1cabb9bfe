"""Builders for engine tests: records of one run with sequential times."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from agentwatch.config import Config, load_config
from agentwatch.engine import Engine, EntityExtractor, Finding, Kind, SpanRecord
from agentwatch.hashing import args_hash, digest, value_hash

S = 1_000_000_000
T0 = 1_700_000_000 * S


def make_config(agent: dict[str, Any] | None = None) -> Config:
    """A configuration from the built-in defaults plus ``agent`` (never the environment)."""
    return load_config({"agent": agent} if agent else {}, env={})


class RunBuilder:
    """Makes records of one run (``run_key``) 1 s apart and feeds them to an engine."""

    def __init__(self, engine: Engine, run_key: str = "run1", trace_id: str = "trace1") -> None:
        self.engine = engine
        self.run_key = run_key
        self.trace_id = trace_id
        self.clock = T0
        self.n = 0
        self.extract = EntityExtractor(engine.config.entities).extract

    def _next(self, seconds: float) -> tuple[str, int, int]:
        self.n += 1
        start = self.clock
        self.clock += int(seconds * S)
        return f"{self.run_key}-{self.n:04d}", start, self.clock - 1

    def tool(
        self,
        name: str,
        args: Any = None,
        reply: Any = None,
        *,
        error: bool = False,
        seconds: float = 1.0,
        **extra: Any,
    ) -> SpanRecord:
        """A tool span; ``reply`` only sets the result hash (pass ``result=``/``arguments=`` for content)."""
        sid, start, end = self._next(seconds)
        fields: dict[str, Any] = {
            "tool_name": name,
            "args_hash": args_hash(args if args is not None else {}),
            "result_hash": None if error or reply is None else value_hash(reply),
            "is_error": error,
        }
        fields.update(extra)
        return SpanRecord(
            self.trace_id,
            sid,
            self.run_key,
            Kind.TOOL,
            name=f"execute_tool {name}",
            start_ns=start,
            end_ns=end,
            run_key=self.run_key,
            **fields,
        )

    def llm(
        self,
        *,
        calls: Iterable[tuple[str, Any]] = (),
        reads: Any = None,
        tokens: int | None = None,
        seconds: float = 1.0,
        **extra: Any,
    ) -> SpanRecord:
        sid, start, end = self._next(seconds)
        calls = list(calls)
        fields: dict[str, Any] = {
            "requested_calls": tuple((t, args_hash(a)) for t, a in calls),
            "requested_entities": self.extract([a for _, a in calls]) if calls else (),
            "input_entities": self.extract(reads) if reads is not None else None,
            "input_tokens": tokens,
            "output_tokens": 0 if tokens is not None else None,
        }
        fields.update(extra)
        return SpanRecord(
            self.trace_id,
            sid,
            self.run_key,
            Kind.LLM,
            name="chat m",
            start_ns=start,
            end_ns=end,
            run_key=self.run_key,
            **fields,
        )

    def feed(self, record: SpanRecord) -> list[Finding]:
        return self.engine.process(record)


def flags(findings: Iterable[Finding]) -> set[str]:
    return {f.flag.value for f in findings}


@pytest.fixture
def engine() -> Engine:
    return Engine(make_config())


@pytest.fixture
def run(engine: Engine) -> RunBuilder:
    engine.open_run("run1", start_ns=T0)
    return RunBuilder(engine)


__all__ = ["S", "T0", "RunBuilder", "args_hash", "digest", "flags", "make_config", "value_hash"]

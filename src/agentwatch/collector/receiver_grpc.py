"""OTLP/gRPC receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

Registered as a generic handler with no deserializer, so the handler gets the
request bytes and answers with response bytes: requests are parsed once, by
the intake. gRPC itself enforces ``max_message_bytes`` (RESOURCE_EXHAUSTED),
``max_concurrent_rpcs`` (RESOURCE_EXHAUSTED), the HTTP/2 stream limit, keepalive
and connection age (see docs/collector-config.md), and decompresses gzip.
A malformed request is INVALID_ARGUMENT; one that could never fit in the journal
RESOURCE_EXHAUSTED without RetryInfo; a full export queue, or a journal that
cannot take the request, is UNAVAILABLE with a ``google.rpc.RetryInfo`` detail,
which OTLP clients honour as throttling. With a journal, a request whose
success status was sent (the call ended, not cancelled) is marked acknowledged,
unless it was answered less than ``ACK_MARGIN_SECONDS`` before its deadline.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from .config import GrpcReceiverConfig
from .intake import Accepted, Intake, Malformed, Throttled, TooLarge
from .otlp import GRPC_UNAVAILABLE, response_body, status_body
from .serving import bind
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# An answer sent this close to the call's deadline (by our clock, which started after the client's)
# may reach a client that has already given up and will resend: it is not acked.
ACK_MARGIN_SECONDS = 0.5


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class GrpcReceiver:
    def __init__(self, config: GrpcReceiverConfig, intake: Intake, stats: Stats) -> None:
        self.config = config
        self.intake = intake
        self.stats = stats
        c = config
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", c.max_concurrent_streams),
            ("grpc.keepalive_timeout_ms", _ms(c.keepalive_timeout_seconds)),
        ]
        if c.keepalive_time_seconds > 0:
            options.append(("grpc.keepalive_time_ms", _ms(c.keepalive_time_seconds)))
            options.append(("grpc.keepalive_permit_without_calls", 1))
        if c.max_connection_idle_seconds > 0:
            options.append(("grpc.max_connection_idle_ms", _ms(c.max_connection_idle_seconds)))
        if c.max_connection_age_seconds > 0:
            options.append(("grpc.max_connection_age_ms", _ms(c.max_connection_age_seconds)))
            options.append(("grpc.max_connection_age_grace_ms", _ms(c.max_connection_age_grace_seconds)))
        address = str(c.endpoint)
        if c.endpoint.port:
            # Bind once ourselves first: a port in use becomes an error naming the endpoint
            # (gRPC would log its own line and answer with a bare RuntimeError).
            bind(c.endpoint, "OTLP/gRPC").close()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="agentwatch-grpc"),
            options=options,
            maximum_concurrent_rpcs=c.max_concurrent_rpcs,
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen for OTLP/gRPC on {address}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait(grace + 1)

    def _export(self, request: bytes, context: Any) -> bytes:
        self.stats.add("requests_received", 1, "grpc")
        try:
            accepted = self.intake.submit(request, "grpc")
        except Malformed as exc:
            self.stats.add("requests_failed", 1, "malformed")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TooLarge as exc:  # no RetryInfo: OTLP clients do not resend it
            self.stats.add("requests_failed", 1, "too_large")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Throttled as exc:
            self.stats.add("requests_failed", 1, "throttled")
            info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=exc.retry_after))
            details = status_body(GRPC_UNAVAILABLE, str(exc), as_json=False, details=[info])
            context.set_trailing_metadata((("grpc-status-details-bin", details),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception:
            log.exception("unexpected error handling an OTLP/gRPC request")
            self.stats.add("requests_failed", 1, "internal_error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        if accepted.record is not None and context.time_remaining() > ACK_MARGIN_SECONDS:
            context.add_callback(lambda: self._ended(context, accepted))
        return response_body(accepted.rejected, accepted.message, as_json=False)

    def _ended(self, context: Any, accepted: Accepted) -> None:
        """The call is over: unless it was cancelled (the client saw no answer, it will resend), ack it.

        gRPC has no public way to ask; its server keeps ``_state.client == "cancelled"``. Should that
        change, nothing is acked: every replayed request then counts as possibly resent (safe side).
        """
        if getattr(getattr(context, "_state", None), "client", "cancelled") == "closed":
            self.intake.acknowledged(accepted)

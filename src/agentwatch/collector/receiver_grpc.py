"""OTLP/gRPC receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

Registered as a generic handler with no deserializer, so the handler gets the
request bytes and answers with response bytes: requests are parsed once, by
the intake. gRPC itself enforces ``max_message_bytes`` (RESOURCE_EXHAUSTED)
and decompresses gzip. A malformed request is INVALID_ARGUMENT; a full
export queue is UNAVAILABLE with a ``google.rpc.RetryInfo`` detail, which
OTLP clients honour as throttling.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from .config import GrpcReceiverConfig
from .intake import Intake, Malformed, Throttled
from .otlp import GRPC_UNAVAILABLE, response_body, status_body
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class GrpcReceiver:
    def __init__(self, config: GrpcReceiverConfig, intake: Intake, stats: Stats, workers: int = 8) -> None:
        self.config = config
        self.intake = intake
        self.stats = stats
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentwatch-grpc"),
            options=options,
            maximum_concurrent_rpcs=workers * 16,
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )
        address = str(config.endpoint)
        self.port = self._server.add_insecure_port(address)
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
        return response_body(accepted.rejected, accepted.message, as_json=False)

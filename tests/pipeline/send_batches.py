"""An "app process" for the pipeline tests: send prepared OTLP export requests over gRPC.

    python -m tests.pipeline.send_batches TARGET PAUSE_S FILE...

Each FILE holds one serialized ``ExportTraceServiceRequest``; they are sent in
order with PAUSE_S between them, so two of these processes interleave their
batches. Prints one JSON line: requests sent, spans sent, failures. Retries a
refused request (UNAVAILABLE) for up to 30 s, as an OTLP exporter would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


def span_count(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def main(argv: list[str]) -> int:
    target, pause, files = argv[0], float(argv[1]), argv[2:]
    channel = grpc.insecure_channel(target)
    export = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    sent = spans = failed = 0
    for name in files:
        body = Path(name).read_bytes()
        deadline = time.monotonic() + 30
        while True:
            try:
                export(body, timeout=10)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                failed += 1
                break
            sent += 1
            spans += span_count(body)
            break
        time.sleep(pause)
    channel.close()
    print(json.dumps({"requests": sent, "spans": spans, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

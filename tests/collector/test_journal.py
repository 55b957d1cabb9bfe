"""The on-disk journal: framing, torn and corrupt records, segment deletion and compaction, limits,
I/O errors, and the collector's use of it (journal before acknowledging, replay at start-up)."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from agentwatch.collector import Collector, build_collector_config
from agentwatch.collector.journal import MAGIC, Journal, JournalError, JournalFull, _name

from .helpers import agent_run, by_call, capture, collector_mapping, export, grpc_exporter, wait_until

T1, T2, T3 = (bytes([n]) * 16 for n in (1, 2, 3))


def opened(directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = 1 << 20) -> Journal:
    journal = Journal(directory, max_bytes, segment_bytes, fsync=False)
    journal.open()
    assert list(journal.replay()) == []
    return journal


def reopen(journal: Journal, directory: Path, **kwargs: int) -> tuple[Journal, list]:
    """What a restart after a kill sees: the old instance is dropped without closing (its lock released)."""
    os.close(journal._lock_fd)
    if journal._fd >= 0:
        os.close(journal._fd)
    again = Journal(directory, kwargs.get("max_bytes", 1 << 30), kwargs.get("segment_bytes", 1 << 20), fsync=False)
    report = again.open()
    return again, [report, list(again.replay())]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.awj"))


def test_records_and_markers_round_trip(tmp_path):
    journal = opened(tmp_path)
    a = journal.append(b"request a", [T1, T2])
    b = journal.append(b"request b", [T3])
    c = journal.append(b"request c", [T1])
    journal.begin([(a, T1), (a, T2)])
    journal.done([(a, T1), (b, T3)])  # request b is finished; a has T2 left (begun); c untouched
    assert journal.pending_requests() == 2
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 0 and report.records == 5  # three requests, two marker records
    assert [(r.seq, r.data, r.traces, r.begun) for r in replay] == [
        (a, b"request a", {T2}, {T2}),
        (c, b"request c", {T1}, set()),
    ]
    assert journal.append(b"d", [T1]) == c + 1, "sequence numbers go on after a restart"


def test_ack_markers_say_which_requests_their_client_saw_answered(tmp_path):
    journal = opened(tmp_path)
    a = journal.append(b"answered", [T1])
    b = journal.append(b"never answered", [T2])
    c = journal.append(b"answered, then delivered", [T3])
    journal.ack(a)
    journal.done([(c, T3)])
    journal.ack(c)  # already done: nothing is written for it
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.records == 5  # three requests, one done marker, one ack
    assert [(r.seq, r.acked) for r in replay] == [(a, True), (b, False)]
    d = journal.append(b"after the restart", [T1])
    assert d > c
    journal.ack(b)  # a replayed request keeps its state across a second restart
    journal, (_, replay) = reopen(journal, tmp_path)
    assert [(r.seq, r.acked) for r in replay] == [(a, True), (b, True), (d, False)]


def test_a_torn_tail_is_truncated_counted_and_start_up_goes_on(tmp_path):
    journal = opened(tmp_path)
    journal.append(b"kept", [T1])
    journal.append(b"x" * 1000, [T2])
    path = segments(tmp_path)[0]
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the kill cut the last write in the middle
        fh.truncate(size - 400)
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 1 and report.truncated_bytes > 0
    assert [r.data for r in replay] == [b"kept"]
    assert path.stat().st_size < size - 400, "cut back to the last whole record"
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 0 and [r.data for r in replay] == [b"kept"]


@pytest.mark.parametrize("garbage", [b"\xff" * 9, b"\x00" * 3, b"\x05\x00\x00\x00\x00\x00\x00\x00\x02abcde"])
def test_garbage_after_the_last_record_is_cut(tmp_path, garbage):
    journal = opened(tmp_path)
    journal.append(b"kept", [T1])
    with open(segments(tmp_path)[0], "ab") as fh:
        fh.write(garbage)
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 1 and [r.data for r in replay] == [b"kept"]


def test_a_flipped_bit_fails_the_checksum_and_ends_the_segment(tmp_path):
    journal = opened(tmp_path)
    journal.append(b"first", [T1])
    journal.append(b"second!", [T2])
    journal.append(b"third", [T3])
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[data.index(b"second!") + 2] ^= 0x01
    path.write_bytes(bytes(data))
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 1
    assert [r.data for r in replay] == [b"first"], "nothing after a bad record is trusted"


def test_a_segment_without_the_header_is_set_aside(tmp_path):
    journal = opened(tmp_path)
    journal.append(b"kept", [T1])
    (tmp_path / _name(100)).write_bytes(b"not a journal at all")
    (tmp_path / _name(101)).write_bytes(MAGIC[:3])  # created, killed before the header was written
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 1 and [r.data for r in replay] == [b"kept"]
    assert (tmp_path / _name(100)).with_suffix(".corrupt").exists()
    assert not (tmp_path / _name(101)).exists()


def test_segments_are_deleted_once_everything_in_them_is_done(tmp_path):
    journal = opened(tmp_path, segment_bytes=64 * 1024)
    seqs = [journal.append(os.urandom(5000), [T1]) for _ in range(60)]
    assert len(segments(tmp_path)) >= 4
    high = journal.bytes
    journal.done([(seq, T1) for seq in seqs[:30]])
    assert journal.bytes < high and segments(tmp_path)[0].name != _name(1)
    journal.done([(seq, T1) for seq in seqs[30:]])
    assert len(segments(tmp_path)) == 1, "only the segment being written is left"
    journal.close()
    assert segments(tmp_path) == [], "a clean stop with nothing pending leaves no segment"


def test_one_slow_trace_does_not_pin_its_segment(tmp_path):
    """Past half of max_bytes, the oldest segment's unfinished requests are copied forward."""
    journal = opened(tmp_path, max_bytes=1 << 20, segment_bytes=64 * 1024)
    slow = journal.append(b"the slow one", [T1, T2])
    journal.ack(slow)
    journal.begin([(slow, T2)])
    journal.done([(slow, T1)])
    for _ in range(400):  # 2 MB of traffic through a 1 MB journal, all of it delivered
        seq = journal.append(os.urandom(5000), [T3])
        journal.done([(seq, T3)])
    # Compaction starts past half of max_bytes: about that much stays on disk, never more.
    assert journal.bytes <= (1 << 19) + 2 * 64 * 1024
    assert not (tmp_path / _name(1)).exists()
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 0
    assert [(r.seq, r.data, r.traces, r.begun, r.acked) for r in replay] == [
        (slow, b"the slow one", {T2}, {T2}, True)
    ], "copied forward with its begin and ack markers"


def test_a_full_journal_refuses_until_requests_are_done(tmp_path):
    journal = opened(tmp_path, max_bytes=1 << 20, segment_bytes=256 * 1024)
    held = []
    with pytest.raises(JournalFull):
        for _ in range(1000):
            held.append(journal.append(os.urandom(10_000), [T1]))
    assert journal.bytes <= 1 << 20 and 90 <= len(held) < 105
    journal.done([(seq, T1) for seq in held])
    journal.append(os.urandom(10_000), [T1])


def test_one_journal_directory_serves_one_collector(tmp_path):
    journal = opened(tmp_path)
    with pytest.raises(OSError, match="in use by another process"):
        Journal(tmp_path, 1 << 30, 1 << 20, fsync=False).open()
    journal.close()
    Journal(tmp_path, 1 << 30, 1 << 20, fsync=False).open()


def test_fsync_mode_writes_the_same_records(tmp_path):
    journal = Journal(tmp_path, 1 << 30, 64 * 1024, fsync=True)
    journal.open()
    assert list(journal.replay()) == []
    seqs = [journal.append(os.urandom(3000), [T1]) for _ in range(50)]
    journal.done([(s, T1) for s in seqs[:-1]])
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 0 and [r.seq for r in replay] == [seqs[-1]]


def test_a_segment_that_could_not_be_made_durable_is_removed_so_the_next_one_can_start(tmp_path, monkeypatch):
    import agentwatch.collector.journal as journal_module

    journal = Journal(tmp_path, 1 << 30, 4096, fsync=True)
    journal.open()
    assert list(journal.replay()) == []
    first = journal.append(os.urandom(3000), [T1])
    real = journal_module._fsync_dir
    failures = iter([OSError(5, "EIO")])

    def flaky(directory: Path) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real(directory)

    monkeypatch.setattr(journal_module, "_fsync_dir", flaky)
    # The rotation after the second request fails to make the next segment durable (logged);
    # the next request makes it again instead of meeting the half-made file (EEXIST) for ever.
    later = [journal.append(os.urandom(3000), [T2]) for _ in range(4)]
    assert next(failures, None) is None, "the failure was injected"
    journal.done([(first, T1)])
    journal, (report, replay) = reopen(journal, tmp_path)
    assert report.corrupt_records == 0 and [r.seq for r in replay] == later


# --------------------------------------------------------------------------- in the collector


def journaled(target: str, directory: Path, decision: dict | None = None, **buffer: object) -> Collector:
    mapping = collector_mapping(target, buffer={"journal_dir": str(directory), **buffer}, decision=decision or {})
    return Collector(build_collector_config(mapping, env={})).start()


def test_a_request_is_journaled_before_it_is_acknowledged_and_replayed_after_a_kill(tmp_path, grpc_sink):
    spans = list(by_call(capture(agent_run)).values())
    first = journaled(grpc_sink.target, tmp_path / "j", **{})
    export(grpc_exporter(first), spans)
    assert first.stats.gauges()["journal_pending_requests"] == 1
    # What a SIGKILL leaves: the files as they are (tests/pipeline/test_durability.py kills a
    # process). Here the instance stops listening and deciding, and lets go of the journal.
    abandon(first)
    second = journaled(grpc_sink.target, tmp_path / "j")
    try:
        wait_until(lambda: grpc_sink.count() == 5)
        counters = second.stats.counters()
        assert counters["journal_replayed_spans"] == {"pending": 5, "in_flight": 0}
        assert counters["journal_unacknowledged_spans"] == {"": 0}, "its answer was sent"
        flags = sorted(r.flags for r in grpc_sink.received())
        assert flags == [(), (), (), ("ENTITY_MISMATCH",), ("LOOP_DETECTED",)], "decided as if never stopped"
        wait_until(lambda: second.stats.gauges()["journal_pending_requests"] == 0)
    finally:
        second.shutdown(timeout=2)
        bury(first)
    assert segments(tmp_path / "j") == []


def abandon(collector: Collector) -> None:
    """What a SIGKILL leaves: the files as they are (tests/pipeline/test_durability.py kills a process).
    Here the instance stops listening and deciding, and lets go of the journal."""
    collector.intake.accepting = False
    collector.decider.stop()
    collector.forwarder.journal = None  # nothing it does from now on reaches the journal
    collector.intake.journal = None
    assert collector.journal is not None
    os.close(collector.journal._lock_fd)
    collector.journal._lock_fd = -1
    collector._close_listeners()


def bury(collector: Collector) -> None:
    collector.forwarder.drain(time.monotonic())
    assert collector.journal is not None
    os.close(collector.journal._fd)


def _http_post_then_reset(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


@pytest.mark.parametrize("how", ["grpc-deadline", "grpc-cancelled", "http-reset"])
def test_a_request_whose_client_saw_no_answer_is_replayed_as_unacknowledged(tmp_path, grpc_sink, how):
    """The client gave up (gRPC deadline), cancelled the call, or went away (HTTP connection reset)
    while its journaled request was being buffered: it will send the request again, so the replay
    counts it."""
    protocol = how.split("-")[0]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    answered = encode_spans(capture(agent_run)).SerializeToString()
    unanswered = encode_spans(capture(agent_run)).SerializeToString()
    first = journaled(grpc_sink.target, tmp_path / "j", decision={"straggler_delay_ms": 60_000})
    assert first.journal is not None
    channel = grpc.insecure_channel(f"127.0.0.1:{first.grpc_port}")
    call = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=None,
        response_deserializer=None,
    )
    try:
        if protocol == "grpc":
            call(answered, timeout=5)
        else:
            request = urllib.request.Request(
                f"http://127.0.0.1:{first.http_port}/v1/traces",
                data=answered,
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        wait_until(lambda: first.journal is not None and first.journal._requests[1].acked)
        with first.buffer.lock:  # the request is journaled, then waits here to be buffered
            if how == "grpc-deadline":
                with pytest.raises(grpc.RpcError) as cut:
                    call(unanswered, timeout=1)
                assert cut.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            elif how == "grpc-cancelled":
                future = call.future(unanswered)  # no deadline
                wait_until(lambda: first.journal is not None and first.journal.pending_requests() == 2)
                assert future.cancel()
                time.sleep(0.3)
            else:
                assert first.http_port is not None
                sock = _http_post_then_reset(first.http_port, unanswered)
                wait_until(lambda: first.journal is not None and first.journal.pending_requests() == 2)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # a reset: the collector sees the connection lost
                time.sleep(0.3)
            assert first.journal.pending_requests() == 2
        wait_until(lambda: first.buffer.spans == 10)
        time.sleep(0.3)  # the answer to the gone client has been attempted
    finally:
        channel.close()
    abandon(first)
    second = journaled(grpc_sink.target, tmp_path / "j")
    try:
        counters = second.stats.counters()
        assert sum(counters["journal_replayed_spans"].values()) == 10
        assert counters["journal_unacknowledged_spans"] == {"": 5}, "only the unanswered request"
        wait_until(lambda: grpc_sink.count() == 10)
    finally:
        second.shutdown(timeout=2)
        bury(first)


def test_sigterm_keeps_in_the_journal_what_the_drain_could_not_deliver(tmp_path, grpc_sink):
    """Downstream down at the stop: a batch that was attempted and one never attempted (held back while
    the first backs off) stay in the journal, counted as kept, not dropped; the next start delivers them."""
    grpc_sink.permanent = grpc.StatusCode.UNAVAILABLE
    retry = {"initial_backoff_ms": 5000, "max_backoff_ms": 5000, "max_elapsed_seconds": 60}
    first = Collector(
        build_collector_config(
            collector_mapping(
                grpc_sink.target,
                buffer={"journal_dir": str(tmp_path / "j")},
                exporter={"retry": retry},
            ),
            env={},
        )
    ).start()
    export(grpc_exporter(first), list(by_call(capture(agent_run)).values()))
    wait_until(lambda: grpc_sink.calls >= 1)  # attempted, now backing off for 5 s
    export(grpc_exporter(first), list(by_call(capture(agent_run)).values()))
    wait_until(lambda: first.stats.gauges()["queue_batches"] == 2)
    first.shutdown(timeout=0.5)
    counters = first.stats.counters()
    assert counters["spans_kept_for_replay"] == {"in_flight": 5, "queued": 5}
    assert sum(counters["spans_dropped"].values()) == 0 and sum(counters["spans_forwarded"].values()) == 0
    assert segments(tmp_path / "j"), "the journal keeps them"
    grpc_sink.permanent = None
    second = journaled(grpc_sink.target, tmp_path / "j")
    try:
        assert second.stats.counters()["journal_replayed_spans"] == {"pending": 5, "in_flight": 5}
        wait_until(lambda: grpc_sink.count() == 10)
        wait_until(lambda: second.stats.gauges()["journal_pending_requests"] == 0)
    finally:
        second.shutdown(timeout=2)
    assert sum(second.stats.counters()["spans_kept_for_replay"].values()) == 0
    assert segments(tmp_path / "j") == []


def test_a_full_journal_is_a_retryable_refusal(tmp_path, grpc_sink):
    grpc_sink.permanent = grpc.StatusCode.UNAVAILABLE  # nothing leaves: the journal fills up
    collector = journaled(grpc_sink.target, tmp_path / "j", journal_max_bytes=1 << 20, journal_segment_bytes=65536)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        body = encode_spans(capture(agent_run)).SerializeToString()
        codes = []
        for _ in range(1200):
            try:
                call(body * 10, timeout=5)  # the same request ten times over: ~13 KB
            except grpc.RpcError as err:
                codes.append((err.code(), err.details()))
                break
        channel.close()
        assert codes and codes[0][0] is grpc.StatusCode.UNAVAILABLE and "journal is full" in codes[0][1]
        request = urllib.request.Request(
            f"http://127.0.0.1:{collector.http_port}/v1/traces",
            data=body * 10,
            headers={"Content-Type": "application/x-protobuf"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "5"
        assert collector.stats.get("journal_refused_requests", "full") == 2
        assert collector.stats.gauges()["journal_bytes"] <= 1 << 20
    finally:
        collector.shutdown(timeout=1)


def _run(config: Path, preexec: object = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,  # type: ignore[arg-type]
    )


def test_an_unusable_journal_directory_is_a_clear_error_at_start_up(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "collector.yaml"
    config.write_text(
        "receivers: {grpc: {endpoint: '127.0.0.1:0'}}\nexporter: {endpoint: '127.0.0.1:9'}\n"
        f"health: {{endpoint: '127.0.0.1:0'}}\nbuffer: {{journal_dir: '{blocker}/journal'}}\n"
    )
    proc = _run(config)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"cannot use the journal directory {blocker}/journal" in err and "Traceback" not in err


def test_a_journal_write_error_refuses_retryably_and_is_logged_once(tmp_path, grpc_sink):
    """A real I/O error: the process may not write files past 200 KB (EFBIG, as a full disk gives ENOSPC)."""
    config = tmp_path / "collector.yaml"
    config.write_text(
        "receivers: {grpc: {endpoint: '127.0.0.1:0'}}\n"
        f"exporter: {{endpoint: '{grpc_sink.target}'}}\nhealth: {{endpoint: '127.0.0.1:0'}}\n"
        f"decision: {{straggler_delay_ms: 60000}}\n"
        f"buffer: {{journal_dir: '{tmp_path}/journal', journal_segment_bytes: 1048576}}\n"
    )

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = _run(config, limit_file_size)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        while not any("listening" in ln for ln in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        port = int(next(ln for ln in lines if "listening" in ln).split("grpc=127.0.0.1:")[1].split()[0])
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        body = encode_spans(capture(agent_run)).SerializeToString() * 10
        refused = []
        for _ in range(40):
            try:
                call(body, timeout=5)
            except grpc.RpcError as err:
                refused.append((err.code(), err.details()))
        channel.close()
        assert 20 <= len(refused) < 40
        assert {code for code, _ in refused} == {grpc.StatusCode.UNAVAILABLE}
        assert all("cannot write its journal" in details for _, details in refused)
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    log = "".join(lines) + rest
    assert log.count("refusing requests (retryable) until the journal can be written") == 1, log
    assert "File too large" in log and "Traceback" not in log
    assert proc.returncode == 0


def test_replay_waits_for_nothing_when_the_journal_is_empty(tmp_path, grpc_sink):
    started = time.monotonic()
    collector = journaled(grpc_sink.target, tmp_path / "j")
    collector.shutdown(timeout=1)
    assert time.monotonic() - started < 5
    assert collector.stats.counters()["journal_replayed_spans"] == {"pending": 0, "in_flight": 0}


def test_sequence_numbers_never_reuse_one_a_marker_still_names(tmp_path):
    journal = opened(tmp_path, segment_bytes=64 * 1024)
    old = journal.append(os.urandom(70_000), [T1])  # fills its segment: the next record starts another
    journal.done([(old, T1)])  # the data segment goes; its done marker is in the next one
    assert [p.name for p in segments(tmp_path)] == [_name(2)]
    journal, (_, replay) = reopen(journal, tmp_path)  # a kill at this point: only the marker is left
    assert replay == []
    assert journal.append(b"a late span of the same trace", [T1]) > old


# --------------------------------------------------------------------------- review: crash consistency and bounds


def test_a_cut_at_every_byte_of_the_last_writes_replays_a_consistent_prefix(tmp_path):
    """A kill can cut the last write anywhere: every cut opens, replays only whole requests, and is clean after."""
    journal = opened(tmp_path / "j")
    a = journal.append(b"request a", [T1, T2])
    journal.ack(a)
    journal.begin([(a, T1)])
    b = journal.append(b"request b", [T3])
    journal.done([(a, T1)])
    journal.ack(b)
    whole = segments(tmp_path / "j")[0].read_bytes()
    os.close(journal._lock_fd)
    os.close(journal._fd)
    expected = {a: b"request a", b: b"request b"}
    for cut in range(len(whole) + 1):
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / _name(1)).write_bytes(whole[:cut])
        again = Journal(directory, 1 << 30, 1 << 20, fsync=False)
        report = again.open()
        replay = list(again.replay())
        assert all(r.data == expected[r.seq] for r in replay), cut
        assert [r.seq for r in replay] == sorted(r.seq for r in replay)
        again.close()
        second = Journal(directory, 1 << 30, 1 << 20, fsync=False)
        assert second.open().corrupt_records == 0, cut
        assert [(r.seq, r.traces) for r in second.replay()] == [(r.seq, r.traces) for r in replay], cut
        second.close()
        assert report.truncated_bytes <= len(whole)


def test_a_deleted_journal_directory_refuses_instead_of_acknowledging_into_a_deleted_file(tmp_path):
    journal = opened(tmp_path / "j")
    journal.append(b"before", [T1])
    shutil.rmtree(tmp_path / "j")
    with pytest.raises(JournalError):
        journal.append(b"after: its record would be in no file", [T2])
    with pytest.raises(JournalError):
        journal.append(b"still no directory", [T2])
    (tmp_path / "j").mkdir()  # an operator puts it back: requests are taken again, into a new segment
    seq = journal.append(b"taken again", [T3])
    journal, (_, replay) = reopen(journal, tmp_path / "j")
    assert [(r.seq, r.data) for r in replay] == [(seq, b"taken again")]


def test_markers_stay_within_journal_max_bytes(tmp_path):
    """Small requests of many traces: their begin/done/ack markers must fit in max_bytes too."""
    max_bytes = 256 * 1024
    journal = opened(tmp_path, max_bytes=max_bytes, segment_bytes=64 * 1024)
    traces = [bytes([n]) * 16 for n in range(1, 151)]
    held = []
    with pytest.raises(JournalFull):
        for _ in range(1000):
            held.append(journal.append(b"s" * 40 * len(traces), traces))
    for seq in held:
        journal.ack(seq)
        journal.begin([(seq, tid) for tid in traces[:75]])
        journal.begin([(seq, tid) for tid in traces[75:]])
    on_disk = sum(p.stat().st_size for p in segments(tmp_path))
    assert journal.bytes == on_disk
    assert on_disk <= max_bytes
    for seq in held[: len(held) // 2]:
        for tid in traces:
            journal.done([(seq, tid)])  # one piece a batch: the largest marker overhead
            assert journal.bytes <= max_bytes


def test_compaction_copies_stay_within_journal_max_bytes(tmp_path):
    """Measured on disk just before each segment is deleted: the copies made to free it are there too."""
    max_bytes = 512 * 1024
    directory = tmp_path / "j"
    peak = [0]

    def hook(event: str, args: tuple) -> None:
        if event == "os.remove" and str(args[0]).startswith(str(directory)):
            peak[0] = max(peak[0], sum(p.stat().st_size for p in directory.glob("segment-*.awj")))

    sys.addaudithook(hook)
    journal = opened(directory, max_bytes=max_bytes, segment_bytes=128 * 1024)
    for n in range(200):  # every third request is slow: each segment keeps one, copied forward later
        try:
            seq = journal.append(os.urandom(60_000), [T1])
        except JournalFull:
            break
        if n % 3:
            journal.done([(seq, T1)])
    journal.close()
    assert peak[0] > 0, "compaction ran"
    assert peak[0] <= max_bytes, peak


def test_a_request_the_journal_refuses_is_not_counted_received(tmp_path, grpc_sink):
    """received - rejected = forwarded + dropped + kept: a refused request is resent, counted when taken."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    grpc_sink.permanent = grpc.StatusCode.UNAVAILABLE  # nothing leaves: the journal fills up
    collector = journaled(grpc_sink.target, tmp_path / "j", journal_max_bytes=1 << 20, journal_segment_bytes=65536)
    body = encode_spans(capture(agent_run)).SerializeToString() * 10  # 50 spans
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    call = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=None,
        response_deserializer=None,
    )
    accepted = refused = 0
    try:
        for _ in range(1200):
            try:
                call(body, timeout=5)
                accepted += 1
            except grpc.RpcError:
                refused += 1
                if refused == 3:
                    break
    finally:
        channel.close()
        collector.shutdown(timeout=0.5)
    counters = collector.stats.counters()
    assert refused == 3 and accepted > 0
    received = sum(counters["spans_received"].values()) - sum(counters["spans_rejected"].values())
    assert received == 50 * accepted
    outcomes = ("spans_forwarded", "spans_dropped", "spans_kept_for_replay")
    outcome = sum(sum(counters[name].values()) for name in outcomes)
    assert received == outcome


def test_a_journaled_record_that_is_not_a_request_does_not_pin_the_journal(tmp_path, grpc_sink):
    """Its CRC holds but it does not decode (say, an older collector took what this one rejects): counted once,
    then done, not replayed again at every start and copied forward forever."""
    journal = opened(tmp_path / "j")
    journal.append(b"\xff\xff\xff", [T1])
    journal.close()
    collector = journaled(grpc_sink.target, tmp_path / "j")
    try:
        assert collector.stats.get("journal_corrupt_records") == 1
        assert collector.stats.gauges()["journal_pending_requests"] == 0
    finally:
        collector.shutdown(timeout=1)
    assert segments(tmp_path / "j") == []


COMPACTING = """
import os, sys
from agentwatch.collector.journal import Journal, JournalFull
journal = Journal(sys.argv[1], 1 << 20, 128 * 1024, fsync=True)
journal.open()
list(journal.replay())
for n in range(60):  # every third request is slow: each segment keeps one, copied forward later
    try:
        seq = journal.append(os.urandom(60_000), [bytes(16)])
    except JournalFull:
        break
    if n % 3:
        journal.done([(seq, bytes(16))])
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to see the system calls")
def test_with_fsync_a_compaction_copy_is_flushed_before_its_original_is_deleted(tmp_path):
    """A machine crash after the delete must not lose the only flushed copy of an acknowledged request."""
    trace = tmp_path / "strace.txt"
    subprocess.run(
        ["strace", "-f", "-e", "trace=fdatasync,unlink,writev", "-o", str(trace), sys.executable, "-c",
         COMPACTING, str(tmp_path / "j")],
        check=True, timeout=120,
    )  # fmt: skip
    unflushed: set[str] = set()  # fds with a data record written since their last fdatasync
    deletions = 0
    for line in trace.read_text().splitlines():
        call = line.split(None, 1)[1] if " " in line else line
        if call.startswith("writev(") and call.split('"', 2)[1].endswith("\\1"):  # a data record's header
            unflushed.add(call[len("writev(") :].split(",", 1)[0])
        elif call.startswith("fdatasync("):
            unflushed.discard(call[len("fdatasync(") :].split(")", 1)[0])
        elif call.startswith("unlink(") and "/segment-" in call:
            deletions += 1
            assert not unflushed, f"segment deleted while data records in fds {unflushed} were not flushed"
    assert deletions >= 3


def test_a_kill_before_any_segment_deletion_replays_each_request_once_across_restarts(tmp_path):
    """Snapshots of the directory just before every deletion (compaction's copies written, originals still
    there), and three lives: the slow request is replayed once each time, with its begin and ack markers."""
    directory = tmp_path / "j"
    snapshots: list[Path] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "os.remove" and str(args[0]).startswith(f"{directory}/segment-"):
            snapshot = tmp_path / f"snapshot-{len(snapshots)}"
            shutil.copytree(directory, snapshot, ignore=shutil.ignore_patterns("LOCK"))
            snapshots.append(snapshot)

    sys.addaudithook(hook)
    sizes = {"max_bytes": 1 << 20, "segment_bytes": 128 * 1024}
    journal = opened(directory, **sizes)
    slow = journal.append(b"the slow one" * 100, [T1, T2])
    journal.ack(slow)
    journal.begin([(slow, T2)])
    journal.done([(slow, T1)])
    expected = (slow, {T2}, {T2}, True)
    try:
        for _ in range(2):  # a second life replays it, carries it through compactions, and is killed too
            journal, (_, replay) = reopen(journal, directory, **sizes)
            assert [(r.seq, r.traces, r.begun, r.acked) for r in replay] == [expected]
            for _ in range(40):
                seq = journal.append(os.urandom(60_000), [T3])
                journal.done([(seq, T3)])
    finally:
        active[0] = False
    assert len(snapshots) >= 10
    for snapshot in snapshots:
        again = Journal(snapshot, 1 << 20, 128 * 1024, fsync=False)
        again.open()
        replay = [(r.seq, r.traces, r.begun, r.acked) for r in again.replay()]
        again.close()
        assert replay.count(expected) == 1, snapshot
        others = [r for r in replay if r[0] != slow]
        assert len(others) <= 1 and all(r[1] == {T3} for r in others), "only the request being appended"


def test_a_request_larger_than_the_journal_is_refused_for_good_not_retried_for_ever(tmp_path, grpc_sink):
    """journal_max_bytes may be below what the receivers take: such a request can never be journaled, so a
    503 would have its client resend it until it gives up. 413 / RESOURCE_EXHAUSTED (no RetryInfo) instead."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    collector = journaled(grpc_sink.target, tmp_path / "j", journal_max_bytes=1 << 20, journal_segment_bytes=65536)
    one = encode_spans(capture(agent_run)).SerializeToString()
    body = one * ((1 << 20) // len(one) + 1)  # a little over 1 MiB, under the receivers' 4 MiB
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    call = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=None,
        response_deserializer=None,
    )
    try:
        with pytest.raises(grpc.RpcError) as refused:
            call(body, timeout=5)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "journal_max_bytes" in (refused.value.details() or "")
        assert not any(key == "grpc-status-details-bin" for key, _ in refused.value.trailing_metadata() or ())
        request = urllib.request.Request(
            f"http://127.0.0.1:{collector.http_port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=5)
        assert answered.value.code == 413 and "Retry-After" not in answered.value.headers
        assert collector.stats.get("journal_refused_requests", "too_large") == 2
        assert sum(collector.stats.counters()["spans_received"].values()) == 0
        call(one, timeout=5)  # one that fits is taken
    finally:
        channel.close()
        collector.shutdown(timeout=1)

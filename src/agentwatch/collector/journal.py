"""An optional on-disk journal: accepted requests survive a SIGKILL, an OOM kill or (with fsync) a crash.

Every accepted ``ExportTraceServiceRequest`` is appended to the current
segment file before the receiver acknowledges it. The spans of one request go
to one or more traces; each (request, trace) pair is a *piece*. A piece is
finished when the export batch holding its trace was delivered or dropped
(counted either way; at a SIGTERM, what the drain leaves undelivered stays
unfinished, for the next start); a request whose pieces are all finished is *done*. Two
small marker records follow a piece: ``begin`` when its batch is first handed
to the exporter, ``done`` when the batch has an outcome. On start-up, every
piece not done is replayed into the trace buffer and decided again; a piece
that had begun may already be downstream (the window between the downstream's
answer and the ``done`` marker), so it is counted as possibly duplicate. A
third marker, ``ack``, follows a request once the receiver has handed its
success answer to the transport: a request replayed without one may also have
been sent again by its client (it saw no answer), and is counted as such.

Files: ``segment-<n>.awj`` in the directory, plus a ``LOCK`` file held with
``flock`` so that two collectors cannot share one journal. A segment starts
with an 8-byte magic; each record is ``length (u32) | crc32 (u32) | type (u8)
| payload``, the CRC covering type and payload; a data record's payload is its
sequence number, the ids of its unfinished traces and the request's bytes; a
begin/done marker's is a list of (sequence number, trace id), an ack's a list
of sequence numbers. A record that is cut short
or fails its CRC ends the segment: the rest is truncated and counted (a write
torn by the kill), start-up goes on.

Without fsync a record is in the OS before the request is acknowledged: it
survives a kill of the process. With fsync, data records are flushed before
the acknowledgement (one ``fdatasync`` shared by the requests waiting for it)
and begin markers before the export; done and ack markers are not flushed
(losing one only means a replay, or a replay counted as possibly resent).

Disk use is bounded by ``max_bytes``: segments are deleted oldest first once
every request in them is done; when more than half of ``max_bytes`` is in
use, the oldest segment's unfinished requests are copied forward (with the
list of their unfinished traces) so that one slow trace cannot pin a whole
segment. Each request reserves room for the markers it may still need, and
a copy is made only when it fits: disk use never passes ``max_bytes``. A
request that would pass it is refused with :class:`JournalFull`; an I/O error
raises :class:`JournalError`: the receivers answer both as retryable (503 /
UNAVAILABLE), nothing is acknowledged that was not written. A request that
could not fit even in an empty journal raises :class:`JournalTooLarge`
(answered 413 / RESOURCE_EXHAUSTED, not retryable).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("agentwatch.collector")

MAGIC = b"AWJRNL01"
HEADER = struct.Struct("<IIB")  # payload length, crc32(type + payload), type
DATA, BEGIN, DONE, ACK = 1, 2, 3, 4
SEQ = struct.Struct("<QI")  # a data record: sequence number, count of the trace ids that follow
MARK = struct.Struct("<Q16s")  # one piece in a begin/done record: sequence number, trace id
ACKED = struct.Struct("<Q")  # one request in an ack record: its sequence number
MAX_RECORD = 1 << 31  # a length field above this is garbage, not a record
# Disk a piece's begin and done markers may still take (each in a record of its own, at worst), and a
# request's ack: reserved when the request is taken, so that markers never pass max_bytes.
PIECE_MARKS = 2 * (HEADER.size + MARK.size)
ACK_MARK = HEADER.size + ACKED.size
_NAME = re.compile(r"segment-(\d{12})\.awj")

Piece = tuple[int, bytes]
"""(request sequence number, trace id): the spans of one journaled request in one trace."""


class JournalError(OSError):
    """The journal cannot take this request (I/O error): refuse it, retryably."""


class JournalFull(JournalError):
    """The journal holds ``max_bytes``: refuse until forwarding catches up."""


class JournalTooLarge(JournalError):
    """The request would not fit even in an empty journal: refuse it for good (a retry cannot help)."""


@dataclass
class _Request:
    segment: int  # where its live copy is
    offset: int
    length: int  # bytes of its record (header included)
    pending: set[bytes]  # trace ids not done yet
    begun: set[bytes] = field(default_factory=set)  # trace ids handed to the exporter
    acked: bool = False  # its success answer was handed to the transport
    reserved: int = 0  # bytes its markers may still write (counted in Journal._reserved)


@dataclass
class Replay:
    """One request to replay: its bytes, the traces still to deliver, those that had begun."""

    seq: int
    data: bytes
    traces: frozenset[bytes]  # the traces of its spans still to deliver
    begun: frozenset[bytes]  # those of them handed to the exporter before the restart
    acked: bool = True  # False: no answer was handed to the client, which may have sent it again


@dataclass
class OpenReport:
    segments: int = 0
    records: int = 0
    corrupt_records: int = 0  # torn or failing their CRC: truncated
    truncated_bytes: int = 0


class Journal:
    """Append-only segment files with per-piece completion; thread-safe."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, segment_bytes: int, fsync: bool) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._live: dict[int, int] = {}  # segment -> requests whose live copy is in it
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._segment = -1
        self._fd = -1
        self._offset = 0
        self._seq = 0
        self._written = 0  # bytes written since start (for group commit)
        self._synced = 0
        self._unflushed_upto = 0  # writes up to here failed to flush when their segment was closed
        self._lock_fd = -1
        self._failed_marks = False
        self._closed = False
        self._replaying = True  # no segment is deleted before replay has read it
        self._found: dict[int, tuple[int, int, int, frozenset[bytes]]] = {}
        self._found_done: dict[int, set[bytes]] = {}
        self._found_begun: dict[int, set[bytes]] = {}
        self._found_acked: set[int] = set()
        self.bytes = 0  # on disk, all segments
        self._reserved = 0  # bytes the markers of unfinished requests may still write

    # ------------------------------------------------------------------ opening

    def open(self) -> OpenReport:
        """Lock the directory, check and repair the segments, start a new one; then call :meth:`replay`.

        Raises ``OSError`` naming the directory when it cannot be created, locked or written.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot use the journal directory {self.dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OSError(exc.errno, f"the journal directory {self.dir} is in use by another process") from None
            raise OSError(exc.errno, f"cannot lock the journal directory {self.dir}: {exc.strerror}") from None
        report = OpenReport()
        try:
            for index in self._segments():
                report.segments += 1
                for kind, seq_or_marks, offset, length, traces in self._scan(index, report):
                    report.records += 1
                    if isinstance(seq_or_marks, int):
                        self._found[seq_or_marks] = (index, offset, length, traces)
                    elif kind == ACK:
                        self._found_acked.update(seq for seq, _ in seq_or_marks)
                    else:
                        into = self._found_done if kind == DONE else self._found_begun
                        for seq, tid in seq_or_marks:
                            into.setdefault(seq, set()).add(tid)
                path = self.dir / _name(index)
                if path.exists():
                    self._sizes[index] = path.stat().st_size
                    self.bytes += self._sizes[index]
                    self._live[index] = 0
            # Past every number still on disk, markers included: a new request must never
            # inherit an old request's done marker.
            self._seq = max([0, *self._found, *self._found_done, *self._found_begun, *self._found_acked])
            self._start_segment(max(self._sizes, default=0) + 1)
        except OSError as exc:
            self.close()
            raise OSError(exc.errno, f"cannot use the journal directory {self.dir}: {exc.strerror or exc}") from None
        return report

    def replay(self) -> Iterator[Replay]:
        """The requests found by :meth:`open` with traces still to deliver, oldest first (once).

        Each is tracked again as unfinished; segments holding none are deleted at the end.
        """
        found = sorted(self._found.items(), key=lambda kv: kv[1][:2])
        self._found = {}
        try:
            for seq, (index, offset, length, traces) in found:
                pending = traces - self._found_done.get(seq, set())
                if not pending:
                    continue
                try:
                    data = self._read(index, offset, length)
                except OSError as exc:
                    log.error("cannot read journal record %d in %s (%s); skipping it", seq, _name(index), exc)
                    continue
                if data is None:
                    continue
                begun = pending & self._found_begun.get(seq, set())
                acked = seq in self._found_acked
                reserved = (PIECE_MARKS // 2) * (2 * len(pending) - len(begun)) + (0 if acked else ACK_MARK)
                with self._lock:
                    self._requests[seq] = _Request(index, offset, length, set(pending), set(begun), acked, reserved)
                    self._reserved += reserved
                    self._live[index] = self._live.get(index, 0) + 1
                yield Replay(seq, data, pending, begun, acked)
        finally:
            self._found_done = {}
            self._found_begun = {}
            self._found_acked = set()
            with self._lock:
                self._replaying = False
                self._collect_locked()

    def _segments(self) -> list[int]:
        out = []
        for entry in os.listdir(self.dir):
            match = _NAME.fullmatch(entry)
            if match:
                out.append(int(match.group(1)))
        return sorted(out)

    def _scan(
        self, index: int, report: OpenReport
    ) -> Iterator[tuple[int, int | list[Piece], int, int, frozenset[bytes]]]:
        """Records of a segment: (type, seq or pieces, offset, record length, listed traces)."""
        path = self.dir / _name(index)
        data = path.read_bytes()
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                path.unlink()  # created, killed before its header was complete
            else:
                report.corrupt_records += 1
                report.truncated_bytes += len(data)
                path.rename(path.with_suffix(".corrupt"))
                log.warning("journal segment %s does not start with the journal header; renamed *.corrupt", path)
            return
        pos = len(MAGIC)
        end = len(data)
        while pos < end:
            if pos + HEADER.size > end:
                break
            length, crc, kind = HEADER.unpack_from(data, pos)
            body_at = pos + HEADER.size
            if length > MAX_RECORD or body_at + length > end or not _well_formed(kind, data, body_at, length):
                break
            payload = data[body_at : body_at + length]
            if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
                break
            record_length = HEADER.size + length
            if kind == DATA:
                seq, count = SEQ.unpack_from(payload)
                start = SEQ.size
                traces = frozenset(payload[start + 16 * i : start + 16 * (i + 1)] for i in range(count))
                yield DATA, seq, pos, record_length, traces
            elif kind == ACK:
                acked = [(ACKED.unpack_from(payload, i)[0], b"") for i in range(0, len(payload), ACKED.size)]
                yield kind, acked, pos, 0, frozenset()
            else:
                marks = [MARK.unpack_from(payload, i) for i in range(0, len(payload), MARK.size)]
                yield kind, marks, pos, 0, frozenset()
            pos = body_at + length
        if pos < end:
            report.corrupt_records += 1
            report.truncated_bytes += end - pos
            log.warning(
                "journal segment %s: %d bytes at offset %d are torn or corrupt (a write cut by a kill?); "
                "truncated",
                path,
                end - pos,
                pos,
            )
            with open(path, "r+b") as fh:
                fh.truncate(pos)

    def _read(self, index: int, offset: int, length: int) -> bytes | None:
        """A data record's request bytes (None when it no longer checks out)."""
        with open(self.dir / _name(index), "rb") as fh:
            fh.seek(offset)
            raw = fh.read(length)
        if len(raw) != length:
            return None
        size, crc, kind = HEADER.unpack_from(raw)
        payload = raw[HEADER.size :]
        if kind != DATA or size != len(payload) or zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
            return None
        _, count = SEQ.unpack_from(payload)
        return payload[SEQ.size + 16 * count :]

    # ------------------------------------------------------------------ writing

    def append(self, data: bytes, traces: Iterable[bytes]) -> int:
        """Journal one accepted request whose spans belong to ``traces``; its sequence number.

        Returns once the record is in the OS (and on disk with fsync). Raises
        :class:`JournalFull` or :class:`JournalError`.
        """
        pending = set(traces)
        with self._lock:
            if self._closed:
                raise JournalError(errno.EBADF, "the journal is closed (the collector is stopping)")
            self._seq += 1
            seq = self._seq
            self._write_data(seq, data, pending)
            target = self._written
        if self.fsync:
            try:
                self._sync(target)
            except JournalError:
                self.done([(seq, tid) for tid in pending])  # refused: the client sends it again
                raise
        return seq

    def _write_data(self, seq: int, data: bytes, pending: set[bytes], copy: bool = False) -> None:
        """A data record for ``seq`` listing its unfinished traces (under the lock).

        ``copy``: compaction moving a record forward (never refused, never rotates).
        """
        head = SEQ.pack(seq, len(pending)) + b"".join(sorted(pending))
        crc = zlib.crc32(data, zlib.crc32(head, zlib.crc32(bytes((DATA,)))))
        header = HEADER.pack(len(head) + len(data), crc, DATA)
        size = len(header) + len(head) + len(data)
        reserve = PIECE_MARKS * len(pending) + ACK_MARK
        if not copy and size + reserve + 2 * len(MAGIC) > self.max_bytes:
            raise JournalTooLarge(
                errno.EFBIG,
                f"the request takes {size + reserve} bytes in the journal, more than journal_max_bytes "
                f"({self.max_bytes}) allows",
            )
        if not copy and self.bytes + self._reserved + size + reserve + len(MAGIC) > self.max_bytes:
            raise JournalFull(
                errno.ENOSPC,
                f"the journal holds {self.bytes} bytes (and {self._reserved} for markers); {size} more would pass "
                f"journal_max_bytes ({self.max_bytes})",
            )
        offset = self._offset
        self._write((header, head, data))
        old = self._requests.get(seq)
        if old is not None:
            self._release(old.segment)
        else:
            self._reserved += reserve
        self._requests[seq] = _Request(
            self._segment,
            offset,
            size,
            pending,
            old.begun if old else set(),
            old.acked if old else False,
            old.reserved if old else reserve,
        )
        self._live[self._segment] = self._live.get(self._segment, 0) + 1
        if self._offset >= self.segment_bytes and not copy:
            self._rotate()

    def _write(self, parts: Sequence[bytes]) -> None:
        """Write every byte or none (a partial write is cut off again); under the lock."""
        if self._fd < 0:
            try:
                self._start_segment(self._segment + 1)
            except OSError as exc:
                raise JournalError(exc.errno, f"cannot start a journal segment in {self.dir}: {exc.strerror}") from None
        total = sum(len(p) for p in parts)
        start = self._offset
        try:
            written = os.writev(self._fd, parts)
            while written < total:  # a short write (rare on regular files): finish it
                rest = b"".join(parts)[written:]
                written += os.write(self._fd, rest)
            deleted = os.fstat(self._fd).st_nlink == 0
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._abandon_segment()  # cannot clean it: new records go to a fresh segment
            raise JournalError(exc.errno, f"cannot write the journal in {self.dir}: {exc.strerror}") from None
        if deleted:  # the segment (or the directory) was removed: this record is in no file
            self._abandon_segment()
            raise JournalError(errno.ENOENT, f"the journal segment {_name(self._segment)} in {self.dir} was deleted")
        self._offset += total
        self._written += total
        self._sizes[self._segment] = self._offset
        self.bytes += total

    def _sync(self, target: int) -> None:
        """Group commit: one fsync covers every write made before it."""
        with self._sync_lock:
            if target <= self._unflushed_upto:
                raise JournalError(errno.EIO, f"cannot fsync the journal in {self.dir}")
            if self._synced >= target:
                return
            with self._lock:
                fd = os.dup(self._fd) if self._fd >= 0 else -1
                upto = self._written
            if fd < 0:
                return
            try:
                os.fdatasync(fd)
            except OSError as exc:
                raise JournalError(exc.errno, f"cannot fsync the journal in {self.dir}: {exc.strerror}") from None
            finally:
                os.close(fd)
            self._synced = upto

    def _start_segment(self, index: int) -> None:
        path = self.dir / _name(index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            os.write(fd, MAGIC)
            if self.fsync:
                _fsync_dir(self.dir)
        except OSError:  # leave no half-made segment behind: the next start would hit EEXIST for ever
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._segment = index
        self._fd = fd
        self._offset = len(MAGIC)
        self._sizes[index] = self._offset
        self._live.setdefault(index, 0)
        self.bytes += self._offset
        self._written += self._offset

    def _rotate(self) -> None:
        """Close the full segment (synced with fsync on), start the next, reclaim space."""
        old_fd, self._fd = self._fd, -1
        try:
            if self.fsync:
                os.fdatasync(old_fd)
        except OSError as exc:
            # Requests written up to here and not yet acknowledged are refused (see _sync).
            self._unflushed_upto = self._written
            log.error("cannot fsync journal segment %s: %s", _name(self._segment), exc)
        finally:
            os.close(old_fd)
        try:
            self._start_segment(self._segment + 1)
        except OSError as exc:  # the next write tries again, and refuses its request if it fails
            log.error("cannot start a new journal segment in %s: %s", self.dir, exc)
        self._collect_locked()
        if self.bytes > self.max_bytes // 2:
            self._compact_oldest()

    def _abandon_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    # ------------------------------------------------------------------ completion

    def begin(self, pieces: Sequence[Piece]) -> None:
        """These pieces are being handed to the exporter (a replay after this may duplicate them)."""
        if pieces:
            self._mark(BEGIN, pieces)

    def done(self, pieces: Sequence[Piece]) -> None:
        """These pieces were delivered or dropped (counted): they will not be replayed."""
        if pieces:
            self._mark(DONE, pieces)

    def ack(self, seq: int) -> None:
        """The success answer to request ``seq`` was handed to the transport: its client will not resend it.

        Not flushed, even with fsync: a lost ack only makes a replay count the request as possibly resent.
        """
        payload = ACKED.pack(seq)
        header = HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(bytes((ACK,)))), ACK)
        with self._lock:
            request = self._requests.get(seq)
            if self._closed or request is None or request.acked:
                return  # stopping, or already done (delivered or dropped): nothing left to replay
            try:
                self._write((header, payload))
            except OSError as exc:
                if not self._failed_marks:
                    self._failed_marks = True
                    log.error("cannot write journal markers (%s); a restart may deliver some spans again", exc)
                return
            request.acked = True
            self._unreserve(request, ACK_MARK)

    def _mark(self, kind: int, pieces: Sequence[Piece]) -> None:
        payload = b"".join(MARK.pack(seq, tid) for seq, tid in pieces)
        header = HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(bytes((kind,)))), kind)
        with self._lock:
            if self._closed:
                return  # stopping: an attempt that outlived the drain (it was counted then)
            try:
                self._write((header, payload))
            except OSError as exc:
                # Not written: after a crash these pieces are replayed (possibly twice downstream).
                if not self._failed_marks:
                    self._failed_marks = True
                    log.error("cannot write journal markers (%s); a restart may deliver some spans again", exc)
            for seq, tid in pieces:
                request = self._requests.get(seq)
                if request is None:
                    continue
                if kind == BEGIN:
                    if tid in request.pending and tid not in request.begun:
                        request.begun.add(tid)
                        self._unreserve(request, PIECE_MARKS // 2)
                    continue
                if tid not in request.pending:
                    continue
                request.pending.discard(tid)
                # its done marker, and its begin marker if it never had one: neither is written again
                self._unreserve(request, PIECE_MARKS // 2 if tid in request.begun else PIECE_MARKS)
                if not request.pending:
                    del self._requests[seq]
                    self._unreserve(request, request.reserved)
                    self._release(request.segment)
            if kind == DONE:
                self._collect_locked()
            target = self._written
        if kind == BEGIN and self.fsync:
            # On disk before the export starts: after a machine crash, what may have been
            # delivered is still counted as in flight. (A lost done marker only means a replay.)
            try:
                self._sync(target)
            except OSError as exc:
                log.error("cannot fsync journal markers (%s)", exc)

    def _unreserve(self, request: _Request, size: int) -> None:
        size = min(size, request.reserved)
        request.reserved -= size
        self._reserved -= size

    def _release(self, segment: int) -> None:
        self._live[segment] -= 1

    def _collect(self) -> None:
        with self._lock:
            self._collect_locked()

    def _collect_locked(self) -> None:
        """Delete the oldest segments while no unfinished request lives in them."""
        if self._replaying:
            return
        for index in sorted(self._sizes):
            if index == self._segment or self._live.get(index, 0) > 0:
                return
            try:
                (self.dir / _name(index)).unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot delete journal segment %s: %s", _name(index), exc)
                return
            self.bytes -= self._sizes.pop(index)
            self._live.pop(index, None)

    def _compact_oldest(self) -> None:
        """Copy the oldest segment's unfinished requests forward so the segment can go."""
        older = [i for i in sorted(self._sizes) if i != self._segment]
        if not older:
            return
        oldest = older[0]
        movers = [(seq, r) for seq, r in self._requests.items() if r.segment == oldest]
        copies = sum(r.length for _, r in movers)
        if copies > self.segment_bytes // 2:
            return  # mostly live: copying would not gain much
        marks = sum(HEADER.size + MARK.size * len(r.begun) + ACK_MARK for _, r in movers)
        if self.bytes + self._reserved + copies + marks > self.max_bytes:
            return  # the copies must fit next to what they free: max_bytes bounds the disk at every moment
        try:
            for seq, request in movers:
                data = self._read(oldest, request.offset, request.length)
                if data is None:
                    continue
                self._write_data(seq, data, set(request.pending), copy=True)
                begun = [(seq, tid) for tid in request.begun if tid in request.pending]
                if begun:
                    payload = b"".join(MARK.pack(s, t) for s, t in begun)
                    crc = zlib.crc32(payload, zlib.crc32(bytes((BEGIN,))))
                    self._write((HEADER.pack(len(payload), crc, BEGIN), payload))
                if request.acked:
                    payload = ACKED.pack(seq)
                    crc = zlib.crc32(payload, zlib.crc32(bytes((ACK,))))
                    self._write((HEADER.pack(len(payload), crc, ACK), payload))
            if self.fsync and movers and self._fd >= 0:
                os.fdatasync(self._fd)  # the copies on disk before their originals go
        except OSError as exc:
            log.error("compacting the journal failed: %s", exc)
            return
        self._collect_locked()

    # ------------------------------------------------------------------ state

    def pending_requests(self) -> int:
        return len(self._requests)

    def close(self) -> None:
        """Flush and close; segments with nothing unfinished are deleted, the lock is released."""
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                try:
                    if self.fsync:
                        os.fdatasync(self._fd)
                except OSError as exc:
                    log.error("cannot fsync journal segment %s: %s", _name(self._segment), exc)
                finally:
                    os.close(self._fd)
                    self._fd = -1
            self._segment = -1  # the last segment too may go now
            self._collect_locked()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _well_formed(kind: int, data: bytes, at: int, length: int) -> bool:
    if kind == DATA:
        return length >= SEQ.size and length >= SEQ.size + 16 * SEQ.unpack_from(data, at)[1]
    if kind == ACK:
        return length % ACKED.size == 0
    return kind in (BEGIN, DONE) and length % MARK.size == 0


def _name(index: int) -> str:
    return f"segment-{index:012d}.awj"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

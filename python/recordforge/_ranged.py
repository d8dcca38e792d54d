"""Remote shards (``gs://``, ``s3://``, ...) read by byte range, never downloaded to disk.

Front to back (:class:`ReadAhead`, what sequential reads of a remote file go through):
blocks of :data:`BLOCK` bytes fetched by range on a background thread, up to
``RECORDFORGE_READ_AHEAD`` bytes (a number; default :data:`READ_AHEAD`) ahead of the
reader, each request retried on a transient error (:func:`retrying`); the Rust reader
checks the CRCs as the bytes arrive.

Records at given offsets (random access, :func:`fetch_records`): the frames at those
offsets, fetched with ranged reads (frames closer than :data:`GAP` bytes share one
request, a request of at most :data:`MAX_REQUEST` bytes, the requests of one call sent at
once where the file system can), both CRCs of each checked. The offsets come from the
shard's ``.idx`` or, without one, from one streamed walk of its framing
(:func:`frame_spans`).

>>> import io, recordforge as rf
>>> from recordforge._ranged import unframe
>>> buf = io.BytesIO()
>>> with rf.TFRecordWriter(buf) as w:
...     _ = w.write_many([b"ab", b"cde"])
>>> data = buf.getvalue()
>>> unframe("mem", 18, data[18:], 19)
b'cde'
>>> unframe("mem", 0, data[:17] + b"X", 18)
Traceback (most recent call last):
...
recordforge.errors.CorruptRecordError: mem: ...at byte offset 0: the data CRC does not match
"""

from __future__ import annotations

import functools
import os
import queue
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from recordforge import _core, _fs
from recordforge.errors import CorruptRecordError

__all__ = [
    "BLOCK",
    "GAP",
    "MAX_REQUEST",
    "READ_AHEAD",
    "Crc32c",
    "ReadAhead",
    "Streams",
    "fetch_records",
    "frame_spans",
    "retrying",
    "unframe",
]

T = TypeVar("T")
# Bytes fetched per request when a remote file is read front to back.
BLOCK = 8 << 20
# Bytes fetched ahead of the reader, per open file (RECORDFORGE_READ_AHEAD overrides).
READ_AHEAD = 32 << 20
# Waits before the retries of a request that failed on a transient error.
BACKOFF = (0.2, 1.0, 4.0)
# Errors that no retry mends.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

# Frames this close share a request (reading the gap costs less than another round trip).
GAP = 256 << 10
# The most bytes one request asks for.
MAX_REQUEST = 16 << 20
_HEADER = struct.Struct("<QI")


def unframe(path: str, offset: int, data: bytes | memoryview, size: int) -> bytes:
    """The record of the frame ``data`` (``size`` bytes from byte ``offset`` of
    ``path``), its length and both CRCs checked; :class:`CorruptRecordError` names the
    file, the byte and what is wrong."""
    view = memoryview(data)
    if len(view) != size or size < 16:
        raise CorruptRecordError(path, offset, f"a frame of {size} bytes is cut short")
    length, length_crc = _HEADER.unpack_from(view)
    if _core.masked_crc32c(view[:8]) != length_crc:
        raise CorruptRecordError(path, offset, "the length CRC does not match")
    if length != size - 16:
        raise CorruptRecordError(
            path, offset, f"the length field says {length} bytes, the index {size - 16}"
        )
    payload = view[12 : 12 + length]
    (data_crc,) = struct.unpack_from("<I", view, 12 + length)
    if _core.masked_crc32c(payload) != data_crc:
        raise CorruptRecordError(path, offset, "the data CRC does not match")
    return bytes(payload)


def _requests(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Byte ranges covering the sorted spans ``starts``..``ends``, merged across gaps
    of at most :data:`GAP` bytes and up to :data:`MAX_REQUEST` bytes a range."""
    ranges: list[tuple[int, int]] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if ranges and a - ranges[-1][1] <= GAP and b - ranges[-1][0] <= MAX_REQUEST:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], b))
        else:
            ranges.append((a, b))
    return ranges


def fetch_records(path: str, offsets: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """The records framed at ``offsets`` (frames of ``sizes`` bytes) of the remote file
    ``path``, in the order given (an offset may repeat), CRCs checked."""
    if not len(offsets):
        return []
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(offsets, kind="stable")
    starts, ends = offsets[order], offsets[order] + sizes[order]
    ranges = _requests(starts, ends)
    fs, where = _fs.filesystem(path)
    blobs: Sequence[bytes] = retrying(
        path,
        lambda: fs.cat_ranges(
            [where] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges]
        ),
    )
    range_starts = np.array([a for a, _ in ranges], dtype=np.int64)
    records: list[bytes] = [b""] * len(offsets)
    for i in order.tolist():
        r = int(np.searchsorted(range_starts, offsets[i], side="right")) - 1
        blob, base = blobs[r], int(range_starts[r])
        if isinstance(blob, BaseException):  # fsspec may return errors in place
            raise blob
        at = int(offsets[i]) - base
        frame = memoryview(blob)[at : at + int(sizes[i])]
        records[i] = unframe(path, int(offsets[i]), frame, int(sizes[i]))
    return records


def frame_spans(path: str, max_record_bytes: int) -> tuple[np.ndarray, np.ndarray]:  # int64s
    """(offsets, framed sizes) of every record of the remote plain file ``path``, from
    one walk of its framing streamed through fsspec (CRCs checked as it goes; nothing
    kept but the offsets)."""
    offsets: list[int] = []
    with ReadAhead(path) as f:
        records = _core.read_records(f, None, True, max_record_bytes=max_record_bytes)
        for _ in records:
            offsets.append(int(records.offset or 0))
        end = f.size
    starts = np.array(offsets, dtype=np.int64)
    ends = np.append(starts[1:], end) if len(starts) else starts
    return starts, ends - starts


def retrying(path: str, request: Callable[[], T]) -> T:
    """``request()``, tried again after :data:`BACKOFF` waits when it fails on a
    transient error (a dropped connection, a timeout, a 5xx or 429 the file system
    raises as an ``OSError``); the last error names ``path``."""
    for wait in (*BACKOFF, None):
        try:
            return request()
        except _PERMANENT:
            raise
        except (OSError, TimeoutError) as e:
            if wait is None:
                raise OSError(e.errno, f"{path}: {e}") from e
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


_POLY = 0x82F63B78  # CRC32C, reflected
_MASK = 0xFFFFFFFF


def _crc32c_prefix(crc: int) -> bytes:
    """Four bytes whose CRC32C is ``crc``: the CRC's register after them is the one after
    any message of that CRC, so ``crc32c(prefix + more)`` is the CRC of that message
    followed by ``more`` (the Rust CRC takes no starting value). The register's 32 shifts
    run backwards."""
    r = crc ^ _MASK
    for _ in range(32):
        r = (((r ^ _POLY) << 1) | 1) & _MASK if r & 0x80000000 else (r << 1) & _MASK
    return (r ^ _MASK).to_bytes(4, "little")


class Crc32c:
    """The CRC32C of bytes given in pieces (``update``), as ``crc32c`` of them all.

    >>> from recordforge import _core
    >>> crc = Crc32c()
    >>> crc.update(b"1234"); crc.update(b"56789")
    >>> crc.value == _core.crc32c(b"123456789") == 0xE3069283, crc.bytes
    (True, 9)
    """

    def __init__(self) -> None:
        self.value = 0
        self.bytes = 0

    def update(self, data: bytes) -> None:
        self.value = _core.crc32c(_crc32c_prefix(self.value) + data)
        self.bytes += len(data)


def _read_ahead_bytes() -> int:
    """``RECORDFORGE_READ_AHEAD`` (a number of bytes), else :data:`READ_AHEAD`."""
    given = os.environ.get("RECORDFORGE_READ_AHEAD", "").strip()
    if not given:
        return READ_AHEAD
    if not given.isdigit():
        raise ValueError(f"RECORDFORGE_READ_AHEAD must be a number of bytes, not {given!r}")
    return int(given)


class ReadAhead:
    """A remote file as a readable file object, read front to back: blocks of ``block``
    bytes fetched by range (:func:`retrying`) on a background thread, at most
    ``ahead`` bytes (``RECORDFORGE_READ_AHEAD``, default :data:`READ_AHEAD`) waiting
    for the reader; no local disk. ``size`` is the file's size when it was opened; a
    file that changes size while read is an error naming it. ``on_block`` is called
    with each block, in order, on the background thread (a checksum of the whole file
    computed while it is read: :class:`Crc32c`); what it raises, the reader raises.
    ``then`` is called on the background thread once the last block is fetched (the
    next file's reading started while the reader still has this one's blocks)."""

    def __init__(
        self,
        path: str,
        block: int | None = None,
        ahead: int | None = None,
        *,
        on_block: Callable[[bytes], None] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        self.path = self.name = path  # (the name errors of the Rust reader give)
        self._fs, self._where = _fs.filesystem(path)
        self.size = int(retrying(path, lambda: self._fs.size(self._where)))
        self._block = max(1, block if block is not None else BLOCK)
        self._on_block = on_block
        self._then = then
        depth = max(1, (ahead if ahead is not None else _read_ahead_bytes()) // self._block)
        self._blocks: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buffer = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(
            target=self._fetch, name="recordforge-read-ahead", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _range(self, start: int, end: int) -> bytes:
        data: bytes = self._fs.cat_file(self._where, start=start, end=end)
        return data

    def _fetch(self) -> None:
        try:
            for start in range(0, self.size, self._block):
                end = min(self.size, start + self._block)
                data: bytes = retrying(self.path, functools.partial(self._range, start, end))
                if len(data) != end - start:
                    raise OSError(
                        f"{self.path}: {len(data)} bytes at byte {start}, {end - start} "
                        "expected (the file changed while it was read)"
                    )
                if self._on_block is not None:
                    self._on_block(data)
                if not self._put(data):
                    return
            if self._then is not None:
                self._then()
            self._put(None)
        except BaseException as e:  # the reader raises it
            self._put(e)

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        while n != 0:
            if not len(self._buffer):
                if self._done:
                    break
                item = self._blocks.get()
                if item is None:
                    self._done = True
                    break
                if isinstance(item, BaseException):
                    self._done = True
                    raise item
                self._buffer = memoryview(item)
            take = self._buffer if n < 0 else self._buffer[:n]
            out.append(bytes(take))
            self._buffer = self._buffer[len(take) :]
            if n > 0:
                n -= len(take)
        return b"".join(out)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stop.set()
        self._drain()  # let a blocked put see the stop
        self._thread.join()
        # A reader still waiting for a block (on another thread) is told, not left
        # waiting for ever.
        self._drain()
        self._blocks.put_nowait(ValueError(f"{self.path}: read of a closed file"))

    def _drain(self) -> None:
        while True:
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Streams:
    """The opener of a batch reader's remote files (``_core.BatchReader(open=)``): a
    URL is opened as a :class:`ReadAhead` when a reading thread gets to it (a local path:
    None, the reader maps it). :meth:`close` closes those still open, and refuses any
    opened after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[ReadAhead] = weakref.WeakSet()  # done with: collected
        self._closed = False

    def __call__(self, path: str) -> ReadAhead | None:
        if not _fs.is_url(path):
            return None
        f = ReadAhead(path)
        with self._lock:
            if not self._closed:
                self._open.add(f)
                return f
        f.close()
        raise ValueError(f"{path}: opened after the reading stopped")

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            left = list(self._open)
        for f in left:
            f.close()

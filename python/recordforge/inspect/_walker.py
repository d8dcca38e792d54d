"""The framing of a record stream: compression detection, the plain stream of a file
(GZIP/ZLIB decompressed as far as they go), and a walk over it that survives damage."""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recordforge import _core, _fs
from recordforge.inspect._common import Problem

_HEADER = struct.Struct("<QI")


_U32 = struct.Struct("<I")


def detect_compression(path: str | os.PathLike[str]) -> Literal["gzip", "zlib"] | None:
    """``"gzip"``, ``"zlib"`` or ``None`` from a file's first bytes; a valid TFRecord
    header wins over a compression magic number, as in ``read_records``.

    >>> import io, tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path, compression="gzip") as w:
    ...     _ = w.write(b"x")
    >>> rf.inspect.detect_compression(path)
    'gzip'
    """
    with _fs.open_file(path) as f:  # a URL too: 12 bytes read
        head = f.read(12)
    return compression_of(head)


def compression_of(head: bytes) -> Literal["gzip", "zlib"] | None:
    """What ``detect_compression`` says of a file starting with ``head`` (its first 12
    bytes): the rule of the Rust core's ``Compression::detect``."""
    if len(head) >= 12:
        _, crc = _HEADER.unpack_from(head)
        if _core.masked_crc32c(head[:8]) == crc:
            return None
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] << 8 | head[1]) % 31 == 0
    ):
        return "zlib"
    return None


@dataclasses.dataclass(frozen=True)
class _Span:
    """A good record (``reason`` None) or a damaged region of the stream."""

    start: int
    end: int
    reason: str | None = None


def _walk(buf: memoryview, verify: bool = True) -> Iterator[_Span]:
    """Every record and every damaged region of a plain record stream, in order. After a
    header that fails its CRC the walk resynchronises at the next valid header; a record
    whose header is valid but whose data fails its CRC is one lost record."""
    n = len(buf)
    pos = 0
    masked = _core.masked_crc32c
    while pos < n:
        if n - pos < 12:
            yield _Span(pos, n, f"truncated record header: {n - pos} of 12 bytes")
            return
        length, length_crc = _HEADER.unpack_from(buf, pos)
        if masked(buf[pos : pos + 8]) != length_crc:
            nxt = _resync(buf, pos + 1)
            tail = f"; next valid record at byte {nxt}" if nxt < n else "; no valid record after it"
            yield _Span(pos, nxt, f"length CRC mismatch (not a record header){tail}")
            pos = nxt
            continue
        end = pos + 16 + length
        if end > n:
            yield _Span(
                pos,
                n,
                f"truncated record: expected {16 + length} bytes, stream ends after {n - pos}",
            )
            return
        if verify:
            (stored,) = _U32.unpack_from(buf, end - 4)
            if masked(buf[pos + 12 : end - 4]) != stored:
                yield _Span(pos, end, "data CRC mismatch")
                pos = end
                continue
        yield _Span(pos, end)
        pos = end


def _resync(buf: memoryview, start: int) -> int:
    """The offset of the next record header at or after ``start`` whose length CRC checks
    and whose record fits in the stream; ``len(buf)`` when there is none. NumPy picks the
    candidates (plausible length, not an all-zero header) so that only those pay a CRC."""
    n = len(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    window = 1 << 20
    s = start
    masked = _core.masked_crc32c
    while s + 16 <= n:
        e = min(n - 16, s + window)  # candidates q in [s, e]
        m = e - s + 1
        seg = arr[s : e + 12]
        # A length below 2**40 (bytes 5-7 zero) that fits in what is left of the stream.
        length = np.zeros(m, dtype=np.uint64)
        for k in range(4, -1, -1):
            length = (length << np.uint64(8)) | seg[k : k + m].astype(np.uint64)
        ok = (seg[5 : 5 + m] == 0) & (seg[6 : 6 + m] == 0) & (seg[7 : 7 + m] == 0)
        ok &= length <= (n - 16 - np.arange(s, e + 1, dtype=np.int64)).astype(np.uint64)
        crc_zero = (seg[8 : 8 + m] | seg[9 : 9 + m] | seg[10 : 10 + m] | seg[11 : 11 + m]) == 0
        ok &= ~((length == 0) & crc_zero)  # the masked CRC of a zero length is not zero
        for q in (np.flatnonzero(ok) + s).tolist():
            if masked(buf[q : q + 8]) == _U32.unpack_from(buf, q + 8)[0]:
                return int(q)
        s = e + 1
    return n


@contextlib.contextmanager
def _stream(path: Path) -> Iterator[tuple[memoryview, Problem | None, str | None]]:
    """The plain record stream of a file as a buffer (the file itself, memory-mapped, or
    for GZIP/ZLIB its decompression in a temporary file), a problem if the compressed
    stream breaks off (the buffer then holds what came before), and the compression."""
    compression = detect_compression(path)
    with contextlib.ExitStack() as stack:
        problem = None
        f: Any
        if compression is None:
            f = stack.enter_context(open(path, "rb"))
        else:
            f = stack.enter_context(tempfile.TemporaryFile(prefix="recordforge-"))
            problem = _decompress(path, compression, f)
            f.flush()
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield memoryview(b""), problem, compression
            return
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            yield view, problem, compression
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a caller may still hold a slice
                mm.close()


def _decompress(path: Path, compression: str, out: Any) -> Problem | None:
    """Decompresses into ``out`` as far as the stream goes; a problem if it breaks off."""
    wbits = 31 if compression == "gzip" else 15
    d = zlib.decompressobj(wbits)
    written = consumed = 0

    def broken(message: str) -> Problem:
        return Problem(file=str(path), kind="compression", offset=written, message=message)

    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            while chunk:
                try:
                    data = d.decompress(chunk)
                except zlib.error as e:
                    return broken(
                        f"{compression} stream error in compressed bytes {consumed}.."
                        f"{consumed + len(chunk)}: {e}; the rest cannot be decompressed"
                    )
                out.write(data)
                written += len(data)
                rest = d.unused_data if d.eof else b""
                consumed += len(chunk) - len(rest)
                chunk = rest
                if rest and compression == "gzip":
                    d = zlib.decompressobj(wbits)  # a further GZIP member
                elif rest:
                    return broken(f"{len(rest)}+ bytes after the end of the {compression} stream")
    if not d.eof:
        return broken(f"{compression} stream ends without its end marker (truncated file?)")
    return None


def _problems_of(path: Path, spans: Sequence[_Span]) -> list[Problem]:
    out, index = [], 0
    for span in spans:
        if span.reason is None:
            index += 1
            continue
        kind = "truncated" if span.reason.startswith("truncated") else "framing"
        if span.reason == "data CRC mismatch":
            kind = "crc"
        out.append(
            Problem(
                file=str(path),
                kind=kind,
                record=index,
                offset=span.start,
                end=span.end,
                message=span.reason,
            )
        )
        if kind == "crc":
            index += 1
    return out

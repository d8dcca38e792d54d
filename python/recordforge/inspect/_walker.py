"""The framing of a record stream: compression detection, and a walk over a file
(GZIP/ZLIB decompressed as far as they go) that survives damage."""

from __future__ import annotations

import os
import struct
from typing import Literal

from recordforge import _core, _fs
from recordforge.inspect._common import Problem
from recordforge.records import DEFAULT_MAX_RECORD_BYTES

_HEADER = struct.Struct("<QI")


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


def _walk(
    path: str | os.PathLike[str],
    verify: bool = True,
    *,
    payloads: bool = False,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> _core.RecordWalker:
    """Every record and every damaged region of a file (plain, GZIP or ZLIB), in order,
    read once, front to back, in Rust: memory stays within ``max_record_bytes`` plus a
    read buffer, and no decompressed copy of the file is made. After damage the walk
    resynchronises at the next offset holding a whole record whose two CRCs check (every
    offset is tried, inside the damaged record's claimed length too); a compressed stream
    that breaks off keeps everything decompressed before the break, then ends with a span
    of kind ``"stream"``. ``payloads`` hands out each intact record's bytes."""
    return _core.RecordWalker(
        str(path), "auto", verify, payloads=payloads, max_record_bytes=max_record_bytes
    )


def _problem_of(path: str | os.PathLike[str], span: _core.WalkSpan, index: int) -> Problem:
    """The problem a damaged span (``kind`` ``damaged`` or ``stream``) is; ``index``: the
    records before it."""
    reason = span.reason or ""
    if span.kind == "stream":
        return Problem(
            file=str(path),
            kind="compression",
            offset=span.start,
            message=f"{reason}; the rest cannot be decompressed",
        )
    kind = "crc" if span.records else "truncated" if reason.startswith("truncated") else "framing"
    return Problem(
        file=str(path),
        kind=kind,
        record=index,
        offset=span.start,
        end=span.end,
        message=reason,
    )

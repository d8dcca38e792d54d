"""The framing of a record stream: a walk over a file (GZIP/ZLIB decompressed as far as
they go) that survives damage, in Rust, and the problems its damaged spans are."""

from __future__ import annotations

import os

from recordforge import _core
from recordforge.inspect._common import Problem
from recordforge.records import DEFAULT_MAX_RECORD_BYTES


def walk(
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


def problem_of(path: str | os.PathLike[str], span: _core.WalkSpan, index: int) -> Problem:
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

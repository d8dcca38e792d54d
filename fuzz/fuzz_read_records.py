"""Atheris fuzz target for ``recordforge.read_records``.

Input layout: the first byte is a selector, the rest is the file's bytes.

* ``selector & 3`` picks ``compression``: ``"auto"``, ``None``, ``"gzip"``, ``"zlib"``;
* ``selector & 4`` set means ``verify=False`` (the data's CRC not checked; the length's
  is, always);
* ``selector & 8`` set also reads the same bytes from a file path (the memory-mapped
  reader for plain files) and requires the same outcome as the ``io.BytesIO`` read.

The file is fed through ``io.BytesIO`` and fully iterated. Only ``CorruptRecordError`` and
``OSError`` may escape ``read_records``; anything else (``PanicException`` included)
propagates and atheris reports it as a crash. On top of "no unexpected exception" the
records are checked against a small pure-Python reference reader (framing, CRCs, error
offsets and reasons, GZIP/ZLIB via Python's ``zlib``).

The Rust core is not instrumented, so libFuzzer sees little coverage of its own. Two
mitigations: a structure-aware mutator (``custom_mutator``) that keeps the framing and the
compression valid while it mutates payloads, and ``_marks`` (``_common.Marks``), which
calls one of 1024 generated, instrumented one-branch functions picked by a hash of the
outcome (error kind x compression x verify x record count), so that every distinct outcome
has its own Python edge and inputs reaching new outcomes are kept in the corpus.

Run through ``fuzz/run.py``, or directly::

    python fuzz/fuzz_read_records.py CORPUS_DIR -max_total_time=60 -timeout=10
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import zlib
from typing import Any

from _common import Marks, Mismatch, atheris, count_bucket, fuzz, scratch_base

import recordforge as rf

COMPRESSIONS: tuple[str | None, ...] = ("auto", None, "gzip", "zlib")
U64_MAX = (1 << 64) - 1
MAX_RECORD = rf.records.DEFAULT_MAX_RECORD_BYTES  # a longer claim is refused at the header
ALLOWED = (rf.CorruptRecordError, OSError)

# ---------------------------------------------------------------------------------------
# Helpers shared with run.py and the regression tests


def frame(data: bytes) -> bytes:
    """One TFRecord record: length, masked CRC of the length, data, masked CRC of data."""
    header = len(data).to_bytes(8, "little")
    return (
        header
        + rf.masked_crc32c(header).to_bytes(4, "little")
        + data
        + rf.masked_crc32c(data).to_bytes(4, "little")
    )


def selector(compression: str | None = "auto", verify: bool = True, via_path: bool = False) -> int:
    return COMPRESSIONS.index(compression) | (0 if verify else 4) | (8 if via_path else 0)


def split_input(data: bytes) -> tuple[str | None, bool, bool, bytes]:
    sel = data[0] if data else 0
    return COMPRESSIONS[sel & 3], not sel & 4, bool(sel & 8), data[1:]


def detect(body: bytes) -> str | None:
    """The documented auto-detection: a valid TFRecord header wins, then GZIP, then ZLIB."""
    p = body[:12]
    if len(p) == 12 and rf.masked_crc32c(p[:8]) == int.from_bytes(p[8:], "little"):
        return None
    if p[:2] == b"\x1f\x8b":
        return "gzip"
    if len(p) >= 2 and p[0] & 0x0F == 8 and p[0] >> 4 <= 7 and (p[0] * 256 + p[1]) % 31 == 0:
        return "zlib"
    return None


def inflate(body: bytes, kind: str) -> tuple[bytes, bool]:
    """Reference GZIP (multi-member) / ZLIB decompression.

    Returns (output, ok). When the stream is bad, output is everything Python's zlib could
    produce before the failure: a superset of what any streaming reader can have seen.
    A stream must end with its end marker; an empty stream, bytes after a ZLIB stream or
    garbage after a GZIP member are errors.
    """
    wbits = 31 if kind == "gzip" else 15
    out: list[bytes] = []
    rest = body
    while True:
        d = zlib.decompressobj(wbits)
        failed = False
        end = len(rest)
        for i in range(0, len(rest), 256):
            chunk = rest[i : i + 256]
            saved = d.copy()
            try:
                out.append(d.decompress(chunk))
            except zlib.error:
                d = saved  # redo byte by byte for the longest good output
                for j in range(len(chunk)):
                    try:
                        out.append(d.decompress(chunk[j : j + 1]))
                    except zlib.error:
                        break
                failed = True
                break
            if d.eof:
                end = i + len(chunk)
                break
        if failed or not d.eof:
            with contextlib.suppress(zlib.error):
                out.append(d.flush())
            return b"".join(out), False
        rest = d.unused_data + rest[end:]
        if not rest:
            return b"".join(out), True
        if kind != "gzip":
            return b"".join(out), False


def _u32(b: bytes) -> int:
    return int.from_bytes(b, "little")


def ref_read(stream: bytes, verify: bool) -> tuple[list[bytes], tuple[int, str] | None]:
    """Reference framing reader: (records, None) or (records, (offset, reason))."""
    records: list[bytes] = []
    pos, n = 0, len(stream)
    while pos != n:
        rest = n - pos
        if rest < 12:
            return records, (pos, f"truncated record: expected 12 bytes, file ends after {rest}")
        header = stream[pos : pos + 8]
        length = int.from_bytes(header, "little")
        # (the length's CRC whatever verify says: a length failing it is not followed)
        stored, computed = _u32(stream[pos + 8 : pos + 12]), rf.masked_crc32c(header)
        if stored != computed:
            return records, (
                pos,
                f"length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
            )
        if length > MAX_RECORD:
            return records, (
                pos,
                f"record claims {length} bytes, more than the limit of {MAX_RECORD} "
                "(max_record_bytes)",
            )
        expected = min(length + 16, U64_MAX)
        if rest < expected:
            return records, (
                pos,
                f"truncated record: expected {expected} bytes, file ends after {rest}",
            )
        data = stream[pos + 12 : pos + 12 + length]
        if verify:
            stored = _u32(stream[pos + 12 + length : pos + 16 + length])
            computed = rf.masked_crc32c(data)
            if stored != computed:
                return records, (
                    pos,
                    f"data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
                )
        records.append(data)
        pos += length + 16
    return records, None


# ---------------------------------------------------------------------------------------
# The target


def _read_all(source: Any, compression: str | None, verify: bool) -> tuple[list[bytes], Any]:
    """Fully iterates read_records; returns (records, allowed exception or None)."""
    records: list[bytes] = []
    it = rf.read_records(source, compression=compression, verify=verify)
    offset = 0
    try:
        for rec in it:
            if type(rec) is not bytes:
                raise Mismatch(f"record of type {type(rec).__name__}")
            if it.offset != offset:
                raise Mismatch(f"iterator offset {it.offset}, expected {offset}")
            offset += len(rec) + 16
            records.append(rec)
    except ALLOWED as e:
        err: Any = e
    else:
        err = None
    if err is None:
        if next(it, None) is not None:
            raise Mismatch("iterator yields again after it ended")
        return records, err
    # After an error, every later next() raises the same error again.
    try:
        again = next(it)
    except ALLOWED as e:
        if type(e) is not type(err) or str(e) != str(err):
            raise Mismatch(f"next() after {err!r} raised {e!r}") from None
    else:
        raise Mismatch(f"next() after {err!r} returned {again!r} instead of raising it again")
    return records, err


# "at compressed offset N" counts the input consumed before the failing zlib call, so it
# depends on how the input was chunked (auto-detection reads a 12-byte prefix first): it
# is left out of the path-vs-BytesIO comparison.
_COMPRESSED_OFFSET = re.compile(r" at compressed offset \d+")


def _outcome(err: Any) -> tuple[str, int, str] | None:
    if err is None:
        return None
    if isinstance(err, rf.CorruptRecordError):
        return ("corrupt", err.offset, _COMPRESSED_OFFSET.sub("", err.reason))
    return ("os", -1, str(err))


def _temp_path() -> str:
    # One file per process, removed after each read.
    return os.path.join(scratch_base(), f"rf-fuzz-{os.getpid()}.tfrecord")


_NUMBERS = re.compile(r"0x[0-9a-f]+|\d+")


def _against_reference(
    how: str, records: list[bytes], err: Any, kind: str | None, verify: bool, body: bytes
) -> None:
    """Compares one read (records, allowed error) with the reference reader."""
    if isinstance(err, OSError):
        raise Mismatch(f"{how}: OSError reading an in-memory or temporary file: {err!r}")
    consumed = sum(len(r) + 16 for r in records)
    if err is not None and err.offset != consumed:
        raise Mismatch(
            f"{how}: error offset {err.offset}, but the records before it end at {consumed}"
        )
    if kind is None:
        stream, stream_ok = body, True
    else:
        stream, stream_ok = inflate(body, kind)
    ref_records, ref_err = ref_read(stream, verify)
    got = (records, None if err is None else (err.offset, err.reason))
    if stream_ok:
        if got != (ref_records, ref_err):
            raise Mismatch(
                f"{how}, compression={kind} verify={verify}: got {len(records)} records, "
                f"error {got[1]}; reference {len(ref_records)} records, error {ref_err}"
            )
        return
    # A bad compressed stream. zlib reports the error for a whole inflate call, and the
    # output of that call is lost, so how far a reader gets depends on how its input was
    # chunked. It must fail, with its records a prefix of what the reference decoded and,
    # unless it blames the compressed layer, the reference's error.
    if err is None:
        raise Mismatch(f"{how}: bad {kind} stream read to a clean end ({len(records)} records)")
    if records != ref_records[: len(records)]:
        raise Mismatch(f"{how}: bad {kind} stream: records differ from the reference")
    if not err.reason.startswith("compressed stream error: ") and got != (ref_records, ref_err):
        raise Mismatch(f"{how}: bad {kind} stream: error {got[1]}, reference {ref_err}")


def check(data: bytes) -> tuple[str, ...]:
    """Runs one input; raises on a bug. Returns a small outcome signature."""
    compression, verify, via_path, body = split_input(data)
    kind = detect(body) if compression == "auto" else compression
    records, err = _read_all(io.BytesIO(body), compression, verify)
    _against_reference("BytesIO", records, err, kind, verify, body)

    if via_path:
        path = _temp_path()
        with open(path, "wb") as f:
            f.write(body)
        try:
            p_records, p_err = _read_all(path, compression, verify)
        finally:
            os.unlink(path)
        _against_reference("path", p_records, p_err, kind, verify, body)
        good_stream = kind is None or inflate(body, kind)[1]
        if good_stream and (p_records, _outcome(p_err)) != (records, _outcome(err)):
            raise Mismatch(
                f"path read: {len(p_records)} records, {_outcome(p_err)}; "
                f"BytesIO read: {len(records)} records, {_outcome(err)}"
            )

    reason = "clean" if err is None else _NUMBERS.sub("#", err.reason)
    return (str(kind), str(verify), count_bucket(len(records)), reason)


# ---------------------------------------------------------------------------------------
# Coverage proxy: one Python edge per distinct outcome signature

_marks = Marks(1024, "fuzz_read_records")


def test_one_input(data: bytes) -> None:
    _marks.hit(*check(data))


# ---------------------------------------------------------------------------------------
# Structure-aware mutator


def _parse_frames(stream: bytes) -> tuple[list[bytes], bytes]:
    """Lenient framing parse (CRCs ignored): (payloads, trailing bytes)."""
    records: list[bytes] = []
    pos = 0
    while pos + 12 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 8], "little")
        if pos + 16 + length > len(stream):
            break
        records.append(stream[pos + 12 : pos + 12 + length])
        pos += 16 + length
    return records, stream[pos:]


def _compress(stream: bytes, kind: str | None, rng: random.Random) -> bytes:
    if kind is None:
        return stream
    level = rng.choice((0, 1, 6, 9))
    if kind == "zlib":
        return zlib.compress(stream, level)
    # GZIP, sometimes as several members (TensorFlow reads concatenated members).
    cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.choice((0, 0, 0, 1, 2))))
    out = []
    start = 0
    for cut in [*cuts, len(stream)]:
        c = zlib.compressobj(level, zlib.DEFLATED, 31)
        out.append(c.compress(stream[start:cut]) + c.flush())
        start = cut
    return b"".join(out)


_INTERESTING_LENGTHS = (0, 1, 11, 12, 16, 255, 1 << 31, 1 << 32, 1 << 63, U64_MAX - 15, U64_MAX)


def _mutate_structured(data: bytes, max_size: int, rng: random.Random) -> bytes:
    sel = data[0]
    compression, _, _, body = split_input(data)
    kind = detect(body) if compression == "auto" else compression
    stream = body if kind is None else inflate(body, kind)[0]
    records, tail = _parse_frames(stream)
    raw_frames: dict[int, bytes] = {}  # index -> a deliberately bad frame
    op = rng.randrange(12)
    if op <= 2 and records:  # mutate a payload (the most useful op: weighted x3)
        i = rng.randrange(len(records))
        records[i] = atheris.Mutate(records[i], max(64, 2 * len(records[i])))
    elif op == 3 and records:
        del records[rng.randrange(len(records))]
    elif op == 4 and records:
        i = rng.randrange(len(records))
        records.insert(rng.randrange(len(records) + 1), records[i])
    elif op == 5 and len(records) > 1:
        rng.shuffle(records)
    elif op == 6:
        new = rng.choice((b"", bytes(rng.randrange(256) for _ in range(rng.randrange(40)))))
        records.insert(rng.randrange(len(records) + 1), new)
    elif op == 7 and records:  # a wrong length with a valid length CRC
        i = rng.randrange(len(records))
        rec = records[i]
        length = rng.choice((*_INTERESTING_LENGTHS, len(rec) + 1, max(0, len(rec) - 1)))
        header = length.to_bytes(8, "little")
        raw_frames[i] = (
            header
            + rf.masked_crc32c(header).to_bytes(4, "little")
            + rec
            + rf.masked_crc32c(rec).to_bytes(4, "little")
        )
    elif op == 8 and records:  # a bad CRC or a bit flip inside one frame
        i = rng.randrange(len(records))
        good = bytearray(frame(records[i]))
        good[rng.randrange(len(good))] ^= 1 << rng.randrange(8)
        raw_frames[i] = bytes(good)
    elif op == 9:
        tail = atheris.Mutate(tail, max(16, 2 * len(tail)))
    elif op == 10:
        sel ^= 1 << rng.randrange(4)
    else:  # recompress differently, keeping or dropping auto-detection
        kind = rng.choice((None, "gzip", "zlib"))
        sel = (sel & ~3) | rng.choice((0, COMPRESSIONS.index(kind)))
    stream = b"".join(raw_frames.get(i) or frame(r) for i, r in enumerate(records))
    stream += tail
    if rng.random() < 0.05:
        stream = stream[: rng.randrange(len(stream) + 1)]
    body = _compress(stream, kind, rng)
    if kind is not None and rng.random() < 0.05:  # damage the compressed layer
        if body and rng.random() < 0.5:
            b = bytearray(body)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            body = bytes(b)
        else:
            body = body[: rng.randrange(len(body) + 1)]
    out = bytes([sel & 0xFF]) + body
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if len(data) < 2 or rng.random() < 0.3:
        return atheris.Mutate(data, max_size)
    return _mutate_structured(data, max_size, rng)


def main() -> None:
    fuzz(
        test_one_input,
        (check, _read_all, _against_reference, ref_read),
        _marks,
        custom_mutator=custom_mutator,
    )


if __name__ == "__main__":
    main()

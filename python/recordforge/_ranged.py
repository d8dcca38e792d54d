"""Records of a remote shard (``gs://``, ``s3://``, ...) read by byte range: the frames
at given offsets, fetched with ranged reads (frames closer than :data:`GAP` bytes share
one request, a request of at most :data:`MAX_REQUEST` bytes, the requests of one call
sent at once where the file system can) and both CRCs of each checked; no download of
the file, no local disk. The offsets come from the shard's ``.idx`` or, without one, from
one streamed walk of its framing (:func:`frame_spans`).

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

import struct
from collections.abc import Sequence

import numpy as np

from recordforge import _core, _fs
from recordforge.errors import CorruptRecordError

__all__ = ["GAP", "MAX_REQUEST", "fetch_records", "frame_spans", "unframe"]

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
    blobs: Sequence[bytes] = fs.cat_ranges(
        [where] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges]
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
    with _fs.open_file(path) as f:
        records = _core.read_records(f, None, True, max_record_bytes=max_record_bytes)
        for _ in records:
            offsets.append(int(records.offset or 0))
        end = f.tell()
    starts = np.array(offsets, dtype=np.int64)
    ends = np.append(starts[1:], end) if len(starts) else starts
    return starts, ends - starts

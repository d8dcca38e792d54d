"""Look into TFRecord files: count, verify, index, salvage, describe, summarise, preview.

Every function takes a dataset directory (with ``dataset.json``), a directory of
TFRecord files, a glob, or files — plain, GZIP or ZLIB, detected from their first bytes —
and returns plain data (dataclasses with a ``to_json()``); the ``recordforge`` command
line renders them. Problems are reported, not raised: each names the file, the record
index and the byte offset (in the decompressed record stream for compressed files).

>>> import os, tempfile, recordforge as rf
>>> d = tempfile.mkdtemp()
>>> manifest = rf.write_dataset([{"id": i} for i in range(10)], d)
>>> rf.inspect.count(d).records, rf.inspect.count(d).files[0].method
(10, 'manifest')
>>> rf.inspect.verify(d).ok
True
>>> shard = os.path.join(d, manifest.splits["train"][0].file)
>>> size = len(rf.encode_example({"id": 0})) + 16  # every record has this framed size
>>> with open(shard, "r+b") as f:  # flip one bit in the payload of the fourth record
...     _ = f.seek(3 * size + 14)
...     b = f.read(1)
...     _ = f.seek(-1, 1)
...     _ = f.write(bytes([b[0] ^ 1]))
>>> size
31
>>> for problem in rf.inspect.verify(d).problems:  # doctest: +ELLIPSIS
...     print(problem)
/.../train-00000-of-00001.tfrecord: record 3 at byte offset 93: data CRC mismatch
/.../train-00000-of-00001.tfrecord: SHA-256 is ..., dataset.json says ...
>>> result = rf.inspect.salvage(shard, os.path.join(d, "fixed.tfrecord"))
>>> result.records, result.lost_records, [(r.start, r.end) for r in result.lost]
(9, 1, [(93, 124)])
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import hashlib
import math
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recordforge import _core
from recordforge.errors import CorruptRecordError, DecodeError
from recordforge.manifest import MANIFEST_NAME, Manifest, ShardInfo
from recordforge.schema import (
    BBox,
    ClassLabel,
    FeatureSpec,
    Image,
    Schema,
    Text,
)

__all__ = [
    "CountResult",
    "FeatureInfo",
    "FeatureStats",
    "FileCount",
    "FileInfo",
    "HeadRecord",
    "IndexResult",
    "Info",
    "InputFile",
    "LostRegion",
    "PreviewCell",
    "PreviewResult",
    "Problem",
    "SalvageResult",
    "Stats",
    "VerifyResult",
    "count",
    "describe_value",
    "detect_compression",
    "head",
    "info",
    "preview",
    "record_type",
    "resolve",
    "salvage",
    "stats",
    "verify",
    "write_index",
]

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
# Called with the number of bytes (of the files on disk) just processed.
Progress = Callable[[int], None]
RecordType = Literal["Example", "SequenceExample", "ExampleListWithContext", "unknown", "empty"]

_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_GLOB_CHARS = frozenset("*?[")
# Names of files in a directory without dataset.json that are taken as TFRecord files.
_RECORD_HINTS = ("tfrec", "-of-", ".gz", ".zlib", ".rec")
_IMAGE_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return _bytes_json(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _Result:
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (what ``--json`` prints)."""
        out: dict[str, Any] = _jsonable(self)
        return out


# --------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputFile:
    """One TFRecord file to look at; ``shard`` is its ``dataset.json`` entry, if any."""

    path: Path
    split: str | None = None
    shard: ShardInfo | None = None
    manifest: Manifest | None = None

    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".idx")


def resolve(paths: Paths) -> list[InputFile]:
    """The TFRecord files named by ``paths``: dataset directories (their shards, in split
    order, from ``dataset.json``), other directories (files whose names look like
    TFRecord files: ``tfrec``, ``-of-``, ``.gz``, ``.zlib``), globs, and files. A file
    listed in a ``dataset.json`` beside it carries its manifest entry. Raises
    ``FileNotFoundError`` naming what matched nothing."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[InputFile] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            if (p / MANIFEST_NAME).is_file():
                manifest = Manifest.load(p)
                for split, shards in manifest.splits.items():
                    out.extend(
                        InputFile(path=p / s.file, split=split, shard=s, manifest=manifest)
                        for s in shards
                    )
                continue
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and not f.name.endswith(".idx")
                and any(h in f.name for h in _RECORD_HINTS)
            )
            if not found:
                raise FileNotFoundError(f"{p}: no {MANIFEST_NAME} and no TFRecord files in it")
            out.extend(_with_manifest(f) for f in found)
        elif p.is_file():
            out.append(_with_manifest(p))
        elif _GLOB_CHARS & set(str(given)):
            matches = sorted(glob.glob(str(given)))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                raise FileNotFoundError(f"{given}: the pattern matches no files")
            out.extend(_with_manifest(f) for f in files)
        else:
            raise FileNotFoundError(f"{given}: no such file or directory")
    return out


def _with_manifest(path: Path) -> InputFile:
    """A file, with its entry of a ``dataset.json`` beside it when it is listed there."""
    if (path.parent / MANIFEST_NAME).is_file():
        with contextlib.suppress(Exception):
            manifest = Manifest.load(path.parent)
            for split, shards in manifest.splits.items():
                for s in shards:
                    if s.file == path.name:
                        return InputFile(path=path, split=split, shard=s, manifest=manifest)
    return InputFile(path=path)


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
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) == 12:
        _, crc = _HEADER.unpack(head)
        if _core.masked_crc32c(head[:8]) == crc:
            return None
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    return None


# --------------------------------------------------------------------------------------
# Framing: a walk over a whole record stream that survives damage


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """Something wrong, with where: ``record`` is the record's index in its file,
    ``offset`` the byte offset of its length field (decompressed stream for compressed
    files), ``end`` the end of a damaged region when there is one."""

    file: str
    kind: str
    message: str
    record: int | None = None
    offset: int | None = None
    end: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f": record {self.record}"
        if self.offset is not None:
            where += f" at byte offset {self.offset}"
        return f"{where}: {self.message}"


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


# --------------------------------------------------------------------------------------
# count


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileCount(_Result):
    """Records in one file, and how they were counted: ``manifest``, ``index`` (lines of
    the ``.idx`` file), ``scan`` (framing walked) or ``scan+crc`` (and CRCs checked)."""

    path: str
    records: int
    bytes: int
    method: str
    compression: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountResult(_Result):
    """The total, per file, and any problem met (then ``records`` counts the records
    that could be delimited, damaged ones included when their framing was intact)."""

    records: int
    bytes: int
    files: list[FileCount]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def count(
    paths: Paths,
    *,
    verify: bool = False,
    scan: bool = False,
    progress: Progress | None = None,
) -> CountResult:
    """Counts records. Without ``verify``/``scan`` a shard's count comes from
    ``dataset.json`` (when its size still matches) or from its ``.idx`` file (when it
    still covers the file exactly); otherwise the framing is walked in Rust without
    parsing (``verify``: every CRC checked too). A damaged file is walked record by
    record: the count then includes every record that could be delimited.

    >>> import io, tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([b"a", b"bb", b"ccc"])
    >>> result = rf.inspect.count(path)
    >>> result.records, result.files[0].method
    (3, 'scan')
    """
    files, problems = [], []
    for item in resolve(paths):
        size = item.path.stat().st_size
        counted = None if verify or scan else _count_from_metadata(item, size)
        if counted is not None:
            files.append(
                FileCount(path=str(item.path), records=counted[0], bytes=size, method=counted[1])
            )
        else:
            compression = detect_compression(item.path)
            method = "scan+crc" if verify else "scan"
            try:
                stats = _core.scan_records(str(item.path), compression, verify, 0)
                records = stats[0]
            except CorruptRecordError:
                with _stream(item.path) as (buf, stream_problem, _):
                    spans = list(_walk(buf, verify))
                found = _problems_of(item.path, spans)
                if stream_problem is not None:
                    found.append(stream_problem)
                problems.extend(found)
                records = sum(1 for s in spans if s.reason in (None, "data CRC mismatch"))
            files.append(
                FileCount(
                    path=str(item.path),
                    records=records,
                    bytes=size,
                    method=method,
                    compression=compression,
                )
            )
        if progress is not None:
            progress(size)
    return CountResult(
        records=sum(f.records for f in files),
        bytes=sum(f.bytes for f in files),
        files=files,
        problems=problems,
    )


def _count_from_metadata(item: InputFile, size: int) -> tuple[int, str] | None:
    if item.shard is not None and item.shard.bytes == size:
        return item.shard.records, "manifest"
    if item.index_path.is_file() and detect_compression(item.path) is None:
        offsets, sizes = _read_index(item.index_path)
        if len(offsets) and int(offsets[-1] + sizes[-1]) == size:
            return len(offsets), "index"
        if not len(offsets) and size == 0:
            return 0, "index"
    return None


def _read_index(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    text = path.read_text(encoding="ascii").split()
    values = np.array(text, dtype=np.int64).reshape(-1, 2) if text else np.zeros((0, 2), np.int64)
    return values[:, 0], values[:, 1]


# --------------------------------------------------------------------------------------
# Record types


def _varint(data: bytes | memoryview, i: int) -> tuple[int, int] | None:
    value = shift = 0
    for k in range(i, min(i + 10, len(data))):
        b = data[k]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, k + 1
        shift += 7
    return None


def _fields(data: bytes | memoryview) -> list[tuple[int, int, bytes | memoryview]] | None:
    """``(field number, wire type, payload)`` of a protobuf message's top-level fields,
    or ``None`` when the bytes are not a well-formed message."""
    out: list[tuple[int, int, bytes | memoryview]] = []
    i, n = 0, len(data)
    while i < n:
        key = _varint(data, i)
        if key is None:
            return None
        tag, i = key
        field, wire = tag >> 3, tag & 7
        if field == 0:
            return None
        if wire == 2:
            length = _varint(data, i)
            if length is None or length[1] + length[0] > n:
                return None
            out.append((field, wire, data[length[1] : length[1] + length[0]]))
            i = length[1] + length[0]
        elif wire == 0:
            value = _varint(data, i)
            if value is None:
                return None
            i = value[1]
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            return None
    return out if i == n else None


def _names_ok(features: Mapping[str, Any]) -> bool:
    return all(name and name.isprintable() for name in features)


def _as_example(data: bytes | memoryview) -> dict[str, Any] | None:
    try:
        ex = _core.decode_example(data)
    except DecodeError:
        return None
    return ex if _names_ok(ex) else None


def record_type(data: bytes | memoryview) -> RecordType:
    """What a serialized record is: ``Example``, ``SequenceExample`` (one with at least
    one feature list; without, it is indistinguishable from an Example),
    ``ExampleListWithContext`` (TF-Ranking's ELWC) or ``unknown``. A record that decodes
    as an Example only by reading message bytes as feature names (ELWC records do) is
    not taken for one.

    >>> import recordforge as rf
    >>> rf.inspect.record_type(rf.encode_example({"a": 1}))
    'Example'
    >>> rf.inspect.record_type(rf.encode_sequence_example({"a": 1}, {"b": [[1], [2]]}))
    'SequenceExample'
    >>> ex = rf.encode_example({"q": "query"})
    >>> rf.inspect.record_type(b"\\x0a" + bytes([len(ex)]) + ex)  # ELWC: examples=[ex]
    'ExampleListWithContext'
    >>> rf.inspect.record_type(b"hello")
    'unknown'
    """
    with contextlib.suppress(DecodeError):
        context, lists = _core.decode_sequence_example(data)
        if lists and _names_ok(context) and _names_ok(lists):
            return "SequenceExample"
    if _as_example(data) is not None:
        return "Example"
    fields = _fields(data)
    if (
        fields
        and all(f in (1, 2) and w == 2 for f, w, _ in fields)
        and all(_as_example(payload) is not None for _, _, payload in fields)
    ):
        return "ExampleListWithContext"
    return "unknown"


def _decode_elwc(data: bytes | memoryview) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The examples and the context of an ELWC record (checked by ``record_type``)."""
    examples, context = [], {}
    for field, _, payload in _fields(data) or []:
        ex = _as_example(payload) or {}
        if field == 1:
            examples.append(ex)
        else:
            context = ex
    return examples, context


# --------------------------------------------------------------------------------------
# verify


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileVerify(_Result):
    """One file's verification: records read, on-disk bytes, problems found in it."""

    path: str
    records: int
    bytes: int
    compression: str | None
    record_type: str
    problems: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyResult(_Result):
    """``ok`` when nothing is wrong; ``problems`` lists everything that is, in file order;
    ``checked`` says what was checked."""

    ok: bool
    records: int
    bytes: int
    files: list[FileVerify]
    problems: list[Problem]
    checked: list[str]


def _image_of(value: bytes) -> str | None:
    for magic, name in _IMAGE_MAGIC.items():
        if value.startswith(magic):
            return name
    if value[:4] == b"RIFF" and value[8:12] == b"WEBP":
        return "WEBP"
    return None


def _fixed_size(spec: FeatureSpec) -> int | None:
    if not spec.fixed:
        return None
    return math.prod(int(d or 0) for d in spec.shape)


def _schema_problems(ex: Mapping[str, Any], schema: Schema) -> list[str]:
    """What makes a decoded Example disagree with the schema (what TF's parse of the
    schema's feature description would reject)."""
    out = []
    for name, spec in schema.items():
        value = ex.get(name)
        if value is None:
            if spec.fixed:
                out.append(f"feature {name!r} is missing (shape {spec.shape} needs it)")
            continue
        kind = _kind_of(value)
        if kind is not None and kind != spec.kind:
            out.append(f"feature {name!r}: expected {spec.kind} values, found {kind}")
            continue
        n = len(value)
        size = _fixed_size(spec)
        if size is not None and n != size:
            out.append(
                f"feature {name!r}: expected {size} value(s) (shape {spec.shape}), found {n}"
            )
        elif spec.ragged:
            lengths = ex.get(f"{name}/row_lengths")
            total = int(np.sum(lengths)) if isinstance(lengths, np.ndarray) else None
            if lengths is not None and total != n:
                out.append(f"feature {name!r}: {n} values but {name}/row_lengths sums to {total}")
        elif len(spec.shape) >= 2 and spec.shape[0] is None:
            inner = math.prod(int(d or 0) for d in spec.shape[1:])
            if inner and n % inner:
                out.append(f"feature {name!r}: {n} values is not a multiple of {inner}")
    return out


def _kind_of(value: Any) -> str | None:
    if isinstance(value, np.ndarray):
        if value.dtype == np.int64:
            return "int64"
        return "float32" if len(value) else None
    return "bytes"


class _Checker:
    """Parses each record of a file and checks it against the schema (and images)."""

    def __init__(self, path: Path, schema: Schema | None, images: bool) -> None:
        self.path, self.schema, self.images = path, schema, images
        self.type: RecordType | None = "Example" if schema is not None else None
        self.image_features = (
            {n for n, s in schema.items() if isinstance(s.meaning, Image)} if schema else None
        )
        self.problems: list[Problem] = []

    def problem(self, kind: str, index: int, offset: int | None, message: str) -> None:
        self.problems.append(
            Problem(file=str(self.path), kind=kind, record=index, offset=offset, message=message)
        )

    def check(self, data: bytes | memoryview, index: int, offset: int | None) -> None:
        if self.type is None:
            self.type = record_type(data)
        if self.type == "Example":
            try:
                ex = _core.decode_example(data)
            except DecodeError as e:
                self.problem("parse", index, offset, f"not a tf.train.Example: {e}")
                return
            if self.schema is not None:
                for message in _schema_problems(ex, self.schema):
                    self.problem("schema", index, offset, message)
            if self.images:
                self.check_images(ex, index, offset)
        elif self.type == "SequenceExample":
            try:
                context, _ = _core.decode_sequence_example(data)
            except DecodeError as e:
                self.problem("parse", index, offset, f"not a tf.train.SequenceExample: {e}")
                return
            if self.images:
                self.check_images(context, index, offset)

    def check_images(self, ex: Mapping[str, Any], index: int, offset: int | None) -> None:
        import io

        from PIL import Image as PILImage

        for name, value in ex.items():
            if not isinstance(value, list):
                continue
            if self.image_features is not None and name not in self.image_features:
                continue
            for k, v in enumerate(value):
                if self.image_features is None and _image_of(v) is None:
                    continue
                try:
                    with PILImage.open(io.BytesIO(v)) as img:
                        img.load()
                except Exception as e:  # Pillow raises many types for bad data
                    self.problem(
                        "image", index, offset, f"feature {name!r}[{k}]: image not decodable: {e}"
                    )


_PROGRESS_STEP = 32 << 20


def _start_hashing(items: Sequence[InputFile]) -> dict[Path, Any]:
    """SHA-256 of every shard listed in a manifest, on a pool of threads (hashlib
    releases the GIL), running while the records are being checked."""
    from concurrent.futures import ThreadPoolExecutor

    def sha256(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(1 << 22)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        return h.hexdigest()

    paths = [i.path for i in items if i.shard is not None and i.path.is_file()]
    if not paths:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1))
    futures = {p: pool.submit(sha256, p) for p in paths}
    pool.shutdown(wait=False)
    return futures


def verify(
    paths: Paths,
    *,
    images: bool = False,
    checksums: bool = True,
    schema: Schema | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Checks everything: every record's framing and both CRCs, every record parsed
    (against the schema of ``dataset.json``, or ``schema``; files without one must hold
    records of one type, that of their first record), counts, sizes and (``checksums``)
    SHA-256 against the manifest, ``.idx`` files against the records, and with ``images``
    every image decoded (needs Pillow). Never stops at the first problem: damaged regions
    are skipped by resynchronising on the next valid record.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([rf.encode_example({"x": i}) for i in range(3)])
    >>> result = rf.inspect.verify(path)
    >>> result.ok, result.records, result.files[0].record_type
    (True, 3, 'Example')
    """
    files, problems = [], []
    checked = ["framing", "crc", "parse"]
    items = resolve(paths)
    hashing = _start_hashing(items) if checksums else {}
    for item in items:
        found: list[Problem] = []
        if not item.path.is_file():
            problems.append(
                Problem(
                    file=str(item.path),
                    kind="missing",
                    message="listed in dataset.json but missing",
                )
            )
            continue
        size = item.path.stat().st_size
        if item.shard is not None and item.shard.bytes != size:
            found.append(
                Problem(
                    file=str(item.path),
                    kind="manifest",
                    message=f"size is {size} bytes, dataset.json says {item.shard.bytes}",
                )
            )
        file_schema = schema or (item.manifest.schema if item.manifest else None)
        checker = _Checker(item.path, file_schema, images)
        want_index = item.index_path.is_file() or bool(item.manifest and item.manifest.index)
        framed: list[tuple[int, int]] = []
        records, framing, compression = _verify_stream(item.path, checker, framed, progress, size)
        found.extend(framing)
        found.extend(checker.problems)
        if item.shard is not None and item.shard.records != records:
            found.append(
                Problem(
                    file=str(item.path),
                    kind="manifest",
                    message=f"{records} records, dataset.json says {item.shard.records}",
                )
            )
        if want_index:
            found.extend(_index_problems(item, framed))
        if item.path in hashing and item.shard is not None:
            digest = hashing[item.path].result()
            if digest != item.shard.sha256:
                found.append(
                    Problem(
                        file=str(item.path),
                        kind="manifest",
                        message=f"SHA-256 is {digest}, dataset.json says {item.shard.sha256}",
                    )
                )
        files.append(
            FileVerify(
                path=str(item.path),
                records=records,
                bytes=size,
                compression=compression,
                record_type=checker.type or "empty",
                problems=len(found),
            )
        )
        problems.extend(found)
    if any(item.shard is not None for item in items):
        checked.append("manifest (counts, sizes" + (", SHA-256)" if checksums else ")"))
    if images:
        checked.append("images")
    return VerifyResult(
        ok=not problems,
        records=sum(f.records for f in files),
        bytes=sum(f.bytes for f in files),
        files=files,
        problems=problems,
        checked=checked,
    )


def _verify_stream(
    path: Path,
    checker: _Checker,
    framed: list[tuple[int, int]],
    progress: Progress | None,
    size: int,
) -> tuple[int, list[Problem], str | None]:
    """Walks one file, parsing each intact record; returns (records, framing problems,
    compression). Records with intact framing but a bad CRC count as records."""
    compression = detect_compression(path)
    if compression is not None:
        # Fast path for compressed files: Rust decompresses and checks CRCs.
        it = _core.read_records(str(path), compression, True)
        index = 0
        try:
            for data in it:
                offset = it.offset
                framed.append((offset or 0, len(data) + 16))
                checker.check(data, index, offset)
                index += 1
            if progress is not None:
                progress(size)
            return index, [], compression
        except CorruptRecordError:
            checker.problems.clear()
            framed.clear()
    if compression is None:
        # Rust checks the CRCs on another thread (without the GIL) while this one parses;
        # any damage sends it back to a walk that checks every CRC itself and lists
        # every problem.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            crcs = pool.submit(_core.scan_records, str(path), None, True, 1)
            records, problems = _walk_and_parse(path, checker, framed, progress, size, False)
            try:
                crcs.result()
                return records, problems, None
            except CorruptRecordError:
                checker.problems.clear()
                framed.clear()
                progress = None  # the bar is already full
    records, problems = _walk_and_parse(path, checker, framed, progress, size, True)
    return records, problems, compression


def _walk_and_parse(
    path: Path,
    checker: _Checker,
    framed: list[tuple[int, int]],
    progress: Progress | None,
    size: int,
    crc: bool,
) -> tuple[int, list[Problem]]:
    """Walks one file (its decompression for GZIP/ZLIB), parsing each intact record and
    checking data CRCs when ``crc``; returns the records and the framing problems."""
    done = 0
    with _stream(path) as (buf, stream_problem, compression):
        index = 0
        spans = []
        for span in _walk(buf, crc):
            spans.append(span)
            if span.reason is None:
                checker.check(buf[span.start + 12 : span.end - 4], index, span.start)
            if span.reason in (None, "data CRC mismatch"):
                framed.append((span.start, span.end - span.start))
                index += 1
            if progress is not None and compression is None and span.end - done >= _PROGRESS_STEP:
                progress(span.end - done)
                done = span.end
        problems = _problems_of(path, spans)
    if stream_problem is not None:
        problems.append(stream_problem)
    if progress is not None:
        progress(size - done)
    return index, problems


def _index_problems(item: InputFile, framed: Sequence[tuple[int, int]]) -> list[Problem]:
    path = item.index_path
    if not path.is_file():
        return [Problem(file=str(path), kind="index", message="dataset.json says indexed; missing")]
    try:
        offsets, sizes = _read_index(path)
    except (ValueError, UnicodeDecodeError) as e:
        return [Problem(file=str(path), kind="index", message=f"not an index file: {e}")]
    expected = np.array(framed, dtype=np.int64).reshape(-1, 2)
    if len(offsets) != len(expected):
        return [
            Problem(
                file=str(path),
                kind="index",
                message=f"{len(offsets)} lines for {len(expected)} records",
            )
        ]
    bad = np.flatnonzero((offsets != expected[:, 0]) | (sizes != expected[:, 1]))
    if len(bad):
        i = int(bad[0])
        return [
            Problem(
                file=str(path),
                kind="index",
                record=i,
                offset=int(expected[i, 0]),
                message=f"line {i + 1} says '{offsets[i]} {sizes[i]}', the record is at "
                f"'{expected[i, 0]} {expected[i, 1]}' ({len(bad)} line(s) wrong)",
            )
        ]
    return []


# --------------------------------------------------------------------------------------
# index


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexFile(_Result):
    """One index written (or not, when its file is damaged)."""

    path: str
    index_path: str | None
    records: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexResult(_Result):
    """The indexes written, and the problems of files that got none."""

    files: list[IndexFile]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def write_index(
    paths: Paths, *, verify: bool = True, progress: Progress | None = None
) -> IndexResult:
    """Writes ``<file>.idx`` beside each file: one ``offset size`` line per record (the
    record's byte offset and its framed size, 16 + payload), the format of the files
    ``write_dataset(index=True)`` writes and of NVIDIA DALI and the PyPI ``tfrecord``
    package. For compressed files offsets are in the decompressed stream. A damaged file
    (CRCs checked unless ``verify=False``) gets no index and a problem; an index is
    written to a temporary name and renamed.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([b"a", b"bb", b"ccc"])
    >>> result = rf.inspect.write_index(path)
    >>> print(open(path + ".idx").read(), end="")
    0 17
    17 18
    35 19
    """
    files, problems = [], []
    for item in resolve(paths):
        it = _core.read_records(str(item.path), "auto", verify)
        lines = []
        try:
            for data in it:
                lines.append(f"{it.offset} {len(data) + 16}\n")
        except CorruptRecordError as e:
            problems.append(
                Problem(
                    file=str(item.path),
                    kind="crc" if "CRC" in e.reason else "framing",
                    record=len(lines),
                    offset=e.offset,
                    message=f"{e.reason}; no index written",
                )
            )
            files.append(IndexFile(path=str(item.path), index_path=None, records=len(lines)))
            continue
        finally:
            if progress is not None:
                progress(item.path.stat().st_size)
        target = item.index_path
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text("".join(lines), encoding="ascii")
        os.replace(tmp, target)
        files.append(IndexFile(path=str(item.path), index_path=str(target), records=len(lines)))
    return IndexResult(files=files, problems=problems)


# --------------------------------------------------------------------------------------
# salvage


@dataclasses.dataclass(frozen=True, kw_only=True)
class LostRegion(_Result):
    """A damaged part of the record stream: ``[start, end)`` (``end`` None: the rest of a
    compressed stream that cannot be decompressed), why, and the records known lost
    (1 for a record whose framing is intact but data is not, 0 when unknown)."""

    start: int
    end: int | None
    reason: str
    records: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SalvageResult(_Result):
    """What ``salvage`` kept and lost; ``damaged`` is False when the input was intact."""

    source: str
    out: str
    records: int
    lost_records: int
    lost_bytes: int
    lost: list[LostRegion]
    compression: str | None

    @property
    def damaged(self) -> bool:
        return bool(self.lost)


def salvage(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    compression: Literal["same", "gzip", "zlib"] | None = "same",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SalvageResult:
    """Copies every intact record of a damaged file into a new, valid file, in order.

    Bit flips, truncation and garbage in the middle are survived: a record whose header
    checks but whose data does not is dropped and the walk goes on after it; after a
    header that does not check, the walk resynchronises at the next offset holding a
    valid header (length CRC) of a record that fits in the file. Only records whose two
    CRCs check are kept, so nothing corrupt is copied. GZIP/ZLIB input is decompressed as
    far as it goes. ``compression="same"`` writes the output as the input was. The output
    is written under a temporary name and renamed.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([b"first", b"second", b"third"])
    >>> data = bytearray(open(path, "rb").read())
    >>> data[21:29] = bytes(8)  # zero the second record's length field
    >>> _ = open(path, "wb").write(bytes(data))
    >>> result = rf.inspect.salvage(path, path + ".fixed")
    >>> list(rf.read_records(path + ".fixed")), [(r.start, r.end) for r in result.lost]
    ([b'first', b'third'], [(21, 43)])
    """
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"{out}: the output must not be the damaged file itself")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists; pass overwrite to replace it")
    lost: list[LostRegion] = []
    kept = 0
    tmp = out.with_name(f".{out.name}.salvage")
    with _stream(src) as (buf, stream_problem, found_compression):
        out_compression = found_compression if compression == "same" else compression
        done = 0
        try:
            with _core.TFRecordWriter(str(tmp), out_compression) as writer:
                batch: list[bytes] = []
                for span in _walk(buf, True):
                    if span.reason is None:
                        batch.append(bytes(buf[span.start + 12 : span.end - 4]))
                        kept += 1
                        if len(batch) >= 1024:
                            writer.write_many(batch)
                            batch.clear()
                    else:
                        lost.append(
                            LostRegion(
                                start=span.start,
                                end=span.end,
                                reason=span.reason,
                                records=1 if span.reason == "data CRC mismatch" else 0,
                            )
                        )
                    if progress is not None and span.end - done >= _PROGRESS_STEP:
                        progress(span.end - done)
                        done = span.end
                writer.write_many(batch)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    if stream_problem is not None:
        lost.append(
            LostRegion(
                start=stream_problem.offset or 0,
                end=None,
                reason=stream_problem.message,
                records=0,
            )
        )
    if progress is not None:
        progress(max(0, src.stat().st_size - done))
    return SalvageResult(
        source=str(src),
        out=str(out),
        records=kept,
        lost_records=sum(r.records for r in lost),
        lost_bytes=sum(r.end - r.start for r in lost if r.end is not None),
        lost=lost,
        compression=out_compression,
    )


# --------------------------------------------------------------------------------------
# Reading records for info / head / stats / preview


@dataclasses.dataclass(frozen=True)
class _Record:
    file: Path
    index: int
    offset: int | None
    data: bytes


def _records(
    items: Sequence[InputFile], problems: list[Problem], limit: int | None = None
) -> Iterator[_Record]:
    """Records of the files in order (CRCs checked); a damaged file adds a problem and
    the iteration goes on with the next file."""
    produced = 0
    for item in items:
        it = _core.read_records(str(item.path), "auto", True)
        index = 0
        try:
            for data in it:
                if limit is not None and produced >= limit:
                    return
                yield _Record(item.path, index, it.offset, data)
                index += 1
                produced += 1
        except CorruptRecordError as e:
            problems.append(
                Problem(
                    file=str(item.path),
                    kind="crc" if "CRC" in e.reason else "framing",
                    record=index,
                    offset=e.offset,
                    message=f"{e.reason} (the rest of this file is skipped; see verify)",
                )
            )


def _decoded(data: bytes, kind: RecordType) -> list[tuple[str, str, Any, int | None]]:
    """``(part, name, value, steps)`` of a record's features; ``steps`` is the number of
    steps of a feature list (its values are then concatenated)."""
    out: list[tuple[str, str, Any, int | None]] = []
    if kind == "Example":
        out.extend(("feature", n, v, None) for n, v in _core.decode_example(data).items())
    elif kind == "SequenceExample":
        context, lists = _core.decode_sequence_example(data)
        out.extend(("context", n, v, None) for n, v in context.items())
        for name, steps in lists.items():
            out.append(("feature_list", name, _concat(steps), len(steps)))
    elif kind == "ExampleListWithContext":
        examples, context = _decode_elwc(data)
        out.extend(("context", n, v, None) for n, v in context.items())
        names = dict.fromkeys(n for ex in examples for n in ex)
        for name in names:
            values = [ex[name] for ex in examples if name in ex]
            out.append(("examples", name, _concat(values), len(values)))
    return out


def _concat(values: Sequence[Any]) -> Any:
    if not values:
        return np.zeros(0, np.float32)
    if all(isinstance(v, list) for v in values):
        return [b for v in values for b in v]
    arrays = [v for v in values if isinstance(v, np.ndarray) and len(v)]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.float32)


# --------------------------------------------------------------------------------------
# info


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileInfo(_Result):
    """One file: its split (from ``dataset.json``), records (``None`` when it cannot be
    counted), size on disk, compression and whether an ``.idx`` file is beside it."""

    path: str
    split: str | None
    records: int | None
    bytes: int
    compression: str | None
    index: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureInfo(_Result):
    """One feature: ``part`` is ``feature`` (Example), ``context`` / ``feature_list``
    (SequenceExample) or ``context`` / ``examples`` (ELWC); ``dtype`` and ``shape`` as in
    a :class:`~recordforge.FeatureSpec`; lengths seen in the scanned records (steps for
    feature lists and ELWC examples); in how many scanned records it was present."""

    name: str
    part: str
    kind: str
    dtype: str
    shape: str
    min_length: int | None
    max_length: int | None
    present: int
    meaning: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Info(_Result):
    """A dataset's or files' description; ``schema_source`` says where the features come
    from (``dataset.json`` or inferred from ``scanned`` records)."""

    record_type: str
    records: int | None
    bytes: int
    files: list[FileInfo]
    splits: dict[str, dict[str, int]]
    compression: list[str | None]
    schema_source: str | None
    scanned: int
    features: list[FeatureInfo]
    notes: list[str]
    problems: list[Problem]


def _meaning_text(meaning: Any) -> str | None:
    if isinstance(meaning, Image):
        return f"image ({meaning.format or 'mixed'})"
    if isinstance(meaning, ClassLabel):
        return f"class_label ({len(meaning.names)} names)"
    if isinstance(meaning, BBox):
        return f"bbox ({meaning.layout}{', normalized' if meaning.normalized else ''})"
    if isinstance(meaning, Text):
        return "text"
    return None


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class _Lengths:
    """Kind, lengths, presence and image format seen for one feature while scanning."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.min: int | None = None
        self.max: int | None = None
        self.present = 0
        self.text = True
        self.image: str | None = None
        self.per_step: set[int] = set()

    def add(self, value: Any, length: int) -> None:
        self.present += 1
        self.min = length if self.min is None else min(self.min, length)
        self.max = length if self.max is None else max(self.max, length)
        kind = _kind_of(value)
        if kind is not None:
            self.kind = self.kind or kind
        if isinstance(value, list) and value:
            first = value[0]
            image = _image_of(first)
            if image is not None:
                self.image = image
            if self.text and (image is not None or not _is_text(first)):
                self.text = False


def _is_text(value: bytes) -> bool:
    try:
        text = value[:256].decode("utf-8")
    except UnicodeDecodeError:
        return len(value) > 256  # cut inside a character
    return all(c.isprintable() or c in "\n\t\r" for c in text)


def info(paths: Paths, *, scan: int | None = 1000, progress: Progress | None = None) -> Info:
    """Splits, shards, records, sizes, compression, and the features: from
    ``dataset.json`` when there is one, otherwise inferred from the first ``scan``
    records (``None``: all) — kind, fixed or variable length, the lengths seen. Records
    are counted from the manifest or by walking the framing. Records that are not
    ``tf.train.Example`` are reported as what they are (SequenceExample, TF-Ranking ELWC,
    unknown).

    >>> import tempfile, numpy as np, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     for i in range(3):
    ...         _ = w.write(rf.encode_example({"id": i, "tags": np.array(["a"] * i, np.bytes_)}))
    >>> result = rf.inspect.info(path)
    >>> result.record_type, result.records
    ('Example', 3)
    >>> [(f.name, f.dtype, f.shape, f.min_length, f.max_length) for f in result.features]
    [('id', 'int64', '()', 1, 1), ('tags', 'string', '(None,)', 0, 2)]
    """
    items = resolve(paths)
    problems: list[Problem] = []
    counted = count(paths)
    problems.extend(counted.problems)
    by_path = {f.path: f for f in counted.files}
    files: list[FileInfo] = []
    splits: dict[str, dict[str, int]] = {}
    for item in items:
        fc = by_path.get(str(item.path))
        compression = detect_compression(item.path) if item.path.is_file() else None
        files.append(
            FileInfo(
                path=str(item.path),
                split=item.split,
                records=fc.records if fc else None,
                bytes=item.path.stat().st_size if item.path.is_file() else 0,
                compression=compression,
                index=item.index_path.is_file(),
            )
        )
        if item.split is not None:
            s = splits.setdefault(item.split, {"shards": 0, "records": 0, "bytes": 0})
            s["shards"] += 1
            s["records"] += fc.records if fc else 0
            s["bytes"] += files[-1].bytes
        if progress is not None:
            progress(files[-1].bytes)
    kinds: collections.Counter[str] = collections.Counter()
    acc: dict[tuple[str, str], _Lengths] = {}
    scanned = 0
    for rec in _records(items, problems, scan):
        kind = record_type(rec.data)
        kinds[kind] += 1
        scanned += 1
        present_parts = set()
        for part, name, value, steps in _decoded(rec.data, kind):
            present_parts.add(part)
            a = acc.setdefault((part, name), _Lengths())
            a.add(value, steps if steps is not None else len(value))
            if steps:
                a.per_step.add(len(value) // steps if steps else 0)
    record_kind = kinds.most_common(1)[0][0] if kinds else "empty"
    notes = []
    if len(kinds) > 1:
        notes.append(f"mixed record types in the scanned records: {dict(kinds)}")
    if record_kind == "unknown":
        notes.append(
            "records are not tf.train.Example or SequenceExample (nor TF-Ranking ELWC); "
            "no features to show"
        )
    if record_kind == "ExampleListWithContext":
        notes.append(
            "records are TF-Ranking ExampleListWithContext (ELWC), not tf.train.Example: "
            "features of the context and of the listed examples are shown; lengths of "
            "'examples' features are the number of examples that have them"
        )
    schema = items[0].manifest.schema if items[0].manifest else None
    features = _feature_infos(acc, schema, scanned)
    total_records = (
        None if any(f.records is None for f in files) else sum(f.records or 0 for f in files)
    )
    return Info(
        record_type=record_kind,
        records=total_records,
        bytes=sum(f.bytes for f in files),
        files=files,
        splits=splits,
        compression=sorted({f.compression for f in files}, key=str),
        schema_source="dataset.json"
        if schema is not None
        else (f"inferred from {scanned} record(s)" if acc else None),
        scanned=scanned,
        features=features,
        notes=notes,
        problems=problems,
    )


def _natural(key: tuple[str, str]) -> tuple[Any, ...]:
    """Sort key: part, then name with its numbers compared as numbers (feature_2 < _10)."""
    import re

    parts = re.split(r"(\d+)", key[1])
    return (key[0], *((int(p), "") if p.isdigit() else (0, p) for p in parts))


def _feature_infos(
    acc: Mapping[tuple[str, str], _Lengths], schema: Schema | None, scanned: int
) -> list[FeatureInfo]:
    out = []
    if schema is not None:
        for name, spec in schema.items():
            a = acc.get(("feature", name)) or _Lengths()
            out.append(
                FeatureInfo(
                    name=name,
                    part="feature",
                    kind=spec.kind,
                    dtype=spec.dtype,
                    shape=_shape_text(spec.shape),
                    min_length=a.min,
                    max_length=a.max,
                    present=a.present,
                    meaning=_meaning_text(spec.meaning),
                )
            )
        known = set(schema) | {f"{n}/row_lengths" for n, s in schema.items() if s.ragged}
        extra = [k for k in acc if k[1] not in known]
    else:
        extra = sorted(acc, key=_natural)
    for part, name in extra:
        a = acc[(part, name)]
        dtype = a.kind or "(empty)"
        if a.kind == "bytes" and a.text:
            dtype = "string"
        always = a.present == scanned and part in ("feature", "context")
        shape: tuple[int | None, ...] = (None,)
        if always and a.min == a.max and a.min is not None:
            shape = () if a.min == 1 else (a.min,)
        if part in ("feature_list", "examples"):
            shape = (None, a.per_step.pop()) if len(a.per_step) == 1 else (None, None)
        meaning = f"image ({a.image.lower()})" if a.image else None
        out.append(
            FeatureInfo(
                name=name,
                part=part,
                kind=a.kind or "(empty)",
                dtype=dtype,
                shape=_shape_text(shape),
                min_length=a.min,
                max_length=a.max,
                present=a.present,
                meaning=meaning,
            )
        )
    return out


# --------------------------------------------------------------------------------------
# head


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadRecord(_Result):
    """One decoded record: ``features`` are its Example features (a SequenceExample's
    context, an ELWC's context), ``feature_lists`` a SequenceExample's lists of values,
    ``examples`` an ELWC's examples; ``raw`` the bytes of a record of unknown type."""

    file: str
    index: int
    offset: int | None
    size: int
    record_type: str
    features: dict[str, Any]
    feature_lists: dict[str, list[Any]] | None = None
    examples: list[dict[str, Any]] | None = None
    raw: bytes | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadResult(_Result):
    """The first records, and the problem that stopped reading a file, if any."""

    records: list[HeadRecord]
    problems: list[Problem]


def head(paths: Paths, *, n: int = 5, features: Sequence[str] | None = None) -> HeadResult:
    """The first ``n`` records, decoded (only ``features`` when given; a name no shown
    record has raises ``ValueError`` listing the names there are).

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([rf.encode_example({"id": i, "name": "cat"}) for i in range(9)])
    >>> result = rf.inspect.head(path, n=2, features=["id"])
    >>> [(r.index, r.offset, r.features) for r in result.records]
    [(0, 0, {'id': array([0])}), (1, 48, {'id': array([1])})]
    """
    problems: list[Problem] = []
    out = []
    wanted = list(features) if features else None
    for rec in _records(resolve(paths), problems, n):
        kind = record_type(rec.data)
        feats: dict[str, Any] = {}
        lists = examples = raw = None
        if kind == "Example":
            feats = _core.decode_example(rec.data)
        elif kind == "SequenceExample":
            feats, lists = _core.decode_sequence_example(rec.data)
        elif kind == "ExampleListWithContext":
            examples, feats = _decode_elwc(rec.data)
        else:
            raw = rec.data
        if wanted is not None:
            feats = {k: feats[k] for k in wanted if k in feats}
            if lists is not None:
                lists = {k: lists[k] for k in wanted if k in lists}
            if examples is not None:
                examples = [{k: ex[k] for k in wanted if k in ex} for ex in examples]
        out.append(
            HeadRecord(
                file=str(rec.file),
                index=rec.index,
                offset=rec.offset,
                size=len(rec.data),
                record_type=kind,
                features=feats,
                feature_lists=lists,
                examples=examples,
                raw=raw,
            )
        )
    if wanted is not None and out:
        shown = {
            k
            for r in out
            for k in [
                *r.features,
                *(r.feature_lists or {}),
                *(k for e in r.examples or [] for k in e),
            ]
        }
        missing = [k for k in wanted if k not in shown]
        if missing:
            every: set[str] = set()
            for rec in _records(resolve(paths), [], n):
                every.update(name for _, name, _, _ in _decoded(rec.data, record_type(rec.data)))
            raise ValueError(
                f"feature(s) {', '.join(map(repr, missing))} not in the first {len(out)} "
                f"record(s); they have: {', '.join(sorted(every)) or 'no features'}"
            )
    return HeadResult(records=out, problems=problems)


def _image_size(value: bytes) -> tuple[int, int] | None:
    from recordforge.sources.coco import sniff_image

    try:
        _, width, height = sniff_image(value)
    except (ValueError, struct.error):
        return None
    return width, height


def _size_text(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1000**2:
        return f"{n / 1000:.0f} KB"
    return f"{n / 1000**2:.1f} MB"


def _describe_bytes(value: bytes, width: int = 60) -> str:
    image = _image_of(value)
    if image is not None:
        size = _image_size(value)
        dims = f"{size[0]}x{size[1]}" if size else "?x?"
        return f"<{image} {dims}, {_size_text(len(value))}>"
    if _is_text(value):
        text = value.decode("utf-8", "replace")
        if len(text) > width:
            return repr(text[: width - 3] + "...") + f" ({len(text)} chars)"
        return repr(text)
    head_hex = value[:12].hex(" ")
    return f"<{len(value)} bytes: {head_hex}{' ...' if len(value) > 12 else ''}>"


def describe_value(value: Any, *, limit: int = 8) -> str:
    """A one-line rendering of a decoded feature value: at most ``limit`` values, long
    text cut, binary bytes abbreviated, images as ``<JPEG 640x480, 162 KB>``.

    >>> import numpy as np
    >>> from recordforge.inspect import describe_value
    >>> describe_value(np.arange(20))
    '[0, 1, 2, 3, 4, 5, 6, 7, ...] (20 values)'
    >>> describe_value(np.array([0.1, 2], np.float32)), describe_value([b"cat", b"\\x00\\x01"])
    ('[0.1, 2.0]', "['cat', <2 bytes: 00 01>]")
    """
    if isinstance(value, np.ndarray):
        shown = [str(v) for v in value[:limit]]
    else:
        shown = [_describe_bytes(v) if isinstance(v, bytes) else repr(v) for v in value[:limit]]
    more = len(value) > limit
    text = "[" + ", ".join(shown) + (", ...]" if more else "]")
    return text + (f" ({len(value)} values)" if more else "")


def _bytes_json(value: bytes) -> Any:
    image = _image_of(value)
    if image is not None:
        size = _image_size(value)
        return {
            "image": image,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "bytes": len(value),
        }
    if _is_text(value):
        return value.decode("utf-8", "replace")
    return {"bytes": len(value), "hex": value[:32].hex()}


# --------------------------------------------------------------------------------------
# stats


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureStats(_Result):
    """Statistics of one feature over the records read. ``length``: min, max, mean and
    the most common lengths; ``numbers``: count, min, max, mean, std and NaNs of every
    value; ``top_values``: the most common bytes/text values (images excluded; exact
    unless ``distinct`` reached its cap); ``images``: formats and size ranges;
    ``class_labels``: id, name (from the schema or a ``.../text`` feature beside it)
    and count."""

    name: str
    part: str
    kind: str
    present: int
    missing: int
    empty: int
    length: dict[str, Any]
    numbers: dict[str, Any] | None = None
    top_values: list[tuple[str, int]] | None = None
    distinct: int | None = None
    images: dict[str, Any] | None = None
    class_labels: list[dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats(_Result):
    """Per-feature statistics over ``records`` records."""

    records: int
    record_type: str
    features: list[FeatureStats]
    notes: list[str]
    problems: list[Problem]


_DISTINCT_CAP = 10_000


class _Acc:
    def __init__(self, labels: ClassLabel | None, is_label: bool) -> None:
        self.kind: str | None = None
        self.present = self.empty = 0
        self.lengths: collections.Counter[int] = collections.Counter()
        self.n = self.nan = 0
        self.total = self.total_sq = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values: collections.Counter[bytes] = collections.Counter()
        self.capped = False
        self.formats: collections.Counter[str] = collections.Counter()
        self.sizes: list[tuple[int, int]] = []
        self.undecodable = 0
        self.labels = labels
        self.is_label = is_label
        self.ids: collections.Counter[int] = collections.Counter()
        self.names: dict[int, str] = {}

    def add(self, value: Any, length: int) -> None:
        self.present += 1
        self.lengths[length] += 1
        if not len(value):
            self.empty += 1
            return
        kind = _kind_of(value)
        self.kind = self.kind or kind
        if isinstance(value, np.ndarray):
            v = value.astype(np.float64)
            finite = v[np.isfinite(v)]
            self.nan += len(v) - len(finite)
            if len(finite):
                self.n += len(finite)
                self.total += float(finite.sum())
                self.total_sq += float(np.square(finite).sum())
                self.lo = min(self.lo, float(finite.min()))
                self.hi = max(self.hi, float(finite.max()))
            if self.is_label and value.dtype == np.int64:
                self.ids.update(value.tolist())
            return
        for item in value:
            image = _image_of(item)
            if image is not None:
                self.formats[image] += 1
                size = _image_size(item)
                if size is None:
                    self.undecodable += 1
                else:
                    self.sizes.append(size)
            elif item in self.values or len(self.values) < _DISTINCT_CAP:
                self.values[item[:200]] += 1
            else:
                self.capped = True

    def result(self, name: str, part: str, records: int, top: int) -> FeatureStats:
        lengths = self.lengths
        count = sum(lengths.values())
        length = {
            "min": min(lengths) if lengths else None,
            "max": max(lengths) if lengths else None,
            "mean": sum(k * v for k, v in lengths.items()) / count if count else None,
            "most_common": [[k, v] for k, v in lengths.most_common(5)],
        }
        numbers = None
        if self.kind in ("int64", "float32"):
            mean = self.total / self.n if self.n else None
            var = self.total_sq / self.n - mean * mean if mean is not None else None
            numbers = {
                "count": self.n,
                "min": self.lo if self.n else None,
                "max": self.hi if self.n else None,
                "mean": mean,
                "std": math.sqrt(max(var, 0.0)) if var is not None else None,
                "nan_or_inf": self.nan,
            }
        top_values = distinct = images = None
        if self.values:
            top_values = [(_value_text(k), v) for k, v in self.values.most_common(top)]
            distinct = len(self.values)
        if self.formats:
            w = np.array([s[0] for s in self.sizes] or [0])
            h = np.array([s[1] for s in self.sizes] or [0])
            images = {
                "formats": dict(self.formats),
                "width": {"min": int(w.min()), "max": int(w.max()), "mean": float(w.mean())},
                "height": {"min": int(h.min()), "max": int(h.max()), "mean": float(h.mean())},
                "most_common_sizes": [
                    [f"{a}x{b}", c] for (a, b), c in collections.Counter(self.sizes).most_common(5)
                ],
                "unreadable_headers": self.undecodable,
            }
        class_labels = None
        if self.ids:
            class_labels = []
            for i, c in sorted(self.ids.items()):
                label = self.names.get(i)
                if self.labels is not None:
                    with contextlib.suppress(ValueError, IndexError):
                        label = self.labels.name_of(i)
                class_labels.append({"id": i, "name": label, "count": c})
        return FeatureStats(
            name=name,
            part=part,
            kind=self.kind or "(empty)",
            present=self.present,
            missing=records - self.present,
            empty=self.empty,
            length=length,
            numbers=numbers,
            top_values=top_values,
            distinct=distinct if not self.capped else None,
            images=images,
            class_labels=class_labels,
        )


def _value_text(value: bytes) -> str:
    return value.decode("utf-8", "replace") if _is_text(value) else _describe_bytes(value)


def _is_label_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in ("label", "labels", "category_id", "class", "class_id") or name.endswith(
        "class/label"
    )


def stats(
    paths: Paths,
    *,
    max_records: int | None = None,
    top: int = 10,
    progress: Progress | None = None,
) -> Stats:
    """Per-feature statistics over every record (or the first ``max_records``):
    presence, lengths, numbers, top values, images, class labels (features with a
    ``ClassLabel`` meaning, or int64 features named like ``label`` / ``category_id``;
    names from the schema or from a ``<prefix>/text`` feature beside ``<prefix>/label``,
    as in Object Detection API records). Memory stays bounded: distinct values are
    counted up to a cap.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     for i in range(4):
    ...         _ = w.write(rf.encode_example({"x": float(i), "c": "ab"[i % 2]}))
    >>> s = {f.name: f for f in rf.inspect.stats(path).features}
    >>> s["x"].numbers["mean"], s["x"].numbers["max"], s["c"].top_values
    (1.5, 3.0, [('a', 2), ('b', 2)])
    """
    items = resolve(paths)
    schema = items[0].manifest.schema if items and items[0].manifest else None
    problems: list[Problem] = []
    acc: dict[tuple[str, str], _Acc] = {}
    kinds: collections.Counter[str] = collections.Counter()
    records = 0
    current: Path | None = None
    for rec in _records(items, problems, max_records):
        if progress is not None and rec.file != current:
            if current is not None:
                progress(current.stat().st_size)
            current = rec.file
        kind = record_type(rec.data)
        kinds[kind] += 1
        records += 1
        decoded = _decoded(rec.data, kind)
        for part, name, value, steps in decoded:
            a = acc.get((part, name))
            if a is None:
                spec = schema.get(name) if schema is not None and part == "feature" else None
                labels = spec.meaning if spec and isinstance(spec.meaning, ClassLabel) else None
                a = acc[(part, name)] = _Acc(labels, labels is not None or _is_label_name(name))
            a.add(value, steps if steps is not None else len(value))
        _pair_label_names(decoded, acc)
    if progress is not None and current is not None:
        progress(current.stat().st_size)
    record_kind = kinds.most_common(1)[0][0] if kinds else "empty"
    notes = []
    if record_kind == "unknown":
        notes.append("records are not tf.train.Example or SequenceExample: no features")
    order = list(schema) if schema is not None else []
    keys = sorted(
        acc, key=lambda k: (order.index(k[1]) if k[1] in order else len(order), _natural(k))
    )
    return Stats(
        records=records,
        record_type=record_kind,
        features=[acc[k].result(k[1], k[0], records, top) for k in keys],
        notes=notes,
        problems=problems,
    )


def _pair_label_names(
    decoded: Sequence[tuple[str, str, Any, int | None]], acc: Mapping[tuple[str, str], _Acc]
) -> None:
    """Learns id -> name from ``<prefix>/label`` and ``<prefix>/text`` of equal length."""
    values = {(part, name): value for part, name, value, _ in decoded}
    for (part, name), value in values.items():
        if not name.endswith("/label") or not isinstance(value, np.ndarray):
            continue
        text = values.get((part, name[: -len("label")] + "text"))
        if isinstance(text, list) and len(text) == len(value):
            names = acc[(part, name)].names
            for i, t in zip(value.tolist(), text, strict=True):
                if t and i not in names:
                    names[i] = t.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------
# preview


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewCell(_Result):
    """Where one record's image went on the sheet: its top-left corner, its size
    there, the scale from the stored image, and the boxes drawn, in sheet pixels
    ``(x0, y0, x1, y1, label)``."""

    file: str
    record: int
    x: int
    y: int
    width: int
    height: int
    scale: float
    boxes: list[tuple[float, float, float, float, str]]
    caption: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewResult(_Result):
    """The contact sheet written: its path and size, and one cell per record shown."""

    path: str
    width: int
    height: int
    cells: list[PreviewCell]
    problems: list[Problem]


_Box = tuple[float, float, float, float, str]
_BOX_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]


def _find_image(ex: Mapping[str, Any], schema: Schema | None) -> str | None:
    if schema is not None:
        for name, spec in schema.items():
            if isinstance(spec.meaning, Image) and name in ex:
                return name
    for name in ("image/encoded", "image"):
        if isinstance(ex.get(name), list) and ex[name]:
            return name
    for name, value in ex.items():
        if isinstance(value, list) and value and _image_of(value[0]) is not None:
            return name
    return None


def _label_names(ex: Mapping[str, Any], schema: Schema | None, key: str, n: int) -> list[str]:
    """Names of ``n`` objects: ``.../class/text``, else ids named by the schema."""
    text = ex.get("image/object/class/text")
    texts = [t.decode("utf-8", "replace") for t in text] if isinstance(text, list) else []
    if not key.startswith("image/object") or len(texts) != n:
        texts = [""] * n
    label_key = "image/object/class/label" if key.startswith("image/object") else "category_id"
    ids = ex.get(label_key)
    if not isinstance(ids, np.ndarray) or len(ids) != n:
        return texts
    spec = schema.get(label_key) if schema is not None else None
    out = []
    for i, t in zip(ids.tolist(), texts, strict=True):
        name = t or str(i)
        if not t and spec is not None and isinstance(spec.meaning, ClassLabel):
            with contextlib.suppress(ValueError, IndexError):
                name = spec.meaning.name_of(i)
        out.append(name)
    return out


def _boxes(
    ex: Mapping[str, Any], schema: Schema | None, width: int, height: int
) -> list[tuple[float, float, float, float, str]]:
    """Boxes in the stored image's pixels: OD-API ``image/object/bbox/*`` (normalized,
    or pixels when a value is above 1.5) or the Keras per-annotation ``bbox`` (xywh)."""
    keys = [f"image/object/bbox/{c}" for c in ("xmin", "ymin", "xmax", "ymax")]
    if all(isinstance(ex.get(k), np.ndarray) for k in keys):
        xmin, ymin, xmax, ymax = (ex[k].astype(np.float64) for k in keys)
        n = min(len(xmin), len(ymin), len(xmax), len(ymax))
        normalized = not any(len(a) and a.max() > 1.5 for a in (xmin, ymin, xmax, ymax))
        sx, sy = (width, height) if normalized else (1, 1)
        names = _label_names(ex, schema, keys[0], n)
        return [
            (
                float(xmin[i] * sx),
                float(ymin[i] * sy),
                float(xmax[i] * sx),
                float(ymax[i] * sy),
                names[i],
            )
            for i in range(n)
        ]
    bbox = ex.get("bbox")
    if isinstance(bbox, np.ndarray) and len(bbox) == 4:
        x, y, w, h = bbox.astype(np.float64).tolist()
        spec = schema.get("bbox") if schema is not None else None
        if spec is not None and isinstance(spec.meaning, BBox) and spec.meaning.normalized:
            x, y, w, h = x * width, y * height, w * width, h * height
        name = _label_names(ex, schema, "bbox", 1)[0]
        return [(x, y, x + w, y + h, name)]
    return []


def _caption(ex: Mapping[str, Any]) -> str | None:
    for name in ("image/caption", "caption", "captions", "text"):
        value = ex.get(name)
        if isinstance(value, list) and value:
            return str(value[0].decode("utf-8", "replace"))
    return None


def preview(
    paths: Paths,
    out: str | os.PathLike[str],
    *,
    n: int = 16,
    cell: int = 256,
    columns: int | None = None,
) -> PreviewResult:
    """Writes a contact sheet (PNG, or any format Pillow writes by the suffix of
    ``out``) of the first ``n`` records that hold an image: each image scaled to fit a
    ``cell`` x ``cell`` square, its boxes drawn (a translucent fill and an outline) with
    their class names — TF Object Detection API keys or the Keras example's
    per-annotation ``bbox`` / ``category_id`` — and the first caption under it. Needs
    Pillow. Records without a decodable image are skipped and listed as problems.
    """
    import io

    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    items = resolve(paths)
    schema = items[0].manifest.schema if items and items[0].manifest else None
    problems: list[Problem] = []
    pictures: list[tuple[_Record, Any, list[_Box], str | None]] = []
    for rec in _records(items, problems):
        if len(pictures) >= n:
            break
        kind = record_type(rec.data)
        if kind not in ("Example", "SequenceExample"):
            continue
        ex = dict(_decoded_context(rec.data, kind))
        key = _find_image(ex, schema)
        if key is None:
            continue
        try:
            with PILImage.open(io.BytesIO(ex[key][0])) as img:
                rgb = img.convert("RGB")
        except Exception as e:  # Pillow raises many types for bad data
            problems.append(
                Problem(
                    file=str(rec.file),
                    kind="image",
                    record=rec.index,
                    offset=rec.offset,
                    message=f"feature {key!r}: image not decodable: {e}",
                )
            )
            continue
        pictures.append((rec, rgb, _boxes(ex, schema, *rgb.size), _caption(ex)))
    if not pictures:
        raise ValueError(f"no record with an image among {[str(i.path) for i in items]}")
    font = ImageFont.load_default()
    cols = columns or math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / cols)
    pad, caption_h = 8, 28
    sheet_w = cols * (cell + pad) + pad
    sheet_h = rows * (cell + pad + caption_h) + pad
    sheet = PILImage.new("RGB", (sheet_w, sheet_h), (32, 32, 32))
    cells = []
    for k, (rec, rgb, boxes, caption) in enumerate(pictures):
        x0 = pad + (k % cols) * (cell + pad)
        y0 = pad + (k // cols) * (cell + pad + caption_h)
        scale = min(cell / rgb.width, cell / rgb.height)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        thumb = rgb.resize(size, PILImage.Resampling.BILINEAR).convert("RGBA")
        overlay = PILImage.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        drawn = []
        for j, (bx0, by0, bx1, by1, label) in enumerate(boxes):
            color = _BOX_COLORS[j % len(_BOX_COLORS)]
            box = (bx0 * scale, by0 * scale, bx1 * scale, by1 * scale)
            draw.rectangle(box, fill=(*color, 70), outline=(*color, 255), width=2)
            if label:
                draw.text((box[0] + 3, box[1] + 2), label, fill=(255, 255, 255, 255), font=font)
            drawn.append((x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3], label))
        sheet.paste(PILImage.alpha_composite(thumb, overlay).convert("RGB"), (x0, y0))
        text = f"{rec.file.name} #{rec.index}" + (f": {caption}" if caption else "")
        ImageDraw.Draw(sheet).text(
            (x0, y0 + cell + 4), _fit(text, cell, font), fill=(230, 230, 230), font=font
        )
        cells.append(
            PreviewCell(
                file=str(rec.file),
                record=rec.index,
                x=x0,
                y=y0,
                width=size[0],
                height=size[1],
                scale=scale,
                boxes=drawn,
                caption=caption,
            )
        )
    out = Path(out)
    sheet.save(out)
    return PreviewResult(
        path=str(out), width=sheet_w, height=sheet_h, cells=cells, problems=problems
    )


def _decoded_context(data: bytes, kind: RecordType) -> Iterator[tuple[str, Any]]:
    for part, name, value, _ in _decoded(data, kind):
        if part in ("feature", "context"):
            yield name, value


def _fit(text: str, width: int, font: Any) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels in ``font``."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."

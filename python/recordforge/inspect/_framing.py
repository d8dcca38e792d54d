"""The inspections that work on the framing alone, parsing no record: count,
write_index and salvage."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Literal

from recordforge import _core, _fs, _index
from recordforge._atomic import write_bytes_atomic
from recordforge._remote import abort_upload
from recordforge._stream import Records, Walk
from recordforge.errors import CorruptRecordError
from recordforge.inspect._common import PROGRESS_STEP, Paths, Problem, Progress, Result
from recordforge.inspect._files import InputFile, manifest_problems, resolve
from recordforge.inspect._walker import problem_of
from recordforge.records import DEFAULT_MAX_RECORD_BYTES, TFRecordWriter

# --------------------------------------------------------------------------------------
# count


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileCount(Result):
    """Records in one file, and how they were counted: ``manifest``, ``index`` (lines of
    the ``.idx`` file), ``scan`` (framing walked) or ``scan+crc`` (and CRCs checked)."""

    path: str
    records: int
    bytes: int
    method: str
    compression: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountResult(Result):
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
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> CountResult:
    """Counts records. Without ``verify``/``scan`` a plain file's count comes from its
    ``.idx`` file when that covers the file exactly (``manifest`` when ``dataset.json``
    says the same, ``index`` otherwise); otherwise the framing is walked in Rust without
    parsing, each length's CRC checked (``verify``: every data CRC too). ``dataset.json``
    alone is not believed: a count it gives that the files contradict is a problem, as
    are its own disagreements (:func:`manifest_problems`). A damaged file is walked record by
    record, resynchronising after each damaged region, in one streaming pass (memory
    within ``max_record_bytes``): the count then includes every record that could be
    delimited. A record that claims more than ``max_record_bytes`` is damage, refused
    before anything is allocated for it.

    >>> import io, tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([b"a", b"bb", b"ccc"])
    >>> result = rf.inspect.count(path)
    >>> result.records, result.files[0].method
    (3, 'scan')
    """
    files, problems = [], []
    items = resolve(paths)
    problems.extend(manifest_problems(items))
    for item in items:
        if not item.exists():
            problems.append(
                Problem(
                    file=item.name,
                    kind="missing",
                    message="listed in dataset.json but missing",
                )
            )
            continue
        size = item.size()
        counted = None if verify or scan else _count_from_metadata(item, size)
        if counted is not None:
            files.append(
                FileCount(path=item.name, records=counted[0], bytes=size, method=counted[1])
            )
        else:
            compression = item.compression
            method = "scan+crc" if verify else "scan"
            if item.remote is not None:  # one streamed walk, past any damage
                records, found = _walk_count(item.name, verify, max_record_bytes)
                problems.extend(found)
            else:
                try:
                    stats = _core.scan_records(
                        item.name, compression, verify, 0, max_record_bytes=max_record_bytes
                    )
                    records = stats[0]
                except CorruptRecordError:
                    records, found = _walk_count(item.name, verify, max_record_bytes)
                    problems.extend(found)
            files.append(
                FileCount(
                    path=item.name,
                    records=records,
                    bytes=size,
                    method=method,
                    compression=compression,
                )
            )
        if item.shard is not None and item.shard.records != files[-1].records:
            problems.append(
                Problem(
                    file=item.name,
                    kind="manifest",
                    message=f"{files[-1].records} records, dataset.json says {item.shard.records}",
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


def _walk_count(name: str, verify: bool, max_record_bytes: int) -> tuple[int, list[Problem]]:
    """The records of a file (a damaged one, or a remote one) that could be delimited
    (intact, or framed with a failing data CRC), and its problems."""
    records, problems = 0, []
    with Walk(name, verify, max_record_bytes=max_record_bytes) as spans:
        for span in spans:
            if span.kind == "record":
                records += 1
                continue
            problems.append(problem_of(name, span, records))
            records += span.records
    return records, problems


def _count_from_metadata(item: InputFile, size: int) -> tuple[int, str] | None:
    """The count of an ``.idx`` file that covers a plain file exactly (``manifest`` when
    ``dataset.json`` agrees with it), else ``None``: the framing is walked."""
    if item.compression is not None:
        return None  # an index's offsets are in the decompressed stream
    index = _index.read(item.name, size)
    if index is None:
        return None
    n = len(index[0])
    shard = item.shard
    if shard is not None and shard.bytes == size and shard.records == n:
        return n, "manifest"
    return n, "index"


# --------------------------------------------------------------------------------------
# index


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexFile(Result):
    """One index written (or not, when its file is damaged)."""

    path: str
    index_path: str | None
    records: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexResult(Result):
    """The indexes written, and the problems of files that got none."""

    files: list[IndexFile]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def write_index(
    paths: Paths,
    *,
    verify: bool = True,
    progress: Progress | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
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
        lines = []
        try:
            with Records(item.name, verify=verify, max_record_bytes=max_record_bytes) as it:
                for data in it:
                    lines.append(f"{it.offset} {len(data) + 16}\n")
        except CorruptRecordError as e:
            problems.append(
                Problem(
                    file=item.name,
                    kind="crc" if "CRC" in e.reason else "framing",
                    record=len(lines),
                    offset=e.offset,
                    message=f"{e.reason}; no index written",
                )
            )
            files.append(IndexFile(path=item.name, index_path=None, records=len(lines)))
            continue
        finally:
            if progress is not None:
                progress(item.size())
        data = "".join(lines).encode("ascii")
        if item.remote is not None:  # a temporary key, then moved: nothing on local disk
            _fs.write_bytes(item.index_name, data)
        else:
            # A new temporary file (O_EXCL) renamed over the target: a link planted at
            # either name is replaced, never written through.
            write_bytes_atomic(item.index_path, data)
        files.append(IndexFile(path=item.name, index_path=item.index_name, records=len(lines)))
    return IndexResult(files=files, problems=problems)


# --------------------------------------------------------------------------------------
# salvage

# Records handed to the writer at a time are at most this many bytes (or 1,024 records).
_BATCH_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class LostRegion(Result):
    """A damaged part of the record stream: ``[start, end)`` (``end`` None: the rest of a
    compressed stream that cannot be decompressed), why, and the records known lost
    (1 for a record whose framing is intact but data is not, 0 when unknown)."""

    start: int
    end: int | None
    reason: str
    records: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SalvageResult(Result):
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


def _lost_region(span: _core.WalkSpan) -> LostRegion:
    reason = span.reason or ""
    if span.kind == "stream":  # the rest of a compressed stream
        return LostRegion(
            start=span.start,
            end=None,
            reason=f"{reason}; the rest cannot be decompressed",
            records=0,
        )
    return LostRegion(start=span.start, end=span.end, reason=reason, records=span.records)


def salvage(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    compression: Literal["same", "gzip", "zlib"] | None = "same",
    overwrite: bool = False,
    progress: Progress | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> SalvageResult:
    """Copies every intact record of a damaged file into a new, valid file, in order.

    Bit flips, truncation, torn writes and garbage in the middle are survived: after a
    damaged record (a header or data CRC that fails, a length over ``max_record_bytes``,
    a record cut short) the walk resynchronises at the next offset holding a whole
    record whose length CRC and data CRC both check — every offset is tried, those inside
    the damaged record's claimed length too, so a record written whole after a torn one
    is kept. Only records whose two CRCs check are kept, so nothing corrupt is copied.
    The file is read once, front to back, in Rust, with memory bounded by
    ``max_record_bytes``: GZIP/ZLIB input is decompressed as it is walked (never into a
    temporary copy), as far as it goes, and every record decompressed before a break in
    the stream is kept. ``compression="same"`` writes the output as the input was. The
    output is written under a temporary name and renamed. Either path may be a URL (``gs://``,
    ``s3://``, ...): a remote input is streamed (ranged reads, never downloaded); a remote
    output is streamed to a temporary key (the store commits it when it is complete) and
    moved to its own.

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
    source, target = _fs.fspath(src), _fs.fspath(out)  # (file: URLs: the paths)
    remote_out = _fs.is_url(target)
    if _fs.is_url(source) or remote_out:
        if source.rstrip("/") == target.rstrip("/"):
            raise ValueError(f"{target}: the output must not be the damaged file itself")
    elif Path(target).resolve() == Path(source).resolve():
        raise ValueError(f"{target}: the output must not be the damaged file itself")
    if not overwrite and _fs.exists(target):
        raise FileExistsError(f"{target}: exists; pass overwrite to replace it")
    lost: list[LostRegion] = []
    kept = 0
    with contextlib.ExitStack() as stack:
        if remote_out:  # streamed to a temporary key (committed when complete), then moved
            fs, final_key = _fs.filesystem(target)
            # The local output's temporary name: a killed salvage's object is replaced,
            # and its unfinished upload (billed on S3) aborted, by the next one.
            dest = _fs.join(_fs.parent(target), f".{_fs.name(target)}.salvage")
            tmp_key = _fs.filesystem(dest)[1]
            abort_upload(dest)
        else:
            tmp = Path(target).with_name(f".{Path(target).name}.salvage")
            dest = str(tmp)
        walker = stack.enter_context(
            Walk(_fs.fspath(source), True, payloads=True, max_record_bytes=max_record_bytes)
        )
        out_compression = walker.compression if compression == "same" else compression
        done = 0
        try:
            with TFRecordWriter(dest, out_compression) as writer:
                batch: list[bytes] = []
                batch_bytes = 0
                for span in walker:
                    if span.payload is not None:
                        batch.append(span.payload)
                        batch_bytes += len(span.payload)
                        kept += 1
                        if len(batch) >= 1024 or batch_bytes >= _BATCH_BYTES:
                            writer.write_many(batch)
                            batch.clear()
                            batch_bytes = 0
                    else:
                        lost.append(_lost_region(span))
                    if progress is not None and walker.bytes_read - done >= PROGRESS_STEP:
                        progress(walker.bytes_read - done)
                        done = walker.bytes_read
                writer.write_many(batch)
            if remote_out:
                _fs.move_key(fs, tmp_key, final_key)
            else:
                os.replace(tmp, target)
        finally:
            if remote_out:  # committed and not moved (an upload not committed is aborted)
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(tmp_key)
            else:
                tmp.unlink(missing_ok=True)
    if progress is not None:
        progress(max(0, _fs.size(_fs.fspath(source)) - done))
    return SalvageResult(
        source=source,
        out=target,
        records=kept,
        lost_records=sum(r.records for r in lost),
        lost_bytes=sum(r.end - r.start for r in lost if r.end is not None),
        lost=lost,
        compression=out_compression,
    )

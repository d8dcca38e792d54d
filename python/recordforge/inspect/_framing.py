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
from recordforge.errors import CorruptRecordError
from recordforge.inspect._common import _PROGRESS_STEP, Paths, Problem, Progress, _Result
from recordforge.inspect._files import InputFile, as_given, manifest_problems, resolve
from recordforge.inspect._walker import _problems_of, _stream, _walk, detect_compression

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
    """Counts records. Without ``verify``/``scan`` a plain file's count comes from its
    ``.idx`` file when that covers the file exactly (``manifest`` when ``dataset.json``
    says the same, ``index`` otherwise); otherwise the framing is walked in Rust without
    parsing (``verify``: every CRC checked too). ``dataset.json`` alone is not believed:
    a count it gives that the files contradict is a problem, as are its own
    disagreements (:func:`manifest_problems`). A damaged file is walked record by
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
    items = resolve(paths)
    problems.extend(manifest_problems(items))
    for item in items:
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
        if item.shard is not None and item.shard.records != files[-1].records:
            problems.append(
                Problem(
                    file=str(item.path),
                    kind="manifest",
                    message=f"{files[-1].records} records, dataset.json says {item.shard.records}",
                )
            )
        if progress is not None:
            progress(size)
    result = CountResult(
        records=sum(f.records for f in files),
        bytes=sum(f.bytes for f in files),
        files=files,
        problems=problems,
    )
    return as_given(result, items)


def _count_from_metadata(item: InputFile, size: int) -> tuple[int, str] | None:
    """The count of an ``.idx`` file that covers a plain file exactly (``manifest`` when
    ``dataset.json`` agrees with it), else ``None``: the framing is walked."""
    if detect_compression(item.path) is not None:
        return None  # an index's offsets are in the decompressed stream
    index = _index.read(str(item.path), size)
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
        # A new temporary file (O_EXCL) renamed over the target: a link planted at either
        # name is replaced, never written through.
        write_bytes_atomic(target, "".join(lines).encode("ascii"))
        if item.remote is not None:  # a downloaded copy: the index goes beside the original
            _fs.upload(target, f"{item.remote}.idx")
            files.append(
                IndexFile(path=item.remote, index_path=f"{item.remote}.idx", records=len(lines))
            )
            continue
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
    is written under a temporary name and renamed. Either path may be a URL (``gs://``,
    ``s3://``, ...): a remote input is downloaded once per process; a remote output is
    written locally, then uploaded under a temporary key and moved to its own.

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
    source, target = os.fspath(src), os.fspath(out)
    remote_out = _fs.is_url(target)
    if _fs.is_url(source) or remote_out:
        if source.rstrip("/") == target.rstrip("/"):
            raise ValueError(f"{target}: the output must not be the damaged file itself")
    elif Path(target).resolve() == Path(source).resolve():
        raise ValueError(f"{target}: the output must not be the damaged file itself")
    if not overwrite and _fs.exists(target):
        raise FileExistsError(f"{target}: exists; pass overwrite to replace it")
    local_src = Path(_fs.staged(source))  # a URL: its copy, downloaded once per process
    lost: list[LostRegion] = []
    kept = 0
    with contextlib.ExitStack() as stack:
        if remote_out:  # written locally, then uploaded under a temporary key and moved
            tmp = stack.enter_context(_fs.local_dir()) / _fs.name(target)
        else:
            tmp = Path(target).with_name(f".{Path(target).name}.salvage")
        buf, stream_problem, found_compression = stack.enter_context(_stream(local_src))
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
            if remote_out:
                _fs.upload(tmp, target)
            else:
                os.replace(tmp, target)
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
        progress(max(0, local_src.stat().st_size - done))
    return SalvageResult(
        source=source,
        out=target,
        records=kept,
        lost_records=sum(r.records for r in lost),
        lost_bytes=sum(r.end - r.start for r in lost if r.end is not None),
        lost=lost,
        compression=out_compression,
    )

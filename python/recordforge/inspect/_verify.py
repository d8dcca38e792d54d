"""verify: framing, CRCs, parsing, schema, manifest, ``.idx`` files and images checked."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core
from recordforge._ranged import Crc32c
from recordforge._stream import Walk
from recordforge.errors import CorruptRecordError
from recordforge.inspect._checks import Checker, column_problems
from recordforge.inspect._common import PROGRESS_STEP, Paths, Problem, Progress, Result
from recordforge.inspect._decode import record_type
from recordforge.inspect._fast import fast_checks
from recordforge.inspect._files import InputFile, manifest_problems, read_index, resolve
from recordforge.inspect._walker import problem_of
from recordforge.records import DEFAULT_MAX_RECORD_BYTES, detect_compression
from recordforge.schema import Schema


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileVerify(Result):
    """One file's verification: records read, on-disk bytes, problems found in it."""

    path: str
    records: int
    bytes: int
    compression: str | None
    record_type: str
    problems: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyResult(Result):
    """``ok`` when nothing is wrong; ``problems`` lists everything that is, in file order;
    ``checked`` says what was checked; ``unchecked`` names each file of which something
    asked for could not be checked, and why, as problems of kind ``unchecked`` (``fast``:
    a shard whose store keeps no CRC32C had its size checked only); ``complete`` when
    there is none."""

    ok: bool
    records: int
    bytes: int
    files: list[FileVerify]
    problems: list[Problem]
    checked: list[str]
    unchecked: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unchecked


def _start_hashing(items: Sequence[InputFile]) -> dict[str, Any]:
    """SHA-256 of every local shard whose manifest entry is a SHA-256, on a pool of
    threads (hashlib releases the GIL), running while the records are being checked.
    (CRC32C checksums are computed in the same pass as the record CRCs; a remote file's
    checksum as its bytes stream past.)"""
    from concurrent.futures import ThreadPoolExecutor

    def sha256(path: str) -> str:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(1 << 22)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        return f"sha256:{h.hexdigest()}"

    names = [
        i.name
        for i in items
        if i.remote is None
        and i.shard is not None
        and i.shard.checksum_algorithm == "sha256"
        and i.exists()
    ]
    if not names:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1))
    futures = {name: pool.submit(sha256, name) for name in names}
    pool.shutdown(wait=False)
    return futures


def _local_digest(item: InputFile, hashing: dict[str, Any], crc: int | None) -> str | None:
    """The checksum of a local shard in the manifest's algorithm (``crc``: the CRC32C
    computed while walking the file, when it was); ``None`` for an unknown algorithm."""
    assert item.shard is not None
    algorithm = item.shard.checksum_algorithm
    if algorithm == "sha256":
        digest: str = hashing[item.name].result()
        return digest
    if algorithm == "crc32c":
        if crc is None:
            crc = _core.file_crc32c(item.name, os.cpu_count() or 1)
        return f"crc32c:{crc:08x}"
    return None


def _checksum_problem(item: InputFile, digest: str | None) -> Problem | None:
    """The shard's checksum against the manifest's (``digest`` ``None``: the manifest's
    algorithm is not one known)."""
    assert item.shard is not None
    expected = item.shard.checksum
    if digest is None:
        return Problem(
            file=item.name,
            kind="manifest",
            message=f"dataset.json gives checksum {expected!r}: unknown algorithm",
        )
    if digest == expected:
        return None
    return Problem(
        file=item.name,
        kind="manifest",
        message=f"checksum is {digest}, dataset.json says {expected}",
    )


def verify(
    paths: Paths,
    *,
    images: bool = False,
    checksums: bool = True,
    schema: Schema | None = None,
    fast: bool = False,
    progress: Progress | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> VerifyResult:
    """Checks everything: every record's framing and both CRCs, every record parsed
    (against the schema of ``dataset.json``, or ``schema``; files without one must hold
    records of one type, that of their first record), counts, sizes and (with ``checksums``)
    shard checksums against the manifest, ``.idx`` files against the records, and with ``images``
    every image decoded (needs Pillow). Never stops at the first problem: damaged regions
    are skipped by resynchronising on the next valid record. A record that claims more
    than ``max_record_bytes`` is damage, refused before anything is allocated for it.

    Remote files (``gs://``, ``s3://``, ...) are streamed: ranged reads read ahead on a
    thread, checked as they arrive, nothing written to local disk. ``fast`` reads no
    record: it checks each shard's size and checksum against ``dataset.json``, a remote
    shard's by the CRC32C its store keeps (GCS: every object; S3: objects uploaded with a
    CRC32C checksum), without reading its data; a shard whose store keeps none is named
    in ``unchecked`` (its size only was checked; ``complete`` is then False).

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([rf.encode_example({"x": i}) for i in range(3)])
    >>> result = rf.inspect.verify(path)
    >>> result.ok, result.records, result.files[0].record_type
    (True, 3, 'Example')
    """
    items = resolve(paths)
    if fast:
        return _verify_fast(items, checksums, progress)
    files, problems = [], []
    checked = ["framing", "crc", "parse"]
    problems.extend(manifest_problems(items))
    hashing = _start_hashing(items) if checksums else {}
    for item in items:
        found: list[Problem] = []
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
        if item.shard is not None and item.shard.bytes != size:
            found.append(
                Problem(
                    file=item.name,
                    kind="manifest",
                    message=f"size is {size} bytes, dataset.json says {item.shard.bytes}",
                )
            )
        file_schema = schema or (item.manifest.schema if item.manifest else None)
        checker = Checker(item.name, file_schema, images)
        want_index = item.has_index() or bool(item.manifest and item.manifest.index)
        algorithm = item.shard.checksum_algorithm if checksums and item.shard else None
        if item.remote is not None:
            records, framing, compression, framed, digest = _verify_remote(
                item, checker, progress, algorithm, max_record_bytes
            )
        else:
            records, framing, compression, framed, crc = _verify_stream(
                item.path, checker, progress, size, algorithm == "crc32c", max_record_bytes
            )
            digest = _local_digest(item, hashing, crc) if algorithm is not None else None
        found.extend(framing)
        found.extend(checker.problems)
        if item.shard is not None and item.shard.records != records:
            found.append(
                Problem(
                    file=item.name,
                    kind="manifest",
                    message=f"{records} records, dataset.json says {item.shard.records}",
                )
            )
        if want_index:
            found.extend(_index_problems(item, framed))
        if algorithm is not None:
            checksum_problem = _checksum_problem(item, digest)
            if checksum_problem is not None:
                found.append(checksum_problem)
        files.append(
            FileVerify(
                path=item.name,
                records=records,
                bytes=size,
                compression=compression,
                record_type=checker.type or "empty",
                problems=len(found),
            )
        )
        problems.extend(found)
    if any(item.shard is not None for item in items):
        checked.append("manifest (counts, sizes" + (", checksums)" if checksums else ")"))
    if images:
        from recordforge.images import checks_jpeg_strictly

        strict = checks_jpeg_strictly()
        checked.append("images" if strict else "images (JPEGs by Pillow, without libjpeg's checks)")
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
    checker: Checker,
    progress: Progress | None,
    size: int,
    crc: bool,
    max_record_bytes: int,
) -> tuple[int, list[Problem], str | None, np.ndarray, int | None]:
    """Walks one file, parsing each intact record; returns (records, framing problems,
    compression, each record's offset and framed size, and with ``crc`` the file's
    CRC32C when it was computed in the same pass). Records with intact framing but a bad
    CRC count as records."""
    compression = detect_compression(path)
    if compression is None and not checker.images:
        fast = _verify_in_rust(path, checker, crc, max_record_bytes)
        if fast is not None:
            if progress is not None:
                progress(size)
            return fast[0], fast[1], None, fast[2], fast[3]
    framed: list[tuple[int, int]] = []
    records, problems, found = _verify_slow(
        path, checker, framed, progress, compression, max_record_bytes
    )
    return records, problems, found, np.array(framed, dtype=np.int64).reshape(-1, 2), None


def _verify_fast(
    items: list[InputFile], checksums: bool, progress: Progress | None
) -> VerifyResult:
    problems, checked, unchecked = fast_checks(items, checksums, progress)
    files = [
        FileVerify(
            path=item.name,
            records=item.shard.records if item.shard else 0,
            bytes=item.size() if item.exists() else 0,
            compression=item.manifest.compression if item.manifest else None,
            record_type="(not read)",
            problems=sum(p.file == item.name for p in problems),
        )
        for item in items
    ]
    return VerifyResult(
        ok=not problems,
        records=sum(f.records for f in files),
        bytes=sum(f.bytes for f in files),
        files=files,
        problems=problems,
        checked=checked,
        unchecked=unchecked,
    )


def _verify_remote(
    item: InputFile,
    checker: Checker,
    progress: Progress | None,
    algorithm: str | None,
    max_record_bytes: int,
) -> tuple[int, list[Problem], str | None, np.ndarray, str | None]:
    """Walks one remote file as it streams in (ranged reads read ahead; no local disk),
    parsing each intact record, its checksum in the manifest's ``algorithm`` computed
    from the same bytes; returns (records, framing problems, compression, each record's
    offset and framed size, the checksum: ``None`` for an unknown algorithm)."""
    hasher: Crc32c | Any = None
    if algorithm == "crc32c":
        hasher = Crc32c()
    elif algorithm == "sha256":
        hasher = hashlib.sha256()
    framed: list[tuple[int, int]] = []
    with Walk(
        item.name,
        True,
        payloads=True,
        max_record_bytes=max_record_bytes,
        on_block=None if hasher is None else hasher.update,
    ) as walker:
        records, problems = _walk_and_parse(walker, checker, framed, progress, item.size())
        compression = walker.compression
    digest = None
    if isinstance(hasher, Crc32c):
        digest = f"crc32c:{hasher.value:08x}"
    elif hasher is not None:
        digest = f"sha256:{hasher.hexdigest()}"
    return records, problems, compression, np.array(framed, np.int64).reshape(-1, 2), digest


def _first_record(path: Path, max_record_bytes: int) -> bytes | None:
    try:
        records = _core.read_records(str(path), None, True, max_record_bytes=max_record_bytes)
        return next(iter(records), None)
    except (CorruptRecordError, OSError):
        return None


def _verify_in_rust(
    path: Path, checker: Checker, crc: bool, max_record_bytes: int
) -> tuple[int, list[Problem], np.ndarray, int | None] | None:
    """Framing, both CRCs, parsing and the schema checked in Rust from a memory map
    (no Python object per record); ``None`` when the file is not one of Examples (the
    Python walk handles the other record types)."""
    if checker.type is None:
        first = _first_record(path, max_record_bytes)
        if first is None:
            return None
        checker.type = record_type(first)
    if checker.type != "Example":
        return None
    schema = checker.schema or Schema({})
    names = list(schema)
    for name, spec in schema.items():
        if spec.ragged and f"{name}/row_lengths" not in schema:
            names.append(f"{name}/row_lengths")
    sums = [name.endswith("/row_lengths") for name in names]
    verified = _core.verify_file(
        str(path), names, sums, os.cpu_count() or 1, crc, max_record_bytes=max_record_bytes
    )
    offsets, errors = verified.offsets, verified.errors
    n = len(offsets)
    shape = (n, len(names))
    kinds = verified.kinds.reshape(shape)
    counts, totals = verified.counts.reshape(shape), verified.sums.reshape(shape)
    framing = [
        Problem(
            file=str(path),
            kind=(
                "crc"
                if reason == "data CRC mismatch"
                else "truncated"
                if reason.startswith("truncated")
                else "framing"
            ),
            record=record,
            offset=start,
            end=end,
            message=reason,
        )
        for start, end, record, reason in verified.damage
    ]
    found: list[tuple[int, int, str]] = [
        (i, -1, f"not a tf.train.Example: {message}") for i, message in errors
    ]
    checked = verified.crc_ok.copy()
    checked[[i for i, _ in errors]] = False
    column = {name: j for j, name in enumerate(names)}
    for j, (name, spec) in enumerate(schema.items()):
        found.extend(column_problems(name, spec, j, kinds, counts, totals, column, checked))
    found.sort(key=lambda p: (p[0], p[1]))
    for i, j, message in found:
        kind = "parse" if j < 0 else "schema"
        checker.problem(kind, i, int(offsets[i]), message)
    framed = np.stack([offsets.astype(np.int64), verified.sizes.astype(np.int64)], axis=1)
    return n, framing, framed, verified.crc32c


def _verify_slow(
    path: Path,
    checker: Checker,
    framed: list[tuple[int, int]],
    progress: Progress | None,
    compression: str | None,
    max_record_bytes: int,
) -> tuple[int, list[Problem], str | None]:
    size = path.stat().st_size
    if compression is not None:
        # Fast path for compressed files: Rust decompresses and checks CRCs.
        it = _core.read_records(str(path), compression, True, max_record_bytes=max_record_bytes)
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
            crcs = pool.submit(
                _core.scan_records,
                str(path),
                None,
                True,
                1,
                max_record_bytes=max_record_bytes,
            )
            with Walk(str(path), False, payloads=True, max_record_bytes=max_record_bytes) as w:
                records, problems = _walk_and_parse(w, checker, framed, progress, size)
            try:
                crcs.result()
                return records, problems, None
            except CorruptRecordError:
                checker.problems.clear()
                framed.clear()
                progress = None  # the bar is already full
    with Walk(str(path), True, payloads=True, max_record_bytes=max_record_bytes) as w:
        records, problems = _walk_and_parse(w, checker, framed, progress, size)
    return records, problems, compression


def _walk_and_parse(
    walker: Walk,
    checker: Checker,
    framed: list[tuple[int, int]],
    progress: Progress | None,
    size: int,
) -> tuple[int, list[Problem]]:
    """Goes through one file's walk (GZIP/ZLIB decompressed as it goes, in one streaming
    pass with memory within the walk's ``max_record_bytes``), parsing each intact
    record; returns the records and the framing problems."""
    done = index = 0
    problems = []
    for span in walker:
        if span.payload is not None:
            checker.check(span.payload, index, span.start)
        else:
            problems.append(problem_of(walker.name, span, index))
        if span.end is not None and span.records:  # intact, or framed with a bad CRC
            framed.append((span.start, span.end - span.start))
            index += 1
        if progress is not None and walker.bytes_read - done >= PROGRESS_STEP:
            progress(walker.bytes_read - done)
            done = walker.bytes_read
    if progress is not None:
        progress(size - done)
    return index, problems


def _index_problems(item: InputFile, expected: np.ndarray) -> list[Problem]:
    name = item.index_name
    if not item.has_index():
        return [Problem(file=name, kind="index", message="dataset.json says indexed; missing")]
    try:
        offsets, sizes = read_index(item)
    except (ValueError, UnicodeDecodeError) as e:
        return [Problem(file=name, kind="index", message=f"not an index file: {e}")]
    if len(offsets) != len(expected):
        return [
            Problem(
                file=name,
                kind="index",
                message=f"{len(offsets)} lines for {len(expected)} records",
            )
        ]
    bad = np.flatnonzero((offsets != expected[:, 0]) | (sizes != expected[:, 1]))
    if len(bad):
        i = int(bad[0])
        return [
            Problem(
                file=name,
                kind="index",
                record=i,
                offset=int(expected[i, 0]),
                message=f"line {i + 1} says '{offsets[i]} {sizes[i]}', the record is at "
                f"'{expected[i, 0]} {expected[i, 1]}' ({len(bad)} line(s) wrong)",
            )
        ]
    return []

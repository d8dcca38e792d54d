"""verify: framing, CRCs, parsing, schema, manifest, ``.idx`` files and images checked."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core
from recordforge.errors import CorruptRecordError, DecodeError
from recordforge.inspect._common import _PROGRESS_STEP, Paths, Problem, Progress, _Result
from recordforge.inspect._decode import RecordType, record_type
from recordforge.inspect._files import (
    InputFile,
    _read_index,
    as_given,
    manifest_problems,
    resolve,
)
from recordforge.inspect._values import _image_of
from recordforge.inspect._walker import _problem_of, _walk
from recordforge.records import DEFAULT_MAX_RECORD_BYTES, detect_compression
from recordforge.schema import FeatureSpec, Image, Schema, kind_of


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
        kind = kind_of(value)
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


_FORMAT_ALIASES = {"jpg": "jpeg"}


class _Checker:
    """Parses each record of a file and checks it against the schema (and images)."""

    def __init__(self, path: Path, schema: Schema | None, images: bool) -> None:
        self.path, self.schema, self.images = path, schema, images
        self.type: RecordType | None = "Example" if schema is not None else None
        self.image_features = (
            {n for n, s in schema.items() if isinstance(s.meaning, Image)} if schema else None
        )
        # The format each image feature's schema names, as image_format spells it.
        self.image_formats = {
            n: _FORMAT_ALIASES.get(s.meaning.format.lower(), s.meaning.format.lower())
            for n, s in (schema.items() if schema else ())
            if isinstance(s.meaning, Image) and s.meaning.format
        }
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
        """Every image decoded fully (:func:`recordforge.images.check`), and its format,
        taken from its bytes, compared with the schema's: PNG bytes under a feature whose
        schema says ``jpeg`` are a problem (``tf.io.decode_jpeg`` refuses them)."""
        from recordforge.images import check

        for name, value in ex.items():
            if not isinstance(value, list):
                continue
            if self.image_features is not None and name not in self.image_features:
                continue
            declared = self.image_formats.get(name)
            for k, v in enumerate(value):
                if self.image_features is None and _image_of(v) is None:
                    continue
                try:
                    found = check(v)
                except DecodeError as e:
                    where = f"feature {name!r}[{k}]"
                    self.problem("image", index, offset, f"{where}: image not decodable: {e}")
                    continue
                if declared is not None and found != declared:
                    self.problem(
                        "image",
                        index,
                        offset,
                        f"feature {name!r}[{k}]: the bytes are {found.upper()}, "
                        f"but the schema says {declared}",
                    )


def _start_hashing(items: Sequence[InputFile]) -> dict[Path, Any]:
    """SHA-256 of every shard whose manifest entry is a SHA-256, on a pool of threads
    (hashlib releases the GIL), running while the records are being checked. (CRC32C
    checksums are computed in the same pass as the record CRCs.)"""
    from concurrent.futures import ThreadPoolExecutor

    def sha256(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(1 << 22)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        return f"sha256:{h.hexdigest()}"

    paths = [
        i.path
        for i in items
        if i.shard is not None and i.shard.checksum_algorithm == "sha256" and i.path.is_file()
    ]
    if not paths:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1))
    futures = {p: pool.submit(sha256, p) for p in paths}
    pool.shutdown(wait=False)
    return futures


def _checksum_problem(item: InputFile, hashing: dict[Path, Any], crc: int | None) -> Problem | None:
    """The shard's checksum against the manifest's (``crc``: the CRC32C computed while
    walking the file, when it was)."""
    assert item.shard is not None
    algorithm, expected = item.shard.checksum_algorithm, item.shard.checksum
    if algorithm == "sha256":
        digest = hashing[item.path].result()
    elif algorithm == "crc32c":
        if crc is None:
            crc = _core.file_crc32c(str(item.path), os.cpu_count() or 1)
        digest = f"crc32c:{crc:08x}"
    else:
        return Problem(
            file=str(item.path),
            kind="manifest",
            message=f"dataset.json gives checksum {expected!r}: unknown algorithm",
        )
    if digest == expected:
        return None
    return Problem(
        file=str(item.path),
        kind="manifest",
        message=f"checksum is {digest}, dataset.json says {expected}",
    )


def verify(
    paths: Paths,
    *,
    images: bool = False,
    checksums: bool = True,
    schema: Schema | None = None,
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
    problems.extend(manifest_problems(items))
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
        want_crc = (
            checksums and item.shard is not None and item.shard.checksum_algorithm == "crc32c"
        )
        records, framing, compression, framed, crc = _verify_stream(
            item.path, checker, progress, size, want_crc, max_record_bytes
        )
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
        if checksums and item.shard is not None:
            checksum_problem = _checksum_problem(item, hashing, crc)
            if checksum_problem is not None:
                found.append(checksum_problem)
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
        checked.append("manifest (counts, sizes" + (", checksums)" if checksums else ")"))
    if images:
        from recordforge.images import _simplejpeg

        strict = _simplejpeg() is not None
        checked.append("images" if strict else "images (JPEGs by Pillow, without libjpeg's checks)")
    result = VerifyResult(
        ok=not problems,
        records=sum(f.records for f in files),
        bytes=sum(f.bytes for f in files),
        files=files,
        problems=problems,
        checked=checked,
    )
    return as_given(result, items)


def _verify_stream(
    path: Path,
    checker: _Checker,
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


_KINDS = _core.VerifiedFile.KINDS
_CODES = {v: k for k, v in _KINDS.items()}
_MISSING, _NO_KIND = _core.VerifiedFile.MISSING, _core.VerifiedFile.NO_KIND


def _first_record(path: Path, max_record_bytes: int) -> bytes | None:
    try:
        records = _core.read_records(str(path), None, True, max_record_bytes=max_record_bytes)
        return next(iter(records), None)
    except (CorruptRecordError, OSError):
        return None


def _verify_in_rust(
    path: Path, checker: _Checker, crc: bool, max_record_bytes: int
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
        found.extend(_column_problems(name, spec, j, kinds, counts, totals, column, checked))
    found.sort(key=lambda p: (p[0], p[1]))
    for i, j, message in found:
        kind = "parse" if j < 0 else "schema"
        checker.problem(kind, i, int(offsets[i]), message)
    framed = np.stack([offsets.astype(np.int64), verified.sizes.astype(np.int64)], axis=1)
    return n, framing, framed, verified.crc32c


def _column_problems(
    name: str,
    spec: FeatureSpec,
    j: int,
    kinds: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    column: Mapping[str, int],
    checked: np.ndarray,
) -> list[tuple[int, int, str]]:
    """What ``_schema_problems`` says of feature ``name`` (column ``j``), for every
    checked record at once: (record, j, message) for each record that disagrees."""
    kind, count = kinds[:, j], counts[:, j]
    out: list[tuple[int, int, str]] = []
    missing = checked & (kind == _MISSING)
    if spec.fixed:
        needs = f"feature {name!r} is missing (shape {spec.shape} needs it)"
        out.extend((int(i), j, needs) for i in np.flatnonzero(missing))
    present = checked & (kind != _MISSING)
    # An empty float list decodes as a kind-less feature does: it says nothing of the kind.
    kindless = (kind == _CODES["float32"]) & (count == 0)
    wrong = present & (kind != _NO_KIND) & ~kindless & (kind != _CODES[spec.kind])
    for i in np.flatnonzero(wrong):
        found = _KINDS[int(kind[i])]
        out.append((int(i), j, f"feature {name!r}: expected {spec.kind} values, found {found}"))
    present &= ~wrong
    size = _fixed_size(spec)
    if size is not None:
        for i in np.flatnonzero(present & (count != size)):
            out.append(
                (
                    int(i),
                    j,
                    f"feature {name!r}: expected {size} value(s) (shape {spec.shape}), "
                    f"found {int(count[i])}",
                )
            )
    elif spec.ragged:
        r = column[f"{name}/row_lengths"]
        has = present & (kinds[:, r] != _MISSING)
        ints = kinds[:, r] == _CODES["int64"]
        bad = has & (~ints | (totals[:, r] != count.astype(np.int64)))
        for i in np.flatnonzero(bad):
            total = int(totals[i, r]) if ints[i] else None
            out.append(
                (
                    int(i),
                    j,
                    f"feature {name!r}: {int(count[i])} values but {name}/row_lengths "
                    f"sums to {total}",
                )
            )
    elif len(spec.shape) >= 2 and spec.shape[0] is None:
        inner = math.prod(int(d or 0) for d in spec.shape[1:])
        if inner:
            for i in np.flatnonzero(present & (count % inner != 0)):
                out.append(
                    (
                        int(i),
                        j,
                        f"feature {name!r}: {int(count[i])} values is not a multiple of {inner}",
                    )
                )
    return out


def _verify_slow(
    path: Path,
    checker: _Checker,
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
            records, problems = _walk_and_parse(
                path, checker, framed, progress, size, False, max_record_bytes
            )
            try:
                crcs.result()
                return records, problems, None
            except CorruptRecordError:
                checker.problems.clear()
                framed.clear()
                progress = None  # the bar is already full
    records, problems = _walk_and_parse(
        path, checker, framed, progress, size, True, max_record_bytes
    )
    return records, problems, compression


def _walk_and_parse(
    path: Path,
    checker: _Checker,
    framed: list[tuple[int, int]],
    progress: Progress | None,
    size: int,
    crc: bool,
    max_record_bytes: int,
) -> tuple[int, list[Problem]]:
    """Walks one file (GZIP/ZLIB decompressed as it goes, in one streaming pass with
    memory within ``max_record_bytes``), parsing each intact record and checking data
    CRCs when ``crc``; returns the records and the framing problems."""
    done = index = 0
    problems = []
    walker = _walk(path, crc, payloads=True, max_record_bytes=max_record_bytes)
    for span in walker:
        if span.payload is not None:
            checker.check(span.payload, index, span.start)
        else:
            problems.append(_problem_of(path, span, index))
        if span.end is not None and span.records:  # intact, or framed with a bad CRC
            framed.append((span.start, span.end - span.start))
            index += 1
        if progress is not None and walker.bytes_read - done >= _PROGRESS_STEP:
            progress(walker.bytes_read - done)
            done = walker.bytes_read
    if progress is not None:
        progress(size - done)
    return index, problems


def _index_problems(item: InputFile, expected: np.ndarray) -> list[Problem]:
    path = item.index_path
    if not path.is_file():
        return [Problem(file=str(path), kind="index", message="dataset.json says indexed; missing")]
    try:
        offsets, sizes = _read_index(path)
    except (ValueError, UnicodeDecodeError) as e:
        return [Problem(file=str(path), kind="index", message=f"not an index file: {e}")]
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

"""``rf.open_dataset``: a recordforge dataset (or any TFRecord files) read for training.

Records are decoded a batch at a time in Rust into one NumPy array per feature; a
feature whose length varies is a :class:`Ragged` (values + row splits). Only the selected
features are parsed; the others' bytes are skipped.

>>> import tempfile, numpy as np, recordforge as rf
>>> with tempfile.TemporaryDirectory() as d:
...     _ = rf.write_dataset({"id": np.arange(10), "tags": [f"t{i}" for i in range(10)]},
...                          d, max_records=4, index=True)
...     ds = rf.open_dataset(d)
...     batch = next(ds.batches(4))
...     third = ds[2]
...     ids = [int(r["id"]) for r in ds.shard(1, 2)]
>>> len(ds), batch["id"].tolist(), third["tags"]
(10, [0, 1, 2, 3], b't2')
>>> ids
[4, 5, 6, 7]
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core, _fs, _index
from recordforge._jsonfields import Field
from recordforge._outdir import check_finished
from recordforge._sticky import Sticky
from recordforge.errors import (
    CorruptRecordError,
    DecodeError,
    OnError,
    SchemaError,
    on_error_policy,
)
from recordforge.manifest import MANIFEST_NAME, Manifest, inside
from recordforge.records import DEFAULT_MAX_RECORD_BYTES
from recordforge.schema import FeatureSpec, Schema
from recordforge.sequence import (
    feature_list_columns,
    infer_feature_lists,
    infer_sequence_schema,
    sample_schema,
)

__all__ = ["Dataset", "Ragged", "open_dataset"]

OnCorrupt = OnError  # the reading side's name for it
_SUFFIXES = (".tfrecord", ".tfrec", ".tfrecords", ".gz", ".zlib")
_SCHEMA_SCAN = 1000


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Variable-length rows: row ``i`` is ``values[row_splits[i]:row_splits[i + 1]]``."""

    values: Any
    row_splits: np.ndarray

    def __len__(self) -> int:
        return len(self.row_splits) - 1

    def __getitem__(self, i: int) -> Any:
        return self.values[self.row_splits[i] : self.row_splits[i + 1]]

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.row_splits)


@dataclasses.dataclass
class _Claim:
    """A shard's record count as ``dataset.json`` gives it, not believed before it is
    checked: ``checked`` is 1 once its file's size (and ``.idx``, when there is one)
    agree, 2 once the records were counted (the ``.idx`` lines, or a framing walk)."""

    field: Field
    records: int
    bytes: int
    checked: int = 0


@dataclasses.dataclass(frozen=True)
class _Order:
    """How records are ordered and divided: shuffle and shard settings."""

    shuffle_buffer: int = 0
    seed: int | None = None
    shard: tuple[int, int] | None = None


class Dataset:
    """TFRecord files with a schema: iterate records (dicts of NumPy values), read
    columnar ``batches``, ``select`` features, ``shuffle``, ``shard``, ``ds[i]``."""

    def __init__(
        self,
        files: Sequence[str],
        schema: Schema,
        *,
        counts: Sequence[int] | None = None,
        manifest: Manifest | None = None,
        root: Path | str | None = None,
        on_corrupt: OnCorrupt = "raise",
        order: _Order = _Order(),
        claims: Sequence[_Claim | None] | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        on_corrupt = on_error_policy(on_corrupt, "on_corrupt")
        self.files = list(files)
        #: Records that claim more bytes are damaged (refused before any allocation).
        self.max_record_bytes = max_record_bytes
        self.schema = schema
        self.manifest = manifest
        self.on_corrupt: OnCorrupt = on_corrupt
        self._root = root
        self._counts = list(counts) if counts is not None else None
        self._order = order
        self._epoch = 0
        self._offsets: dict[str, np.ndarray] = {}
        self._open: dict[str, Any] = {}
        self._wanted_cache: list[tuple[str, str, int | None]] | None = None
        self._starts_cache: np.ndarray | None = None
        self._rows_cache: _core.RowReader | None = None
        self._len_cache: int | None = None
        #: Records of the last whole epoch read (no remainder dropped), checked by len.
        self._read_count: int | None = None
        self._claims = list(claims) if claims is not None else None
        self._compressions: list[str | None] | None = None
        #: Damaged regions skipped with ``on_corrupt="skip"``: file, start, end, reason.
        self.skipped: list[dict[str, Any]] = []

    def _replace(self, **changes: Any) -> Dataset:
        kwargs: dict[str, Any] = {
            "files": self.files,
            "schema": self.schema,
            "counts": self._counts,
            "manifest": self.manifest,
            "root": self._root,
            "on_corrupt": self.on_corrupt,
            "order": self._order,
            "claims": self._claims,
            "max_record_bytes": self.max_record_bytes,
        }
        kwargs.update(changes)
        new = Dataset(**kwargs)
        if "files" not in changes:
            new._compressions = self._compressions  # the same files: already looked at
        return new

    def __repr__(self) -> str:
        return f"<Dataset {len(self.files)} files, features {list(self.schema)}>"

    @property
    def compression(self) -> str | None:
        """The shards' compression, ``"gzip"``, ``"zlib"`` or ``None``, from their first
        bytes (whatever their names or ``dataset.json`` say; a manifest that disagrees is a
        :class:`~recordforge.SchemaError`). Local files are each looked at; of remote ones,
        the first (the readers detect each file's own)."""
        found = self._file_compressions()
        kinds = set(found)
        if len(kinds) > 1:
            first = found[0]
            other = next(i for i, c in enumerate(found) if c != first)
            raise ValueError(
                f"the files mix compressions: {self.files[0]} is {first or 'not compressed'}, "
                f"{self.files[other]} is {found[other] or 'not compressed'}"
            )
        return found[0] if found else None

    def _file_compressions(self) -> list[str | None]:
        if self._compressions is None:
            from recordforge.inspect._walker import detect_compression

            found: list[str | None]
            if all(_is_local(f) for f in self.files):
                found = [detect_compression(f) for f in self.files]
            else:
                found = [detect_compression(self.files[0])] * len(self.files)
            if self.manifest is not None:
                claim = self.manifest.compression
                for path, kind in zip(self.files, found, strict=True):
                    if kind != claim:
                        what = f"{kind}-compressed" if kind else "not compressed"
                        raise SchemaError(
                            f"{self._source()}: compression: {json.dumps(claim)}, but {path} "
                            f"is {what} (from its first bytes)"
                        )
            self._compressions = found
        return self._compressions

    def _source(self) -> str:
        return _fs.join(self._root, MANIFEST_NAME) if self._root is not None else MANIFEST_NAME

    # -- views -------------------------------------------------------------------------

    def split(self, name: str) -> Dataset:
        """The files of one split of a recordforge dataset."""
        if self.manifest is None or self._root is None:
            raise ValueError("split() needs a dataset directory with dataset.json")
        return _from_manifest(
            self._root, self.manifest, name, self.on_corrupt, self.max_record_bytes
        )

    def select(self, names: Sequence[str]) -> Dataset:
        """Only these features (context features or feature lists) are decoded; the
        others' bytes are skipped."""
        lists = self.schema.feature_lists
        missing = [n for n in names if n not in self.schema and n not in lists]
        if missing:
            have = [*self.schema, *lists]
            raise KeyError(f"no such features: {missing} (have {have})")
        schema = Schema(
            {n: self.schema[n] for n in names if n in self.schema},
            feature_lists={n: lists[n] for n in names if n in lists},
        )
        return self._replace(schema=schema)

    def shuffle(self, buffer_size: int, seed: int = 0) -> Dataset:
        """Shuffles the file order every epoch and records through a buffer of
        ``buffer_size``; the same seed gives the same orders, epoch after epoch."""
        order = dataclasses.replace(self._order, shuffle_buffer=buffer_size, seed=seed)
        return self._replace(order=order)

    def shard(self, index: int, count: int) -> Dataset:
        """Part ``index`` of ``count`` disjoint parts that together hold every record
        once: whole files when there are at least ``count``, else every ``count``-th
        record."""
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} is not in 0..{count - 1}")
        if self._order.shard is not None:
            raise ValueError("this dataset is already a shard")
        return self._replace(order=dataclasses.replace(self._order, shard=(index, count)))

    # -- sizes -------------------------------------------------------------------------

    def _file_counts(self, exact: bool = False) -> list[int]:
        """Records per file. Counts from ``dataset.json`` are checked before use, cheaply
        for ``len`` (each file's size, and its ``.idx`` when there is one), and
        ``exact``-ly for random access (the records counted: ``.idx`` lines or a framing
        walk) where a wrong count would silently give one record for another."""
        if self._counts is None:
            skip = self.on_corrupt == "skip"
            self._counts = [_count(f, self.max_record_bytes, skip) for f in self.files]
        elif self._claims is not None:
            for i in self._my_files():
                self._check_claim(i, exact)
        return self._counts

    def _check_claim(self, i: int, exact: bool) -> None:
        claim = self._claims[i] if self._claims is not None else None
        if claim is None or claim.checked >= (2 if exact else 1):
            return
        path = self.files[i]
        local = _is_local(path)
        if local and os.stat(path).st_size != claim.bytes:
            exact = True  # the file changed since dataset.json was written: count it
        if exact:
            # .idx lines when it covers the file, else a walk
            found: int | None = _count(path, self.max_record_bytes)
        elif local:
            found = _index.count(path, claim.bytes)  # None: no usable .idx, the size agrees
        else:
            return  # a remote shard: counted at the first random access
        if found is not None and found != claim.records:
            raise SchemaError(
                f"{claim.field['records']}: {claim.records}, but {path} holds {found} records"
            )
        claim.checked = 2 if exact else 1

    def _my_files(self) -> list[int]:
        """Indexes of the files this dataset reads (all, or its shard's)."""
        files = list(range(len(self.files)))
        shard = self._order.shard
        if shard is not None and len(self.files) >= shard[1]:
            return files[shard[0] :: shard[1]]
        return files

    def __len__(self) -> int:
        # Files, counts and the shard never change after construction: computed once.
        if self._len_cache is None:
            counted = self._count_mine()
            if self._read_count is not None and self._read_count != counted:
                self._name_wrong_count(counted, self._read_count)
            self._len_cache = counted
        return self._len_cache

    def _check_read(self, read: int, dropped: int | None) -> None:
        """A whole epoch gave ``read`` records (``dropped``: the batch size whose
        remainder was dropped): a count given before it (``dataset.json``, ``.idx``
        files), when one is at hand, must agree; else the file that disagrees is named.
        With ``on_corrupt="raise"`` only (skipping makes fewer records on purpose)."""
        if dropped is None:
            self._read_count = read
        if self._len_cache is not None:
            counted = self._len_cache
        elif self._counts is not None or all(
            _is_local(f) and os.path.isfile(f"{f}.idx") for f in self.files
        ):
            counted = self._count_mine()  # cheap: claims or .idx lines, no walk
        else:
            return
        whole = counted - counted % dropped if dropped else counted
        if whole != read:
            self._name_wrong_count(counted, read)

    def _name_wrong_count(self, counted: int, read: int) -> None:
        """Raises a :class:`SchemaError` naming the file whose given count (in
        ``dataset.json`` or its ``.idx``) is not what its framing holds."""
        counts = self._file_counts()
        for i in self._my_files():
            path = self.files[i]
            found = _count(path, self.max_record_bytes, use_index=False)
            claim = self._claims[i] if self._claims is not None else None
            if claim is not None and claim.records != found:
                raise SchemaError(
                    f"{claim.field['records']}: {claim.records}, but {path} holds {found} records"
                )
            if counts[i] != found:
                raise SchemaError(
                    f"{path}.idx lists {counts[i]} records, but {path} holds {found}"
                    " (a stale index: rebuild it with `recordforge index`, or remove it)"
                )
        raise SchemaError(f"{self!r}: len() is {counted}, but a whole read gave {read} records")

    def _count_mine(self) -> int:
        counts = self._file_counts()
        mine = sum(counts[i] for i in self._my_files())
        shard = self._order.shard
        if shard is not None and len(self.files) < shard[1]:
            index, count = shard
            return max(0, math.ceil((mine - index) / count))
        return mine

    # -- reading -----------------------------------------------------------------------

    def _plan(self) -> tuple[list[int], tuple[int, int] | None, tuple[int, int] | None]:
        """This epoch's reading plan: the files in order, ``(index, count)`` when a shard
        takes every ``count``-th record, and ``(buffer, seed)`` of the record shuffle."""
        epoch, self._epoch = self._epoch, self._epoch + 1
        order = self._order
        files = self._my_files()
        shuffle = None
        if order.shuffle_buffer and order.seed is not None:
            rng = np.random.default_rng([order.seed, epoch])
            files = [files[i] for i in rng.permutation(len(files))]
            shuffle = (order.shuffle_buffer, int(rng.integers(2**63)))
        every = None
        if order.shard is not None and len(self.files) < order.shard[1]:
            every = order.shard
        return files, every, shuffle

    def _raw(self) -> Iterator[bytes]:
        """Serialized records in this epoch's order, one at a time in Python: the
        reference for the Rust reader of :meth:`batches`, and its fallback for files it
        cannot open itself (not local paths)."""
        files, every, shuffle = self._plan()
        records: Iterator[bytes] = (r for i in files for r in self._file_records(self.files[i]))
        if every is not None:
            index, count = every
            records = (r for j, r in enumerate(records) if j % count == index)
        if shuffle is not None:
            records = _shuffled(records, *shuffle)
        return records

    def _file_records(self, path: str) -> Iterator[bytes]:
        compression = self._file_compressions()[self.files.index(path)]
        if self.on_corrupt == "raise" or compression is not None:
            yield from _read_records(path, self.max_record_bytes)
            return
        f = _core.RecordFile(_fs.staged(path), max_record_bytes=self.max_record_bytes)
        good, bad = f.intact()
        self.skipped.extend(
            {"file": path, "start": s, "end": e, "reason": why} for s, e, why in bad
        )
        for start in range(0, len(good), 1024):
            yield from f.read_many(good[start : start + 1024].tolist())

    def _wanted(self) -> list[tuple[str, str, int | None]]:
        if self._wanted_cache is None:
            out: list[tuple[str, str, int | None]] = []
            for name, spec in self.schema.items():
                fixed = spec.fixed
                width = math.prod(s for s in spec.shape if s is not None) if fixed else None
                out.append((name, spec.kind, width))
                if spec.ragged:
                    out.append((f"{name}/row_lengths", "int64", None))
            self._wanted_cache = out
        return self._wanted_cache

    def _columns(self, records: list[bytes]) -> dict[str, Any]:
        try:
            decoded = _core.decode_batch(records, self._wanted())
        except DecodeError as e:
            raise DecodeError(f"{self!r}: {e}") from None
        return self._with_lists(records, self._assemble(len(records), decoded))

    def _with_lists(self, records: Sequence[bytes], columns: dict[str, Any]) -> dict[str, Any]:
        """``columns`` and the feature lists of ``records`` (decoded in Python)."""
        if self.schema.feature_lists:
            try:
                columns.update(feature_list_columns(records, self.schema.feature_lists))
            except DecodeError as e:
                raise DecodeError(f"{self!r}: {e}") from None
        return columns

    def _assemble(self, n: int, decoded: Sequence[tuple[Any, np.ndarray]]) -> dict[str, Any]:
        """Columns from ``(values, row_splits)`` pairs in ``_wanted()`` order."""
        out: dict[str, Any] = {}
        for (name, kind, _), (values, splits) in zip(self._wanted(), decoded, strict=True):
            spec = self.schema.get(name)
            if kind == "bytes" and isinstance(values, list):
                values = np.array(values, dtype=object) if values else np.empty(0, object)
            if spec is not None and spec.fixed:
                out[name] = values.reshape((n, *spec.shape))
            elif spec is not None and len(spec.shape) == 2 and spec.shape[1] is not None:
                width = spec.shape[1]
                out[name] = Ragged(values.reshape(-1, width), splits // width)
            else:
                out[name] = Ragged(values, splits)
        return out

    def batches(
        self, batch_size: int, drop_remainder: bool = False, *, threads: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Dicts of columns, ``batch_size`` records each: fixed shapes as arrays of
        shape ``(batch, *shape)`` (bytes as object arrays), variable lengths as
        :class:`Ragged`. A ragged ``(None, None)`` feature comes as its values per record
        plus its ``<name>/row_lengths``. A feature list (SequenceExample records) is a
        :class:`~recordforge.RaggedSteps` (steps per record, values per step).

        Read in Rust on background threads (``threads``, default: one per CPU up to 8):
        files loaded in parallel (memory-mapped, or decompressed a chunk at a time), CRCs
        checked, the next batches decoded ahead of the one you are using; no Python
        object is made per record, and what is in flight is a few batches. After an
        error, every later ``next()`` raises it again."""
        sized = self._sized_batches(batch_size, drop_remainder, threads)
        return Sticky(columns for _, columns in sized)

    def _sized_batches(
        self, batch_size: int, drop_remainder: bool = False, threads: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """:meth:`batches` with each batch's number of records (which columns cannot
        tell when no feature is selected, or the records have none)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        batches = self._read_batches(batch_size, drop_remainder, threads)
        if self.on_corrupt == "skip":
            yield from batches
            return
        read = 0
        for n, columns in batches:
            read += n
            yield n, columns
        self._check_read(read, batch_size if drop_remainder else None)

    def _read_batches(
        self, batch_size: int, drop_remainder: bool, threads: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        # Feature lists are decoded from the records themselves (the Rust reader gives
        # columns of Example features only).
        if self.schema.feature_lists or not all(_is_local(f) for f in self.files):
            yield from self._sized_in_python(batch_size, drop_remainder)
            return
        files, every, shuffle = self._plan()
        reader = _core.BatchReader(
            [self.files[i] for i in files],
            self._wanted(),
            batch_size,
            drop_remainder=drop_remainder,
            skip_corrupt=self.on_corrupt == "skip",
            every=every,
            shuffle=shuffle,
            threads=threads,
            max_record_bytes=self.max_record_bytes,
        )
        for n, decoded, skipped in reader:
            for f, start, end, why in skipped:
                path = self.files[files[f]]
                self.skipped.append({"file": path, "start": start, "end": end, "reason": why})
            if n:
                yield n, self._assemble(n, decoded)

    def _batches_in_python(
        self, batch_size: int, drop_remainder: bool = False
    ) -> Iterator[dict[str, Any]]:
        """:meth:`batches` with the records read one at a time (see :meth:`_raw`)."""
        for _, columns in self._sized_in_python(batch_size, drop_remainder):
            yield columns

    def _sized_in_python(
        self, batch_size: int, drop_remainder: bool = False
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """:meth:`_sized_batches` with the records read one at a time."""
        pending: list[bytes] = []
        for record in self._raw():
            pending.append(record)
            if len(pending) == batch_size:
                yield len(pending), self._columns(pending)
                pending = []
        if pending and not drop_remainder:
            yield len(pending), self._columns(pending)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Records one at a time, as dicts; after an error, every later ``next()``
        raises it again (a retry loop does not take a damaged file for the end)."""
        return Sticky(self._records_one_by_one())

    def _records_one_by_one(self) -> Iterator[dict[str, Any]]:
        for n, batch in self._sized_batches(256):
            for i in range(n):
                yield {name: column[i] for name, column in batch.items()}

    # -- random access -----------------------------------------------------------------

    def _offsets_of(self, path: str) -> np.ndarray:
        """Each record's offset in ``path``: from its ``.idx`` when that covers the file
        exactly, else from one framing walk; as many as the file's checked count."""
        if path not in self._offsets:
            index = _index.read(path)
            if index is not None:
                offsets = index[0].astype(np.uint64)
            else:
                offsets = self._file(path).offsets(False)
            counts = self._file_counts(exact=True)
            expected = counts[self.files.index(path)]
            if len(offsets) != expected:  # the file changed since it was counted
                raise CorruptRecordError(
                    path, 0, f"{len(offsets)} records, {expected} when it was counted"
                )
            self._offsets[path] = offsets
        return self._offsets[path]

    def _check_uncompressed(self) -> None:
        """Random access reads records in place: a compressed shard is a ``TypeError``
        naming it (before anything is counted)."""
        found = self._file_compressions()
        if any(c is not None for c in found):
            path, compression = next(
                (p, c) for p, c in zip(self.files, found, strict=True) if c is not None
            )
            raise TypeError(
                f"{path}: random access (ds[i], take) needs uncompressed shards; "
                f"this one is {compression}-compressed"
            )

    def _file(self, path: str) -> Any:
        if path not in self._open:
            self._check_uncompressed()
            # A remote file is downloaded once for random access (memory-mapped).
            self._open[path] = _core.RecordFile(
                _fs.staged(path), max_record_bytes=self.max_record_bytes
            )
        return self._open[path]

    def _starts(self) -> np.ndarray:
        """Index of the first record of each of this dataset's files, and the total."""
        if self._starts_cache is None:
            counts = self._file_counts(exact=True)
            mine = [counts[f] for f in self._my_files()]
            self._starts_cache = np.concatenate([[0], np.cumsum(mine, dtype=np.int64)])
        return self._starts_cache

    def _stored(self, indices: np.ndarray) -> np.ndarray:
        """Checked record indexes (negative from the end) -> positions in the files."""
        n = len(self)
        bad = (indices < -n) | (indices >= n)
        if bad.any():
            raise IndexError(f"record {int(indices[bad][0])} of {n}")
        indices = np.where(indices < 0, indices + n, indices)
        shard = self._order.shard
        if shard is not None and len(self.files) < shard[1]:
            indices = shard[0] + indices * shard[1]
        return indices

    def take(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """The records at ``indices`` (in stored order; shuffling does not apply) as
        columns, like one of :meth:`batches`: read from the memory-mapped shards at the
        offsets of their ``.idx`` files (or of one framing walk), CRC-checked and decoded
        in Rust in one call. ``ds[indices]`` does the same.

        >>> import tempfile, numpy as np, recordforge as rf
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = rf.write_dataset({"id": np.arange(10) * 10}, d, max_records=4)
        ...     rf.open_dataset(d).take([7, 0, 7])["id"].tolist()
        [70, 0, 70]
        """
        self._check_uncompressed()
        where = self._stored(np.asarray(indices, dtype=np.int64).reshape(-1))
        starts = self._starts()
        mine = self._my_files()
        k = np.searchsorted(starts, where, side="right") - 1
        used = np.unique(k)
        offsets = np.empty(len(where), dtype=np.uint64)
        for f in used.tolist():
            hit = k == f
            offsets[hit] = self._offsets_of(self.files[mine[f]])[where[hit] - starts[f]]
        files = [self._file(self.files[mine[f]]) for f in used.tolist()]
        file_index = np.searchsorted(used, k).astype(np.int64)
        decoded = _core.take_records(files, file_index, offsets, self._wanted())
        columns = self._assemble(len(where), decoded)
        if not self.schema.feature_lists:
            return columns
        where_read = zip(file_index.tolist(), offsets.tolist(), strict=True)
        records = [files[j].read(offset) for j, offset in where_read]
        return self._with_lists(records, columns)

    def __getitem__(self, i: int | slice | Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Record ``i`` (in stored order; shuffling does not apply; negative from the
        end) as a dict: a NumPy scalar per one-value feature (``bytes`` for a string),
        an array per fixed shape or ``(None, w)`` feature, a 1-D array per other.

        One Rust call finds the file and offset (``.idx`` beside the shards, else one
        framing walk per file, both done once), checks both CRCs of the record in the
        memory-mapped file (opened once) and builds the dict. A slice, list or array of
        indexes gives columns (see :meth:`take`).

        >>> import tempfile, numpy as np, recordforge as rf
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = rf.write_dataset({"id": np.arange(10), "xy": np.ones((10, 2))}, d,
        ...                          max_records=4, index=True)
        ...     ds = rf.open_dataset(d)
        ...     ds[5], ds[-1]["id"]
        ({'id': np.int64(5), 'xy': array([1., 1.], dtype=float32)}, np.int64(9))
        """
        rows = self._rows_cache
        if rows is not None and type(i) is int:  # the common case, first: ~0.1 µs
            return rows[i]
        if isinstance(i, (int, np.integer)):
            if self.schema.feature_lists:
                return {name: column[0] for name, column in self.take([i]).items()}
            return (rows if rows is not None else self._rows())[i]
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return self.take(i)

    def _rows(self) -> _core.RowReader:
        """The Rust reader behind ``ds[i]``, made on first use; it opens each file
        (:meth:`_file`, :meth:`_offsets_of`) the first time one of its records is read."""
        self._check_uncompressed()
        features = []
        for name, kind, width in self._wanted():
            spec = self.schema.get(name)
            shape: tuple[int | None, ...] | None = None
            if spec is not None and spec.fixed:
                shape = tuple(spec.shape)
            elif spec is not None and len(spec.shape) == 2 and spec.shape[1] is not None:
                shape = spec.shape
            features.append((name, kind, width, shape))
        mine = self._my_files()
        counts = self._file_counts(exact=True)
        shard = self._order.shard
        every = shard if shard is not None and len(self.files) < shard[1] else None

        # The reader keeps ``load``, and this dataset keeps the reader: ``load`` holds the
        # dataset weakly, so that dropping the dataset frees its maps at once (the Rust
        # reader is opaque to the cycle collector: a cycle through it is never freed).
        owner = weakref.ref(self)

        def load(k: int) -> tuple[Any, np.ndarray]:
            ds = owner()
            if ds is None:
                raise ReferenceError("the dataset of this row reader was dropped")
            path = ds.files[mine[k]]
            return ds._file(path), ds._offsets_of(path)

        self._rows_cache = _core.RowReader([counts[f] for f in mine], features, load, every=every)
        return self._rows_cache

    # -- integrations ------------------------------------------------------------------

    def to_tf_dataset(self, **kwargs: Any) -> Any:
        """A ``tf.data.Dataset`` on TensorFlow's own reader and parser (see
        :mod:`recordforge.integrations.tf`)."""
        from recordforge.integrations.tf import to_tf_dataset

        return to_tf_dataset(self, **kwargs)

    def to_torch(self, batch_size: int | None = None, **kwargs: Any) -> Any:
        """A ``torch.utils.data.IterableDataset`` that divides the records between
        ``DataLoader`` workers and distributed ranks, each read once per epoch (see
        :mod:`recordforge.integrations.torch`)."""
        from recordforge.integrations.torch import to_torch

        return to_torch(self, batch_size, **kwargs)

    def to_grain(self, **kwargs: Any) -> Any:
        """A Grain random-access data source: ``len()`` and ``source[i]`` (see
        :mod:`recordforge.integrations.grain`)."""
        from recordforge.integrations.grain import to_grain

        return to_grain(self, **kwargs)


_MASK64 = (1 << 64) - 1
_ZERO = np.zeros(1, dtype=np.int64)


class _SplitMix:
    """SplitMix64: the generator of the Rust reader's shuffle buffer, step for step."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def below(self, n: int) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((z ^ (z >> 31)) * n) >> 64


def _shuffled(records: Iterator[bytes], buffer_size: int, seed: int) -> Iterator[bytes]:
    """The shuffle buffer of the Rust reader (``reader::Shuffler``), in Python."""
    rng = _SplitMix(seed)
    size = max(1, buffer_size)
    buffer: list[bytes] = []
    for record in records:
        if len(buffer) < size:
            buffer.append(record)
            continue
        j = rng.below(size)
        yield buffer[j]
        buffer[j] = record
    while buffer:
        j = rng.below(len(buffer))
        buffer[j], buffer[-1] = buffer[-1], buffer[j]
        yield buffer.pop()


def _is_local(path: str) -> bool:
    return "://" not in path


def _count(
    path: str,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    skip: bool = False,
    *,
    use_index: bool = True,
) -> int:
    """The records of a file: its ``.idx`` lines when the index covers the file exactly
    (and ``use_index``), else a framing walk. With ``skip``, a damaged local file counts
    the intact records that ``on_corrupt="skip"`` reads give (those of the
    resynchronising walk)."""
    index = _index.read(path) if use_index else None
    if index is not None:
        return len(index[0])
    limit = max_record_bytes
    if _is_local(path):
        try:
            count: int = _core.scan_records(path, "auto", False, max_record_bytes=limit)[0]
        except CorruptRecordError:
            if not skip:
                raise
            walk = _core.RecordWalker(path, payloads=False, max_record_bytes=limit)
            count = sum(1 for span in walk if span.kind == "record")
        return count
    with _fs.open_file(path) as f:
        count = _core.scan_records(f, "auto", False, max_record_bytes=limit)[0]
    return count


def _read_records(path: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[bytes]:
    """A file's records, CRCs checked; a URL (gs://, s3://, ...) is streamed through
    fsspec."""
    if _is_local(path):
        yield from _core.read_records(path, "auto", True, max_record_bytes=max_record_bytes)
        return
    with _fs.open_file(path) as f:
        yield from _core.read_records(f, "auto", True, max_record_bytes=max_record_bytes)


def _from_manifest(
    root: Path | str,
    manifest: Manifest,
    split: str | None,
    on_corrupt: OnCorrupt,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Dataset:
    if split is None:
        names = ["train"] if "train" in manifest.splits else list(manifest.splits)
    else:
        if split not in manifest.splits:
            raise KeyError(f"{root}: no split {split!r} (splits: {list(manifest.splits)})")
        names = [split]
    source = _fs.join(root, MANIFEST_NAME)
    files, claims = [], []
    for name in names:
        for k, shard in enumerate(manifest.splits[name]):
            field = Field(source)["splits"][name]["shards"][k]
            files.append(_shard_path(root, shard.file, field))
            claims.append(_Claim(field=field, records=shard.records, bytes=shard.bytes))
    ds = Dataset(
        files,
        manifest.schema or Schema({}),
        counts=[c.records for c in claims],
        manifest=manifest,
        root=root,
        on_corrupt=on_corrupt,
        claims=claims,
        max_record_bytes=max_record_bytes,
    )
    if all(_is_local(f) for f in files):
        ds._file_compressions()  # the manifest's claim checked now, against the bytes
    manifest.check(source)
    if manifest.schema is None:
        first = _first_records(files, on_corrupt == "skip", max_record_bytes)
        ds.schema = infer_sequence_schema(first)
    return ds


def _shard_path(root: Path | str, name: str, field: Field) -> str:
    """The path of a shard listed in ``dataset.json``: inside the dataset directory
    (links resolved) and a regular file; a missing one is a ``FileNotFoundError``."""
    if _fs.is_url(root):
        return _fs.join(root, name)  # a plain name (Manifest.from_json checked it)
    path = inside(root, name, field["file"])
    if not path.exists():
        raise FileNotFoundError(f"{field['file']}: {path}: no such file")
    return str(path)


def open_dataset(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    split: str | None = None,
    schema: Schema | None = None,
    on_corrupt: OnCorrupt = "raise",
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Dataset:
    """Opens a dataset directory (its ``dataset.json``; ``split`` picks one, default
    ``train`` when there is one, else all), a directory of TFRecord files, a glob, or a
    list. A list of files is one dataset (one schema inferred for all of them); a list
    that holds directories or globs opens each entry as above and reads them one after
    the other, when their schemas are the same (else a :class:`~recordforge.SchemaError`
    says which features differ). Without a manifest the schema is inferred: feature
    names and kinds from the first 1,000 records, value counts from every record (a
    feature is fixed-length only when every record has the same number of values), see
    ``_infer_schema``. When those records are ``tf.train.SequenceExample`` (they have
    feature lists), the context is inferred so and ``schema.feature_lists`` from every
    step of every record (:mod:`recordforge.sequence`; decoded in Python, slower). A
    record that claims more than ``max_record_bytes``
    (:data:`~recordforge.records.DEFAULT_MAX_RECORD_BYTES`, 1 GiB) is damaged: refused
    before anything is allocated for it, as :func:`~recordforge.read_records` does.

    >>> import tempfile, numpy as np, recordforge as rf
    >>> a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = rf.write_dataset({"id": np.arange(3)}, a)
    >>> _ = rf.write_dataset({"id": np.arange(3, 5)}, b)
    >>> [int(r["id"]) for r in rf.open_dataset([a, b])]
    [0, 1, 2, 3, 4]
    """
    on_corrupt = on_error_policy(on_corrupt, "on_corrupt")
    if _fs.is_url(path):
        check_finished(str(path).rstrip("/"))
        found = _remote_files(str(path).rstrip("/"))
        if isinstance(found, Manifest):
            ds = _from_manifest(str(path).rstrip("/"), found, split, on_corrupt, max_record_bytes)
            return ds if schema is None else ds._replace(schema=schema)
        files = found
    elif isinstance(path, (str, os.PathLike)):
        p = Path(path)
        check_finished(p)
        if (p / MANIFEST_NAME).exists():
            manifest = Manifest.load(p)
            ds = _from_manifest(p, manifest, split, on_corrupt, max_record_bytes)
            return ds if schema is None else ds._replace(schema=schema)
        if p.is_dir():
            files = sorted(str(f) for f in p.iterdir() if f.name.endswith(_SUFFIXES))
        elif any(c in str(path) for c in "*?["):
            files = sorted(glob.glob(str(path)))
        else:
            files = [str(p)]
    else:
        entries = [os.fspath(f) for f in path]
        if any(_fs.isdir(e) or any(c in e for c in "*?[") for e in entries):
            parts = [
                open_dataset(
                    e,
                    split=split,
                    schema=schema,
                    on_corrupt=on_corrupt,
                    max_record_bytes=max_record_bytes,
                )
                for e in entries
            ]
            return _joined(entries, parts, on_corrupt)
        files = entries
    if not files:
        raise FileNotFoundError(f"{path}: no TFRecord files")
    for f in files:
        if not _fs.isfile(f):
            hint = "" if isinstance(path, (str, os.PathLike)) else _LIST_HINT
            raise FileNotFoundError(f"{f}: no such file{hint}")
    for parent in dict.fromkeys(_fs.parent(f) for f in files):
        check_finished(parent)
    if schema is None:
        schema = _infer_schema(files, on_corrupt == "skip", max_record_bytes)
    return Dataset(files, schema, on_corrupt=on_corrupt, max_record_bytes=max_record_bytes)


_LIST_HINT = (
    " (a list given to open_dataset holds TFRecord files, dataset directories, "
    "directories of TFRecord files or globs)"
)


def _joined(entries: Sequence[str], parts: Sequence[Dataset], on_corrupt: OnCorrupt) -> Dataset:
    """One dataset reading ``parts`` (opened from ``entries``) one after the other; their
    schemas must be the same."""
    first = parts[0].schema
    for entry, part in zip(entries[1:], parts[1:], strict=True):
        if part.schema != first:
            names = list(dict.fromkeys([*first, *part.schema]))
            differ = [n for n in names if first.get(n) != part.schema.get(n)]
            shown = ", ".join(
                f"{n!r} ({_spec_text(first.get(n))} vs {_spec_text(part.schema.get(n))})"
                for n in differ[:5]
            )
            more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
            raise SchemaError(
                f"{entry}: its schema differs from {entries[0]}'s in {len(differ)} "
                f"feature(s): {shown}{more}"
            )
    files = [f for part in parts for f in part.files]
    known = all(part._counts is not None for part in parts)
    counts = [c for part in parts for c in part._counts or []] if known else None
    claims = (
        [c for part in parts for c in (part._claims or [None] * len(part.files))] if known else None
    )
    return Dataset(
        files,
        first,
        counts=counts,
        on_corrupt=on_corrupt,
        claims=claims,
        max_record_bytes=parts[0].max_record_bytes,
    )


def _spec_text(spec: FeatureSpec | None) -> str:
    if spec is None:
        return "absent"
    return f"{spec.dtype} {spec.shape}" + (f" {spec.meaning.tag}" if spec.meaning else "")


def _infer_schema(
    files: Sequence[str], skip: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Schema:
    """The schema of files without a manifest. Names and kinds come from the first
    records; then the number of values of every feature is counted in every record (a
    feature is fixed-length only when all records agree), so that a value missing in
    record 50,000 does not make the files unreadable with the schema inferred from them.
    Local uncompressed files are counted in Rust from a memory map (no value copied,
    ~10 GB/s on 2 cores); others are read through the columnar reader."""
    first = _first_records(files, skip, max_record_bytes)
    sample, sequence = sample_schema(first)
    lists = {}
    if sequence:  # SequenceExamples: every step of every record counted, in Python
        records = (
            r
            for f in files
            for r in (_intact_records if skip else _read_records)(f, max_record_bytes)
        )
        lists = infer_feature_lists(_core.decode_sequence_example(r)[1] for r in records)
    if not len(sample):
        return Schema(feature_lists=lists)
    names = list(sample)
    lengths: dict[str, set[int]] = {name: set() for name in names}
    kinds: dict[str, set[int]] = {name: set() for name in names}
    for f in files:
        if not _fs.is_url(f) and _plain(f):
            _count_in_rust(f, names, lengths, kinds, max_record_bytes)
        else:
            _count_by_reading(f, sample, lengths, max_record_bytes)
    codes = {1: "bytes", 2: "float32", 3: "int64"}
    features = {}
    for name, spec in sample.items():
        found = {codes[k] for k in kinds[name] if k in codes}
        if len(found) > 1:
            raise SchemaError(f"feature {name!r} holds {' and '.join(sorted(found))} values")
        dtype = found.pop() if found else spec.dtype
        seen = lengths[name]
        shape: tuple[int | None, ...] = (None,)
        if len(seen) == 1 and seen != {0}:
            (n,) = seen
            shape = () if n == 1 else (n,)
        features[name] = FeatureSpec(dtype=dtype, shape=shape)  # type: ignore[arg-type]
    return Schema(features, feature_lists=lists)


def _plain(path: str) -> bool:
    from recordforge.inspect._walker import detect_compression

    return detect_compression(path) is None


def _count_in_rust(
    path: str,
    names: list[str],
    lengths: dict[str, set[int]],
    kinds: dict[str, set[int]],
    max_record_bytes: int,
) -> None:
    offsets, _, crc_ok, _, kind, count, _, errors, _ = _core.verify_file(
        path, names, [False] * len(names), os.cpu_count() or 1, max_record_bytes=max_record_bytes
    )
    good = crc_ok.copy()
    good[[i for i, _ in errors]] = False
    shape = (len(offsets), len(names))
    kind, count = kind.reshape(shape)[good], count.reshape(shape)[good]
    for j, name in enumerate(names):
        # A missing feature counts as no values, as in infer_schema.
        lengths[name].update(np.unique(np.where(kind[:, j] < 0, 0, count[:, j])).tolist())
        kinds[name].update(np.unique(kind[:, j]).tolist())


def _count_by_reading(
    path: str, sample: Schema, lengths: dict[str, set[int]], max_record_bytes: int
) -> None:
    ragged = Schema({n: FeatureSpec(dtype=s.dtype, shape=(None,)) for n, s in sample.items()})
    ds = Dataset([path], ragged, on_corrupt="skip", max_record_bytes=max_record_bytes)
    for batch in ds.batches(8192):
        for name, column in batch.items():
            lengths[name].update(np.unique(np.diff(column.row_splits)).tolist())


def _remote_files(url: str) -> Manifest | list[str]:
    """A remote dataset's manifest, or the TFRecord files of a remote directory or glob."""
    if _fs.exists(_fs.join(url, MANIFEST_NAME)):
        return Manifest.load(url)
    if _fs.isdir(url):
        names = [n for n, is_dir in _fs.listdir(url) if not is_dir and n.endswith(_SUFFIXES)]
        return [_fs.join(url, n) for n in names]
    if any(c in url for c in "*?["):
        return _fs.glob(url)
    return [url]


def _first_records(
    files: Sequence[str], skip: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[bytes]:
    """The first records of ``files`` (for a schema); with ``skip``, damaged records are
    passed over as ``on_corrupt="skip"`` reads do."""
    n = 0
    limit = max_record_bytes
    for f in files:
        for record in _intact_records(f, limit) if skip else _read_records(f, limit):
            yield record
            n += 1
            if n == _SCHEMA_SCAN:
                return


def _intact_records(path: str, max_record_bytes: int) -> Iterator[bytes]:
    """A file's records whose both CRCs check, past any damage: for a plain file, those
    of the framing walk that resynchronises after damage; for a compressed one, those
    before the first damaged one (a broken stream cannot be resynchronised)."""
    from recordforge.inspect._walker import detect_compression

    if detect_compression(path) is None:
        f = _core.RecordFile(_fs.staged(path), max_record_bytes=max_record_bytes)
        good, _ = f.intact()
        for start in range(0, len(good), 1024):
            yield from f.read_many(good[start : start + 1024].tolist())
        return
    try:
        yield from _read_records(path, max_record_bytes)
    except CorruptRecordError:
        return

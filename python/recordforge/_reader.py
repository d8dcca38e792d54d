"""``Dataset``: TFRecord files with a schema, read for training: views (``select``,
``shuffle``, ``shard``, ``split``), sizes, columnar batches and records in order, and
random access (``ds[i]``, ``take``). Opening one (finding the files, inferring a schema)
is :func:`recordforge.open_dataset`'s."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core, _fs
from recordforge._decoded import RowsError, assemble, wanted
from recordforge._indexes import Rows, named_record, record_indexes, row_reader
from recordforge._ranged import Streams, fetch_records
from recordforge._shards import Claim, ShardFiles, first_records, manifest_shards, shuffled
from recordforge._sticky import Sticky
from recordforge.errors import DecodeError, OnError, SchemaError, on_error_policy
from recordforge.manifest import MANIFEST_NAME, Manifest
from recordforge.records import DEFAULT_MAX_RECORD_BYTES
from recordforge.schema import Schema
from recordforge.sequence import feature_list_columns, infer_sequence_schema

__all__ = ["Dataset", "OnCorrupt", "from_manifest"]

OnCorrupt = OnError  # the reading side's name for it


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
        claims: Sequence[Claim | None] | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        sampled: int | None = None,
    ) -> None:
        on_corrupt = on_error_policy(on_corrupt, "on_corrupt")
        #: The number of first records the schema was inferred from, when it was inferred
        #: from a sample (``open_dataset(infer="sample")``): the other records are checked
        #: as they are read, and one that disagrees is a :class:`SchemaError` naming it.
        self.sampled = sampled
        self.files = [_fs.fspath(f) for f in files]  # file:// URLs as the paths they name
        #: Records that claim more bytes are damaged (refused before any allocation).
        self.max_record_bytes = max_record_bytes
        self.schema = schema
        self.manifest = manifest
        self.on_corrupt: OnCorrupt = on_corrupt
        self._root = root
        self._shards = ShardFiles(
            self.files,
            counts=counts,
            claims=claims,
            manifest=manifest,
            source=self._source(),
            max_record_bytes=max_record_bytes,
            skip=on_corrupt == "skip",
        )
        self._order = order
        self._epoch = 0
        self._wanted_cache: list[tuple[str, str, int | None]] | None = None
        self._starts_cache: np.ndarray | None = None
        self._rows_cache: Rows | None = None
        self._arena: _core.Arena | None = None  # take(copy=False)'s reused buffer
        self._blocks: _core.BlockPool | None = None  # batches(copy=False)'s reused buffers
        self._len_cache: int | None = None
        #: Records of the last whole epoch read (no remainder dropped), checked by len.
        self._read_count: int | None = None
        #: Damaged regions skipped with ``on_corrupt="skip"``: file, start, end, reason.
        self.skipped: list[dict[str, Any]] = []

    def _replace(self, **changes: Any) -> Dataset:
        kwargs: dict[str, Any] = {
            "files": self.files,
            "schema": self.schema,
            "counts": self._shards.counts,
            "manifest": self.manifest,
            "root": self._root,
            "on_corrupt": self.on_corrupt,
            "order": self._order,
            "claims": self._shards.claims,
            "max_record_bytes": self.max_record_bytes,
            "sampled": self.sampled,
        }
        kwargs.update(changes)
        new = Dataset(**kwargs)
        if "files" not in changes:  # the same files: their compressions already looked at
            new._shards.known_compressions = self._shards.known_compressions
        return new

    def __repr__(self) -> str:
        return f"<Dataset {len(self.files)} files, features {list(self.schema)}>"

    @property
    def compression(self) -> str | None:
        """The shards' compression, ``"gzip"``, ``"zlib"`` or ``None``, from their first
        bytes (whatever their names or ``dataset.json`` say; a manifest that disagrees is a
        :class:`~recordforge.SchemaError`). Local files are each looked at; of remote ones,
        the first (the readers detect each file's own)."""
        found = self._shards.compressions()
        kinds = set(found)
        if len(kinds) > 1:
            first = found[0]
            other = next(i for i, c in enumerate(found) if c != first)
            raise ValueError(
                f"the files mix compressions: {self.files[0]} is {first or 'not compressed'}, "
                f"{self.files[other]} is {found[other] or 'not compressed'}"
            )
        return found[0] if found else None

    def _source(self) -> str:
        return _fs.join(self._root, MANIFEST_NAME) if self._root is not None else MANIFEST_NAME

    # -- views -------------------------------------------------------------------------

    def split(self, name: str) -> Dataset:
        """The files of one split of a recordforge dataset."""
        if self.manifest is None or self._root is None:
            raise ValueError("split() needs a dataset directory with dataset.json")
        return from_manifest(
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

    def shuffle(self, buffer_size: int, seed: int | None = 0) -> Dataset:
        """Shuffles the file order every epoch and records through a buffer of
        ``buffer_size``; the same seed gives the same orders, epoch after epoch (None: a
        random seed). A shard of records keeps its records, in a shuffled order."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2**63))
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
        """Records per file, claims of this dataset's files checked (see
        :meth:`ShardFiles.record_counts`)."""
        return self._shards.record_counts(self._my_files(), exact)

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

    def _check_read(self, read: int) -> None:
        """A whole epoch read ``read`` records (a dropped remainder included): a count
        given before it (``dataset.json``, ``.idx`` files), when one is at hand, must
        agree; else the file that disagrees is named. With ``on_corrupt="raise"`` only
        (skipping makes fewer records on purpose)."""
        self._read_count = read
        if self._len_cache is not None:
            counted = self._len_cache
        elif self._shards.counted_cheaply():
            counted = self._count_mine()  # cheap: claims or .idx lines, no walk
        else:
            return
        if counted != read:
            self._name_wrong_count(counted, read)

    def _name_wrong_count(self, counted: int, read: int) -> None:
        """Raises a :class:`SchemaError` naming the file whose given count (in
        ``dataset.json`` or its ``.idx``) is not what its framing holds."""
        self._shards.name_wrong_count(self._my_files())
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
        every = None
        if order.shard is not None and len(self.files) < order.shard[1]:
            every = order.shard
        shuffle = None
        if order.shuffle_buffer and order.seed is not None:
            rng = np.random.default_rng([order.seed, epoch])
            permutation = rng.permutation(len(files))
            if every is None:  # (a shard of records: every count-th of the stored order)
                files = [files[i] for i in permutation]
            shuffle = (order.shuffle_buffer, int(rng.integers(2**63)))
        return files, every, shuffle

    def _raw(self) -> Iterator[bytes]:
        """Serialized records in this epoch's order, one at a time in Python: the
        reference for the Rust reader of :meth:`batches`, and its fallback for files it
        cannot open itself (not local paths)."""
        files, every, shuffle = self._plan()
        records = self._shards.records_of([self.files[i] for i in files], self.skipped)
        if every is not None:
            index, count = every
            records = (r for j, r in enumerate(records) if j % count == index)
        if shuffle is not None:
            records = shuffled(records, *shuffle)
        return records

    def _wanted(self) -> list[tuple[str, str, int | None]]:
        if self._wanted_cache is None:
            self._wanted_cache = wanted(self.schema)
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
        try:
            return assemble(self.schema, self._wanted(), n, decoded)
        except RowsError as e:
            raise RowsError(f"{self!r}: {e}", e.record) from None

    def batches(
        self, batch_size: int, drop_remainder: bool = False, *, threads: int = 0, copy: bool = True
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
        error, every later ``next()`` raises it again.

        ``copy=False`` gives bytes values as read-only ``memoryview``s: a batch's values
        are copied (on the reading threads) into one buffer, reused by later batches once
        no view of it is left, so a view stays valid and unchanged while kept, and big
        values cost no fresh memory. SequenceExample datasets give ``bytes``."""
        sized = self._sized_batches(batch_size, drop_remainder, threads, copy)
        return Sticky(columns for _, columns in sized)

    def _sized_batches(
        self, batch_size: int, drop_remainder: bool = False, threads: int = 0, copy: bool = True
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """:meth:`batches`, with each batch's number of records (no feature: no column)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        # The remainder is read, then dropped here: every record of the epoch is counted.
        batches = self._read_batches(batch_size, False, threads, copy)
        read = 0
        try:
            for n, columns in batches:
                read += n
                if n == batch_size or not drop_remainder:
                    yield n, columns
        except SchemaError as e:
            raise self._explained(e) from None
        if self.on_corrupt != "skip":
            self._check_read(read)

    def _explained(self, e: SchemaError) -> SchemaError:
        """``e`` (a record that disagrees with the schema), with where the schema came
        from when it was inferred from a sample."""
        if self.sampled is None:
            return e
        return SchemaError(
            f"{e} (the schema was inferred from the first {self.sampled} records; pass "
            "schema=, or open_dataset(..., infer='all') to infer it from every record)"
        )

    def _read_batches(
        self, batch_size: int, drop_remainder: bool, threads: int, copy: bool
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.schema.feature_lists:  # decoded from the records (Rust: Examples only)
            yield from self._sized_in_python(batch_size, drop_remainder)
            return
        files, every, shuffle = self._plan()
        paths = [self.files[i] for i in files]
        self._blocks = self._blocks or (None if copy else _core.BlockPool())
        with Streams() as streams:  # remote files, streamed by range: closed at the end
            reader = _core.BatchReader(
                paths,
                self._wanted(),
                batch_size,
                drop_remainder=drop_remainder,
                skip_corrupt=self.on_corrupt == "skip",
                every=every,
                shuffle=shuffle,
                threads=threads,
                max_record_bytes=self.max_record_bytes,
                mapped=self._shards.kept_maps(paths),
                blocks=None if copy else self._blocks,
                open=streams if any(map(_fs.is_url, paths)) else None,  # (kept maps)
            )
            for n, decoded, skipped in reader:
                for f, start, end, why in skipped:
                    path = self.files[files[f]]
                    self.skipped.append({"file": path, "start": start, "end": end, "reason": why})
                if n:
                    yield n, self._assemble(n, decoded)

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

    @property
    def _remote(self) -> bool:  # random access reads it by range, not mapped
        return any(_fs.is_url(f) for f in self.files)

    def _starts(self) -> np.ndarray:
        """Index of the first record of each of this dataset's files, and the total."""
        if self._starts_cache is None:
            self._shards.locate_remote(self._my_files())
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

    def take(self, indices: Sequence[int] | np.ndarray, *, copy: bool = True) -> dict[str, Any]:
        """The records at ``indices`` (in stored order; shuffling does not apply) as
        columns, like one of :meth:`batches`: read from the memory-mapped shards at the
        offsets of their ``.idx`` files (or of one framing walk), CRC-checked and decoded
        in Rust in one call. ``ds[indices]`` does the same.

        ``copy=False`` gives bytes values as read-only ``memoryview``s instead of
        ``bytes`` (``bytes(v)`` copies one): the records are copied into one buffer,
        both CRCs checked on the copy, and the next ``take(copy=False)`` reuses that
        buffer once no view of it is left. A view stays valid, and unchanged, while it is
        kept; big records then cost no fresh memory per call (``bytes`` values of 150 KB
        are new pages the kernel zeroes, every call). Remote datasets give ``bytes``.

        >>> import tempfile, numpy as np, recordforge as rf
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = rf.write_dataset({"id": np.arange(10) * 10, "s": ["a", "bc"] * 5}, d,
        ...                          max_records=4)
        ...     ds = rf.open_dataset(d)
        ...     ds.take([7, 0, 7])["id"].tolist(), bytes(ds.take([1], copy=False)["s"][0])
        ([70, 0, 70], b'bc')
        """
        try:
            return self._take(indices, copy=copy)
        except SchemaError as e:
            raise self._explained(e) from None

    def _take(self, indices: Sequence[int] | np.ndarray, *, copy: bool = True) -> dict[str, Any]:
        self._shards.check_uncompressed()
        where = self._stored(record_indexes(indices))
        starts = self._starts()
        mine = self._my_files()
        k = np.searchsorted(starts, where, side="right") - 1
        used = np.unique(k)
        if any(_fs.is_url(self.files[mine[f]]) for f in used.tolist()):
            self._shards.check_uncompressed([self.files[mine[f]] for f in used.tolist()])
            return self._take_by_range(where, k, used)
        offsets = np.empty(len(where), dtype=np.uint64)
        for f in used.tolist():
            hit = k == f
            offsets[hit] = self._shards.offsets(self.files[mine[f]], mine)[where[hit] - starts[f]]
        files = [self._shards.record_file(self.files[mine[f]]) for f in used.tolist()]
        file_index = np.searchsorted(used, k).astype(np.int64)
        arena = None if copy else self._arena or _core.Arena()
        self._arena = arena or self._arena
        decoded = _core.take_records(files, file_index, offsets, self._wanted(), arena=arena)
        try:
            columns = assemble(self.schema, self._wanted(), len(where), decoded)
        except RowsError as e:
            paths = [self.files[mine[f]] for f in used.tolist()]
            raise named_record(e, paths, file_index, offsets) from None
        if not self.schema.feature_lists:
            return columns
        read = zip(file_index.tolist(), offsets.tolist(), strict=True)
        return self._with_lists([files[j].read(offset) for j, offset in read], columns)

    def _take_by_range(self, where: np.ndarray, k: np.ndarray, used: np.ndarray) -> dict[str, Any]:
        """:meth:`take` of remote records: their frames only (:mod:`recordforge._ranged`)."""
        starts, mine = self._starts(), self._my_files()
        records: list[bytes] = [b""] * len(where)
        for f in used.tolist():
            hit = np.flatnonzero(k == f)
            path = self.files[mine[f]]
            spans, local = np.stack(self._shards.spans(path, mine)), where[hit] - starts[f]
            for i, record in zip(hit.tolist(), fetch_records(path, *spans[:, local]), strict=True):
                records[i] = record
        return self._columns(records)

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
        try:
            rows = self._rows_cache
            if rows is not None and type(i) is int:  # the common case, first: ~0.1 µs
                return rows[i]
            return self._getitem(i)
        except SchemaError as e:
            raise self._explained(e) from None

    def _getitem(self, i: int | slice | Sequence[int] | np.ndarray) -> dict[str, Any]:
        rows = self._rows_cache
        if isinstance(i, (bool, np.bool_)):
            raise TypeError("True and False are not record indexes")
        if isinstance(i, (int, np.integer)):
            if self.schema.feature_lists or self._remote:
                return {name: column[0] for name, column in self._take([i]).items()}
            return (rows if rows is not None else self._rows())[i]
        if isinstance(i, slice):
            return self._take(np.arange(len(self))[i])
        return self._take(i)

    def _rows(self) -> Rows:
        """The Rust reader behind ``ds[i]``, made on first use."""
        self._rows_cache = row_reader(self)
        return self._rows_cache

    # -- integrations ------------------------------------------------------------------

    def to_tf_dataset(self, **kwargs: Any) -> Any:
        """A ``tf.data.Dataset`` on TensorFlow's own reader and parser (see
        :mod:`recordforge.integrations.tf`)."""
        return _integration("tf").to_tf_dataset(self, **kwargs)

    def to_torch(self, batch_size: int | None = None, **kwargs: Any) -> Any:
        """A ``torch.utils.data.IterableDataset`` that divides the records between
        ``DataLoader`` workers and distributed ranks, each read once per epoch (see
        :mod:`recordforge.integrations.torch`)."""
        return _integration("torch").to_torch(self, batch_size, **kwargs)

    def to_grain(self, **kwargs: Any) -> Any:
        """A Grain random-access data source: ``len()`` and ``source[i]`` (see
        :mod:`recordforge.integrations.grain`)."""
        return _integration("grain").to_grain(self, **kwargs)


def _integration(name: str) -> Any:
    """``recordforge.integrations.<name>``, imported on first use: each imports its
    framework (TensorFlow, PyTorch, Grain), which ``import recordforge`` must not."""
    return importlib.import_module(f"recordforge.integrations.{name}")


def from_manifest(
    root: Path | str,
    manifest: Manifest,
    split: str | None,
    on_corrupt: OnCorrupt,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Dataset:
    """The dataset of a directory with ``dataset.json``: the split ``split`` (``None``:
    ``train`` when there is one, else all), the manifest's compression checked against
    the bytes of local shards."""
    if split is None:
        names = ["train"] if "train" in manifest.splits else list(manifest.splits)
    else:
        if split not in manifest.splits:
            raise KeyError(f"{root}: no split {split!r} (splits: {list(manifest.splits)})")
        names = [split]
    files, claims = manifest_shards(root, manifest, names)
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
    if not any(_fs.is_url(f) for f in files):
        ds._shards.compressions()  # the manifest's claim checked now, against the bytes
    manifest.check(_fs.join(root, MANIFEST_NAME))
    if manifest.schema is None:
        first = first_records(files, on_corrupt == "skip", max_record_bytes)
        ds.schema = infer_sequence_schema(first)
    return ds

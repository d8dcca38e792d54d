"""The engine of ``write_dataset`` in one process: a split's items, converted, written
into shards (:class:`ShardWriter`, each shard completed atomically and recorded in the
journal) by :func:`write_split`; and :class:`RecordSample`, the schema of the records
summarised in Rust as they are written, so that a dataset whose schema is inferred needs
no second pass over its files.

Records of small items (a feature dict, an image's few records) are gathered and
handed to the I/O thread a few hundred at a time: a hand-off per item costs more than
encoding its record.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core, _fs
from recordforge._atomic import fsync as _fsync
from recordforge._atomic import stage, write_bytes_atomic
from recordforge._outdir import Journal
from recordforge._remote import RemoteJournal, RemoteOutputDir, named_url, put_shard
from recordforge.errors import ItemError, OnError
from recordforge.example import RecordBatch
from recordforge.pipeline import ConversionReport, Converted, bytes_only, observed, outcome
from recordforge.records import TFRecordWriter
from recordforge.schema import Schema
from recordforge.sequence import schema_of_sample
from recordforge.sharding import (
    FEW_RECORDS,
    FIT_WINDOW,
    FRAME_OVERHEAD,
    ShardPlanner,
    WriteOptions,
    frame_sizes,
    shard_bounds,
)

__all__ = ["Progress", "RecordSample", "Shard", "ShardWriter", "write_split"]

# Called after each item with the records and payload bytes it produced.
Progress = Callable[[int, int], None]

# Records of small items gathered before one write on the I/O thread (whichever limit
# comes first): a thread hand-off per record costs about as much as encoding it.
GATHER_RECORDS = 256
GATHER_BYTES = 8 << 20
# Remote shards whose uploads may be finishing together while the next shard is
# written: the store takes several uploads at once much faster than one after another.
# Each holds at most one part (``_fs.part_size()``) in memory.
UPLOADS = 4


class RecordSample:
    """The kinds and lengths of the records written, summarised in Rust as they are
    written (:class:`recordforge._core.SchemaSample`, no Python value per record): the
    schema :func:`~recordforge.infer_sequence_schema` finds in the files afterwards, when
    every record of the dataset went through :meth:`add` in file order. Otherwise (a
    resumed conversion, worker processes, column batches, feature lists, a record that
    does not decode or whose kinds disagree) :meth:`schema` is None and the files are
    read again, which also raises whatever error the records give."""

    def __init__(self) -> None:
        self.sample: _core.SchemaSample | None = _core.SchemaSample(1 << 62, 1 << 62)

    def drop(self) -> None:
        """Not every record goes through the sample: it says nothing."""
        self.sample = None

    def add(self, records: Sequence[bytes]) -> None:
        sample = self.sample
        if sample is None:
            return
        try:
            for record in records:
                sample.add(record, "")
        except ValueError:  # a SchemaError, DecodeError: raised by the pass over the files
            self.sample = None

    def schema(self) -> Schema | None:
        sample = self.sample
        if sample is None or sample.lists or not sample.records:
            return None
        return schema_of_sample(sample)


@dataclasses.dataclass
class _Upload:
    """A remote shard closed by the caller, its upload finishing on a thread: recorded
    in the journal, in shard order, once it and every shard before it are committed."""

    future: concurrent.futures.Future[tuple[int, str]]  # (size, checksum)
    name: str
    position: tuple[int, int]
    records: int
    report: dict[str, Any]


@dataclasses.dataclass
class Shard:
    """A completed shard, under its intermediate name until the conversion finishes."""

    tmp: str
    records: int
    bytes: int
    checksum: str


class ShardWriter:
    """Writes one split's records into shards, completing each atomically. Into a
    remote directory (``out`` a :class:`~recordforge._remote.RemoteOutputDir`), each
    shard is streamed to its intermediate key while it is written (the store commits it
    when it is closed); shards written by workers go to local files first, each
    uploaded when it is complete. A streamed shard's upload finishes on a thread
    (:data:`UPLOADS` at once) while the next shard is written; shards are recorded in
    the journal in order, each once it and those before it are committed."""

    def __init__(
        self,
        out: Path | RemoteOutputDir,
        split: str,
        options: WriteOptions,
        journal: Journal,
        report: ConversionReport,
        sample: RecordSample | None = None,
    ) -> None:
        self.target, self.split, self.options, self.journal = out, split, options, journal
        self.sample = sample
        self.url = out.url if isinstance(out, RemoteOutputDir) else None
        self.report = report
        self.state = journal.split(split)
        self.writer: TFRecordWriter | None = None
        # The open shard's records; per record of it, in chunks: frame offsets and sizes.
        self.records = 0
        self.offsets: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recordforge-io")
        self.pending: concurrent.futures.Future[np.ndarray] | None = None
        # Records given but not yet handed to the I/O thread, and their bytes.
        self.gathered: list[bytes] = []
        self.gathered_bytes = 0
        self.uploads = (
            concurrent.futures.ThreadPoolExecutor(UPLOADS, thread_name_prefix="recordforge-upload")
            if self.url is not None
            else None
        )
        self.uploading: collections.deque[_Upload] = collections.deque()
        # A journal entry whose writing failed or was interrupted: nothing more is
        # recorded (a later entry would take its number and skip its shard).
        self.unrecorded = False

    def planner(
        self, bounds: list[int] | None, total: int | None, records: int | None
    ) -> ShardPlanner:
        """The planner of this split, from where its journal ends. With ``num_shards``,
        shards end at the item counts ``bounds`` when given, else at record counts when
        the number of ``records`` is known, else at item counts over ``total`` items."""
        shards = self.state["shards"]
        done = sum(shard["records"] for shard in shards)
        n = self.options.num_shards
        if not n:
            return ShardPlanner(self.options, shards=len(shards), records=done)
        if bounds is None and records is not None:
            return ShardPlanner(
                self.options,
                record_bounds=shard_bounds(records, n),
                shards=len(shards),
                records=done,
            )
        if bounds is None:
            assert total is not None  # checked by write_dataset before anything is written
            bounds = shard_bounds(total, n)
        return ShardPlanner(self.options, item_bounds=bounds, shards=len(shards), records=done)

    def wait(self) -> None:
        """Waits for the write in flight, if any (raising its error)."""
        if self.pending is not None:
            # Cleared only once the write is over: an interrupt while waiting must leave
            # it for abandon() to wait for.
            try:
                offsets = self.pending.result()
            except Exception as e:  # a store's error names the shard's key
                raise named_url(e, self.url, self.tmp_name()) from e
            self.pending = None
            self.offsets.append(offsets)

    def shutdown(self) -> None:
        self.io.shutdown(wait=True)
        if self.uploads is not None:
            self.uploads.shutdown(wait=True)

    @property
    def out(self) -> Path:
        """Where shard files are written locally: the output directory, or (remote)
        the local directory of the shards that workers write."""
        target = self.target
        return target.staging if isinstance(target, RemoteOutputDir) else target

    def _partial(self) -> Path | None:
        """The local file of the open shard (None: it is streamed to the store)."""
        return None if self.url is not None else self.out / f"{self.tmp_name()}.partial"

    @property
    def index(self) -> int:
        """The open shard's number (shards recorded, then those still uploading)."""
        return len(self.state["shards"]) + len(self.uploading)

    def tmp_name(self) -> str:
        """The completed shard's intermediate name (``.<split>-<index>.shard``)."""
        return f".{self.split}-{self.index:05d}.shard"

    def open_if_needed(self) -> TFRecordWriter:
        if self.writer is None:
            partial = self._partial()
            self.writer = TFRecordWriter(
                partial if partial is not None else _fs.join(str(self.url), self.tmp_name()),
                self.options.compression,
                checksum=self.options.checksum,
            )
            self._clear()
        return self.writer

    def _clear(self) -> None:
        self.records = 0
        self.offsets, self.sizes = [], []

    def write_range(
        self, records: Sequence[bytes], frames: np.ndarray | list[int], start: int, stop: int
    ) -> None:
        """Writes ``records[start:stop]`` (frame sizes ``frames[start:stop]``), a
        :data:`FIT_WINDOW` at a time."""
        while start < stop:
            n = min(FIT_WINDOW, stop - start)
            self.write_many(records, frames[start : start + n], start, n)
            start += n

    def write_many(
        self, records: Sequence[bytes], sizes: np.ndarray | list[int], start: int, n: int
    ) -> None:
        """Writes ``records[start:start + n]``, whose frame sizes are ``sizes``, on the
        I/O thread while the caller encodes the next ones (one write in flight at a time,
        so memory stays within two batches). Records of a list are gathered first, up
        to :data:`GATHER_RECORDS` or :data:`GATHER_BYTES`."""
        writer = self.open_if_needed()
        if isinstance(records, RecordBatch):
            self.flush()
            self.wait()
            if self.sample is not None:
                self.sample.drop()
            self.pending = self.io.submit(writer.write_batch, records, start, start + n)
        else:
            chunk = records[start : start + n]
            self.gathered.extend(chunk)
            self.gathered_bytes += sum(map(len, chunk))
            if len(self.gathered) >= GATHER_RECORDS or self.gathered_bytes >= GATHER_BYTES:
                self.flush()
        if self.options.index:  # (the sizes are only the index's)
            self.sizes.append(np.asarray(sizes, dtype=np.int64))
        self.records += n

    def flush(self) -> None:
        """Hands the gathered records to the I/O thread (after the write in flight)."""
        if not self.gathered:
            return
        writer, sample = self.open_if_needed(), self.sample
        chunk, self.gathered, self.gathered_bytes = self.gathered, [], 0
        self.wait()

        def write() -> np.ndarray:
            offsets = np.asarray(writer.write_many(chunk), dtype=np.uint64)
            if sample is not None:
                sample.add(chunk)
            return offsets

        self.pending = self.io.submit(write)

    def complete(self, position: tuple[int, int]) -> None:
        """Closes the current shard (an empty one if none is open) and commits it (a
        streamed remote shard: its upload finishes on a thread, :meth:`settle`)."""
        writer = self.open_if_needed()
        self.flush()
        self.wait()
        offsets = np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.uint64)
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
        if self.uploads is not None:
            self._upload(writer, position, _index_text(self.options, offsets, sizes))
            return
        writer.close()
        self.commit(
            self._partial(),
            position,
            self.records,
            writer.checksum or "",
            offsets,
            sizes,
            self.report.to_json(),
        )
        self.writer = None
        self._clear()

    def _upload(
        self, writer: TFRecordWriter, position: tuple[int, int], index: bytes | None
    ) -> None:
        assert self.uploads is not None and self.url is not None
        url, name = self.url, self.tmp_name()
        journal = self.journal

        def upload() -> tuple[int, str]:
            try:
                # A run whose output was taken over commits no more shards: its uploads
                # in flight would replace the new run's objects of the same names.
                if isinstance(journal, RemoteJournal):
                    journal.check_held()
                writer.close()  # the store commits the upload
            except BaseException as e:  # not committed: the upload is discarded now
                writer.__exit__(type(e), e, e.__traceback__)
                raise named_url(e, url, name) from e
            try:
                stage("shard closed")
                return put_shard(url, None, name, index), writer.checksum or ""
            except Exception as e:
                raise named_url(e, url, name) from e

        future = self.uploads.submit(upload)
        self.uploading.append(_Upload(future, name, position, self.records, self.report.to_json()))
        self.writer = None
        self._clear()
        self.settle(UPLOADS - 1)

    def settle(self, keep: int = 0) -> None:
        """Records in the journal, in shard order, the uploads that are over, waiting
        for the oldest until at most ``keep`` are in flight; an upload's error is raised
        (the shards after it are not recorded: a rerun writes them again)."""
        while self.uploading and (len(self.uploading) > keep or self.uploading[0].future.done()):
            if self.unrecorded:  # a record that failed: no later shard may follow it
                raise RuntimeError("a shard's journal entry was not written")
            done = self.uploading[0]
            size, checksum = done.future.result()
            shard = Shard(tmp=done.name, records=done.records, bytes=size, checksum=checksum)
            where = list(done.position)
            self.unrecorded = True  # until the entry is written (an interrupt included)
            self.journal.record(
                self.split, done.report, shard=dataclasses.asdict(shard), position=where
            )
            self.unrecorded = False
            self.uploading.popleft()

    def commit(
        self,
        partial: Path | None,
        position: tuple[int, int],
        records: int,
        checksum: str,
        offsets: np.ndarray,
        sizes: np.ndarray,
        report: dict[str, Any],
    ) -> None:
        """A closed shard file ``partial`` (of ``records`` records at frame ``offsets``
        and of frame ``sizes``): writes its index, renames it to its intermediate name
        and only then records it, with the input position reached and the ``report`` of
        the items before that position, in the journal. Remote: ``partial`` (a shard
        written by workers) is uploaded under the intermediate key, or is None (the
        shard was streamed there), then the index is written."""
        stage("shard closed")
        name = self.tmp_name()
        index = _index_text(self.options, offsets, sizes)
        if self.url is not None:
            size = put_shard(self.url, partial, name, index)
        else:
            assert partial is not None
            if index is not None:
                # By rename, which replaces whatever is there (a link is not followed).
                write_bytes_atomic(self.out / f"{name}.idx", index)
                stage("shard index written")
            _fsync(partial)
            size = partial.stat().st_size
            os.replace(partial, self.out / name)
            stage("shard renamed to its intermediate name")
        shard = Shard(tmp=name, records=records, bytes=size, checksum=checksum)
        self.journal.record(
            self.split, report, shard=dataclasses.asdict(shard), position=list(position)
        )

    def abandon(self) -> None:
        # Every write in flight ends before the writer is closed under it. Uploads in
        # flight end too; those committed are recorded, in order, up to the first that
        # failed (a journal that cannot be written, a takeover's, records none): a rerun
        # writes the others again.
        self.io.shutdown(wait=True)
        if self.uploads is not None:
            self.uploads.shutdown(wait=True)
            with contextlib.suppress(Exception):  # the error being raised is the one to see
                self.settle()
            self.uploading.clear()
        self.pending = None
        self.gathered, self.gathered_bytes = [], 0
        if self.writer is not None:
            if self.url is not None:
                # The upload is aborted, not committed.
                self.writer.__exit__(RuntimeError, None, None)
            else:
                # A writer whose write failed raises that again: the error being raised
                # is the one to see, and the partial file goes all the same.
                with contextlib.suppress(OSError):
                    self.writer.close()
                (self.out / f"{self.tmp_name()}.partial").unlink(missing_ok=True)
            self.writer = None
            self._clear()


def _index_text(options: WriteOptions, offsets: np.ndarray, sizes: np.ndarray) -> bytes | None:
    """A shard's index file (``offset size`` per record), if indexes are written."""
    if not options.index:
        return None
    pairs = zip(offsets.tolist(), sizes.tolist(), strict=True)
    return "".join(f"{o} {s}\n" for o, s in pairs).encode("ascii")


def _frames(records: Sequence[bytes]) -> np.ndarray | list[int]:
    """:func:`~recordforge.sharding.frame_sizes`; a list for a few records (an item's:
    NumPy costs more than the rest of the item's bookkeeping)."""
    if len(records) <= FEW_RECORDS and not isinstance(records, RecordBatch):
        return [len(r) + FRAME_OVERHEAD for r in records]
    return frame_sizes(records)


def _payload(records: Sequence[bytes], frames: np.ndarray | list[int], first: int) -> int:
    """The bytes of ``records[first:]`` (without NumPy for a list of a few)."""
    if isinstance(records, RecordBatch):
        return int(frames[first:].sum()) - FRAME_OVERHEAD * (len(records) - first)  # type: ignore[union-attr]
    return sum(map(len, records[first:] if first else records))


def write_split(
    results: Iterable[Sequence[bytes] | Converted | ItemError],
    shards: ShardWriter,
    planner: ShardPlanner,
    on_error: OnError,
    report: ConversionReport,
    progress: Progress | None,
) -> None:
    """Writes a split from the conversions of its items, from where its journal ends."""
    start_item, start_record = shards.state["position"]
    consumed = start_item
    try:
        for position, result in enumerate(results, start_item):
            records, items, errors = outcome(result)
            bytes_only(records, position)
            counters = observed(result)
            first = start_record if position == start_item else 0
            frames = _frames(records)
            starts = planner.add(position, frames, first)
            s = 0
            # Before this item's errors are reported: the journal saved with a shard holds
            # the report of the items before it only.
            while s < len(starts) and starts[s][1] == first:
                shards.complete(starts[s])
                s += 1
            for error in errors if first == 0 or not records else ():
                if on_error == "raise":
                    raise error
                report.skip(error.item, error.reason)
            k = first
            for start in starts[s:]:
                shards.write_range(records, frames, k, start[1])
                shards.complete(start)
                k = start[1]
            shards.write_range(records, frames, k, len(records))
            consumed = position + 1
            report.items += items
            for name, n in counters.items():
                report.count(name, n)
            if progress is not None:
                progress(len(records) - first, _payload(records, frames, first))
        for _ in range(planner.finish()):
            shards.complete((consumed, 0))
        shards.settle()
        shards.journal.record(shards.split, report.to_json(), done=True)
    except BaseException:
        shards.abandon()
        raise
    finally:
        shards.shutdown()

"""``write_dataset``: records -> sharded TFRecord files + ``dataset.json``.

Shards are written under a temporary name and renamed when complete; a journal
(``.recordforge-progress.json``) records each completed shard and how far into the
input it reached, so a rerun of an interrupted conversion skips the work already done
and ends with exactly the files an uninterrupted run writes. ``dataset.json`` is written
last, atomically; then the journal is removed.

This module holds the engine: the shard writer, its use of the journal, the commit,
and ``write_dataset`` / ``write_source``; the output directory is ``_outdir``'s (a URL:
``_remote``'s, shards streamed to the store). With ``workers`` > 1, worker processes
convert and write the shards (``_parallel``), with the bytes of one worker. What it
shares with Beam: ``pipeline``, ``sharding`` (the one planner) and ``columns``.

>>> import tempfile, recordforge as rf
>>> rows = [{"id": i, "text": f"row {i}"} for i in range(10)]
>>> with tempfile.TemporaryDirectory() as d:
...     manifest = rf.write_dataset(rows, d, max_records=4)
...     files = [s.file for s in manifest.splits["train"]]
...     back = [rf.decode_example(r)["id"][0] for f in files for r in rf.read_records(f"{d}/{f}")]
>>> files
['train-00000-of-00003.tfrecord', 'train-00001-of-00003.tfrecord', 'train-00002-of-00003.tfrecord']
>>> back == list(range(10))
True
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recordforge import _core, _fs, _parallel
from recordforge._atomic import fsync as _fsync
from recordforge._atomic import stage, write_bytes_atomic
from recordforge._fs import is_url
from recordforge._outdir import Journal, OutputDir, command_fingerprint
from recordforge._remote import RemoteOutputDir, move, named_url, put_shard
from recordforge.columns import encode_batch, plan_split
from recordforge.errors import ItemError, OnError, on_error_policy
from recordforge.example import RecordBatch
from recordforge.manifest import Manifest, ShardInfo
from recordforge.pipeline import (
    ConversionReport,
    Converted,
    SchemaAfter,
    Source,
    ToRecords,
    attempt,
    default_to_records,
    has_count,
    has_report,
    has_tally,
    observed,
    outcome,
)
from recordforge.records import TFRecordWriter, read_records
from recordforge.schema import Schema
from recordforge.sequence import infer_sequence_schema
from recordforge.sharding import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TEMPLATE,
    FIT_WINDOW,
    FRAME_OVERHEAD,
    ShardPlanner,
    WriteOptions,
    frame_sizes,
    parse_size,
    shard_bounds,
    split_counts,
)

# The conversion protocol and the sharding options are defined in pipeline.py and
# sharding.py; they stay importable from here, where write_dataset takes them.
__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TEMPLATE",
    "ConversionReport",
    "Converted",
    "ItemError",
    "Progress",
    "ToRecords",
    "WriteOptions",
    "parse_size",
    "write_dataset",
    "write_source",
]

# Called after each item with the records and payload bytes it produced.
Progress = Callable[[int, int], None]


@dataclasses.dataclass
class _Shard:
    """A completed shard, under its intermediate name until the conversion finishes."""

    tmp: str
    records: int
    bytes: int
    checksum: str


class _ShardWriter:
    """Writes one split's records into shards, completing each atomically. Into a
    remote directory (``out`` a :class:`~recordforge._remote.RemoteOutputDir`), each
    shard is streamed to its intermediate key while it is written (the store commits it
    when it is closed); shards written by workers go to local files first, each
    uploaded when it is complete."""

    def __init__(
        self,
        out: Path | RemoteOutputDir,
        split: str,
        options: WriteOptions,
        journal: Journal,
        report: ConversionReport,
    ) -> None:
        self.target, self.split, self.options, self.journal = out, split, options, journal
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
            except OSError as e:  # a store's error names the shard's key
                raise named_url(e, self.url, self.tmp_name()) from e
            self.pending = None
            self.offsets.append(offsets)

    def shutdown(self) -> None:
        self.io.shutdown(wait=True)

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
        return len(self.state["shards"])

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
        self, records: Sequence[bytes], frames: np.ndarray, start: int, stop: int
    ) -> None:
        """Writes ``records[start:stop]`` (frame sizes ``frames[start:stop]``), a
        :data:`FIT_WINDOW` at a time."""
        while start < stop:
            n = min(FIT_WINDOW, stop - start)
            self.write_many(records, frames[start : start + n], start, n)
            start += n

    def write_many(self, records: Sequence[bytes], sizes: np.ndarray, start: int, n: int) -> None:
        """Writes ``records[start:start + n]``, whose frame sizes are ``sizes``, on the
        I/O thread while the caller encodes the next ones (one write in flight at a time,
        so memory stays within two batches)."""
        writer = self.open_if_needed()
        self.wait()
        if isinstance(records, RecordBatch):
            self.pending = self.io.submit(writer.write_batch, records, start, start + n)
        else:
            chunk = records[start : start + n]
            self.pending = self.io.submit(
                lambda: np.asarray(writer.write_many(chunk), dtype=np.uint64)
            )
        self.sizes.append(sizes)
        self.records += n

    def complete(self, position: tuple[int, int]) -> None:
        """Closes the current shard (an empty one if none is open) and commits it."""
        writer = self.open_if_needed()
        self.wait()
        try:
            writer.close()  # a remote shard: its upload is committed
        except OSError as e:
            raise named_url(e, self.url, self.tmp_name()) from e
        offsets = np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.uint64)
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
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
        index = None
        if self.options.index:
            index = "".join(
                f"{o} {s}\n" for o, s in zip(offsets.tolist(), sizes.tolist(), strict=True)
            ).encode("ascii")
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
        shard = _Shard(tmp=name, records=records, bytes=size, checksum=checksum)
        self.journal.record(
            self.split, report, shard=dataclasses.asdict(shard), position=list(position)
        )

    def abandon(self) -> None:
        # Every write in flight ends before the writer is closed under it.
        self.io.shutdown(wait=True)
        self.pending = None
        if self.writer is not None:
            if self.url is not None:
                # The upload is aborted, not committed.
                self.writer.__exit__(RuntimeError, None, None)
            else:
                self.writer.close()
                (self.out / f"{self.tmp_name()}.partial").unlink(missing_ok=True)
            self.writer = None
            self._clear()


def _write_split(
    results: Iterable[Sequence[bytes] | Converted | ItemError],
    shards: _ShardWriter,
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
            counters = observed(result)
            first = start_record if position == start_item else 0
            frames = frame_sizes(records)
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
                n = len(records) - first
                progress(n, int(frames[first:].sum()) - FRAME_OVERHEAD * n)
        for _ in range(planner.finish()):
            shards.complete((consumed, 0))
        shards.journal.record(shards.split, report.to_json(), done=True)
    except BaseException:
        shards.abandon()
        raise
    finally:
        shards.shutdown()


def _final_names(options: WriteOptions, journal: Journal) -> dict[str, list[tuple[_Shard, str]]]:
    """Each split's completed shards with their final names, checked to be distinct
    (and distinct from ``dataset.json`` and the working files) before any is renamed."""
    named = {
        split: [
            (shard, options.shard_name(split, i, len(state["shards"]), shard.records))
            for i, shard in enumerate(_Shard(**d) for d in state["shards"])
        ]
        for split, state in journal.splits.items()
    }
    seen: dict[str, str] = {}
    for split, shards in named.items():
        for i, (_, final) in enumerate(shards):
            where = f"shard {i} of split {split!r}"
            if final in seen:
                raise ValueError(
                    f"name_template {options.name_template!r} gives {where} the name "
                    f"{final!r} of {seen[final]}: use {{index}} (and {{split}} with several "
                    "splits) in the template"
                )
            seen[final] = where
    return named


def _finalize(
    out: Path | str, options: WriteOptions, journal: Journal
) -> dict[str, tuple[ShardInfo, ...]]:
    """Renames completed shards (and indexes) to their final names (remote: moves them,
    the store copying them). Safe to rerun after a crash half-way: a shard already
    under its final name is taken as renamed."""
    splits: dict[str, tuple[ShardInfo, ...]] = {}
    remote = set(dict(_fs.listdir(out))) if isinstance(out, str) else None
    for split, shards in _final_names(options, journal).items():
        infos = []
        for shard, final in shards:
            for suffix in ("", ".idx") if options.index else ("",):
                tmp, dst = f"{shard.tmp}{suffix}", f"{final}{suffix}"
                if remote is not None and tmp in remote:
                    move(str(out), tmp, dst)
                    stage("renamed to a final name")
                elif remote is None and os.path.exists(Path(out, tmp)):
                    os.replace(Path(out, tmp), Path(out, dst))
                    stage("renamed to a final name")
                elif not (dst in remote if remote is not None else Path(out, dst).exists()):
                    raise FileNotFoundError(f"{out}: shard {tmp} of split {split!r} is missing")
            infos.append(
                ShardInfo(
                    file=final, records=shard.records, bytes=shard.bytes, checksum=shard.checksum
                )
            )
        splits[split] = tuple(infos)
    return splits


def _schema_of(
    column_schemas: Sequence[Schema | None],
    out: Path | str,
    splits: Mapping[str, Sequence[ShardInfo]],
) -> Schema:
    """The schema of columns when every split was given as columns of one schema
    (no pass over the written files); otherwise inferred from the records written."""
    first = column_schemas[0] if column_schemas else None
    if first is not None and all(s == first for s in column_schemas):
        return first
    return _infer_from_files(out, splits)


def _infer_from_files(out: Path | str, splits: Mapping[str, Sequence[ShardInfo]]) -> Schema:
    """The schema of the records written: Examples' features, or SequenceExamples'
    context features and feature lists (remote files streamed)."""
    return infer_sequence_schema(
        record
        for shards in splits.values()
        for shard in shards
        for record in (
            read_records(_fs.join(out, shard.file))
            if isinstance(out, str)
            else _core.read_records(out / shard.file, "auto", True)
        )
    )


def write_source(
    source: Source, out: str | os.PathLike[str], *, items: Any = None, **options: Any
) -> Manifest:
    """``write_dataset`` of a :class:`~recordforge.pipeline.Source` (COCO, image folder,
    table): its items (or ``items``, already taken from it), converted by its
    ``to_records``, with its schema, description and report (what ``recordforge
    convert`` writes); ``options`` are ``write_dataset``'s. The schema of a
    :class:`~recordforge.pipeline.TallyingSource` is made from the final report."""
    report = source.report() if has_report(source) else None
    return write_dataset(
        source.items() if items is None else items,
        out,
        to_records=source.to_records,
        schema=source.schema_after if has_tally(source) else source.schema(),
        source=source.describe(),
        report=report,
        num_records=source.num_records() if has_count(source) else None,
        **options,
    )


def _final_schema(schema: Schema | SchemaAfter | None, report: ConversionReport) -> Schema | None:
    """The schema given, or (a callable) the one made from the conversion's report."""
    if schema is None or isinstance(schema, Schema):
        return schema
    return schema(report)


def write_dataset(
    data: Any = None,
    out: str | os.PathLike[str] = ".",
    *,
    split: str = "train",
    splits: Mapping[str, Any] | None = None,
    schema: Schema | SchemaAfter | None = None,
    to_records: ToRecords | None = None,
    on_error: OnError | Literal["fail"] = "raise",
    overwrite: bool = False,
    source: Mapping[str, Any] | None = None,
    report: ConversionReport | None = None,
    options: WriteOptions | None = None,
    progress: Progress | None = None,
    workers: int | Literal["auto"] = 1,
    num_records: int | Mapping[str, int] | None = None,
    **option_kwargs: Any,
) -> Manifest:
    """Writes a dataset directory: sharded TFRecord files and ``dataset.json``.

    ``data`` is an iterable of feature dicts (or of serialized records), or columns: a
    dict of equal-length arrays, a pyarrow Table or a pandas DataFrame. ``splits`` maps
    split names to such data instead. ``schema`` (inferred from the records when not
    given) may be a callable, given the final report once every item is converted.
    ``to_records`` turns one input item into its
    records (raising :class:`ItemError` for a bad item: ``on_error="raise"`` stops,
    ``"skip"`` lists it in the report). Sharding options are those of
    :class:`WriteOptions`, given as keywords or as ``options``.

    A rerun into the directory of an interrupted run resumes from its completed shards;
    ``overwrite=True`` starts over. A non-empty directory that is not a recordforge
    dataset is refused. ``progress(records, payload_bytes)`` is called after each item.
    ``workers`` > 1 (``"auto"``: one per CPU) runs ``to_records`` in that many
    processes (it must be picklable), which also write the shards; the files are the
    same, byte for byte, for any number of workers.
    ``num_records``: the records ``data`` gives, when known before converting it (a
    number for one split, or ``{split: records}``): ``num_shards`` then cuts those
    splits at record counts rather than item counts.
    ``out`` may be an fsspec URL (``gs://...``, ``s3://...``): each shard is streamed
    to the store while it is written (no local copy), committed when complete, and
    moved to its final key at the end, ``dataset.json`` last; a rerun resumes as a
    local one does (:mod:`recordforge._remote`).
    """
    on_error = on_error_policy(on_error)
    workers = _parallel.worker_count(workers)
    options = options or WriteOptions(**option_kwargs)
    if splits is None:
        splits = {split: data}
    options.check_names(list(splits))
    counts = split_counts(num_records, list(splits))
    out = str(out).rstrip("/") if is_url(out) else Path(out)
    fingerprint = command_fingerprint(options.fingerprint(), list(splits), source or {})
    report = report if report is not None else ConversionReport()
    custom, to_records = to_records, to_records or default_to_records
    # Planned (and checked) before the directory is touched.
    plans = {name: plan_split(data, custom is None, options) for name, data in splits.items()}
    for name, plan in plans.items():
        if (
            options.num_shards
            and plan.bounds is None
            and plan.total is None
            and counts.get(name) is None
        ):
            raise ValueError(
                f"split {name!r}: --num-shards (num_shards) needs an input whose length is "
                "known; use --max-records or --max-bytes"
            )
    column_schemas = [plan.schema for plan in plans.values()]
    opened = (
        RemoteOutputDir.open(out, fingerprint, overwrite, report.to_json())
        if isinstance(out, str)
        else OutputDir.open(out, fingerprint, overwrite, report.to_json())
    )
    with opened as target:
        if target.complete:
            return Manifest.load(out)
        journal = target.journal
        # A resumed conversion continues the report of the work before the kill.
        report.replace_with(ConversionReport.from_json(journal.report or {}))
        for name, plan in plans.items():
            if journal.split(name)["done"]:
                continue
            split_to_records = plan.to_records or to_records
            shards = _ShardWriter(
                target if isinstance(target, RemoteOutputDir) else Path(out),
                name,
                options,
                journal,
                report,
            )
            planner = shards.planner(plan.bounds, plan.total, counts.get(name))
            remaining = itertools.islice(plan.rows, shards.state["position"][0], None)
            if workers > 1 and split_to_records is not encode_batch:
                # (Column batches are encoded on threads in Rust already.)
                shards.shutdown()
                _parallel.write_split(
                    remaining,
                    shards,
                    planner,
                    split_to_records,
                    on_error,
                    report,
                    progress,
                    workers,
                    plan.rows if isinstance(plan.rows, Sequence) else None,
                )
                journal.record(name, report.to_json(), done=True)
            else:
                results = map(functools.partial(attempt, split_to_records), remaining)
                _write_split(results, shards, planner, on_error, report, progress)
        final = _finalize(out, options, journal)
        report.records = sum(s.records for shards in final.values() for s in shards)
        manifest = Manifest(
            schema=final_schema
            if (final_schema := _final_schema(schema, report)) is not None
            else _schema_of(column_schemas, out, final),
            splits=final,
            compression=options.compression,
            index=options.index,
            source=dict(source or {}),
            report=report.to_json(),
            tool_version=_core.__version__,
        )
        manifest.save(out)
        stage("dataset.json written")
        target.done()
    return manifest

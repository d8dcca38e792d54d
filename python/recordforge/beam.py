"""The conversion of :func:`~recordforge.write_dataset` on Apache Beam, and a reader.

``ConvertDataset(source, out, ...)`` runs a source's own ``items`` / ``to_records`` (the
COCO, image folder and table sources, or any object with those methods) on Beam and
writes the same files the local writer writes: the same shards, the same records in the
same order, the same ``dataset.json`` (``WriteDataset`` does the same for a PCollection
of ``(position, item)`` pairs). ``ReadDataset(path)`` yields a dataset's records as
decoded dicts. ``out`` and ``path`` may be local or fsspec URLs (``gs://``, ``s3://``).

How the work is divided: the item list is enumerated once (for COCO and image folders it
is metadata; a table is read batch by batch in that step); item positions (shuffled
with ``seed`` exactly as locally) are assigned to shards, and each shard is encoded and
written by one worker, under a temporary name, then renamed to its final name (on an
object store: uploaded to a temporary key, then moved), so a retried bundle rewrites the
same file and never leaves a duplicate or a partial one. With ``num_shards`` the shards
are contiguous ranges of items and the conversion is one pass. With ``max_records`` /
``max_bytes`` (the default) shard boundaries depend on the records' sizes, so a first
pass encodes every item to measure its records (in parallel, nothing written) and plans
the boundaries with the local writer's own rule (``recordforge.sharding``); the second
pass encodes again and writes. A last step assembles ``dataset.json`` (per-shard counts,
sizes, checksums, the conversion report with every worker's skipped items, in item
order).

>>> import tempfile, apache_beam as beam, recordforge as rf, recordforge.beam
>>> rows = [{"id": i} for i in range(10)]
>>> with tempfile.TemporaryDirectory() as d:
...     with beam.Pipeline(runner=rf.beam.in_process_runner()) as p:
...         _ = (p | beam.Create(list(enumerate(rows)))
...                | rf.beam.WriteDataset(d, max_records=4, shuffle=True, seed=1))
...     beam_files = [s.records for s in rf.Manifest.load(d).splits["train"]]
...     ids = sorted(int(r["id"]) for r in rf.open_dataset(d))
>>> beam_files, ids == list(range(10))
([4, 4, 2], True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import AsSingleton

from recordforge import _core, _fs
from recordforge._outdir import JOURNAL_NAME, locked
from recordforge._outdir import prepare_out as _prepare_out
from recordforge.dataset import open_dataset
from recordforge.errors import ItemError, OnError, on_error_policy
from recordforge.example import RecordBatch
from recordforge.manifest import Manifest, ShardInfo
from recordforge.pipeline import (
    ConversionReport,
    Converted,
    Source,
    ToRecords,
    attempt,
    default_to_records,
    has_report,
)
from recordforge.records import TFRecordWriter
from recordforge.schema import Schema, infer_schema
from recordforge.sharding import WriteOptions, frame_sizes, shard_bounds, shard_starts

__all__ = [
    "ConvertDataset",
    "ReadDataset",
    "WriteDataset",
    "convert",
    "in_process_runner",
]


def in_process_runner() -> Any:
    """Beam's in-process runner (the FnApiRunner that ``DirectRunner`` falls back to),
    named directly: ``DirectRunner`` first tries Prism, which downloads a binary."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Which shard each item position goes to. ``item_ends``: with ``num_shards``, the
    position at which each shard ends. ``record_starts`` / ``shard_starts``: otherwise,
    the running record count before each item (n + 1 values) and the first record of
    each shard, as the local writer placed them."""

    shards: int
    item_ends: tuple[int, ...] | None = None
    record_starts: np.ndarray | None = None
    shard_starts: np.ndarray | None = None

    def assign(self, position: int) -> list[tuple[int, int, int | None]]:
        """``(shard, first record, stop record)`` for each shard holding some of this
        item's records (one, with ``(0, 0)``, for an item without records)."""
        if self.item_ends is not None:
            shard = int(np.searchsorted(self.item_ends, position, side="right"))
            return [(shard, 0, None)]
        assert self.record_starts is not None and self.shard_starts is not None
        c0, c1 = int(self.record_starts[position]), int(self.record_starts[position + 1])
        first = int(np.searchsorted(self.shard_starts, c0, side="right")) - 1
        first = min(max(first, 0), self.shards - 1)
        if c0 == c1:
            return [(first, 0, 0)]
        last = int(np.searchsorted(self.shard_starts, c1 - 1, side="right")) - 1
        total = int(self.record_starts[-1])
        out: list[tuple[int, int, int | None]] = []
        for k in range(first, last + 1):
            start = int(self.shard_starts[k])
            stop = int(self.shard_starts[k + 1]) if k + 1 < self.shards else total
            out.append((k, max(c0, start) - c0, min(c1, stop) - c0))
        return out

    def expected(self, shard: int) -> int | None:
        """Records shard ``shard`` must hold (known when planned from record sizes)."""
        if self.shard_starts is None or self.record_starts is None:
            return None
        stop = (
            int(self.shard_starts[shard + 1])
            if shard + 1 < self.shards
            else int(self.record_starts[-1])
        )
        return stop - int(self.shard_starts[shard])


def _plan_by_items(total: int, num_shards: int) -> _Plan:
    return _Plan(shards=num_shards, item_ends=tuple(shard_bounds(total, num_shards)))


def _plan_by_sizes(measured: Iterable[tuple[int, np.ndarray]], options: WriteOptions) -> _Plan:
    """Shard boundaries from every item's record frame sizes, by the local writer's rule
    (:func:`~recordforge.sharding.shard_starts`)."""
    ordered = sorted(measured, key=lambda m: m[0])
    if [m[0] for m in ordered] != list(range(len(ordered))):
        raise RuntimeError("item positions are not 0..n-1 once each")
    counts = np.array([len(m[1]) for m in ordered], dtype=np.int64)
    record_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sizes = np.concatenate([m[1] for m in ordered]) if ordered else np.zeros(0, np.int64)
    starts = shard_starts(sizes, options)
    return _Plan(shards=len(starts), record_starts=record_starts, shard_starts=starts)


# Conversions loaded in this process, by the path they were shipped to.
_SHIPPED: dict[str, dict[str, Any]] = {}
_SHIPPED_PREFIX = ".recordforge-beam-"


def _ship(out: str, payload: dict[str, Any]) -> str:
    """Pickles the conversion (``to_records``, the source) once into the output
    directory, for every worker process to load once. Kept out of the pipeline graph:
    Beam pickles each DoFn with bz2 at level 9, seconds per copy for a COCO index."""
    import cloudpickle

    path = _fs.join(out, f"{_SHIPPED_PREFIX}{uuid.uuid4().hex[:12]}.pkl")
    _fs.write_bytes(path, cloudpickle.dumps(payload))
    _SHIPPED[path] = payload
    return path


def _shipped(path: str) -> dict[str, Any]:
    if path not in _SHIPPED:
        _SHIPPED[path] = pickle.loads(_fs.read_bytes(path))
    return _SHIPPED[path]


@dataclasses.dataclass(frozen=True)
class _Target:
    """What every worker needs to encode and write: where, how, and (shipped) the
    conversion."""

    out: str
    split: str
    options: WriteOptions
    shipped: str
    on_error: OnError

    @property
    def to_records(self) -> ToRecords:
        to_records: ToRecords = _shipped(self.shipped)["to_records"]
        return to_records


def _records_of(
    target: _Target, result: Sequence[bytes] | Converted | ItemError
) -> tuple[Sequence[bytes], int, list[ItemError]]:
    """Records, input items and rejected items of one ``to_records`` result; raises the
    first rejection with ``on_error="raise"``."""
    if isinstance(result, ItemError):
        records: Sequence[bytes] = ()
        items, errors = 1, [result]
    elif isinstance(result, Converted):
        records, items, errors = result.records, result.items, list(result.errors)
    else:
        records, items, errors = result, 1, []
    if errors and target.on_error == "raise":
        raise errors[0]
    return records, items, errors


class _Measure(beam.DoFn):  # type: ignore[misc]
    """(position, item) -> (position, frame sizes of its records); nothing is written."""

    def __init__(self, target: _Target) -> None:
        self.target = target

    def process(self, element: tuple[int, Any]) -> Iterator[tuple[int, np.ndarray]]:
        position, item = element
        records, _, _ = _records_of(self.target, attempt(self.target.to_records, item))
        yield position, frame_sizes(records)


class _Place(beam.DoFn):  # type: ignore[misc]
    """(index, item) -> (position, item): the position the local writer gives it (the
    same permutation of ``seed`` with ``shuffle``)."""

    def __init__(self, options: WriteOptions) -> None:
        self.options = options
        self._inverse: tuple[int, np.ndarray] | None = None

    def process(self, element: tuple[int, Any], total: int) -> Iterator[tuple[int, Any]]:
        index, item = element
        if not 0 <= index < total:
            raise ValueError(f"item index {index} is not in 0..{total - 1}")
        if not self.options.shuffle:
            yield index, item
            return
        if self._inverse is None or self._inverse[0] != total:
            order = np.random.default_rng(self.options.seed).permutation(total)
            inverse = np.empty(total, dtype=np.int64)
            inverse[order] = np.arange(total)
            self._inverse = (total, inverse)
        yield int(self._inverse[1][index]), item


class _Assign(beam.DoFn):  # type: ignore[misc]
    def process(
        self, element: tuple[int, Any], plan: _Plan
    ) -> Iterator[tuple[int, tuple[int, Any, int, int | None]]]:
        position, item = element
        for shard, lo, hi in plan.assign(position):
            yield shard, (position, item, lo, hi)


def _write_shard(
    target: _Target,
    plan: _Plan,
    shard: int,
    entries: Iterable[tuple[int, Any, int, int | None]],
) -> dict[str, Any]:
    """Encodes and writes one whole shard (and its index) under a temporary name, then
    renames it to its final name; returns its manifest entry and its items' report."""
    options = target.options
    remote = _fs.is_url(target.out)
    items = 0
    skipped: list[tuple[int, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="recordforge-shard-") as scratch:
        where = scratch if remote else target.out
        tmp = os.path.join(where, _fs.temp_name(f"beam-{target.split}-{shard:05d}"))
        offsets: list[np.ndarray] = []
        sizes: list[np.ndarray] = []
        written = 0
        try:
            with TFRecordWriter(tmp, options.compression, checksum=options.checksum) as writer:
                for position, item, lo, hi in sorted(entries, key=lambda e: (e[0], e[2])):
                    result = attempt(target.to_records, item)
                    records, n_items, errors = _records_of(target, result)
                    stop = len(records) if hi is None else hi
                    if stop > len(records):
                        raise RuntimeError(
                            f"item {position} gave {len(records)} records, fewer than when "
                            "it was measured: its conversion is not deterministic"
                        )
                    if lo == 0:
                        items += n_items
                        skipped.extend((position, e.item, e.reason) for e in errors)
                    if stop <= lo:
                        continue
                    frames = frame_sizes(records)[lo:stop]
                    if isinstance(records, RecordBatch):
                        offs = writer.write_batch(records, lo, stop)
                    else:
                        offs = np.asarray(writer.write_many(records[lo:stop]), dtype=np.uint64)
                    offsets.append(np.asarray(offs, dtype=np.uint64))
                    sizes.append(frames)
                    written += stop - lo
            checksum = writer.checksum or ""
            size = os.path.getsize(tmp)
            expected = plan.expected(shard)
            if expected is not None and expected != written:
                raise RuntimeError(
                    f"shard {shard} got {written} records, planned {expected}: the "
                    "conversion is not deterministic"
                )
            final = options.shard_name(target.split, shard, plan.shards, written)
            if options.index:
                o = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
                s = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
                idx = f"{tmp}.idx"
                with open(idx, "w", encoding="ascii") as f:
                    f.write(
                        "".join(f"{a} {b}\n" for a, b in zip(o.tolist(), s.tolist(), strict=True))
                    )
                _fs.upload(idx, _fs.join(target.out, f"{final}.idx"))
            _fs.upload(tmp, _fs.join(target.out, final))
        finally:
            Path(tmp).unlink(missing_ok=True)
    return {
        "shard": shard,
        "file": final,
        "records": written,
        "bytes": size,
        "checksum": checksum,
        "items": items,
        "skipped": skipped,
    }


class _WriteShards(beam.DoFn):  # type: ignore[misc]
    def __init__(self, target: _Target) -> None:
        self.target = target

    def process(self, element: tuple[int, Iterable[Any]], plan: _Plan) -> Iterator[dict[str, Any]]:
        shard, entries = element
        yield _write_shard(self.target, plan, shard, entries)


@dataclasses.dataclass(frozen=True)
class _Finish:
    """What the last step needs beside the shards' results."""

    target: _Target
    schema: Schema | None
    source: Mapping[str, Any]
    report: Mapping[str, Any]


def _finalize(results: list[dict[str, Any]], finish: _Finish, plan: _Plan) -> Manifest:
    """Writes any shard no worker wrote (an empty range of items), then ``dataset.json``
    (last, atomically); removes the progress marker and attempts' leftovers."""
    target = finish.target
    by_shard = {r["shard"]: r for r in results}
    if len(by_shard) != len(results):
        raise RuntimeError("a shard was written twice")
    for k in range(plan.shards):
        if k not in by_shard:
            by_shard[k] = _write_shard(target, plan, k, [])
    report = ConversionReport.from_json(finish.report)
    ordered = [by_shard[k] for k in range(plan.shards)]
    report.items += sum(r["items"] for r in ordered)
    for _, item, reason in sorted(s for r in ordered for s in r["skipped"]):
        report.skip(item, reason)
    shards = tuple(
        ShardInfo(file=r["file"], records=r["records"], bytes=r["bytes"], checksum=r["checksum"])
        for r in ordered
    )
    report.records = sum(s.records for s in shards)
    schema = finish.schema
    if schema is None:
        schema = infer_schema(
            _core.decode_example(record)
            for s in shards
            for record in _read_file_records(_fs.join(target.out, s.file))
        )
    manifest = Manifest(
        schema=schema,
        splits={target.split: shards},
        compression=target.options.compression,
        index=target.options.index,
        source=dict(finish.source),
        report=report.to_json(),
        tool_version=_core.__version__,
    )
    manifest.save(target.out)
    # Leftovers first, the journal last: until it goes, the directory is unfinished.
    for entry, is_dir in _fs.listdir(target.out):
        leftover = entry.endswith(".partial") or entry.startswith(_SHIPPED_PREFIX)
        if not is_dir and entry.startswith(".") and leftover:
            _fs.remove(_fs.join(target.out, entry))
    journal = _fs.join(target.out, JOURNAL_NAME)
    if _fs.exists(journal):
        _fs.remove(journal)
    _SHIPPED.pop(target.shipped, None)
    return manifest


def _read_file_records(path: str) -> Iterator[bytes]:
    with _fs.open_file(path) as f:
        yield from _core.read_records(f, "auto", True)


def _prepare(out: str, overwrite: bool, fingerprint: Mapping[str, Any]) -> None:
    """Checks (or clears, with ``overwrite``) the output directory, then leaves the
    progress marker that makes it recognisable as an unfinished conversion. A rerun
    with the same options and input continues (every shard is rewritten)."""
    if _fs.is_url(out):
        from recordforge._remote import prepare_out

        prepare_out(out, overwrite)
    else:
        _prepare_out(Path(out), overwrite)
    journal = _fs.join(out, JOURNAL_NAME)
    if _fs.exists(journal):
        found = json.loads(_fs.read_bytes(journal)).get("fingerprint")
        if found != fingerprint:
            raise FileExistsError(
                f"{out}: holds an unfinished conversion started with other options or "
                "input; use --overwrite (overwrite=True) to start over"
            )
    state = {"fingerprint": fingerprint, "splits": {}, "report": ConversionReport().to_json()}
    _fs.write_bytes(journal, json.dumps(state, indent=2).encode())


class WriteDataset(beam.PTransform):  # type: ignore[misc]
    """Writes a PCollection of ``(position, item)`` pairs (positions 0..n-1: the order
    the local writer would see the items in) as a dataset directory; the output
    PCollection holds the :class:`~recordforge.Manifest`. Arguments are those of
    :func:`~recordforge.write_dataset` for one split; ``to_records`` runs on the
    workers (it must be picklable).

    When the pipeline is built (not when it runs), the output directory is checked as
    the local writer checks it (refused if it holds a complete dataset, unless
    ``overwrite``, or files that are not a dataset's) and marked as an unfinished
    conversion, and ``to_records`` is pickled into it once for the workers to load."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        split: str = "train",
        schema: Schema | None = None,
        to_records: ToRecords | None = None,
        on_error: OnError | Literal["fail"] = "raise",
        overwrite: bool = False,
        source: Mapping[str, Any] | None = None,
        report: ConversionReport | None = None,
        options: WriteOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        super().__init__()
        on_error = on_error_policy(on_error)
        self.options = options or WriteOptions(**option_kwargs)
        out = os.fspath(out)
        self.out = out if _fs.is_url(out) else os.path.abspath(out)
        self.split, self.on_error, self.overwrite, self.schema = split, on_error, overwrite, schema
        self.payload: dict[str, Any] = {"to_records": to_records or default_to_records}
        self.source = json.loads(json.dumps(source or {}, default=str))
        self.report = (report or ConversionReport()).to_json()
        self._target: _Target | None = None

    def prepare(self) -> _Target:
        """Checks and marks the output directory and ships the conversion (once)."""
        if self._target is None:
            fingerprint = {
                "options": self.options.fingerprint(),
                "splits": [self.split],
                "source": self.source,
                "runner": "beam",
            }
            _prepare(self.out, self.overwrite, fingerprint)
            shipped = _ship(self.out, self.payload)
            self._target = _Target(self.out, self.split, self.options, shipped, self.on_error)
        return self._target

    def expand(self, items: Any) -> Any:
        target = self.prepare()
        options = target.options
        finish = _Finish(target, self.schema, self.source, self.report)
        total = items | "Count" >> beam.combiners.Count.Globally()
        placed = items | "Place" >> beam.ParDo(_Place(options), total=AsSingleton(total))
        if options.num_shards:
            plan = total | "Plan" >> beam.Map(_plan_by_items, options.num_shards)
        else:
            plan = (
                placed
                | "Spread" >> beam.Reshuffle()
                | "Measure" >> beam.ParDo(_Measure(target))
                | "Sizes" >> beam.combiners.ToList()
                | "Plan" >> beam.Map(_plan_by_sizes, options)
            )
        written = (
            placed
            | "Assign" >> beam.ParDo(_Assign(), plan=AsSingleton(plan))
            | "ByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShards(target), plan=AsSingleton(plan))
        )
        return (
            written
            | "Results" >> beam.combiners.ToList()
            | "Manifest" >> beam.Map(_finalize, finish, plan=AsSingleton(plan))
        )


def _enumerate_items(_: Any, shipped: str) -> Iterator[tuple[int, Any]]:
    yield from enumerate(_shipped(shipped)["source"].items())


class ConvertDataset(beam.PTransform):  # type: ignore[misc]
    """Converts a source (``CocoSource``, ``ImageFolderSource``, ``TableSource``, or any
    :class:`~recordforge.pipeline.Source`) on Beam: the same files as ``recordforge
    convert`` writes locally. Applied to the pipeline; the output holds the Manifest. The source
    is pickled once into the output directory (see :class:`WriteDataset`); one worker
    enumerates its items (for a table, reads it), the others convert them."""

    def __init__(self, source: Source, out: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__()
        kwargs.setdefault("schema", source.schema())
        kwargs.setdefault("source", source.describe())
        if has_report(source):
            kwargs.setdefault("report", source.report())
        self.write = WriteDataset(out, to_records=source.to_records, **kwargs)
        self.write.payload["source"] = source

    def expand(self, pbegin: Any) -> Any:
        target = self.write.prepare()
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "Items" >> beam.FlatMap(_enumerate_items, target.shipped)
            | "Write" >> self.write
        )


def _read_file(path: str, schema: Schema, on_corrupt: str) -> Iterator[dict[str, Any]]:
    yield from open_dataset([path], schema=schema, on_corrupt=on_corrupt)  # type: ignore[arg-type]


class ReadDataset(beam.PTransform):  # type: ignore[misc]
    """The records of a dataset (a directory with ``dataset.json``, a directory of
    TFRecord files, a glob or a list of files, local or remote) as decoded dicts (the
    values :func:`~recordforge.open_dataset` yields), one shard file per work item.
    ``features`` picks the features decoded; the others' bytes are skipped."""

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str],
        *,
        split: str | None = None,
        schema: Schema | None = None,
        features: Sequence[str] | None = None,
        on_corrupt: str = "raise",
    ) -> None:
        super().__init__()
        ds = open_dataset(path, split=split, schema=schema)
        if features is not None:
            ds = ds.select(features)
        self.files = list(ds.files)
        self.schema = ds.schema
        self.on_corrupt = on_corrupt

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(_read_file, self.schema, self.on_corrupt)
        )


def convert(
    source: Source,
    out: str | os.PathLike[str],
    *,
    runner: str | None = None,
    pipeline_args: Sequence[str] = (),
    workers: int = 1,
    **kwargs: Any,
) -> Manifest:
    """Runs :class:`ConvertDataset` in a pipeline of its own and waits for it: what
    ``recordforge convert ... --runner beam`` does. ``runner`` names a Beam runner
    (``DataflowRunner``, ``FlinkRunner``, ``SparkRunner``, ``PortableRunner``,
    ``DirectRunner``, ...); None runs in this process (``workers`` > 1: that many worker
    processes). ``pipeline_args`` are Beam's own options (``--project``, ...)."""
    args = list(pipeline_args)
    if runner is None and workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    chosen = in_process_runner() if runner in (None, "FnApiRunner", "in-process") else runner
    # One conversion at a time into a local directory, as with the local writer (the
    # workers write under the driver's lock).
    lock = contextlib.nullcontext() if _fs.is_url(os.fspath(out)) else locked(Path(out), {})
    with lock, beam.Pipeline(runner=chosen, options=PipelineOptions(args)) as p:
        _ = p | "Convert" >> ConvertDataset(source, out, **kwargs)
    return Manifest.load(out if _fs.is_url(os.fspath(out)) else os.fspath(out))

"""The conversion of :func:`~recordforge.write_dataset` on Apache Beam, and a reader.

``ConvertDataset(source, out, ...)`` runs a source's own ``items`` / ``to_records`` (the
COCO, image folder and table sources, or any object with those methods) on Beam and
writes the same files the local writer writes: the same shards, the same records in the
same order, the same ``dataset.json`` (``WriteDataset`` does the same for a PCollection
of ``(position, item)`` pairs). Several splits (``{"train": source, "val": source}``,
or a :class:`~recordforge.splits.SplitSources`) are written by one pipeline into one
``dataset.json``. ``ReadDataset(path)`` yields a dataset's records as decoded dicts.
``out`` and ``path`` may be local or fsspec URLs (``gs://``, ``s3://``).

How the work is divided: each split's item list is enumerated once, on the driver, from
metadata (COCO image records, image file names, a table's parts: byte ranges or row
groups; no table row is read there: each worker reads its own parts); item positions
(shuffled with ``seed`` exactly as locally, per split) are assigned to shards, and each
shard is encoded and written by one worker, under a temporary name, then renamed to its
final name (on an object store: uploaded to a temporary key, then moved), so a retried
bundle rewrites the same file and never leaves a duplicate or a partial one. With
``num_shards`` the shards are contiguous ranges of items and the conversion is one pass.
With ``max_records`` / ``max_bytes`` (the default), or ``num_shards`` over a source that
knows its record count (a table: cut at row counts), shard boundaries depend on the
records, so a first pass encodes every item to measure its records (in parallel, nothing
written); the local writer's own planner (:class:`~recordforge.sharding.ShardPlanner`),
fed the items in order, places the boundaries; the second pass encodes again and writes.
A last step assembles ``dataset.json`` (every split's per-shard counts, sizes,
checksums, the conversion report with every worker's skipped items, in split and item
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
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import AsSingleton

from recordforge import _fs
from recordforge._beam_plan import BeamPlan, plan_split
from recordforge._beam_write import (
    Finish,
    Segment,
    Target,
    finalize,
    prepare,
    records_of,
    segments,
    ship,
    shipped,
    write_shard,
)
from recordforge._outdir import locked
from recordforge.dataset import open_dataset
from recordforge.errors import OnError, on_error_policy
from recordforge.manifest import Manifest
from recordforge.pipeline import (
    ConversionReport,
    SchemaAfter,
    Source,
    ToRecords,
    attempt,
    default_to_records,
)
from recordforge.schema import Schema
from recordforge.sharding import WriteOptions, frame_sizes
from recordforge.splits import SplitSources

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


class _Place(beam.DoFn):  # type: ignore[misc]
    """(split, index, item) -> ((split, position), item): the position the local writer
    gives the item in its split (the same permutation of ``seed`` with ``shuffle``)."""

    def __init__(self, options: WriteOptions, splits: Sequence[str]) -> None:
        self.options, self.splits = options, tuple(splits)
        self._inverse: dict[str, tuple[int, np.ndarray]] = {}

    def process(
        self, element: tuple[str, int, Any], totals: Mapping[str, int]
    ) -> Iterator[tuple[tuple[str, int], Any]]:
        split, index, item = element
        if split not in self.splits:
            raise ValueError(f"item {index} is of split {split!r}, not one of {self.splits}")
        total = totals.get(split, 0)
        if not 0 <= index < total:
            raise ValueError(f"item index {index} of split {split!r} is not in 0..{total - 1}")
        if not self.options.shuffle:
            yield (split, index), item
            return
        if split not in self._inverse or self._inverse[split][0] != total:
            order = np.random.default_rng(self.options.seed).permutation(total)
            inverse = np.empty(total, dtype=np.int64)
            inverse[order] = np.arange(total)
            self._inverse[split] = (total, inverse)
        yield (split, int(self._inverse[split][1][index])), item


class _Measure(beam.DoFn):  # type: ignore[misc]
    """((split, position), item) -> (split, (position, frame sizes of its records));
    nothing is written."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def process(
        self, element: tuple[tuple[str, int], Any]
    ) -> Iterator[tuple[str, tuple[int, np.ndarray]]]:
        (split, position), item = element
        result = attempt(self.target.to_records(split), item)
        records, _, _ = records_of(self.target, result)
        yield split, (position, frame_sizes(records))


# An item whose records go to this many shards or more is converted once and its
# records travel to the shards' writers (a table's part of 16 MiB with 4,096-record
# shards: ~25 conversions otherwise); an item in fewer shards is converted by each of
# their writers, which costs less than moving its records (measured: docs/beam.md).
STRADDLING = 3


class _Assign(beam.DoFn):  # type: ignore[misc]
    """((split, position), item) -> ((split, shard), entry) for each shard the item goes
    to (converted by that shard's writer); an item in ``STRADDLING`` shards or more goes
    to the ``straddling`` output instead, to be converted once for all of them."""

    def process(
        self, element: tuple[tuple[str, int], Any], plans: Mapping[str, BeamPlan]
    ) -> Iterator[Any]:
        (split, position), item = element
        cuts = plans[split].assign(position)
        if len(cuts) >= STRADDLING:
            yield beam.pvalue.TaggedOutput("straddling", element)
            return
        for shard, lo, hi in cuts:
            yield (split, shard), (position, item, lo, hi, None)


class _Segments(beam.DoFn):  # type: ignore[misc]
    """An item that straddles shards -> its records for each shard, encoded once."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def process(
        self, element: tuple[tuple[str, int], Any], plans: Mapping[str, BeamPlan]
    ) -> Iterator[tuple[tuple[str, int], tuple[int, None, int, int | None, Segment]]]:
        (split, position), item = element
        cuts = plans[split].assign(position)
        for shard, lo, hi, segment in segments(self.target, split, position, item, cuts):
            yield (split, shard), (position, None, lo, hi, segment)


class _WriteShards(beam.DoFn):  # type: ignore[misc]
    def __init__(self, target: Target) -> None:
        self.target = target

    def process(
        self, element: tuple[tuple[str, int], Iterable[Any]], plans: Mapping[str, BeamPlan]
    ) -> Iterator[dict[str, Any]]:
        (split, shard), entries = element
        yield write_shard(self.target, split, plans[split], shard, entries)


def _split_of(element: tuple[str, int, Any]) -> str:
    return element[0]


def _tagged(element: tuple[int, Any], split: str) -> tuple[str, int, Any]:
    return split, element[0], element[1]


def _plans_from_counts(
    totals: Mapping[str, int],
    splits: Sequence[str],
    options: WriteOptions,
    num_records: Mapping[str, int],
) -> dict[str, BeamPlan]:
    return _plans(None, totals, splits, options, num_records)


def _plans(
    measured: Mapping[str, Iterable[tuple[int, np.ndarray]]] | None,
    totals: Mapping[str, int],
    splits: Sequence[str],
    options: WriteOptions,
    num_records: Mapping[str, int],
) -> dict[str, BeamPlan]:
    """Every split's plan (a split without items has its empty shard(s))."""
    return {
        split: plan_split(
            options,
            totals.get(split, 0),
            None if measured is None else measured.get(split, ()),
            num_records.get(split),
        )
        for split in splits
    }


class WriteDataset(beam.PTransform):  # type: ignore[misc]
    """Writes a PCollection of ``(position, item)`` pairs (positions 0..n-1: the order
    the local writer would see the items in) as a dataset directory; the output
    PCollection holds the :class:`~recordforge.Manifest`. With ``splits`` (the split
    names, in the order the dataset lists them), the PCollection holds ``(split,
    position, item)`` triples instead and every split is written by the same pipeline,
    into one ``dataset.json``. Arguments are those of :func:`~recordforge.write_dataset`;
    ``to_records`` (one for every split, or a mapping from split name to its own) runs
    on the workers (it must be picklable). ``num_records``: the records a split gives,
    by split name, where known before converting it (a table's rows): ``num_shards``
    then cuts that split at record counts, as the local writer does.

    When the pipeline is built (not when it runs), the output directory is checked as
    the local writer checks it (refused if it holds a complete dataset, unless
    ``overwrite``, or files that are not a dataset's) and marked as an unfinished
    conversion, and ``to_records`` is pickled into it once for the workers to load."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        split: str = "train",
        splits: Sequence[str] | None = None,
        schema: Schema | SchemaAfter | None = None,
        to_records: ToRecords | Mapping[str, ToRecords] | None = None,
        on_error: OnError | Literal["fail"] = "raise",
        overwrite: bool = False,
        source: Mapping[str, Any] | None = None,
        report: ConversionReport | None = None,
        options: WriteOptions | None = None,
        num_records: Mapping[str, int] | None = None,
        **option_kwargs: Any,
    ) -> None:
        super().__init__()
        on_error = on_error_policy(on_error)
        self.num_records = dict(num_records or {})
        self.options = options or WriteOptions(**option_kwargs)
        self.tagged = splits is not None
        self.splits = tuple(splits) if splits is not None else (split,)
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"split names given twice: {list(self.splits)}")
        self.options.check_names(list(self.splits))
        if isinstance(to_records, Mapping) and set(to_records) != set(self.splits):
            raise ValueError(
                f"to_records names splits {sorted(to_records)}, not {sorted(self.splits)}"
            )
        out = _fs.fspath(out)  # (a file:// URL: the local path it names)
        self.out = out if _fs.is_url(out) else os.path.abspath(out)
        self.on_error, self.overwrite, self.schema = on_error, overwrite, schema
        self.payload: dict[str, Any] = {"to_records": to_records or default_to_records}
        self.source = json.loads(json.dumps(source or {}, default=str))
        self.report = (report or ConversionReport()).to_json()
        self._target: Target | None = None

    def prepare(self) -> Target:
        """Checks and marks the output directory and ships the conversion (once)."""
        if self._target is None:
            fingerprint = {
                "options": self.options.fingerprint(),
                "splits": list(self.splits),
                "source": self.source,
                "runner": "beam",
            }
            prepare(self.out, self.overwrite, fingerprint)
            shipped = ship(self.out, self.payload)
            self._target = Target(self.out, self.splits, self.options, shipped, self.on_error)
        return self._target

    def expand(self, items: Any) -> Any:
        target = self.prepare()
        options, splits = target.options, target.splits
        finish = Finish(target, self.schema, self.source, self.report)
        if not self.tagged:
            items = items | "Split" >> beam.Map(_tagged, splits[0])
        totals = (
            items
            | "Splits" >> beam.Map(_split_of)
            | "Count" >> beam.combiners.Count.PerElement()
            | "Totals" >> beam.combiners.ToDict()
        )
        placed = items | "Place" >> beam.ParDo(_Place(options, splits), totals=AsSingleton(totals))
        plan_args = (splits, options, self.num_records)
        if options.num_shards and not self.num_records:
            # Shards end at item counts: planned from the counts alone, one pass.
            plans = totals | "Plan" >> beam.Map(_plans_from_counts, *plan_args)
        else:
            plans = (
                placed
                | "Spread" >> beam.Reshuffle()
                | "Measure" >> beam.ParDo(_Measure(target))
                | "BySplit" >> beam.GroupByKey()
                | "Sizes" >> beam.combiners.ToDict()
                | "Plan" >> beam.Map(_plans, AsSingleton(totals), *plan_args)
            )
        assigned = placed | "Assign" >> beam.ParDo(
            _Assign(), plans=AsSingleton(plans)
        ).with_outputs("straddling", main="whole")
        straddling = (
            assigned.straddling
            | "SpreadStraddling" >> beam.Reshuffle()
            | "Segments" >> beam.ParDo(_Segments(target), plans=AsSingleton(plans))
        )
        written = (
            (assigned.whole, straddling)
            | "Entries" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShards(target), plans=AsSingleton(plans))
        )
        return (
            written
            | "Results" >> beam.combiners.ToList()
            | "Manifest" >> beam.Map(finalize, finish, plans=AsSingleton(plans))
        )


def _enumerate_items(split: str, path: str) -> Iterator[tuple[str, int, Any]]:
    payload = shipped(path)
    items = payload["items"].get(split)
    if items is None:
        items = payload["sources"][split].items()
    for index, item in enumerate(items):
        yield split, index, item


class ConvertDataset(beam.PTransform):  # type: ignore[misc]
    """Converts a source (``CocoSource``, ``ImageFolderSource``, ``TableSource``, or any
    :class:`~recordforge.pipeline.Source`) on Beam: the same files as ``recordforge
    convert`` writes locally. Several splits (``{"train": source, "val": source}`` or a
    :class:`~recordforge.splits.SplitSources`) are written by the one pipeline, as
    ``SplitSources(...).write(out)`` writes them locally. Applied to the pipeline; the
    output holds the Manifest. Each split's items are enumerated on the driver when
    ``items()`` is a sequence (metadata: COCO's image records, a table's parts, no
    table row), by one worker when it is a stream; the sources and item lists are
    pickled once into the output directory (see :class:`WriteDataset`), and each worker
    reads and converts the items it is given."""

    def __init__(
        self,
        source: Source | SplitSources | Mapping[str, Source],
        out: str | os.PathLike[str],
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(source, SplitSources):
            sources = source
        elif isinstance(source, Mapping):
            sources = SplitSources(source)
        else:
            sources = SplitSources({kwargs.pop("split", "train"): source})
        kwargs.setdefault("schema", sources.final_schema())
        kwargs.setdefault("source", sources.describe())
        kwargs.setdefault("report", sources.report())
        to_records = {name: s.to_records for name, s in sources.sources.items()}
        kwargs.setdefault("num_records", sources.num_records())
        self.write = WriteDataset(out, splits=sources.names, to_records=to_records, **kwargs)
        self.write.payload["sources"] = dict(sources.sources)
        # Item lists the driver holds already (COCO's image records, a table's parts:
        # metadata) travel in the shipped payload, not in the graph; a source whose
        # items() is a stream is enumerated by a worker.
        listed = {name: s.items() for name, s in sources.sources.items()}
        self.write.payload["items"] = {
            name: items for name, items in listed.items() if isinstance(items, Sequence)
        }

    def expand(self, pbegin: Any) -> Any:
        target = self.write.prepare()
        return (
            pbegin
            | "Splits" >> beam.Create(list(target.splits))
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
    source: Source | SplitSources | Mapping[str, Source],
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
    out = _fs.fspath(out)  # (a file:// URL: the local path it names)
    if runner is None and workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    chosen = in_process_runner() if runner in (None, "FnApiRunner", "in-process") else runner
    # One conversion at a time into a local directory, as with the local writer (the
    # workers write under the driver's lock).
    lock = contextlib.nullcontext() if _fs.is_url(os.fspath(out)) else locked(Path(out), {})
    with lock, beam.Pipeline(runner=chosen, options=PipelineOptions(args)) as p:
        _ = p | "Convert" >> ConvertDataset(source, out, **kwargs)
    return Manifest.load(out if _fs.is_url(os.fspath(out)) else os.fspath(out))

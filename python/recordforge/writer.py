"""``write_dataset``: records -> sharded TFRecord files + ``dataset.json``.

Shards are written under a temporary name and renamed when complete; a journal
(``.recordforge-progress.json``) records each completed shard and how far into the
input it reached, so a rerun of an interrupted conversion skips the work already done
and ends with exactly the files an uninterrupted run writes. ``dataset.json`` is written
last, atomically; then the journal is removed.

This module holds ``write_dataset`` / ``write_source``: the plan, the final names, the
schema and the manifest; the shard writer, its use of the journal and the commit are
``_shardwriter``'s, the output directory is ``_outdir``'s (a URL: ``_remote``'s, shards
streamed to the store). With ``workers`` > 1, worker processes convert and write the
shards (``_parallel``), with the bytes of one worker. What it shares with Beam:
``pipeline``, ``sharding`` (the one planner) and ``columns``.

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

import functools
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from recordforge import _core, _fs, _parallel
from recordforge._atomic import stage
from recordforge._buffers import batch_buffers
from recordforge._fs import is_url
from recordforge._outdir import Journal, OutputDir, changed_inputs, command_fingerprint
from recordforge._remote import RemoteOutputDir, move_all
from recordforge._shardwriter import Progress, RecordSample, Shard, ShardWriter, write_split
from recordforge.columns import encode_batch, plan_split
from recordforge.errors import ItemError, OnError, RecordforgeError, on_error_policy
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
)
from recordforge.records import read_records
from recordforge.schema import Schema
from recordforge.sequence import infer_sequence_schema
from recordforge.sharding import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TEMPLATE,
    WriteOptions,
    parse_size,
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


def _final_names(options: WriteOptions, journal: Journal) -> dict[str, list[tuple[Shard, str]]]:
    """Each split's completed shards with their final names, checked to be distinct
    (and distinct from ``dataset.json`` and the working files) before any is renamed."""
    named = {
        split: [
            (shard, options.shard_name(split, i, len(state["shards"]), shard.records))
            for i, shard in enumerate(Shard(**d) for d in state["shards"])
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
    the store copying them, many at once). Safe to rerun after a crash half-way: a shard already
    under its final name is taken as renamed."""
    splits: dict[str, tuple[ShardInfo, ...]] = {}
    # Remote: the objects' sizes too (a move asks for each one's otherwise).
    remote = _fs.file_sizes(out) if isinstance(out, str) else None
    moves: list[tuple[str, str, int | None]] = []  # remote: made at once, after the checks
    for split, shards in _final_names(options, journal).items():
        infos = []
        for shard, final in shards:
            for suffix in ("", ".idx") if options.index else ("",):
                tmp, dst = f"{shard.tmp}{suffix}", f"{final}{suffix}"
                if remote is not None and tmp in remote:
                    moves.append((tmp, dst, remote[tmp]))
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
    move_all(str(out), moves)
    return splits


def _schema_of(
    column_schemas: Sequence[Schema | None],
    out: Path | str,
    splits: Mapping[str, Sequence[ShardInfo]],
    sample: RecordSample | None,
) -> Schema:
    """The schema of columns when every split was given as columns of one schema
    (no pass over the written files); otherwise inferred from the records written: from
    the ``sample`` taken as they were written when it holds them all, else from the
    files."""
    first = column_schemas[0] if column_schemas else None
    if first is not None and all(s == first for s in column_schemas):
        return first
    sampled = sample.schema() if sample is not None else None
    return sampled if sampled is not None else _infer_from_files(out, splits)


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
    if not splits:  # (its dataset.json would name no split: not a dataset a reader opens)
        raise ValueError("splits: no split given (a dataset has at least one)")
    options.check_names(list(splits))
    counts = split_counts(num_records, list(splits))
    # (a chain of caches before a store: the store is written, see _fs.unchained)
    # (a file:// URL is the local path it names, not a directory called "file:")
    out = _fs.unchained(str(out).rstrip("/")) if is_url(out) else Path(_fs.fspath(out))
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
        # The schema to infer, from the records as they are written, in the files'
        # order: when every record of every split is written here, in this process.
        sample = RecordSample() if not isinstance(schema, Schema) else None
        for name, plan in plans.items():
            state = journal.split(name)
            if sample is not None and (state["done"] or state["shards"] or any(state["position"])):
                sample.drop()
            if state["done"]:
                continue
            split_to_records = plan.to_records or to_records
            shards = ShardWriter(
                target if isinstance(target, RemoteOutputDir) else Path(out),
                name,
                options,
                journal,
                report,
                sample,
            )
            planner = shards.planner(plan.bounds, plan.total, counts.get(name))
            remaining = itertools.islice(plan.rows, shards.state["position"][0], None)
            # No more workers than items left (a table of one part: none to start).
            left = None if plan.total is None else plan.total - shards.state["position"][0]
            split_workers = workers if left is None else min(workers, max(1, left))
            if split_workers > 1 and split_to_records is not encode_batch:
                # (Column batches are encoded on threads in Rust already.)
                shards.shutdown()
                if sample is not None:
                    sample.drop()
                _parallel.write_split(
                    remaining,
                    shards,
                    planner,
                    split_to_records,
                    on_error,
                    report,
                    progress,
                    split_workers,
                    plan.rows if isinstance(plan.rows, Sequence) else None,
                    plan.total,
                )
                journal.record(name, report.to_json(), done=True)
            else:
                # Record batches reuse the buffers of those written before them; the
                # buffers are freed with the split's last batch.
                with batch_buffers():
                    results = map(functools.partial(attempt, split_to_records), remaining)
                    write_split(results, shards, planner, on_error, report, progress)
                    del results
        # An input rewritten or replaced while it was read: its records mix old and new
        # contents, a dataset no single input gives (kept for no resume: the rerun's
        # fingerprint differs, so it asks for overwrite).
        if changed := changed_inputs(fingerprint, source or {}):
            raise RecordforgeError(
                f"{changed[0]}: changed while it was converted (its size or modification "
                "time): the records written mix its old and new contents, so no "
                "dataset.json is written; rerun with --overwrite (overwrite=True) to "
                "convert it as it is now"
            )
        final = _finalize(out, options, journal)
        if sample is not None and list(final) != list(plans):
            sample.drop()
        report.records = sum(s.records for shards in final.values() for s in shards)
        manifest = Manifest(
            schema=final_schema
            if (final_schema := _final_schema(schema, report)) is not None
            else _schema_of(column_schemas, out, final, sample),
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

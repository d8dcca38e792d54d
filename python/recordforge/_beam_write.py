"""What Beam's workers do with the files: the conversion shipped once into the output
directory, one shard written by one worker (temporary name, then renamed), and the last
step that writes ``dataset.json`` for every split. No Beam import: the transforms that
call these live in ``recordforge.beam``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core, _fs
from recordforge._beam_plan import BeamPlan
from recordforge._outdir import JOURNAL_NAME, prepare_out
from recordforge.errors import ItemError, OnError
from recordforge.example import RecordBatch
from recordforge.manifest import Manifest, ShardInfo
from recordforge.pipeline import (
    ConversionReport,
    Converted,
    SchemaAfter,
    ToRecords,
    attempt,
    observed,
)
from recordforge.records import TFRecordWriter
from recordforge.schema import Schema
from recordforge.sequence import infer_sequence_schema
from recordforge.sharding import FRAME_OVERHEAD, WriteOptions, frame_sizes

__all__ = [
    "SHIPPED_PREFIX",
    "Finish",
    "Segment",
    "Target",
    "check_count",
    "finalize",
    "prepare",
    "records_of",
    "segments",
    "ship",
    "write_shard",
]

# Conversions loaded in this process, by the path they were shipped to.
_SHIPPED: dict[str, dict[str, Any]] = {}
SHIPPED_PREFIX = ".recordforge-beam-"


def ship(out: str, payload: dict[str, Any]) -> str:
    """Pickles the conversion (``to_records``, the sources) once into the output
    directory, for every worker process to load once. Kept out of the pipeline graph:
    Beam pickles each DoFn with bz2 at level 9, seconds per copy for a COCO index."""
    import cloudpickle

    path = _fs.join(out, f"{SHIPPED_PREFIX}{uuid.uuid4().hex[:12]}.pkl")
    _fs.write_bytes(path, cloudpickle.dumps(payload))
    _SHIPPED[path] = payload
    return path


def shipped(path: str) -> dict[str, Any]:
    """The payload :func:`ship` wrote, loaded once per process."""
    if path not in _SHIPPED:
        _SHIPPED[path] = pickle.loads(_fs.read_bytes(path))
    return _SHIPPED[path]


@dataclasses.dataclass(frozen=True)
class Target:
    """What every worker needs to encode and write: where, how, and (shipped) the
    conversion. ``splits``: the split names, in the order the dataset lists them."""

    out: str
    splits: tuple[str, ...]
    options: WriteOptions
    shipped: str
    on_error: OnError

    def to_records(self, split: str) -> ToRecords:
        """The conversion of ``split``'s items: one for every split, or one per split."""
        to_records = shipped(self.shipped)["to_records"]
        if isinstance(to_records, Mapping):
            return to_records[split]  # type: ignore[no-any-return]
        return to_records  # type: ignore[no-any-return]


def records_of(
    target: Target, result: Sequence[bytes] | Converted | ItemError
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


def check_count(split: str, position: int, records: int, stop: int) -> None:
    if stop > records:
        raise RuntimeError(
            f"item {position} of split {split!r} gave {records} records, fewer than "
            "planned: its conversion is not deterministic"
        )


@dataclasses.dataclass(frozen=True)
class Segment:
    """Records of an item that straddles shards, encoded by the one worker that converted
    the item for all its shards: one shard's records, joined into ``data`` (one bytes
    object crosses the shuffle faster than one per record) and cut at ``ends``.
    ``items``, ``errors`` and ``counters`` (the item's report) go with its first segment
    only."""

    data: bytes
    ends: np.ndarray
    items: int
    errors: list[ItemError]
    counters: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def records(self) -> list[bytes]:
        view = memoryview(self.data)
        starts = [0, *self.ends[:-1].tolist()]
        return [bytes(view[a:b]) for a, b in zip(starts, self.ends.tolist(), strict=True)]


def segments(
    target: Target, split: str, position: int, item: Any, cuts: list[tuple[int, int, int | None]]
) -> Iterator[tuple[int, int, int | None, Segment]]:
    """An item that straddles shards, converted once: ``(shard, first record, stop
    record, segment)`` for each of the ``(shard, first record, stop record)`` of
    ``cuts``."""
    result = attempt(target.to_records(split), item)
    records, n_items, errors = records_of(target, result)
    counters = observed(result)
    for shard, lo, hi in cuts:
        stop = len(records) if hi is None else hi
        check_count(split, position, len(records), stop)
        first = lo == 0
        data = b"".join(records[i] for i in range(lo, stop))
        ends = np.cumsum(frame_sizes(records)[lo:stop] - FRAME_OVERHEAD)
        segment = Segment(data, ends, *((n_items, errors, counters) if first else (0, [], {})))
        yield shard, lo, hi, segment


def _remove_key(fs: Any, key: str) -> None:
    """Removes the object ``key`` if it is there (a shard committed and not moved)."""
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(key)


def write_shard(
    target: Target,
    split: str,
    plan: BeamPlan,
    shard: int,
    entries: Iterable[tuple[int, Any, int, int | None, Segment | None]],
) -> dict[str, Any]:
    """Encodes and writes one whole shard of ``split`` (and its index) under a temporary
    name, then renames it to its final name; returns its manifest entry and its items'
    report. ``entries``: ``(position, item, first record, stop record, None)``, or
    ``(position, None, first record, stop record, segment)`` for a segment of an item
    that straddles shards, encoded already."""
    options = target.options
    to_records = target.to_records(split)
    remote = _fs.is_url(target.out)
    items = 0
    counters: dict[str, int] = {}
    skipped: list[tuple[int, int, int, str, str]] = []
    order = target.splits.index(split)
    # A remote shard is streamed to a temporary key (the store commits it when it is
    # closed; an error aborts it), then moved: no local disk.
    with contextlib.ExitStack() as cleanup:
        tmp = _fs.join(target.out, _fs.temp_name(f"beam-{split}-{shard:05d}"))
        if remote:
            fs, tmp_key = _fs.filesystem(tmp)
            cleanup.callback(_remove_key, fs, tmp_key)
        else:
            cleanup.callback(Path(tmp).unlink, missing_ok=True)
        offsets: list[np.ndarray] = []
        sizes: list[np.ndarray] = []
        written = 0
        with TFRecordWriter(tmp, options.compression, checksum=options.checksum) as writer:
            for position, item, lo, hi, encoded in sorted(entries, key=lambda e: (e[0], e[2])):
                records: Sequence[bytes]
                if encoded is not None:
                    records, n_items, errors = encoded.records, encoded.items, encoded.errors
                    counted = encoded.counters
                    lo, stop = 0, len(records)
                else:
                    result = attempt(to_records, item)
                    records, n_items, errors = records_of(target, result)
                    counted = observed(result)
                    stop = len(records) if hi is None else hi
                    check_count(split, position, len(records), stop)
                    if lo > 0:  # the item's report goes with its first records
                        n_items, errors, counted = 0, [], {}
                items += n_items
                for name, n in counted.items():
                    counters[name] = counters.get(name, 0) + n
                skipped.extend((order, position, i, e.item, e.reason) for i, e in enumerate(errors))
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
        size = _fs.size(tmp)
        if plan.expected is not None and plan.expected[shard] != written:
            raise RuntimeError(
                f"shard {shard} of split {split!r} got {written} records, planned "
                f"{plan.expected[shard]}: the conversion is not deterministic"
            )
        final = options.shard_name(split, shard, plan.shards, written)
        if options.index:
            o = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
            s = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
            lines = "".join(f"{a} {b}\n" for a, b in zip(o.tolist(), s.tolist(), strict=True))
            _fs.write_bytes(_fs.join(target.out, f"{final}.idx"), lines.encode("ascii"))
        if remote:
            _fs.move_key(fs, tmp_key, _fs.filesystem(_fs.join(target.out, final))[1])
        else:
            os.replace(tmp, os.path.join(target.out, final))
    return {
        "split": split,
        "shard": shard,
        "file": final,
        "records": written,
        "bytes": size,
        "checksum": checksum,
        "items": items,
        "counters": counters,
        "skipped": skipped,
    }


@dataclasses.dataclass(frozen=True)
class Finish:
    """What the last step needs beside the shards' results."""

    target: Target
    schema: Schema | SchemaAfter | None  # a callable: made from the final report
    source: Mapping[str, Any]
    report: Mapping[str, Any]


def finalize(
    results: list[dict[str, Any]], finish: Finish, plans: Mapping[str, BeamPlan]
) -> Manifest:
    """Writes any shard no worker wrote (an empty range of items), then ``dataset.json``
    for every split (last, atomically); removes the progress marker and attempts'
    leftovers."""
    target = finish.target
    by_shard = {(r["split"], r["shard"]): r for r in results}
    if len(by_shard) != len(results):
        raise RuntimeError("a shard was written twice")
    for split in target.splits:
        for k in range(plans[split].shards):
            if (split, k) not in by_shard:
                by_shard[split, k] = write_shard(target, split, plans[split], k, [])
    report = ConversionReport.from_json(finish.report)
    ordered = {
        split: [by_shard[split, k] for k in range(plans[split].shards)] for split in target.splits
    }
    every = [r for results in ordered.values() for r in results]
    report.items += sum(r["items"] for r in every)
    for r in every:
        for name, n in r.get("counters", {}).items():
            report.count(name, n)
    for *_, item, reason in sorted(tuple(s) for r in every for s in r["skipped"]):
        report.skip(item, reason)
    splits = {
        split: tuple(
            ShardInfo(
                file=r["file"], records=r["records"], bytes=r["bytes"], checksum=r["checksum"]
            )
            for r in results
        )
        for split, results in ordered.items()
    }
    report.records = sum(s.records for shards in splits.values() for s in shards)
    schema = finish.schema
    if schema is not None and not isinstance(schema, Schema):
        schema = schema(report)
    if schema is None:
        schema = infer_sequence_schema(
            record
            for shards in splits.values()
            for s in shards
            for record in _read_file_records(_fs.join(target.out, s.file))
        )
    manifest = Manifest(
        schema=schema,
        splits=splits,
        compression=target.options.compression,
        index=target.options.index,
        source=dict(finish.source),
        report=report.to_json(),
        tool_version=_core.__version__,
    )
    manifest.save(target.out)
    # Leftovers first, the journal last: until it goes, the directory is unfinished.
    for entry, is_dir in _fs.listdir(target.out):
        leftover = entry.endswith(".partial") or entry.startswith(SHIPPED_PREFIX)
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


def prepare(out: str, overwrite: bool, fingerprint: Mapping[str, Any]) -> None:
    """Checks (or clears, with ``overwrite``) the output directory, then leaves the
    progress marker that makes it recognisable as an unfinished conversion. A rerun
    with the same options and input continues (every shard is rewritten)."""
    if _fs.is_url(out):
        from recordforge._remote import prepare_out as prepare_remote

        prepare_remote(out, overwrite)
    else:
        prepare_out(Path(out), overwrite)
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

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

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from recordforge import _core, _fs
from recordforge._outdir import check_finished
from recordforge._reader import Dataset, OnCorrupt, from_manifest
from recordforge._shards import (
    first_records,
    intact_records,
    is_plain,
    read_records,
)
from recordforge.errors import SchemaError, on_error_policy
from recordforge.manifest import MANIFEST_NAME, Manifest
from recordforge.ragged import Ragged
from recordforge.records import DEFAULT_MAX_RECORD_BYTES, RECORD_SUFFIXES
from recordforge.schema import FeatureSpec, Schema
from recordforge.sequence import infer_feature_lists, sample_schema, schema_of_sample

__all__ = ["Dataset", "Infer", "Ragged", "open_dataset"]

#: How ``open_dataset`` infers the schema of files without ``dataset.json``:
#: ``"sample"`` from their first records (kinds and shapes), the others checked as they
#: are read; ``"all"`` from every record at open (a full pass over the files).
Infer = Literal["sample", "all"]

#: Payload bytes sampled at most to infer a schema at open, whatever the number of
#: records: a table of small records is sampled whole up to this size (a value missing
#: only after its first 1,000 rows, as in TFX's Chicago taxi files, keeps the shape
#: variable), and for large records the first dozens say what a thousand would.
SAMPLE_BYTES = 16 << 20
#: Records sampled at most: none but the byte budget.
SAMPLE_RECORDS = 1 << 62


def open_dataset(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    split: str | None = None,
    schema: Schema | None = None,
    on_corrupt: OnCorrupt = "raise",
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    infer: Infer = "sample",
) -> Dataset:
    """Opens a dataset directory (its ``dataset.json``; ``split`` picks one, default
    ``train`` when there is one, else all), a directory of TFRecord files, a glob, or a
    list. A list of files is one dataset (one schema inferred for all of them); a list
    that holds directories or globs opens each entry as above and reads them one after
    the other, when their schemas are the same (else a :class:`~recordforge.SchemaError`
    says which features differ). Opening a directory with ``dataset.json`` reads no
    record: the manifest gives the schema and the counts.

    Without a manifest (and without ``schema``) the schema is inferred, by ``infer``:

    - ``"sample"`` (the default): feature names, kinds and shapes from the first 1,000
      records or 16 MiB of them, whichever comes first, summarised in Rust (no Python
      value per record); a feature is fixed-length when every sampled record holds the
      same number of values. The other records are checked as they are read: one whose
      feature has another number of values or another kind raises a
      :class:`~recordforge.SchemaError` naming its file and record, as a full pass at
      open would have; nothing that disagrees is ever returned.
    - ``"all"``: names and kinds from the first 1,000 records, value counts from every
      record at open (a full pass: a feature is fixed-length only when every record
      agrees), so that no record read later can disagree.

    When the records are ``tf.train.SequenceExample`` (they have feature lists), the
    context is inferred so and ``schema.feature_lists`` from every step of every record
    (:mod:`recordforge.sequence`; decoded in Python, slower). A
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
    if isinstance(path, (str, os.PathLike)):
        path = _fs.fspath(path)  # file:///data/ds is read as /data/ds
    if _fs.is_url(path):
        check_finished(str(path).rstrip("/"))
        found = _remote_files(str(path).rstrip("/"))
        if isinstance(found, Manifest):
            ds = from_manifest(str(path).rstrip("/"), found, split, on_corrupt, max_record_bytes)
            return ds if schema is None else ds._replace(schema=schema)
        files = found
    elif isinstance(path, (str, os.PathLike)):
        p = Path(path)
        check_finished(p)
        if (p / MANIFEST_NAME).exists():
            manifest = Manifest.load(p)
            ds = from_manifest(p, manifest, split, on_corrupt, max_record_bytes)
            return ds if schema is None else ds._replace(schema=schema)
        if p.is_dir():
            files = sorted(str(f) for f in p.iterdir() if f.name.endswith(RECORD_SUFFIXES))
        elif any(c in str(path) for c in "*?["):
            files = sorted(glob.glob(str(path)))
        else:
            files = [str(p)]
    else:
        entries = [_fs.fspath(f) for f in path]
        if any(_fs.isdir(e) or any(c in e for c in "*?[") for e in entries):
            parts = [
                open_dataset(
                    e,
                    split=split,
                    schema=schema,
                    on_corrupt=on_corrupt,
                    max_record_bytes=max_record_bytes,
                    infer=infer,
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
    sampled = None
    if schema is None and infer == "sample":
        schema, sampled = _sample_schema(files, on_corrupt == "skip", max_record_bytes)
    elif schema is None:
        if infer != "all":
            raise ValueError(f"infer must be 'sample' or 'all', not {infer!r}")
        schema = _infer_schema(files, on_corrupt == "skip", max_record_bytes)
    return Dataset(
        files, schema, on_corrupt=on_corrupt, max_record_bytes=max_record_bytes, sampled=sampled
    )


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
    shards = [part._shards for part in parts]
    known = all(s.counts is not None for s in shards)
    counts = [c for s in shards for c in s.counts or []] if known else None
    claims = [c for s in shards for c in (s.claims or [None] * len(s.files))] if known else None
    sampled = [part.sampled for part in parts if part.sampled is not None]
    return Dataset(
        files,
        first,
        counts=counts,
        on_corrupt=on_corrupt,
        claims=claims,
        max_record_bytes=parts[0].max_record_bytes,
        sampled=min(sampled) if sampled else None,
    )


def _spec_text(spec: FeatureSpec | None) -> str:
    if spec is None:
        return "absent"
    return f"{spec.dtype} {spec.shape}" + (f" {spec.meaning.tag}" if spec.meaning else "")


def _sample_schema(
    files: Sequence[str], skip: bool, max_record_bytes: int
) -> tuple[Schema, int | None]:
    """The schema of the first records of ``files`` (``infer="sample"``) and how many
    records it was inferred from (``None``: every record, the files hold no more). Local
    files are read in Rust (memory-mapped or streamed, CRCs checked) and summarised
    there; with ``skip`` or for URLs, records come through Python (damaged ones passed
    over as ``on_corrupt="skip"`` reads do). SequenceExamples: :func:`_infer_schema`."""
    sample = _core.SchemaSample(SAMPLE_RECORDS, SAMPLE_BYTES)
    for f in files:
        if sample.full:
            break
        if skip or _fs.is_url(f):
            records = (
                intact_records(f, max_record_bytes) if skip else read_records(f, max_record_bytes)
            )
            for k, record in enumerate(records):
                if sample.add(record, f"{f}: record {k}"):
                    break
        else:
            sample.add_file(f, max_record_bytes=max_record_bytes)
    if sample.lists:
        return _infer_schema(files, skip, max_record_bytes), None
    return schema_of_sample(sample), sample.records if sample.full else None


def _infer_schema(
    files: Sequence[str], skip: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Schema:
    """The schema of files without a manifest, from every record (``infer="all"``).
    Names and kinds come from the first records; then the number of values of every
    feature is counted in every record (a feature is fixed-length only when all records
    agree), so that a value missing in
    record 50,000 does not make the files unreadable with the schema inferred from them.
    Local uncompressed files are counted in Rust from a memory map (no value copied,
    ~10 GB/s on 2 cores); others are read through the columnar reader."""
    first = first_records(files, skip, max_record_bytes)
    sample, sequence = sample_schema(first)
    lists = {}
    if sequence:  # SequenceExamples: every step of every record counted, in Python
        records = (
            r
            for f in files
            for r in (intact_records if skip else read_records)(f, max_record_bytes)
        )
        lists = infer_feature_lists(_core.decode_sequence_example(r)[1] for r in records)
    if not len(sample):
        return Schema(feature_lists=lists)
    names = list(sample)
    lengths: dict[str, set[int]] = {name: set() for name in names}
    kinds: dict[str, set[int]] = {name: set() for name in names}
    for f in files:
        if not _fs.is_url(f) and is_plain(f):
            _count_in_rust(f, names, lengths, kinds, max_record_bytes)
        else:
            _count_by_reading(f, sample, lengths, max_record_bytes)
    codes = _core.VerifiedFile.KINDS
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


def _count_in_rust(
    path: str,
    names: list[str],
    lengths: dict[str, set[int]],
    kinds: dict[str, set[int]],
    max_record_bytes: int,
) -> None:
    found = _core.verify_file(
        path, names, [False] * len(names), os.cpu_count() or 1, max_record_bytes=max_record_bytes
    )
    good = found.crc_ok.copy()
    good[[i for i, _ in found.errors]] = False
    shape = (len(found.offsets), len(names))
    kind, count = found.kinds.reshape(shape)[good], found.counts.reshape(shape)[good]
    missing = kind == _core.VerifiedFile.MISSING
    for j, name in enumerate(names):
        # A missing feature counts as no values, as in infer_schema.
        lengths[name].update(np.unique(np.where(missing[:, j], 0, count[:, j])).tolist())
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
        names = [n for n, is_dir in _fs.listdir(url) if not is_dir and n.endswith(RECORD_SUFFIXES)]
        return [_fs.join(url, n) for n in names]
    if any(c in url for c in "*?["):
        return _fs.glob(url)
    return [url]

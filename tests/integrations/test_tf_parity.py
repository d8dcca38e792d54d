"""The NumPy path (``Dataset.batches`` and iteration, decoded in Rust) and the tf.data path
(``Dataset.to_tf_dataset``: TensorFlow's reader and ``tf.io.parse_example``) give the
same values, dtype included, for every feature of every record: tiny COCO per image and
per annotation, the TFX Chicago taxi shards (GZIP, written by TFX, schema inferred), and
seeded random schemas of every kind and shape. Both also equal ``rf.decode_example``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sources.coco import CocoSource

tf = pytest.importorskip("tensorflow")

Row = dict[str, Any]  # feature -> flat np.ndarray, or list[bytes]


def flat(value: Any) -> Any:
    """A value in ``rf.decode_example``'s form: a flat array, or a list of bytes."""
    if isinstance(value, bytes):
        return [value]
    array = np.asarray(value)
    if array.dtype == object:
        return [bytes(v) for v in array.reshape(-1)]
    return array.reshape(-1)


def numpy_batch_rows(ds: rf.Dataset, batch_size: int) -> Iterator[Row]:
    for batch in ds.batches(batch_size):
        n = len(next(iter(batch.values())))
        for i in range(n):
            yield {name: flat(column[i]) for name, column in batch.items()}


def _split(values: np.ndarray, splits: np.ndarray) -> list[Any]:
    return [flat(values[a:b]) for a, b in itertools.pairwise(splits)]


def tf_rows(ds: rf.Dataset, batch_size: int) -> Iterator[Row]:
    """Records through ``to_tf_dataset`` (files in order, no image decoding), taken
    apart with NumPy (eager ops per record would take minutes on 15,000 records)."""
    for batch in ds.to_tf_dataset(batch_size=batch_size, decode_images=False, interleave=False):
        columns: dict[str, list[Any]] = {}
        for name, value in batch.items():
            if isinstance(value, tf.SparseTensor):
                n = int(value.dense_shape[0])
                rows = np.bincount(value.indices[:, 0].numpy(), minlength=n)
                splits = np.concatenate([[0], np.cumsum(rows)])
                columns[name] = _split(value.values.numpy(), splits)
            elif isinstance(value, tf.RaggedTensor):
                outer = value.row_splits.numpy()
                inner = value.values.row_splits.numpy()
                lengths = np.diff(inner).astype(np.int64)
                columns[f"{name}/row_lengths"] = _split(lengths, outer)
                columns[name] = _split(value.flat_values.numpy(), inner[outer])
            else:
                columns[name] = [flat(r) for r in value.numpy()]
        n = len(next(iter(columns.values())))
        yield from ({k: v[i] for k, v in columns.items()} for i in range(n))


def assert_rows_equal(got: Row, want: Row, where: str, padded: Sequence[str] = ()) -> None:
    """``padded``: features that ``want`` has padded with zeros to the longest of its batch
    (``(None, k)``: TF's ``FixedLenSequenceFeature`` gives a dense ``[n, longest, k]``)."""
    assert sorted(got) == sorted(want), where
    for name, w in want.items():
        g = got[name]
        if name in padded:
            assert len(g) <= len(w), f"{where} {name}"
            g = np.concatenate([g, np.zeros(len(w) - len(g), g.dtype)])
        if len(w) == 0 and len(g) == 0:
            continue  # an absent or empty feature: no values (TF types it by the schema)
        if isinstance(w, list) or isinstance(g, list):
            assert isinstance(g, list) and isinstance(w, list), f"{where} {name}"
            assert g == w, f"{where} {name}"
        else:
            assert g.dtype == w.dtype, f"{where} {name}: {g.dtype} != {w.dtype}"
            if g.shape != w.shape or g.tobytes() != w.tobytes():  # bit for bit: -0.0, NaN
                np.testing.assert_array_equal(g, w, err_msg=f"{where} {name}")
                raise AssertionError(f"{where} {name}: equal values, different bits")


def assert_paths_identical(ds: rf.Dataset, expected_records: int) -> None:
    via_tf = list(tf_rows(ds, 64))
    via_batches = list(numpy_batch_rows(ds, 7))
    via_iter = [{name: flat(v) for name, v in row.items()} for row in ds]
    assert len(via_tf) == len(via_batches) == len(via_iter) == len(ds) == expected_records
    padded = [n for n, spec in ds.schema.items() if len(spec.shape) == 2 and spec.shape[0] is None]
    padded = [n for n in padded if not ds.schema[n].ragged]
    for i, (t, b, it) in enumerate(zip(via_tf, via_batches, via_iter, strict=True)):
        assert_rows_equal(b, t, f"record {i} (batches vs tf.data)", padded)
        assert_rows_equal(it, t, f"record {i} (iteration vs tf.data)", padded)
        assert_rows_equal(it, b, f"record {i} (iteration vs batches)")


# -- tiny COCO -------------------------------------------------------------------------


def _convert(source: CocoSource, out: Path, **kwargs: Any) -> rf.Dataset:
    rf.write_dataset(
        source.items(), out, to_records=source.to_records, schema=source.schema(), **kwargs
    )
    return rf.open_dataset(out)


def test_coco_per_image(tiny: dict[str, Path], tmp_path: Path) -> None:
    source = CocoSource.from_files(
        tiny["annotations"], tiny["images"], captions=tiny["captions"], keypoints=tiny["keypoints"]
    )
    ds = _convert(source, tmp_path, max_records=16)
    # Every kind of feature is here: fixed, (None,), (None, None) polygons and RLE, bytes.
    shapes = {spec.shape for spec in ds.schema.values()}
    assert {(), (None,), (None, None)} <= shapes
    assert_paths_identical(ds, 50)


def test_coco_per_annotation_gzip(tiny: dict[str, Path], tmp_path: Path) -> None:
    source = CocoSource.from_files(tiny["annotations"], tiny["images"], per="annotation")
    ds = _convert(source, tmp_path, max_records=100, compression="gzip")
    assert ds.compression == "gzip"
    assert_paths_identical(ds, 382)


# -- TFX Chicago taxi: foreign GZIP shards, schema inferred --------------------------------


def test_tfx_taxi_shards(shared_data: Path) -> None:
    shards = shared_data / "tfx_chicago_taxi" / "tfrecord_gzip"
    files = sorted(shards.iterdir())
    # trip_seconds is never empty in the first 1,000 records, but is later: the schema
    # open_dataset infers from its sample (16 MiB, every record of these files) counts
    # every record's values, as infer_schema over all does.
    schema = rf.infer_schema(rf.decode_example(r) for f in files for r in rf.read_records(f))
    assert schema["trip_seconds"].shape == (None,) and schema["fare"].shape == ()
    ds = rf.open_dataset(shards)
    assert ds.schema == schema
    assert len(ds.files) == 2 and ds.compression == "gzip"
    assert_paths_identical(ds, 15_000)
    # And both equal what rf.decode_example gives record by record (the 3 kinds).
    decoded = [rf.decode_example(r) for f in ds.files for r in rf.read_records(f)]
    for i, (row, ex) in enumerate(zip(numpy_batch_rows(ds, 1000), decoded, strict=True)):
        want = {name: ex.get(name, np.empty(0, np.float32)) for name in row}
        assert_rows_equal(row, want, f"taxi record {i}")


# -- random schemas ---------------------------------------------------------------------

KINDS = ("int64", "float32", "bytes", "string")
SHAPES: tuple[tuple[int | None, ...], ...] = ((), (1,), (3,), (2, 2), (None,), (None, 2))


def _value(rng: np.random.Generator, dtype: str, n: int) -> Any:
    if dtype == "int64":
        pool = np.array([0, 1, -1, 2**63 - 1, -(2**63), 2**31, 127, -128], np.int64)
        return np.where(rng.random(n) < 0.5, rng.choice(pool, n), rng.integers(-(2**40), 2**40, n))
    if dtype == "float32":
        pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
        normal = rng.standard_normal(n).astype(np.float32) * 1e3
        return np.where(rng.random(n) < 0.3, rng.choice(pool, n), normal).astype(np.float32)
    if n == 0:  # an empty list has no kind for the encoder, even with a schema
        return np.array([], np.bytes_)
    if dtype == "bytes":
        return [rng.bytes(int(rng.integers(0, 12))) for _ in range(n)]
    return ["".join(rng.choice(list("aé€😀 z"), int(rng.integers(0, 6)))) for _ in range(n)]


def _random_dataset(seed: int, out: Path) -> tuple[rf.Dataset, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    specs: dict[str, rf.FeatureSpec] = {"v": rf.FeatureSpec(dtype="float32", shape=(None,))}
    for k in range(int(rng.integers(3, 9))):
        dtype = str(rng.choice(KINDS))
        choices = [s for s in SHAPES if dtype in ("int64", "float32") or len(s) < 2]
        shape = choices[int(rng.integers(len(choices)))]
        specs[f"f{k}/{dtype}"] = rf.FeatureSpec(dtype=dtype, shape=shape)
    if rng.random() < 0.6:
        specs["rows"] = rf.FeatureSpec(
            dtype=str(rng.choice(["int64", "float32"])), shape=(None, None)
        )
    rows: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 300))):
        row: dict[str, Any] = {}
        for name, spec in specs.items():
            if spec.ragged:
                lengths = rng.integers(0, 4, int(rng.integers(0, 4)))
                row[name] = np.asarray(_value(rng, spec.dtype, int(lengths.sum())))
                row[f"{name}/row_lengths"] = lengths.astype(np.int64)
                continue
            fixed = [d for d in spec.shape if d is not None]
            n = int(np.prod(fixed)) * (int(rng.integers(0, 5)) if None in spec.shape else 1)
            value = _value(rng, spec.dtype, n)
            if isinstance(value, np.ndarray):
                row[name] = value.reshape(spec.shape) if spec.fixed else value
            else:
                row[name] = value if spec.shape != () else value[0]
        rows.append(row)
    compression = [None, "gzip", "zlib"][int(rng.integers(3))]
    rf.write_dataset(
        rows,
        out,
        schema=rf.Schema(specs),
        max_records=int(rng.integers(1, 120)),
        compression=compression,
    )
    return rf.open_dataset(out), rows


@pytest.mark.parametrize("seed", range(12))
def test_random_schemas(seed: int, tmp_path: Path) -> None:
    ds, rows = _random_dataset(seed, tmp_path)
    assert_paths_identical(ds, len(rows))
    # What was written comes back (strings as UTF-8 bytes).
    for i, (got, row) in enumerate(zip(numpy_batch_rows(ds, 50), rows, strict=True)):
        want: Row = {}
        for name, value in row.items():
            if isinstance(value, str):
                value = [value.encode()]
            elif isinstance(value, bytes):
                value = [value]
            elif isinstance(value, list):
                value = [v.encode() if isinstance(v, str) else v for v in value]
            want[name] = value if isinstance(value, list) else np.asarray(value).reshape(-1)
        assert_rows_equal(got, want, f"seed {seed} record {i}")

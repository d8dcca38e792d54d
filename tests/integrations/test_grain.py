"""``Dataset.to_grain``: a Grain random-access source (len, getitem equal to the
sequential read, picklable) that works in Grain's ``MapDataset`` and ``DataLoader``
(worker processes included); ``numpy_batches`` for JAX."""

from __future__ import annotations

import doctest
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.integrations import grain as rf_grain
from recordforge.integrations.grain import GrainSource, numpy_batches
from recordforge.sources.images import ImageFolderSource

N = 57


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    rows = [
        {
            "id": i,
            "xy": np.array([i, i * 2], np.float32),
            "v": np.arange(i % 4, dtype=np.int64),
            "name": f"n{i}",
        }
        for i in range(N)
    ]
    schema = rf.Schema(
        {
            "id": rf.FeatureSpec(dtype="int64"),
            "xy": rf.FeatureSpec(dtype="float32", shape=(2,)),
            "v": rf.FeatureSpec(dtype="int64", shape=(None,)),
            "name": rf.FeatureSpec(dtype="string"),
        }
    )
    out = tmp_path_factory.mktemp("grain")
    rf.write_dataset(rows, out, schema=schema, max_records=10)
    return rf.open_dataset(out)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return sorted(a) == sorted(b) and all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a
    )


def test_len_and_getitem_equal_sequential_read(ds: rf.Dataset) -> None:
    source = ds.to_grain()
    assert isinstance(source, GrainSource) and len(source) == len(ds) == N
    sequential = list(ds)
    for i in [*range(N), *reversed(range(N))]:  # in any order
        assert same(source[i], sequential[i]), i
    assert source[np.int64(5)]["id"] == 5  # Grain passes NumPy ints too
    assert source[-1]["id"] == N - 1
    with pytest.raises(IndexError):
        source[N]
    assert "records=57" in repr(source)
    # Grain's batched read: the same records.
    many = source._getitems([5, 0, 56, 5])
    assert len(many) == 4
    assert all(same(m, source[i]) for m, i in zip(many, [5, 0, 56, 5], strict=True))


def test_features_and_shard(ds: rf.Dataset) -> None:
    source = ds.to_grain(features=["id"])
    assert list(source[3]) == ["id"]
    part = ds.shard(1, 2).to_grain(features=["id"])
    assert [int(part[i]["id"]) for i in range(len(part))] == [int(r["id"]) for r in ds.shard(1, 2)]


def test_picklable_after_use(ds: rf.Dataset) -> None:
    source = ds.to_grain()
    source[7]  # opens a file
    again = pickle.loads(pickle.dumps(source))
    assert same(again[7], source[7]) and len(again) == N


def test_compressed_shards_refused(tmp_path: Path) -> None:
    rf.write_dataset({"x": np.arange(3)}, tmp_path, compression="gzip")
    with pytest.raises(ValueError, match="gzip"):
        rf.open_dataset(tmp_path).to_grain()


grain = pytest.importorskip("grain")


def test_grain_map_dataset_pipeline(ds: rf.Dataset) -> None:
    source = ds.to_grain(features=["id", "xy"])
    pipeline = grain.MapDataset.source(source).shuffle(seed=3).batch(8, drop_remainder=False)
    batches = list(pipeline)
    ids = np.concatenate([b["id"] for b in batches]).tolist()
    assert sorted(ids) == list(range(N)) and ids != list(range(N))
    assert batches[0]["xy"].shape == (8, 2) and batches[0]["xy"].dtype == np.float32
    again = np.concatenate([b["id"] for b in pipeline]).tolist()
    assert again == ids  # same seed, same order
    # Grain's own sharding between hosts: each record in exactly one shard.
    seen = []
    for index in range(3):
        shard = grain.MapDataset.source(source)[index::3]
        seen += [int(r["id"]) for r in shard]
    assert sorted(seen) == list(range(N))


@pytest.mark.parametrize("workers", [0, 2])
def test_grain_data_loader(ds: rf.Dataset, workers: int) -> None:
    from absl import flags

    if workers and not flags.FLAGS.is_parsed():
        # Grain's worker processes read absl flags; outside absl.app nobody parsed them.
        flags.FLAGS.mark_as_parsed()
    source = ds.to_grain(features=["id", "xy"])
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.IndexSampler(
            num_records=len(source),
            shard_options=grain.sharding.NoSharding(),
            shuffle=True,
            num_epochs=1,
            seed=11,
        ),
        operations=[grain.transforms.Batch(batch_size=10, drop_remainder=False)],
        worker_count=workers,
    )
    ids = [i for batch in loader for i in batch["id"].tolist()]
    assert sorted(ids) == list(range(N))


@pytest.fixture(scope="module")
def image_ds(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    from PIL import Image

    root = tmp_path_factory.mktemp("grain_images_src")
    (root / "a").mkdir()
    for k in range(5):
        pixels = np.full((10 + k, 12, 3), 40 * k, np.uint8)
        Image.fromarray(pixels).save(root / "a" / f"{k}.png")
    src = ImageFolderSource(root)
    out = tmp_path_factory.mktemp("grain_images")
    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
    return rf.open_dataset(out)


def test_images(image_ds: rf.Dataset) -> None:
    source = image_ds.to_grain(decode_images=True)
    image = source[2]["image/encoded"]
    assert image.dtype == np.uint8 and image.shape == (12, 12, 3) and (image == 80).all()
    resized = image_ds.to_grain(decode_images=True, image_size=(4, 6))
    assert resized[4]["image/encoded"].shape == (4, 6, 3)
    for got, i in zip(resized._getitems([4, 1]), [4, 1], strict=True):
        assert (got["image/encoded"] == resized[i]["image/encoded"]).all()
    assert isinstance(image_ds.to_grain()[0]["image/encoded"], bytes)


def test_numpy_batches_static_shapes(ds: rf.Dataset, image_ds: rf.Dataset) -> None:
    batches = list(numpy_batches(ds, 10, pad_to={"v": 2}))
    assert len(batches) == N // 10  # drop_remainder by default: static shapes
    b = batches[1]
    assert sorted(b) == ["id", "v", "v/lengths", "xy"]  # bytes and unpadded ragged left out
    assert b["v"].shape == (10, 2) and b["v"].dtype == np.int64
    assert b["v/lengths"].tolist() == [i % 4 for i in range(10, 20)]
    assert b["v"][1].tolist() == [0, 1] and b["v"][2].tolist() == [0, 0]  # cut, padded
    assert len(list(numpy_batches(ds, 10, drop_remainder=False))) == N // 10 + 1
    images = next(numpy_batches(image_ds, 5, image_size=8))
    assert images["image/encoded"].shape == (5, 8, 8, 3)
    with pytest.raises(KeyError, match="nope"):
        next(numpy_batches(ds, 4, pad_to={"nope": 1}))


JAX_STEP = """
import sys, jax, jax.numpy as jnp, recordforge as rf
from recordforge.integrations.grain import numpy_batches

@jax.jit
def step(batch):
    return jnp.sum(batch["xy"]) + jnp.sum(batch["v"])

ds = rf.open_dataset(sys.argv[1]).select(["xy", "v"])
print(sum(float(step(b)) for b in numpy_batches(ds, 8, pad_to={"v": 3})))
"""


def test_numpy_batches_feed_jax(ds: rf.Dataset) -> None:
    pytest.importorskip("jax")
    # In a child process: JAX's threads must not be running in this one, which forks
    # DataLoader workers in other tests.
    data = str(Path(ds.files[0]).parent)
    done = subprocess.run(
        [sys.executable, "-c", JAX_STEP, data], capture_output=True, text=True, check=True
    )
    n = N // 8 * 8
    want = sum(3 * i for i in range(n)) + sum(sum(range(i % 4)) for i in range(n))
    assert float(done.stdout.split()[-1]) == want


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(rf_grain, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

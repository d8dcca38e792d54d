"""``Dataset.to_torch``: every record exactly once across DataLoader workers and ranks
(simulated, and through a real ``torch.distributed`` gloo group), seeded per-epoch
shuffling, what each kind of feature becomes, decoded images, pickling, errors."""

from __future__ import annotations

import doctest
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sources.images import ImageFolderSource

torch = pytest.importorskip("torch")
from recordforge.integrations import torch as rf_torch  # noqa: E402
from recordforge.integrations.torch import RaggedTensor, TorchDataset  # noqa: E402

N = 103


def _rows() -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "pair": np.array([i, -i], np.int64),
            "score": np.float32(i / 4),
            "v": np.arange(i % 4, dtype=np.float32),
            "name": f"n{i}",
            "tags": np.array([b"t"] * (i % 3 + 1)),
            "poly": np.arange(i % 5, dtype=np.float32),
            "poly/row_lengths": np.array([i % 5], np.int64) if i % 5 else np.empty(0, np.int64),
        }
        for i in range(N)
    ]


SCHEMA = rf.Schema(
    {
        "id": rf.FeatureSpec(dtype="int64"),
        "pair": rf.FeatureSpec(dtype="int64", shape=(2,)),
        "score": rf.FeatureSpec(dtype="float32"),
        "v": rf.FeatureSpec(dtype="float32", shape=(None,)),
        "name": rf.FeatureSpec(dtype="string"),
        "tags": rf.FeatureSpec(dtype="bytes", shape=(None,)),
        "poly": rf.FeatureSpec(dtype="float32", shape=(None, None)),
    }
)


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    """11 files: 4 parts (2 ranks x 2 workers) are whole files."""
    out = tmp_path_factory.mktemp("torch_many")
    rf.write_dataset(_rows(), out, schema=SCHEMA, max_records=10)
    return rf.open_dataset(out)


@pytest.fixture(scope="module")
def few_files(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    """3 files: 4 parts are every 4th record."""
    out = tmp_path_factory.mktemp("torch_few")
    rf.write_dataset(_rows(), out, schema=SCHEMA, max_records=40)
    return rf.open_dataset(out)


def loader(ds: Any, workers: int = 0) -> Any:
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)


def ids_of(tds: Any, workers: int = 0) -> list[int]:
    return [i for batch in loader(tds, workers) for i in batch["id"].reshape(-1).tolist()]


@pytest.mark.parametrize("which", ["many_files", "few_files"])
def test_two_ranks_two_workers_read_every_record_once(
    which: str, request: pytest.FixtureRequest
) -> None:
    ds = request.getfixturevalue(which)
    assert len(ds.files) == (11 if which == "many_files" else 3)
    per_rank = []
    for rank in range(2):
        tds = ds.to_torch(batch_size=8, rank=rank, world_size=2, features=["id"])
        per_rank.append(ids_of(tds, workers=2))
    seen = per_rank[0] + per_rank[1]
    assert sorted(seen) == list(range(N))  # each exactly once
    assert per_rank[0] and per_rank[1]
    # The same with shuffling: still each once, per epoch.
    for epoch in range(2):
        seen = []
        for rank in range(2):
            tds = ds.to_torch(batch_size=5, rank=rank, world_size=2, shuffle_buffer=20, seed=7)
            tds.set_epoch(epoch)
            seen += ids_of(tds, workers=2)
        assert sorted(seen) == list(range(N))


@pytest.mark.parametrize("which", ["many_files", "few_files"])
@pytest.mark.parametrize("drop", [False, True])
def test_even_gives_every_rank_the_same_steps(
    which: str, drop: bool, request: pytest.FixtureRequest
) -> None:
    """even=True: every part (rank x worker) reads the smallest part's number of records,
    each at most once, the first ones of its part, ragged features cut with them."""
    ds = request.getfixturevalue(which)
    parts = [len(ds.shard(k, 4)) for k in range(4)]
    assert len(set(parts)) > 1  # uneven without it
    want = min(parts) - (min(parts) % 3 if drop else 0)
    steps, seen = [], []
    for rank in range(2):
        tds = ds.to_torch(batch_size=3, rank=rank, world_size=2, even=True, drop_remainder=drop)
        batches = list(loader(tds, workers=2))
        steps.append(len(batches))
        for b in batches:
            seen += b["id"].tolist()
            assert len(b["v"].offsets) == len(b["id"]) + 1
            assert len(b["poly"].offsets) == len(b["id"]) + 1
    assert steps[0] == steps[1]
    # Outside the DataLoader's workers (2 parts: the ranks), the smaller rank's count.
    assert tds.records_per_part() <= min(len(ds.shard(k, 2)) for k in range(2))
    assert len(seen) == 4 * want and len(set(seen)) == len(seen)
    for k in range(4):  # each part's first records
        first = [int(r["id"]) for r in ds.shard(k, 4)][:want]
        assert set(first) <= set(seen)


def test_parts_are_dataset_shards(many_files: rf.Dataset) -> None:
    """Outside a worker, rank r of w reads Dataset.shard(r, w)."""
    for rank in range(3):
        tds = many_files.to_torch(batch_size=16, rank=rank, world_size=3)
        assert tds.part() == (rank, 3)
        want = [int(r["id"]) for r in many_files.shard(rank, 3)]
        assert ids_of(tds) == want


def test_single_process_reads_in_order(many_files: rf.Dataset) -> None:
    assert ids_of(many_files.to_torch(batch_size=10)) == list(range(N))
    assert ids_of(many_files.to_torch(batch_size=10), workers=2) != []


def test_shuffle_seed_and_epoch(few_files: rf.Dataset) -> None:
    def order(seed: int, epoch: int = 0, workers: int = 0) -> list[int]:
        tds = few_files.to_torch(batch_size=9, shuffle_buffer=32, seed=seed, features=["id"])
        tds.set_epoch(epoch)
        return ids_of(tds, workers)

    first = order(1)
    assert first == order(1)  # same seed, same epoch: same order
    assert first != order(2)  # another seed
    assert first != order(1, epoch=1)  # another epoch
    assert order(1, epoch=1) == order(1, epoch=1)
    assert sorted(first) == list(range(N)) and first != list(range(N))
    assert order(3, workers=2) == order(3, workers=2)  # reproducible with workers too
    # A dataset made with .shuffle(n, seed) shuffles so by default.
    own = few_files.shuffle(32, seed=1).to_torch(batch_size=9, features=["id"])
    assert ids_of(own) == first


def test_batch_collation(many_files: rf.Dataset) -> None:
    tds = many_files.to_torch(batch_size=7)
    batch = next(iter(loader(tds)))
    want = next(many_files.batches(7))
    assert batch["id"].dtype == torch.int64 and batch["id"].tolist() == list(range(7))
    assert batch["pair"].shape == (7, 2) and batch["pair"][3].tolist() == [3, -3]
    assert batch["score"].dtype == torch.float32 and batch["score"][2].item() == 0.5
    v = batch["v"]
    assert isinstance(v, RaggedTensor) and v.values.dtype == torch.float32
    assert v.offsets.dtype == torch.int64
    assert v.offsets.tolist() == want["v"].row_splits.tolist()
    assert v.values.tolist() == want["v"].values.tolist()
    assert batch["name"] == [f"n{i}".encode() for i in range(7)]
    assert batch["tags"] == [[b"t"] * (i % 3 + 1) for i in range(7)]
    assert isinstance(batch["poly"], RaggedTensor)
    assert isinstance(batch["poly/row_lengths"], RaggedTensor)
    assert batch["poly/row_lengths"].values.tolist() == [1, 2, 3, 4, 1]
    # EmbeddingBag takes (values, offsets) as they are.
    bag = torch.nn.EmbeddingBag(10, 3, mode="sum", include_last_offset=True)
    assert bag(v.values.long(), v.offsets).shape == (7, 3)


def test_nested_layout_and_drop_remainder(many_files: rf.Dataset) -> None:
    tds = many_files.to_torch(batch_size=10, ragged="nested", drop_remainder=True)
    batches = list(loader(tds))
    assert len(batches) == N // 10
    nested = batches[0]["v"]
    assert nested.is_nested and nested.size(0) == 10
    assert [t.tolist() for t in nested.unbind()] == [list(range(i % 4)) for i in range(10)]
    assert len(list(loader(many_files.to_torch(batch_size=10)))) == N // 10 + 1


def test_single_records_and_default_collate(many_files: rf.Dataset) -> None:
    records = list(many_files.to_torch())
    assert len(records) == N
    r = records[6]
    assert r["id"].shape == () and r["id"].item() == 6
    assert r["pair"].tolist() == [6, -6] and r["v"].tolist() == [0.0, 1.0]
    assert r["name"] == b"n6" and r["tags"] == [b"t"]
    fixed = many_files.select(["id", "pair", "score", "name"]).to_torch()
    batch = next(iter(torch.utils.data.DataLoader(fixed, batch_size=4, num_workers=2)))
    assert batch["id"].tolist() == [0, 1, 2, 3] and batch["pair"].shape == (4, 2)
    assert batch["name"] == [b"n0", b"n1", b"n2", b"n3"]


def test_no_non_writable_tensor_warnings(many_files: rf.Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(many_files.to_torch(batch_size=32))
        list(many_files.to_torch())


@pytest.fixture(scope="module")
def image_ds(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    from PIL import Image

    root = tmp_path_factory.mktemp("torch_images_src")
    rng = np.random.default_rng(0)
    for k in range(12):
        folder = root / ("cat" if k % 2 else "dog")
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 255, (20 + k, 30 + 2 * k, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.{'png' if k % 3 else 'jpg'}")
    src = ImageFolderSource(root)
    out = tmp_path_factory.mktemp("torch_images")
    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
    return rf.open_dataset(out)


def test_images_decoded(image_ds: rf.Dataset) -> None:
    encoded = [r["image/encoded"] for r in image_ds]
    exact = [rf.images.decode(e) for e in encoded]
    batch = next(iter(loader(image_ds.to_torch(batch_size=5, decode_threads=2))))
    images = batch["image/encoded"]
    assert isinstance(images, list) and len(images) == 5
    for got, want in zip(images, exact, strict=False):
        assert got.dtype == torch.uint8 and got.numpy().tobytes() == want.tobytes()
        assert got.shape == want.shape
    resized = image_ds.to_torch(batch_size=4, image_size=(16, 24), channels_first=True)
    batch = next(iter(loader(resized)))
    assert batch["image/encoded"].shape == (4, 3, 16, 24)
    want = rf.images.decode_batch(encoded[:4], size=(16, 24))
    assert (batch["image/encoded"].permute(0, 2, 3, 1).numpy() == want).all()
    # In 2 workers (each decoding on its share of the cores): every image once.
    labels = [b["image/class/label"] for b in loader(resized, workers=2)]
    assert sorted(torch.cat(labels).tolist()) == sorted(
        int(r["image/class/label"]) for r in image_ds
    )
    assert batch["image/class/label"].shape == (4,)
    raw = next(iter(image_ds.to_torch(batch_size=2, decode_images=False)))
    assert raw["image/encoded"] == encoded[:2]
    single = next(iter(image_ds.to_torch(image_size=8)))
    assert single["image/encoded"].shape == (8, 8, 3)


def test_pickles_after_use(many_files: rf.Dataset) -> None:
    tds = many_files.to_torch(batch_size=50, shuffle_buffer=10, seed=4)
    first = ids_of(tds)
    many_files[3]  # the dataset now holds open files
    again = pickle.loads(pickle.dumps(tds))
    assert isinstance(again, TorchDataset) and ids_of(again) == first
    spawned = torch.utils.data.DataLoader(
        tds, batch_size=None, num_workers=1, multiprocessing_context="spawn"
    )
    assert [i for b in spawned for i in b["id"].tolist()] == first


def _distributed_worker(rank: int, world_size: int, store: str, data: str, out: str) -> None:
    import torch.distributed as dist

    import recordforge as rf

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        tds = rf.open_dataset(data).to_torch(batch_size=6, features=["id"])
        ids = [i for b in loader(tds, workers=2) for i in b["id"].tolist()]
        Path(out, f"{rank}.txt").write_text(" ".join(map(str, ids)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torch_distributed_ranks_by_default(many_files: rf.Dataset, tmp_path: Path) -> None:
    data = str(Path(many_files.files[0]).parent)
    torch.multiprocessing.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "store"), data, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    per_rank = [[int(v) for v in (tmp_path / f"{r}.txt").read_text().split()] for r in range(2)]
    assert per_rank[0] and per_rank[1]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))


def test_errors(many_files: rf.Dataset) -> None:
    with pytest.raises(ValueError, match=r"without \.shard"):
        many_files.shard(0, 2).to_torch()
    with pytest.raises(ValueError, match="batch_size"):
        many_files.to_torch(batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        many_files.to_torch(rank=0)
    with pytest.raises(ValueError, match="rank 2"):
        many_files.to_torch(rank=2, world_size=2)
    with pytest.raises(ValueError, match="ragged"):
        many_files.to_torch(ragged="padded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image size"):
        many_files.to_torch(image_size=0)
    with pytest.raises(KeyError, match="nope"):
        many_files.to_torch(features=["nope"])


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(rf_torch, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

"""``ds.batches(n, copy=False)``: bytes values as read-only memoryviews of blocks that the
reading threads fill and the dataset reuses (``_core.BlockPool``): the same values as
``copy=True`` for every shape and reading mode, a view unchanged while it is kept (across
batches and epochs), blocks reused once no view is left, the pool bounded, errors named
as with ``bytes``."""

from __future__ import annotations

import gc
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.errors import CorruptRecordError


def _as_bytes(value: Any) -> Any:
    """Every memoryview in ``value`` (an object array, a Ragged, a list) as bytes."""
    if isinstance(value, rf.Ragged):
        return [_as_bytes(row) for row in value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_as_bytes(v) for v in value.tolist()]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    return bytes(value) if isinstance(value, memoryview) else value


def _plain(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: _as_bytes(column) for name, column in batch.items()}


def _views_in(batch: dict[str, Any]) -> list[memoryview]:
    out: list[memoryview] = []
    for column in batch.values():
        values = column.values if isinstance(column, rf.Ragged) else column
        if isinstance(values, np.ndarray) and values.dtype == object:
            out += [v for v in values.ravel().tolist() if isinstance(v, memoryview)]
    return out


def _write(tmp_path: Path, n: int = 300, **kwargs: Any) -> list[bytes]:
    rng = np.random.default_rng(n)
    blobs = [rng.bytes(int(s)) for s in rng.integers(0, 5000, n)]
    columns = {
        "id": np.arange(n),
        "blob": blobs,
        "pair": [[b, b[:3]] for b in blobs],  # fixed shape (2,)
        "tags": [np.array([b"t%d" % i] * (i % 4), dtype=np.bytes_) for i in range(n)],
        "x": rng.random((n, 3), dtype=np.float32),
    }
    rf.write_dataset(columns, tmp_path, max_records=70, **kwargs)
    return blobs


@pytest.mark.parametrize(
    "how",
    [
        {},
        {"drop_remainder": True},
        {"shuffle": 50},
        {"shard": (1, 3)},
        {"select": ["tags", "id"]},
        {"threads": 1},
        {"threads": 5},
    ],
    ids=lambda how: ",".join(how) or "plain",
)
def test_views_hold_what_bytes_hold_in_every_reading_mode(
    tmp_path: Path, how: dict[str, Any]
) -> None:
    _write(tmp_path)
    ds = rf.open_dataset(tmp_path)
    if "shuffle" in how:
        ds = ds.shuffle(how["shuffle"], seed=3)
    if "shard" in how:
        ds = ds.shard(*how["shard"])
    if "select" in how:
        ds = ds.select(how["select"])
    kwargs = {k: v for k, v in how.items() if k in ("drop_remainder", "threads")}
    epoch = ds._epoch
    want = [_plain(b) for b in ds.batches(32, **kwargs)]
    ds._epoch = epoch  # the same shuffle order again
    got_batches = list(ds.batches(32, copy=False, **kwargs))
    assert [_plain(b) for b in got_batches] == want
    views = [v for b in got_batches for v in _views_in(b)]
    assert views, "bytes values come as memoryviews"
    assert all(v.readonly and v.format == "B" for v in views)


def test_gzip_shards_give_views_of_the_decompressed_values(tmp_path: Path) -> None:
    blobs = _write(tmp_path, compression="gzip")
    ds = rf.open_dataset(tmp_path)
    got = [bytes(v) for b in ds.batches(50, copy=False) for v in b["blob"].tolist()]
    assert got == blobs


def test_a_view_cannot_be_written_through(tmp_path: Path) -> None:
    _write(tmp_path, n=10)
    batch = next(iter(rf.open_dataset(tmp_path).batches(10, copy=False)))
    view = batch["blob"][1]
    with pytest.raises(TypeError):
        view[0:1] = b"z"
    with pytest.raises(ValueError):
        np.frombuffer(view, np.uint8)[0:1] = 0  # numpy sees it read-only too


@pytest.mark.slow
def test_a_kept_view_is_never_overwritten_by_later_batches_or_epochs(tmp_path: Path) -> None:
    blobs = _write(tmp_path)
    ds = rf.open_dataset(tmp_path)
    kept: list[tuple[int, memoryview]] = []
    for epoch in range(4):
        for k, batch in enumerate(ds.batches(16, copy=False)):
            if epoch == 0 and k % 3 == 0:
                kept += zip(batch["id"].tolist(), batch["blob"].tolist(), strict=True)
            del batch
            gc.collect()
    assert kept
    for i, view in kept:
        assert bytes(view) == blobs[i]


def _block_address(view: memoryview) -> int:
    """Where the block that ``view`` is a slice of starts (the array it was cut from)."""
    base = view.obj
    assert isinstance(base, np.ndarray)
    return int(base.__array_interface__["data"][0])


def test_blocks_are_reused_once_no_view_is_left_and_the_pool_is_bounded(tmp_path: Path) -> None:
    _write(tmp_path, n=600)
    ds = rf.open_dataset(tmp_path)
    addresses: set[int] = set()
    batches = 0
    for _ in range(5):
        for batch in ds.batches(8, copy=False):
            addresses.add(_block_address(batch["blob"][0]))
            batches += 1
            del batch
    assert batches == 5 * 75
    # Blocks in flight at once: decoders x prefetch, the one being used, the pool's.
    assert len(addresses) <= 20, f"{len(addresses)} blocks for {batches} batches"
    assert 0 < ds._blocks.kept_bytes <= 512 << 20


def test_views_kept_by_the_caller_keep_their_blocks_out_of_the_pool(tmp_path: Path) -> None:
    _write(tmp_path, n=200)
    ds = rf.open_dataset(tmp_path)
    held = list(ds.batches(10, copy=False))
    assert ds._blocks.kept_bytes == 0, "every block is still referred to"
    addresses = {_block_address(b["blob"][0]) for b in held}
    assert len(addresses) == 20, "each held batch has a block of its own"
    del held
    gc.collect()
    assert ds._blocks.kept_bytes > 0


def test_a_damaged_record_is_named_and_the_views_before_it_stay_good(tmp_path: Path) -> None:
    blobs = _write(tmp_path, n=100)
    shard = sorted(tmp_path.glob("*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path)
    got: list[memoryview] = []
    batches = ds.batches(5, copy=False)
    with pytest.raises(CorruptRecordError) as e:
        for b in batches:
            got += b["blob"].tolist()
    assert shard.name in str(e.value)
    assert 0 < len(got) < 70
    assert [bytes(v) for v in got] == blobs[: len(got)]
    with pytest.raises(CorruptRecordError):
        next(batches)  # raised again


def test_skipped_damage_with_views_matches_bytes(tmp_path: Path) -> None:
    _write(tmp_path, n=100)
    shard = sorted(tmp_path.glob("*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    want_ds = rf.open_dataset(tmp_path, on_corrupt="skip")
    want = [_plain(b) for b in want_ds.batches(7)]
    ds = rf.open_dataset(tmp_path, on_corrupt="skip")
    assert [_plain(b) for b in ds.batches(7, copy=False)] == want
    assert ds.skipped == want_ds.skipped and ds.skipped


def test_sequence_examples_give_bytes_with_copy_false(tmp_path: Path) -> None:
    records = [
        rf.encode_sequence_example({"id": i, "name": b"n%d" % i}, {"steps": [[1, 2], [3]]})
        for i in range(5)
    ]
    path = tmp_path / "seq.tfrecord"
    with rf.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    ds = rf.open_dataset([str(path)])
    [batch] = list(ds.batches(5, copy=False))
    assert batch["name"].tolist() == [b"n%d" % i for i in range(5)]


def test_gzip_files_written_outside_recordforge_read_the_same(tmp_path: Path) -> None:
    records = [rf.encode_example({"id": i, "v": b"v" * i}) for i in range(40)]
    plain = tmp_path / "a.tfrecord"
    with rf.TFRecordWriter(plain) as w:
        for r in records:
            w.write(r)
    gz = tmp_path / "a.tfrecord.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, gz):
        ds = rf.open_dataset([str(path)])
        got = [bytes(v) for b in ds.batches(9, copy=False) for v in b["v"].tolist()]
        assert got == [b"v" * i for i in range(40)]

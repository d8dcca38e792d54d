"""Big bytes values handed out as ``bytes`` (``batches()``, ``take()``): batches of a few
MiB of values, sizes from 0 to 400 KB (empty and one-byte values are CPython's shared
objects), in plain, fixed-shape and ragged columns, in any reading mode. Every value must
be the record's own bytes (TensorFlow's parse is the oracle), a distinct object that
later batches leave alone; a damaged record is named, with the batches before it
intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.errors import CorruptRecordError


def _values(n: int) -> list[bytes]:
    """Sizes from 0 to ~400 KB, the small ones among the big ones."""
    rng = np.random.default_rng(n)
    sizes = [0, 1, 2, 400_000, 1, 0, 3] + [int(s) for s in rng.integers(0, 300_000, n - 7)]
    return [rng.bytes(s) for s in sizes]


def _write(tmp_path: Path, n: int = 90) -> dict[str, Any]:
    blobs = _values(n)
    columns: dict[str, Any] = {
        "id": np.arange(n),
        "blob": blobs,
        "pair": [[b, b[::-1]] for b in blobs],  # fixed shape (2,)
        "parts": [[b[: i % 5]] + [b] * (i % 3) for i, b in enumerate(blobs)],  # ragged
    }
    rf.write_dataset(columns, tmp_path, max_records=40)
    return columns


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(batch["id"])
    return [
        {
            "id": int(batch["id"][i]),
            "blob": batch["blob"][i],
            "pair": list(batch["pair"][i]),
            "parts": list(batch["parts"][i]),
        }
        for i in range(n)
    ]


def _tf_rows(tmp_path: Path) -> list[dict[str, Any]]:
    """Every record as TensorFlow parses it."""
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "blob": tf.io.FixedLenFeature([], tf.string),
        "pair": tf.io.FixedLenFeature([2], tf.string),
        "parts": tf.io.VarLenFeature(tf.string),
    }
    files = sorted(str(p) for p in tmp_path.glob("*.tfrecord"))
    rows = []
    for raw in tf.data.TFRecordDataset(files):
        x = tf.io.parse_single_example(raw, spec)
        rows.append(
            {
                "id": int(x["id"]),
                "blob": x["blob"].numpy(),
                "pair": list(x["pair"].numpy()),
                "parts": list(tf.sparse.to_dense(x["parts"], default_value=b"").numpy()),
            }
        )
    return rows


def _all_bytes(rows: list[dict[str, Any]]) -> bool:
    return all(type(v) is bytes for r in rows for v in [r["blob"], *r["pair"], *r["parts"]])


@pytest.mark.parametrize(
    "how",
    [{}, {"threads": 1}, {"threads": 3}, {"drop_remainder": True}, {"shuffle": 30}],
    ids=lambda how: ",".join(how) or "plain",
)
def test_big_values_are_the_records_bytes(tmp_path: Path, how: dict[str, Any]) -> None:
    columns = _write(tmp_path)
    want = _tf_rows(tmp_path)
    ds = rf.open_dataset(tmp_path)
    if "shuffle" in how:
        ds = ds.shuffle(how["shuffle"], seed=5)
    kwargs = {k: v for k, v in how.items() if k != "shuffle"}
    batches = list(ds.batches(16, **kwargs))
    assert max(sum(map(len, b["blob"].tolist())) for b in batches) > 2 << 20
    got = [row for b in batches for row in _rows(b)]
    assert _all_bytes(got)
    if "shuffle" in how:
        got.sort(key=lambda r: r["id"])
    expected = want[: len(got)] if "drop_remainder" in how else want
    assert got == expected
    assert [r["blob"] for r in got] == columns["blob"][: len(got)]


def test_take_of_big_values_gives_the_records_bytes(tmp_path: Path) -> None:
    _write(tmp_path)
    want = _tf_rows(tmp_path)
    ds = rf.open_dataset(tmp_path)
    indices = [89, 3, 0, 3, 45, 1, 2, 60, 5, 4, 6, 30, 31, 32, 33, 34]
    got = _rows(ds.take(indices))
    assert _all_bytes(got)
    assert got == [want[i] for i in indices]


def test_values_are_distinct_objects_that_later_batches_leave_alone(tmp_path: Path) -> None:
    columns = _write(tmp_path)
    ds = rf.open_dataset(tmp_path)
    kept = [v for b in ds.batches(16) for v in b["blob"].tolist()]
    for _ in ds.batches(16):  # a second epoch, its objects freed as it goes
        pass
    assert kept == columns["blob"]
    big = [v for v in kept if len(v) > 1]
    assert len({id(v) for v in big}) == len(big)


def test_a_damaged_big_record_is_named_and_the_batches_before_it_are_intact(
    tmp_path: Path,
) -> None:
    columns = _write(tmp_path)
    shard = sorted(tmp_path.glob("*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    got: list[bytes] = []
    batches = rf.open_dataset(tmp_path).batches(8)
    with pytest.raises(CorruptRecordError) as e:
        for b in batches:
            got += b["blob"].tolist()
    assert shard.name in str(e.value)
    assert "record" in str(e.value)
    assert 40 <= len(got) < 80
    assert got == columns["blob"][: len(got)]

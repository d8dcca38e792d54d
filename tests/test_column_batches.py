"""Columns of big rows (JPEG bytes) go to the Rust encoder in batches of at most
``columns.BATCH_BYTES`` bytes, not 4096 rows (600 MB of fresh memory a call for 150 KB
rows), and the records, shards and dataset.json are the same as for any batch size:
those of the same rows written one by one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import recordforge as rf
from recordforge import columns


def _digest(root: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(root.iterdir())}


@pytest.fixture
def big_rows() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 300
    return {
        "image": np.array(
            [rng.bytes(int(rng.integers(100_000, 200_000))) for _ in range(n)], dtype=object
        ),
        "label": np.arange(n),
        "name": np.array([f"img-{i}" for i in range(n)]),
    }


@pytest.mark.parametrize(
    "options",
    [{"max_records": 70}, {"max_bytes": "5MB"}, {"num_shards": 4}, {"shuffle": True, "seed": 5}],
    ids=["max_records", "max_bytes", "num_shards", "shuffle"],
)
@pytest.mark.parametrize("kind", ["numpy", "arrow"])
def test_big_rows_are_encoded_in_bounded_batches_with_the_bytes_of_rows_one_by_one(
    big_rows: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    kind: str,
) -> None:
    calls: list[tuple[int, int]] = []
    encode = columns.encode_record_batch

    def counted(batch: dict[str, Any], **kwargs: Any) -> Any:
        records = encode(batch, **kwargs)
        calls.append((len(records), sum(len(r) for r in records)))
        return records

    data: Any = big_rows if kind == "numpy" else pa.table(big_rows)
    with monkeypatch.context() as whole:  # the old batches: 4096 rows, whatever their size
        whole.setattr(columns, "BATCH_BYTES", 1 << 40)
        rf.write_dataset(data, tmp_path / "whole", index=True, **options)
    monkeypatch.setattr(columns, "encode_record_batch", counted)
    rf.write_dataset(data, tmp_path / "columns", index=True, **options)
    assert _digest(tmp_path / "columns") == _digest(tmp_path / "whole")  # dataset.json too
    rows = [{k: v[i] for k, v in big_rows.items()} for i in range(300)]
    rows = [{**r, "label": int(r["label"]), "name": str(r["name"])} for r in rows]
    rf.write_dataset(rows, tmp_path / "rows", index=True, **options)
    shards = _digest(tmp_path / "columns")
    del shards["dataset.json"]  # (its schema says where the columns' types came from)
    assert shards == {k: v for k, v in _digest(tmp_path / "rows").items() if k in shards}
    assert len(shards) == len(_digest(tmp_path / "rows")) - 1
    assert sum(n for n, _ in calls) == 300
    largest = max(nbytes for _, nbytes in calls)
    # At most 8 MiB (or one row), not 300 rows (45 MB).
    assert largest <= 1.01 * columns.BATCH_BYTES  # (the records add their keys)
    assert len(calls) >= 300 * 150_000 // columns.BATCH_BYTES


@pytest.mark.parametrize("kind", ["numpy", "arrow"])
def test_small_rows_first_do_not_unbound_the_big_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Empty placeholders first, then 150 KB rows (a table sorted by size): each batch
    is cut by its rows' own bytes, not by an average of the first rows."""
    rng = np.random.default_rng(1)
    blobs = [b""] * 100 + [rng.bytes(150_000) for _ in range(400)]
    data: dict[str, Any] = {"blob": np.array(blobs, dtype=object), "id": np.arange(500)}
    largest = [0]
    encode = columns.encode_record_batch

    def counted(batch: dict[str, Any], **kwargs: Any) -> Any:
        records = encode(batch, **kwargs)
        largest[0] = max(largest[0], sum(len(r) for r in records))
        return records

    monkeypatch.setattr(columns, "encode_record_batch", counted)
    rf.write_dataset(data if kind == "numpy" else pa.table(data), tmp_path / "out")
    assert 0 < largest[0] <= 1.01 * columns.BATCH_BYTES
    assert [int(r["id"]) for r in rf.open_dataset(tmp_path / "out")] == list(range(500))


def test_batch_starts() -> None:
    assert columns.batch_starts(np.full(10_000, 8)) == [0, 4096, 8192]
    assert columns.batch_starts(np.full(1_000, columns.BATCH_BYTES // 100)) == list(
        range(0, 1_000, 100)
    )
    assert columns.batch_starts(np.full(3, 10**9)) == [0, 1, 2]  # a batch is never empty
    assert columns.batch_starts(np.zeros(0, dtype=np.int64)) == []

"""Record batches made in reused buffers (``encode_record_batch(pool=)``, what
``write_dataset(columns)`` and table sources do), and ``bytes`` values encoded where
they are, not packed into a copy first (issue 17: no fresh memory per batch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recordforge as rf
from recordforge import _core


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def fresh(columns: dict[str, Any]) -> list[bytes]:
    """The records of ``columns`` one row at a time (the reference)."""
    n = len(next(iter(columns.values())))
    return [rf.encode_example({k: v[i] for k, v in columns.items()}) for i in range(n)]


batch_columns = st.integers(1, 12).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "blob": st.lists(st.binary(max_size=3000), min_size=n, max_size=n),
            "id": st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n),
            "text": st.lists(st.text(max_size=20), min_size=n, max_size=n),
        }
    )
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(batch_columns, st.booleans()), min_size=1, max_size=8))
def test_batches_made_in_reused_buffers_hold_exactly_their_records(
    batches: list[tuple[dict[str, Any], bool]],
) -> None:
    # Buffers go back to the pool as batches are freed and are overwritten, not zeroed,
    # by the next ones (bigger, then smaller): any byte a batch did not write would show.
    pool = _core.BlockPool()
    kept: list[tuple[Any, list[bytes]]] = []
    for columns, keep in batches:
        cols = {**columns, "id": np.array(columns["id"], dtype=np.int64)}
        batch = rf.encode_record_batch(cols, pool=pool)
        expected = fresh(columns)
        assert list(batch) == expected
        assert list(rf.encode_record_batch(cols)) == expected
        assert batch.framed() == _core.frame_records(expected)
        if keep:
            kept.append((batch, expected))
        del batch
    for batch, expected in kept:  # later batches never wrote into a live one
        assert list(batch) == expected


def test_a_batch_gives_its_buffer_back_only_once_freed() -> None:
    pool = _core.BlockPool()
    big = {"b": [bytes([i]) * 100_000 for i in range(20)]}
    first = rf.encode_record_batch(big, pool=pool)
    assert pool.kept_bytes == 0
    copy = first.framed()
    second = rf.encode_record_batch({"b": [b"z" * 100_000] * 20}, pool=pool)
    assert first.framed() == copy  # not taken while alive
    del first
    assert pool.kept_bytes >= len(copy)
    third = rf.encode_record_batch({"b": [b"q" * 50_000] * 20}, pool=pool)
    assert pool.kept_bytes == 0  # reused (it fits)
    assert list(third) == fresh({"b": [b"q" * 50_000] * 20})
    assert list(second) == fresh({"b": [b"z" * 100_000] * 20})
    del second, third
    # Bounded: the pool keeps what the batches in flight need, no more than its cap.
    for _ in range(40):
        rf.encode_record_batch(big, pool=pool)
    assert pool.kept_bytes < 64 << 20


def test_bytes_values_are_encoded_where_they_are_and_held_while_encoding() -> None:
    # The values are read without the GIL, with a reference to each: another thread
    # replacing the list's items meanwhile frees none of them.
    class Blob(bytes):
        pass

    values: list[bytes] = [Blob(b"a" * 300_000)] + [bytes([i % 256]) * 300_000 for i in range(15)]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            values[:] = [bytes([7]) * 300_000 for _ in range(16)]
            values[:] = [bytes([9]) * 300_000 for _ in range(16)]

    snapshot = list(values)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(30):
            batch = rf.encode_record_batch({"b": values}, threads=2)
            for record in batch:
                value = rf.decode_example(record)["b"][0]
                assert len(value) == 300_000 and value == value[:1] * 300_000
    finally:
        stop.set()
        thread.join()
    assert list(rf.encode_record_batch({"b": snapshot})) == fresh({"b": snapshot})
    # Mixed bytes and str, and other types, as before: packed, or refused with the row.
    assert list(rf.encode_record_batch({"b": [b"x", "y\u00e9"]})) == fresh({"b": [b"x", "y\u00e9"]})
    with pytest.raises(rf.EncodeError, match="row 1"):
        rf.encode_record_batch({"b": [b"x", bytearray(b"y")]})


def test_write_dataset_of_big_bytes_columns_equals_rows_and_tensorflow(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(5)
    n = 120
    blobs = np.array([rng.bytes(int(s)) for s in rng.integers(1, 200_000, n)], dtype=object)
    columns = {"image": blobs, "label": np.arange(n, dtype=np.int64)}
    cols = rf.write_dataset(columns, tmp_path / "cols", max_bytes=3 << 20)
    as_rows = [{"image": blobs[i], "label": i} for i in range(n)]
    rf.write_dataset(as_rows, tmp_path / "rows", max_bytes=3 << 20)
    assert len(cols.splits["train"]) > 3  # several batches and shards
    shards = {k: v for k, v in listing(tmp_path / "cols").items() if k != "dataset.json"}
    assert shards == {k: v for k, v in listing(tmp_path / "rows").items() if k != "dataset.json"}
    files = [str(tmp_path / "cols" / s.file) for s in cols.splits["train"]]
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    got = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    assert [g["image"].numpy() for g in got] == list(blobs)
    assert [int(g["label"]) for g in got] == list(range(n))


CRASHER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import recordforge as rf
    import recordforge._shardwriter as shardwriter

    sync = shardwriter._fsync

    def slow_sync(fd):  # a slow disk: each shard's commit takes a while
        sync(fd)
        time.sleep(0.15)

    shardwriter._fsync = slow_sync
    rng = np.random.default_rng(3)
    n = 400
    blobs = np.array([rng.bytes(int(s)) for s in rng.integers(1, 60_000, n)], dtype=object)
    columns = {"image": blobs, "label": np.arange(n, dtype=np.int64)}
    rf.write_dataset(columns, sys.argv[1], max_records=25, index=True)
    """
)


def test_sigkill_while_writing_columns_then_resume_gives_the_same_bytes(tmp_path: Path) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list(out.glob(".train-*.shard"))) >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "dataset.json").exists()
    shards = list(out.glob(".train-*.shard"))
    assert 3 <= len(shards) < 16  # killed in the middle
    for p in out.iterdir():
        assert not p.name.endswith(".tfrecord"), p
    for p in shards:
        assert rf.scan_records(p).records == 25
    subprocess.run([sys.executable, str(script), str(out)], check=True, env=env)
    reference = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(reference)], check=True, env=env)
    assert listing(out) == listing(reference)
    assert rf.inspect.verify(out).ok


def test_the_buffers_are_the_conversions_and_freed_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source (or the columns) used again keeps nothing: each conversion makes its
    # batches in a pool of its own, and nothing refers to that pool once it returns.
    import recordforge.columns as columns_module
    import recordforge.sources.table as table_module
    from recordforge._buffers import batch_pool
    from recordforge.sources.table import TableSource
    from recordforge.writer import write_source

    seen: list[Any] = []

    def spy(module: Any) -> None:
        encode = module.encode_record_batch

        def encode_and_note(columns: dict[str, Any], **kwargs: Any) -> Any:
            seen.append(kwargs.get("pool"))
            return encode(columns, **kwargs)

        monkeypatch.setattr(module, "encode_record_batch", encode_and_note)

    spy(table_module)
    spy(columns_module)
    table = tmp_path / "t.csv"
    table.write_text("id,text\n" + "".join(f"{i},{'y' * 20_000}\n" for i in range(600)))
    source = TableSource(table)
    pools = []
    for k in range(2):
        seen.clear()
        write_source(source, tmp_path / f"table{k}")
        assert len(seen) > 1 and all(p is seen[0] for p in seen) and seen[0] is not None
        pools.append(seen[0])
    columns = {"b": np.array([b"z" * 50_000] * 400, dtype=object)}
    seen.clear()
    rf.write_dataset(columns, tmp_path / "cols")
    assert len(seen) > 1 and all(p is seen[0] for p in seen) and seen[0] is not None
    pools.append(seen[0])
    seen.clear()
    assert len({id(p) for p in pools}) == 3 and batch_pool() is None
    for pool in pools:  # referred to by `pools`, `pool` and getrefcount's argument only
        assert sys.getrefcount(pool) == 3


def test_framed_view_is_the_batch_buffer_kept_alive_and_never_reused_while_viewed() -> None:
    """``framed_view`` (what a worker process holds until it writes a chunk's frames):
    the bytes of ``framed``, read-only, without a copy; it keeps the batch and its pooled
    buffer: batches made while it lives take other buffers, and it stays unchanged after
    the batch itself is dropped. Out-of-range bounds are refused as ``framed`` does."""
    pool = _core.BlockPool()
    columns = {"id": np.arange(300), "blob": [bytes([i % 251]) * (i % 97) for i in range(300)]}
    batch = rf.encode_record_batch(columns, pool=pool)
    whole, part = batch.framed(), batch.framed(10, 20)
    view, part_view = batch.framed_view(), batch.framed_view(10, 20)
    assert view.readonly and bytes(view) == whole and bytes(part_view) == part
    assert batch.framed_view(5, 5).nbytes == 0
    for bad in ((3, 2), (0, 301)):
        with pytest.raises(IndexError, match="not within a batch of 300"):
            batch.framed_view(*bad)
    with pytest.raises(TypeError):
        view[0] = 0  # type: ignore[index]
    del batch
    assert pool.kept_bytes == 0  # the views hold the buffer
    others = [
        rf.encode_record_batch({k: v[::-1] for k, v in columns.items()}, pool=pool)
        for _ in range(3)
    ]
    assert bytes(view) == whole and bytes(part_view) == part
    del others
    kept = pool.kept_bytes
    del view, part_view
    assert pool.kept_bytes > kept  # the buffer went back once the last view was gone
    again = rf.encode_record_batch(columns, pool=pool)
    assert again.framed() == whole

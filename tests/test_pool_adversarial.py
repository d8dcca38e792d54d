"""Adversarial checks of 03d1d6e: record batches made in pooled, reused (dirty) buffers
(``encode_record_batch(pool=)``), ``bytes`` values read where they are without the GIL
(``Held::Refs`` / ``ColumnValues::Slices``), and the pools of ``write_dataset(columns)``
and of table sources (each conversion's own: `_buffers.batch_buffers`)."""

from __future__ import annotations

import csv
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import _core
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

MB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def soil(pool: _core.BlockPool, n: int, byte: bytes = b"\xee") -> None:
    """Gives ``pool`` a buffer of ``n``-ish bytes full of ``byte`` (a freed batch)."""
    batch = rf.encode_record_batch({"z": [byte * n]}, pool=pool)
    del batch


# -- columns of every kind, in dirty buffers ------------------------------------------


def random_columns(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], list[dict]]:
    """Columns of ``n`` rows (every kind encode_record_batch takes) and the same rows as
    encode_example takes them."""
    cols: dict[str, Any] = {}
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for c in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 8))
        name = f"c{c}_" + "k" * int(rng.integers(0, 60))  # short and long keys (headers)
        if kind == 0:
            v = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
            cols[name] = v
            for i in range(n):
                rows[i][name] = int(v[i])
        elif kind == 1:
            v = rng.standard_normal((n, int(rng.integers(0, 4)))).astype(np.float32)
            cols[name] = v
            for i in range(n):
                rows[i][name] = v[i]
        elif kind == 2:
            v = [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]
            cols[name] = v
            for i in range(n):
                rows[i][name] = v[i]
        elif kind == 3:  # ragged bytes, a list of bytes objects (Slices)
            splits = np.concatenate([[0], np.cumsum(rng.integers(0, 4, n))])
            vals = [rng.bytes(int(rng.integers(0, 200))) for _ in range(int(splits[-1]))]
            cols[name] = (vals, splits)
            for i in range(n):
                got = vals[splits[i] : splits[i + 1]]
                rows[i][name] = got if got else np.array([], np.bytes_)
        elif kind == 4:
            splits = np.concatenate([[0], np.cumsum(rng.integers(0, 4, n))])
            vals = rng.integers(-5, 2**40, int(splits[-1]))
            cols[name] = (vals, splits)
            for i in range(n):
                rows[i][name] = vals[splits[i] : splits[i + 1]].astype(np.int64)
        elif kind == 5:  # 'S' array: tolist, then held where they are
            v = np.array([b"s" * int(rng.integers(1, 50)) for _ in range(n)], dtype="S")
            cols[name] = v
            for i in range(n):
                rows[i][name] = bytes(v[i])
        elif kind == 6:  # object array of rows of 2
            v = np.array([rng.bytes(int(rng.integers(0, 100))) for _ in range(2 * n)], dtype=object)
            cols[name] = v.reshape(n, 2)
            for i in range(n):
                rows[i][name] = [v[2 * i], v[2 * i + 1]]
        else:  # str values: packed, as before
            v = [("é" * int(rng.integers(0, 30))) for _ in range(n)]
            cols[name] = v
            for i in range(n):
                rows[i][name] = v[i]
    return cols, rows


def test_batches_in_dirty_buffers_equal_encode_example_per_row() -> None:
    # Every buffer the pool hands out was filled with 0xEE by a freed batch of a random
    # size (smaller and bigger than the next batch): any byte the encoder leaves would
    # show. Batches of >= 1 MB are written on several threads (chunks).
    rng = np.random.default_rng(17)
    pool = _core.BlockPool()
    kept: list[tuple[Any, list[bytes]]] = []
    for it in range(160):
        n = int(rng.integers(0, 50)) if it % 8 else int(rng.integers(1500, 3000))
        soil(pool, int(rng.integers(1, 2_500_000)))
        cols, rows = random_columns(rng, n)
        batch = rf.encode_record_batch(cols, pool=pool, threads=int(rng.integers(1, 5)))
        expected = [rf.encode_example(r) for r in rows]
        assert len(batch) == n
        assert list(batch) == expected
        assert batch.framed() == _core.frame_records(expected)
        assert batch.sizes().tolist() == [len(e) for e in expected]
        if it % 5 == 0:
            kept.append((batch, expected))
        del batch
    for batch, expected in kept:  # none of them was written into later
        assert list(batch) == expected


def test_tensorflow_parses_batches_made_in_dirty_buffers() -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    pool = _core.BlockPool()
    for n in (1, 7, 300):
        soil(pool, 3 * MB, b"\xff")
        blobs = np.array([rng.bytes(int(s)) for s in rng.integers(0, 20_000, n)], dtype=object)
        ids = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
        xy = rng.standard_normal((n, 3)).astype(np.float32)
        splits = np.concatenate([[0], np.cumsum(rng.integers(0, 3, n))])
        tags = [b"t%d" % i for i in range(int(splits[-1]))]
        batch = rf.encode_record_batch(
            {"blob": blobs, "id": ids, "xy": xy, "tags": (tags, splits)}, pool=pool, threads=3
        )
        spec = {
            "blob": tf.io.FixedLenFeature([], tf.string),
            "id": tf.io.FixedLenFeature([], tf.int64),
            "xy": tf.io.FixedLenFeature([3], tf.float32),
            "tags": tf.io.VarLenFeature(tf.string),
        }
        parsed = tf.io.parse_example(tf.constant(list(batch)), spec)
        assert parsed["blob"].numpy().tolist() == list(blobs)
        assert parsed["id"].numpy().tolist() == ids.tolist()
        np.testing.assert_array_equal(parsed["xy"].numpy(), xy)
        assert parsed["tags"].values.numpy().tolist() == tags
        del batch


# -- lifetimes: batches alive elsewhere while buffers are reused -------------------------


def test_a_pool_shared_by_threads_never_hands_out_a_live_buffer() -> None:
    pool = _core.BlockPool()
    soil(pool, MB)
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        live: list[tuple[Any, list[bytes]]] = []
        for _ in range(60):
            n = int(rng.integers(0, 30))
            values = [bytes([seed]) * int(rng.integers(0, 60_000)) for _ in range(n)]
            batch = rf.encode_record_batch({"v": values, "i": np.arange(n)}, pool=pool, threads=2)
            expected = [rf.encode_example({"v": values[i], "i": i}) for i in range(n)]
            live.append((batch, expected))
            if len(live) > 3:  # freed out of order, on this thread
                old, exp = live.pop(int(rng.integers(0, len(live))))
                if list(old) != exp:
                    failures.append(f"thread {seed}")
        for old, exp in live:
            if list(old) != exp:
                failures.append(f"thread {seed} at the end")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_write_batch_on_another_thread_keeps_its_buffer_while_the_caller_moves_on(
    tmp_path: Path,
) -> None:
    # As ShardWriter does: the batch is handed to an I/O thread and the caller drops its
    # own reference, then makes the next batches (in the same pool) at once.
    pool = _core.BlockPool()
    path = tmp_path / "a.tfrecord"
    expected: list[bytes] = []
    with ThreadPoolExecutor(1) as io_thread, rf.TFRecordWriter(str(path)) as writer:
        pending = []
        for k in range(40):
            values = [bytes([k]) * 150_000 for _ in range(8)]
            batch = rf.encode_record_batch({"v": values}, pool=pool)
            expected += [rf.encode_example({"v": v}) for v in values]
            pending.append(io_thread.submit(writer.write_batch, batch, 2, 8))
            pending.append(io_thread.submit(writer.write_batch, batch, 0, 2))
            expected[-8:] = expected[-6:] + expected[-8:-6]
            del batch
            soil(pool, 1_300_000, b"\x00")  # grabs any buffer given back too soon
        for p in pending:
            p.result()
    assert [bytes(r) for r in rf.read_records(str(path))] == expected


def test_zero_rows_errors_and_a_freed_pool() -> None:
    pool = _core.BlockPool()
    soil(pool, 100_000)
    for cols in ({}, {"b": []}, {"b": ([], np.array([0]))}, {"i": np.zeros(0, np.int64)}):
        batch = rf.encode_record_batch(cols, pool=pool)
        assert len(batch) == 0 and batch.framed() == b"" and batch.nbytes == 0
        assert list(batch) == [] and batch.sizes().tolist() == []
        del batch
    assert pool.kept_bytes >= 100_000  # an empty batch gave its buffer back
    kept = pool.kept_bytes
    with pytest.raises(rf.EncodeError):
        rf.encode_record_batch({"a": [b"x", b"y"], "b": [b"z"]}, pool=pool)
    with pytest.raises(ValueError, match="row splits end at 2"):
        rf.encode_record_batch({"a": ([b"x"], np.array([0, 2]))}, pool=pool)
    with pytest.raises(rf.EncodeError, match="row 1"):
        rf.encode_record_batch({"a": [b"x", memoryview(b"y")]}, pool=pool)
    assert pool.kept_bytes == kept  # a refused batch takes no buffer
    # The pool object freed while its batches live: they stay whole and free cleanly.
    batches = [rf.encode_record_batch({"b": [b"q" * 1000] * 5}, pool=pool) for _ in range(3)]
    del pool
    gc.collect()
    for b in batches:
        assert list(b) == [rf.encode_example({"b": b"q" * 1000})] * 5
    del batches, b


def test_bytes_held_while_python_code_runs_between_columns() -> None:
    # A later column's row_splits run Python code (its __array__) after the bytes column
    # was taken: it empties the list and drops every bytes object it can. The records
    # are those of the list as it was when taken; nothing read is freed.
    values = [bytes([i]) * (1000 + i) for i in range(50)]
    snapshot = [bytes(v) for v in values]

    class Splits:
        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            values.clear()
            gc.collect()
            return np.arange(51, dtype=np.int64)

    cols = {"b": values, "t": ([b"x"] * 50, Splits())}
    batch = rf.encode_record_batch(cols, pool=_core.BlockPool(), threads=2)
    assert values == []
    assert list(batch) == [rf.encode_example({"b": s, "t": [b"x"]}) for s in snapshot]


def test_bytes_subclasses_are_read_as_encode_example_reads_them() -> None:
    class Odd(bytes):
        def __bytes__(self) -> bytes:
            return b"from __bytes__"

        def __len__(self) -> int:
            return 1

    values = [Odd(b"raw"), np.bytes_(b"np"), b"plain"]
    expected = [rf.encode_example({"b": v}) for v in values]
    assert [rf.decode_example(r)["b"] for r in expected] == [[b"raw"], [b"np"], [b"plain"]]
    pool = _core.BlockPool()
    assert list(rf.encode_record_batch({"b": values}, pool=pool)) == expected
    as_object = np.array(values, dtype=object)
    assert list(rf.encode_record_batch({"b": as_object}, pool=pool)) == expected


# -- memory -----------------------------------------------------------------------------


def test_the_pool_stays_bounded_as_batch_sizes_change() -> None:
    pool = _core.BlockPool()
    rng = np.random.default_rng(1)
    blobs = [b"\x01" * s for s in (1, 100, 10_000, 100_000, 1_000_000, 3_000_000)]
    live: list[Any] = []
    for _ in range(60):  # warm-up: the biggest batches have been made
        live.append(rf.encode_record_batch({"b": [blobs[-1]] * 7}, pool=pool))
        live = live[-2:]
    start, most_kept, most_rss = rss(), 0, 0
    for _ in range(1500):
        n = int(rng.integers(1, 8))
        blob = blobs[int(rng.integers(0, len(blobs)))]
        live.append(rf.encode_record_batch({"b": [blob] * n}, pool=pool))
        live = live[-2:]  # two batches in flight, as a writer has
        most_kept = max(most_kept, pool.kept_bytes)
        most_rss = max(most_rss, rss() - start)
    biggest = 7 * 3_000_000 * 5 // 4 + MB
    assert most_kept <= 3 * biggest
    assert most_rss < 2 * biggest


def test_repeated_write_dataset_of_columns_does_not_grow(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 1_500_000, 60)
    blobs = np.array([b"\x02" * int(s) for s in sizes], dtype=object)
    columns = {"image": blobs, "label": np.arange(len(blobs))}
    rows = [{"image": blobs[i], "label": i} for i in range(len(blobs))]
    rf.write_dataset(rows, tmp_path / "ref", max_bytes=10 * MB)
    ref = {k: v for k, v in listing(tmp_path / "ref").items() if k != "dataset.json"}
    growth = []
    for k in range(6):
        before = rss()
        rf.write_dataset(columns, tmp_path / f"o{k}", max_bytes=10 * MB)
        gc.collect()
        growth.append(rss() - before)
        got = {a: b for a, b in listing(tmp_path / f"o{k}").items() if a != "dataset.json"}
        assert got == ref
    assert sum(growth[2:]) < 16 * MB, growth


# -- table sources ----------------------------------------------------------------------


def write_csv(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "score", "opt", "tag"])
        for i in range(n):
            long = i // 250 % 2 == 0  # parts of long, then short, strings: dirty reuse
            name = "".join(
                chr(97 + int(c))
                for c in rng.integers(0, 26, int(rng.integers(1, 2500 if long else 20)))
            )
            opt = "" if i % 7 == 0 else str(int(rng.integers(-1000, 1000)))
            tag = "" if i % 5 == 0 else f"t{i % 13}é"
            w.writerow([i, name, f"{rng.standard_normal():.6f}", opt, tag])


CONVERT = textwrap.dedent(
    """
    import sys
    from recordforge.sources.table import TableSource
    from recordforge.writer import write_source
    if __name__ == "__main__":  # (a spawned worker imports this file again)
        write_source(TableSource(sys.argv[1], part_bytes=150_000), sys.argv[2],
                     max_records=600, workers=2)
    """
)


def test_table_conversions_are_the_same_bytes_with_pools_workers_and_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "t.csv"
    write_csv(table, 2500, 11)
    source = TableSource(table, part_bytes=150_000)
    per_row = [r for row in source.rows() for r in source.row_to_records(row)]
    assert len(source.items()) > 5
    write_source(TableSource(table, part_bytes=150_000), tmp_path / "w1", max_records=600)
    files = sorted(p for p in (tmp_path / "w1").iterdir() if p.suffix == ".tfrecord")
    assert [bytes(r) for f in files for r in rf.read_records(str(f))] == per_row
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    script = tmp_path / "convert.py"
    script.write_text(CONVERT)
    for method in ("fork", "spawn"):
        run_env = {**env, "RECORDFORGE_START_METHOD": method}
        subprocess.run(
            [sys.executable, str(script), str(table), str(tmp_path / method)],
            check=True,
            env=run_env,
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recordforge",
            "convert",
            "table",
            str(table),
            "--out",
            str(tmp_path / "cli"),
            "--part-bytes",
            "150000",
            "--max-records",
            "600",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    # The reference: the same conversion without pools (fresh zeroed buffers).
    monkeypatch.setattr("recordforge.sources.table.batch_pool", lambda: None)
    write_source(TableSource(table, part_bytes=150_000), tmp_path / "nopool", max_records=600)
    reference = listing(tmp_path / "nopool")
    assert "dataset.json" in reference
    for name in ("w1", "fork", "spawn", "cli"):
        assert listing(tmp_path / name) == reference, name


KILLED = textwrap.dedent(
    """
    import sys, time
    import recordforge._shardwriter as shardwriter
    from recordforge.cli.__main__ import main

    sync = shardwriter._fsync

    def slow_sync(fd):
        sync(fd)
        time.sleep(0.2)

    shardwriter._fsync = slow_sync
    sys.exit(main(["convert", "table", sys.argv[1], "--out", sys.argv[2],
                   "--part-bytes", "60000", "--max-records", "150", "--index"]))
    """
)


@pytest.mark.slow
def test_sigkill_mid_table_conversion_then_rerun_is_byte_identical(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    write_csv(table, 2500, 5)
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(table), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob(".train-*.shard"))) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "dataset.json").exists()
    assert 3 <= len(list(out.glob(".train-*.shard"))) < 17
    run = [sys.executable, str(script), str(table)]
    subprocess.run([*run, str(out)], check=True, env=env, capture_output=True)
    subprocess.run([*run, str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    assert listing(out) == listing(tmp_path / "ref")
    assert rf.inspect.verify(out).ok

"""Sequential reads of a remote dataset fetch the next shard's first blocks while the
reader is still on the shard before it, and give the records, and the errors, in the
order of a read that opens one shard after another: ``batches()`` (the Rust reader's
loading threads, each streaming one shard at a time) and ``ShardFiles.records_of``
(records one at a time in Python: never more than two shards' read-ahead at once).
``memory://`` stands for the store (an fsspec file system that is not local: what
``s3://`` and ``gs://`` go through)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pytest

import recordforge as rf
from recordforge import _ranged, _shards
from recordforge._ranged import ReadAhead


@pytest.fixture
def remote(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    local = tmp_path / "ds"
    rows = {"id": np.arange(3_000), "blob": np.array([bytes(300)] * 3_000, dtype=object)}
    rf.write_dataset(rows, local, max_records=500, index=True)  # 6 shards
    fs = fsspec.filesystem("memory")
    root = "/prefetch-" + re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)  # (no glob)
    for f in sorted(local.iterdir()):
        fs.pipe_file(f"{root}/{f.name}", f.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


class Logged(ReadAhead):
    """ReadAhead that logs its opening, and counts the open ones: those neither closed
    nor read to their end."""

    log: ClassVar[list[tuple[str, str]]] = []
    opened: ClassVar[dict[str, threading.Event]] = {}
    open_now = 0
    most_open = 0
    lock = threading.Lock()

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        with Logged.lock:
            Logged.log.append(("open", path.rsplit("/", 1)[1]))
            Logged.open_now += 1
            Logged.most_open = max(Logged.most_open, Logged.open_now)
        super().__init__(path, *args, **kwargs)
        self.done = False
        Logged.opened.setdefault(path, threading.Event()).set()

    def _finished(self) -> None:
        with Logged.lock:
            if not self.done:
                self.done = True
                Logged.open_now -= 1

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        if not data and n != 0:
            self._finished()
        return data

    def close(self) -> None:
        super().close()
        self._finished()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> type[Logged]:
    Logged.log, Logged.opened, Logged.open_now, Logged.most_open = [], {}, 0, 0
    monkeypatch.setattr(_shards, "ReadAhead", Logged)
    monkeypatch.setattr(_ranged, "ReadAhead", Logged)  # batches(): _ranged.Streams
    return Logged


def _no_read_ahead_thread_left() -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        t.name == "recordforge-read-ahead" for t in threading.enumerate()
    ):
        time.sleep(0.01)
    return not [t for t in threading.enumerate() if t.name == "recordforge-read-ahead"]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_next_shard_is_opened_while_the_one_before_is_read(
    remote: str, logged: type[Logged], threads: int
) -> None:
    """``batches()`` on a remote dataset: shard k is opened (its fetching started)
    before the reader takes its first record, each shard once; no more shards are open
    at once than the reader has loading threads (one, two, three), and none is left open
    or fetching at the end."""
    ds = rf.open_dataset(remote)
    shards = [str(f).rsplit("/", 1)[1] for f in ds.files]
    assert len(shards) == 6
    ids: list[int] = []
    for batch in ds.batches(100, threads=threads):
        if len(ids) % 500 == 0:  # the first records of a shard: where the reader is
            logged.log.append(("read", shards[len(ids) // 500]))
        ids.extend(batch["id"].tolist())
    assert ids == list(range(3_000))
    events = logged.log
    for k in range(1, 6):
        assert events.index(("open", shards[k])) < events.index(("read", shards[k])), events
    assert sorted(e[1] for e in events if e[0] == "open") == shards  # once each
    assert 1 <= logged.most_open <= threads
    assert logged.open_now == 0
    assert _no_read_ahead_thread_left()


def test_the_next_shard_is_fetched_before_the_last_record_of_the_one_before(
    remote: str, logged: type[Logged]
) -> None:
    """Records taken one at a time: before the reader takes the last record of shard
    k - 1, shard k's reading has started (waited for up to 10 s: without the read-ahead
    across files, it starts only after that record)."""
    ds = rf.open_dataset(remote)
    files = [str(f) for f in ds.files]
    records = ds._shards.records_of(files, [])
    for k in range(6):
        for _ in range(499):
            next(records)
        if k < 5:
            started = logged.opened.setdefault(files[k + 1], threading.Event())
            assert started.wait(10), f"shard {k + 1} not opened while shard {k} is read"
        next(records)
    assert next(records, None) is None
    assert logged.most_open <= 2


def test_a_read_stopped_early_closes_the_shard_opened_ahead(
    remote: str, logged: type[Logged]
) -> None:
    ds = rf.open_dataset(remote)
    batches = ds.batches(100)
    first = next(batches)
    assert list(first["id"]) == list(range(100))
    batches.close()  # the generator's end: every ReadAhead closed, the one ahead included
    deadline = time.monotonic() + 10  # (one being opened is closed once it is)
    while logged.open_now and time.monotonic() < deadline:
        time.sleep(0.01)
    assert logged.open_now == 0
    assert _no_read_ahead_thread_left()


def test_a_next_shard_that_fails_to_open_holds_up_neither_the_reader_nor_its_retries(
    remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 2's size keeps failing (a 503): shard 1's records come at once while shard
    2 is being opened ahead on its own thread (its retries waiting), and the error comes
    when the reader gets to shard 2, after one sequence of retries, not two."""
    from recordforge import _ranged

    monkeypatch.setattr(_ranged, "BACKOFF", (1.0, 1.0))
    ds = rf.open_dataset(remote)
    bad = str(ds.files[2]).removeprefix("memory://")
    memory = type(fsspec.filesystem("memory"))
    size = memory.size
    asked: list[float] = []

    def failing(self: Any, path: str) -> Any:
        if path.endswith(bad):
            asked.append(time.monotonic())
            raise OSError(5, "503 Slow Down")
        return size(self, path)

    monkeypatch.setattr(memory, "size", failing)
    records = ds._shards.records_of([str(f) for f in ds.files], [])
    for _ in range(1_000):
        next(records)  # shards 0 and 1 (500 records each), while shard 2 is being opened
    assert len(asked) < 3  # its retries still waiting: the reader was not held up
    with pytest.raises(OSError, match=rf"{ds.files[2]}: .*503"):
        next(records)
    assert len(asked) == 3  # one try and two retries


def test_a_missing_later_shard_fails_after_the_records_before_it(remote: str) -> None:
    ds = rf.open_dataset(remote)
    shards = [str(f).rsplit("/", 1)[1] for f in ds.files]
    fsspec.filesystem("memory").rm_file(f"{remote.removeprefix('memory://')}/{shards[3]}")
    got: list[int] = []
    with pytest.raises(FileNotFoundError) as caught:
        for batch in ds.batches(100):
            got.extend(batch["id"].tolist())
    assert got == list(range(1_500))  # shards 0-2 whole, in order, then the error
    assert shards[3] in str(caught.value)


def test_skipping_damage_in_a_remote_shard_streams_it_and_finds_what_a_local_read_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_corrupt="skip"`` on plain remote files (no dataset.json: the schema is
    inferred past the damage too) walks each one by range: the records and the damaged
    regions of a local read of the same files, and no local copy is made."""
    local = tmp_path / "bare"
    local.mkdir()
    for k in range(3):
        with rf.TFRecordWriter(local / f"part-{k}.tfrecord") as w:
            w.write_many([rf.encode_example({"id": 100 * k + i}) for i in range(100)])
    data = bytearray((local / "part-1.tfrecord").read_bytes())
    data[500] ^= 1  # a record's data
    data[2000:2008] = b"\xff" * 8  # a length (and what follows) overwritten
    (local / "part-1.tfrecord").write_bytes(bytes(data))
    fs = fsspec.filesystem("memory")
    for f in sorted(local.iterdir()):
        fs.pipe_file(f"/skip-bare/{f.name}", f.read_bytes())

    def no_copy(path: str) -> str:
        raise AssertionError(f"{path} staged on local disk")

    here = rf.open_dataset(local, on_corrupt="skip")
    want = [int(r["id"]) for r in here]
    monkeypatch.setattr(rf._fs, "staged", no_copy)
    there = rf.open_dataset("memory://skip-bare", on_corrupt="skip")
    got = [int(r["id"]) for r in there]
    assert got == want and 200 < len(got) < 300
    assert [(d["file"].rsplit("/", 1)[1], d["start"], d["end"]) for d in there.skipped] == [
        (Path(d["file"]).name, d["start"], d["end"]) for d in here.skipped
    ]
    assert len(there.skipped) >= 2
    assert all(
        d["reason"].startswith(f"corrupt record at offset {d['start']}: ") for d in there.skipped
    )

"""An iterator that stopped on an error raises the same exception on every later
``next()``; that exception's traceback holds the frames it went through, and so, most
often, the iterator itself. The Rust iterators hand the kept exception to the cycle
collector, so that such a cycle is freed with the files it holds open or mapped (a
dataset's kept maps, a file's descriptor), not kept for the life of the process."""

from __future__ import annotations

import contextlib
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import _core


def _held(path: str) -> int:
    """Maps and open descriptors of ``path`` in this process."""
    with open("/proc/self/maps") as f:
        maps = sum(1 for line in f if line.rstrip().endswith(path))
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            fds += os.readlink(f"/proc/self/fd/{fd}") == path
    return maps + fds


def _damaged(tmp_path: Path) -> str:
    rf.write_dataset({"id": np.arange(200), "x": np.ones((200, 64), np.float32)}, tmp_path / "d")
    (path,) = rf.open_dataset(tmp_path / "d").files
    offsets = _core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[150]) + 14] ^= 0xFF  # a payload byte of record 150
    Path(path).write_bytes(bytes(data))
    return str(path)


def _drain(it: Iterator[Any]) -> None:
    for _ in it:
        pass


class _Sentinel:
    """A local of the frame in the cycle: alive as long as the frame is."""


def _error_in_a_cycle(make: Any) -> tuple[type[BaseException], Any, weakref.ref[_Sentinel]]:
    """Drains ``make()`` in a frame that keeps the iterator (the frame is in the error's
    traceback, the error in the iterator), and drops the error: its type, its ``path``
    and a weak reference to a local of that frame."""
    refs: list[weakref.ref[_Sentinel]] = []

    def consume() -> None:
        sentinel = _Sentinel()
        refs.append(weakref.ref(sentinel))
        it = make()
        _drain(it)

    with pytest.raises(Exception) as e:
        consume()
    return type(e.value), getattr(e.value, "path", None), refs[0]


def _collected(frame_local: weakref.ref[_Sentinel]) -> bool:
    """Whether the cycle is freed by the collector."""
    gc.collect()
    return frame_local() is None


@pytest.fixture(autouse=True)
def _collector_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()  # collected below when the test says so, not in between
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_a_dataset_read_that_failed_frees_its_files(tmp_path: Path) -> None:
    path = _damaged(tmp_path)
    kind, named, local = _error_in_a_cycle(
        lambda: iter(rf.open_dataset(tmp_path / "d").batches(16))
    )
    assert kind is rf.CorruptRecordError and named == path
    assert _held(path) > 0  # the cycle holds the dataset and its kept map
    assert _collected(local)
    assert _held(path) == 0


def test_a_batch_reader_raises_the_same_error_again_and_is_collected(tmp_path: Path) -> None:
    path = _damaged(tmp_path)
    reader = _core.BatchReader([path], [("id", "int64", 1)], 16, threads=1)
    with pytest.raises(rf.CorruptRecordError) as first:
        _drain(reader)
    with pytest.raises(rf.CorruptRecordError) as again:
        next(reader)
    assert again.value is first.value and first.value.path == path
    kind, named, local = _error_in_a_cycle(
        lambda: _core.BatchReader([path], [("id", "int64", 1)], 16)
    )
    assert kind is rf.CorruptRecordError and named == path
    assert _collected(local)


def test_a_record_iterator_that_failed_is_collected(tmp_path: Path) -> None:
    path = _damaged(tmp_path)
    kind, named, local = _error_in_a_cycle(lambda: _core.read_records(path, "auto", True))
    assert kind is rf.CorruptRecordError and named == path
    assert _collected(local)
    assert _held(path) == 0


def test_a_record_walker_that_failed_is_collected(tmp_path: Path) -> None:
    # The walker stops on an I/O error only (damage is a span it reports): a directory
    # opens, and its read fails.
    kind, _, local = _error_in_a_cycle(lambda: _core.RecordWalker(tmp_path, compression=None))
    assert kind is IsADirectoryError
    assert _collected(local)

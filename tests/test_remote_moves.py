"""A remote conversion's last step, moving each shard (and its index) from its
intermediate key to its final one, runs many moves at once (each is a copy by the
store: seconds for a big shard), and a move that fails leaves a conversion that a rerun
completes with the same objects. ``memory://`` stands for the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import recordforge as rf
from recordforge import _remote

ROWS = [{"id": i, "blob": bytes([i % 251]) * 300} for i in range(1_200)]


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    root = f"/moves-{request.node.name}"
    yield f"memory://{root}/out"
    fsspec.filesystem("memory").rm(root, recursive=True)


def _objects(url: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    return {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in fs.ls(root, detail=False)}


def test_shards_are_moved_many_at_once(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    moving, most, lock = [0], [0], threading.Lock()
    move = _remote.move

    def slow(where: str, name: str, final: str, size: int | None = None) -> None:
        with lock:
            moving[0] += 1
            most[0] = max(most[0], moving[0])
        time.sleep(0.05)  # a copy by the store takes a while
        move(where, name, final, size)
        with lock:
            moving[0] -= 1

    monkeypatch.setattr(_remote, "move", slow)
    manifest = rf.write_dataset(ROWS, url, max_records=100, index=True)
    assert len(manifest.splits["train"]) == 12
    assert most[0] > 4  # 24 objects (shards and indexes), up to MOVE_THREADS at once
    names = sorted(_objects(url))
    assert names == sorted(
        ["dataset.json"] + [f for s in manifest.splits["train"] for f in (s.file, f"{s.file}.idx")]
    )


def test_a_failed_move_is_an_error_and_a_rerun_completes_the_dataset(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = rf.write_dataset(ROWS, tmp_path / "local", max_records=100, index=True)
    move = _remote.move

    def failing(where: str, name: str, final: str, size: int | None = None) -> None:
        if final.startswith("train-00005"):
            raise ConnectionResetError("connection reset by peer")
        move(where, name, final, size)

    with monkeypatch.context() as m:
        m.setattr(_remote, "move", failing)
        with pytest.raises(ConnectionResetError):
            rf.write_dataset(ROWS, url, max_records=100, index=True)
    assert "dataset.json" not in _objects(url)  # not a complete dataset
    assert rf.write_dataset(ROWS, url, max_records=100, index=True) == local
    here = {f.name: f.read_bytes() for f in (tmp_path / "local").iterdir()}
    assert _objects(url) == here

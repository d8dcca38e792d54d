"""``batches()`` reads local uncompressed files from maps the dataset keeps across epochs
(``ShardFiles.kept_maps``): each file mapped once, no page faults in later epochs, the
same batches as a reader that maps them itself; a file replaced, rewritten or cut since
is read as it is now, never from a stale map."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import count_record_files

import recordforge as rf
from recordforge import _shards


def _write(path: Path, n: int = 400, size: int = 4000, seed: int = 0, **kwargs: Any) -> rf.Dataset:
    rng = np.random.default_rng(seed)
    blobs = [rng.bytes(size) for _ in range(n)]
    rf.write_dataset({"id": np.arange(n), "blob": blobs}, path, max_records=n // 4, **kwargs)
    return rf.open_dataset(path)


def _epoch(ds: rf.Dataset, **kwargs: Any) -> list[list[Any]]:
    return [[b["id"].tolist(), [bytes(v) for v in b["blob"]]] for b in ds.batches(32, **kwargs)]


def test_each_file_is_mapped_once_and_later_epochs_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _write(tmp_path / "d")
    opened = count_record_files(monkeypatch)
    epochs = [_epoch(ds) for _ in range(3)]
    assert sorted(opened) == sorted(ds.files)  # once each, not once an epoch
    assert epochs[0] == epochs[1] == epochs[2]
    monkeypatch.setattr(_shards, "KEEP_MAPPED_BYTES", 0)  # nothing kept: the reader maps
    assert _epoch(rf.open_dataset(tmp_path / "d")) == epochs[0]
    fresh = rf.open_dataset(tmp_path / "d")  # maps its files per epoch
    assert _epoch(ds.shuffle(64, seed=3)) == _epoch(fresh.shuffle(64, seed=3)) != epochs[0]
    assert _epoch(ds.shard(1, 3)) == _epoch(rf.open_dataset(tmp_path / "d").shard(1, 3))


def test_a_budget_keeps_some_files_mapped_and_reads_the_rest_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _write(tmp_path / "d")
    sizes = [os.path.getsize(f) for f in ds.files]
    monkeypatch.setattr(_shards, "KEEP_MAPPED_BYTES", sizes[0] + sizes[1])
    first = _epoch(ds)
    assert sorted(ds._shards._open) == sorted(ds.files[:2])
    assert _epoch(ds) == first


def test_a_file_replaced_or_rewritten_since_is_read_as_it_is_now(tmp_path: Path) -> None:
    ds = _write(tmp_path / "d")
    first = _epoch(ds)
    # Replaced by rename (a new inode): another dataset's shard of the same records count.
    other = _write(tmp_path / "other", seed=1)
    os.replace(other.files[2], ds.files[2])
    replaced = _epoch(ds)
    assert replaced != first and replaced == _epoch(rf.open_dataset(ds.files))
    # Rewritten in place, same size: the modification time says so.
    data = bytearray(Path(ds.files[0]).read_bytes())
    Path(ds.files[0]).write_bytes(bytes(Path(other.files[0]).read_bytes()))
    assert _epoch(ds) == _epoch(rf.open_dataset(ds.files)) != replaced
    assert data  # (the file was read before it was rewritten)


CUT_BETWEEN_EPOCHS = """
import os, sys
import recordforge as rf
ds = rf.open_dataset(sys.argv[1])
print(sum(len(b["id"]) for b in ds.batches(32)))
os.truncate(ds.files[1], os.path.getsize(ds.files[1]) // 2)
read = 0
try:
    for b in ds.batches(32):
        read += len(b["id"])
except rf.CorruptRecordError as e:
    print(read, os.path.basename(e.path))
"""


def test_a_file_cut_between_epochs_is_an_error_naming_it_not_a_crash(tmp_path: Path) -> None:
    # A kept map of the cut file would be SIGBUS past its new end: it is not read.
    ds = _write(tmp_path / "d")
    args = [sys.executable, "-c", CUT_BETWEEN_EPOCHS, str(tmp_path / "d")]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-400:]
    counts, last = p.stdout.splitlines()
    read, name = last.split()
    assert counts == "400" and int(read) >= 100 and name == Path(ds.files[1]).name


def test_compressed_and_bare_files_are_read_without_kept_maps(tmp_path: Path) -> None:
    ds = _write(tmp_path / "gz", options=rf.WriteOptions(compression="gzip"))
    first = _epoch(ds)
    assert ds._shards._open == {} and _epoch(ds) == first
    plain = _write(tmp_path / "plain")
    bare = rf.open_dataset(plain.files)  # no dataset.json
    assert _epoch(bare) == _epoch(bare) == _epoch(plain)

"""fsspec's chained URLs (``simplecache::gs://bucket/ds``: a remote store read through a
local cache) are URLs: read, written, globbed and converted to as their last file system,
through the chain. Before, they were taken for local paths ("no such file:
simplecache::memory:/ds")."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import recordforge as rf
from recordforge import _fs

TAXI = Path(__file__).resolve().parents[2] / "shared" / "data" / "tfx_chicago_taxi" / "data.csv"


def _name() -> str:
    return f"chained-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("simplecache::gs://bucket/ds", True),
        ("filecache::s3://b/x/train.tfrecord", True),
        ("blockcache::simplecache::memory://m/ds", True),
        ("s3://bucket/ds", True),
        ("file:///data/ds", False),
        ("/data/x::y", False),
        ("odd::name", False),
        ("C::/data", False),
        ("simplecache::/local/path", False),
    ],
)
def test_what_is_a_url(path: str, url: bool) -> None:
    assert _fs.is_url(path) is url


def test_a_dataset_read_through_a_cache_chain_is_the_dataset() -> None:
    name = _name()
    blobs = [bytes([i]) * (i * 100) for i in range(7)]
    rf.write_dataset({"x": np.arange(7), "b": blobs}, f"memory://{name}", max_records=3)
    direct = rf.open_dataset(f"memory://{name}")
    for url in (f"simplecache::memory://{name}", f"simplecache::memory://{name}/*.tfrecord"):
        ds = rf.open_dataset(url)
        assert len(ds) == 7
        # Every file is named through the chain (globbed ones too): read through the cache.
        assert all(f.startswith("simplecache::memory://") for f in ds.files), ds.files
        assert [int(ds[i]["x"]) for i in range(7)] == list(range(7))
        got = ds.take([6, 0, 3])
        assert got["x"].tolist() == [6, 0, 3] and list(got["b"]) == [blobs[6], blobs[0], blobs[3]]
        batches = list(ds.batches(4))
        assert np.concatenate([b["x"] for b in batches]).tolist() == list(range(7))
        assert [bytes(v) for b in batches for v in b["b"]] == blobs
    assert direct.schema == rf.open_dataset(f"simplecache::memory://{name}").schema


def test_a_dataset_written_through_a_chain_lands_in_the_last_store() -> None:
    name = _name()
    rf.write_dataset({"x": np.arange(10)}, f"simplecache::memory://{name}", max_records=4)
    fs = _fs.filesystem(f"memory://{name}")[0]
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"/{name}", detail=False))
    assert "dataset.json" in listed and sum(p.endswith(".tfrecord") for p in listed) == 3
    ds = rf.open_dataset(f"memory://{name}")
    assert ds.batches(100).__next__()["x"].tolist() == list(range(10))
    result = rf.inspect.verify(f"simplecache::memory://{name}")
    assert result.ok and result.records == 10, result


def test_to_tf_dataset_reads_a_chained_url() -> None:
    tf = pytest.importorskip("tensorflow")  # the oracle is installed in the test env
    name = _name()
    rf.write_dataset({"x": np.arange(5)}, f"memory://{name}")
    ds = rf.open_dataset(f"simplecache::memory://{name}")
    got = [int(x) for batch in ds.to_tf_dataset(batch_size=2) for x in batch["x"]]
    assert got == list(range(5))
    assert tf.executing_eagerly()


def test_convert_to_a_chained_url_from_the_cli(tmp_path: Path) -> None:
    # The memory file system is the process's own: the CLI converts, then reads back
    # what it wrote, in one process.
    name = _name()
    code = f"""
import sys
from recordforge.cli.__main__ import main
rc = main(["convert", "table", {str(TAXI)!r}, "--out", "simplecache::memory://{name}"])
import recordforge as rf
ds = rf.open_dataset("memory://{name}")
print(rc, len(ds), ds.take([0])["trip_miles"].shape)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.splitlines()[-1]  # (after the command's own summary)
    assert last.split()[:2] == ["0", "15000"], done.stdout + done.stderr[-2000:]


def test_a_chain_of_caches_as_the_output_writes_to_its_store() -> None:
    assert _fs.unchained("simplecache::gs://b/ds") == "gs://b/ds"
    assert _fs.unchained("filecache::simplecache::s3://b/ds") == "s3://b/ds"
    # Not caches: left to fsspec as given.
    assert _fs.unchained("zip://a::s3://b/x.zip") == "zip://a::s3://b/x.zip"
    assert _fs.unchained("memory://m/ds") == "memory://m/ds"

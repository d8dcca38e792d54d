"""Adversarial review of fsspec's chained URLs (7a4b400: ``simplecache::gs://...`` is a
URL, globbed through its last file system with the chain kept on every match).

What holds: which strings are URLs (chains of any depth; ``C::/data``, ``a::b`` and
``simplecache::/local`` are not); a local directory whose name holds ``::`` (absolute,
relative, globbed, ``file://``) is read, written and inspected as local, fsspec never
asked; globs keep the chain (``*``, ``?``, ``[..]``, nested chains, ``filecache`` with
its cache directory in ``tmp_path``, ``blockcache`` over ``file://``); ``verify``,
``info``, ``head`` and ``stats`` read through a chain and name files by it (a damaged
shard too); a write through a chain refuses a complete dataset without ``overwrite``
and resumes an interrupted one; ``to_torch`` and ``to_grain`` read a chained glob (in a
subprocess, started first: the memory file system is the process's own, and the
imports take seconds).

What this review found, fixed since: recordforge's own control objects (``dataset.json``,
``.recordforge.lock``) were read through the chain's cache and written past it
(``cp_file``/``rm_file`` go to the target file system; fsspec also keeps one file system
instance, one cache, per thread id):

- after ``write_dataset(..., overwrite=True)`` through ``simplecache::`` (or
  ``filecache::``), the dataset read back through the same URL had the old
  ``dataset.json`` (``verify``: "7 records, dataset.json says 5");
- the overwrite itself failed ("another conversion took this output over") whenever its
  upload thread got the thread id of the first write's upload thread (~30-50% of runs;
  always here, where fsspec's per-thread instance token is the thread's name).

A dataset is now written to the store behind a chain of caches (``_fs.unchained``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import fsspec.config
import fsspec.spec
import numpy as np
import pytest

import recordforge as rf
from recordforge import _fs
from recordforge._remote import RemoteOutputDir
from recordforge.errors import RecordforgeError


def _name() -> str:
    return f"adv25-{uuid.uuid4().hex[:12]}"


def _memory_ds(n: int = 7, shards: int = 3) -> str:
    name = _name()
    blobs = [b"v%d" % i for i in range(n)]
    rf.write_dataset(
        {"x": np.arange(n), "b": blobs}, f"memory://{name}", max_records=-(-n // shards)
    )
    return name


def _xs(ds: Any) -> list[int]:
    return [int(v) for b in ds.batches(100) for v in b["x"]]


# --------------------------------------------------------------------------------------
# torch and grain, in a subprocess started with the first test


_TORCH_GRAIN = """
import json
import numpy as np
import recordforge as rf
rf.write_dataset({"x": np.arange(7)}, "memory://tg", max_records=3)
ds = rf.open_dataset("simplecache::memory://tg/train-*.tfrecord")
import torch
torch_x = sorted(int(v) for b in ds.to_torch(batch_size=3) for v in b["x"])
src = ds.to_grain()
grain_x = [int(np.asarray(src[i]["x"]).reshape(-1)[0]) for i in range(len(src))]
print(json.dumps({"files": ds.files, "torch": torch_x, "grain": grain_x}))
"""


@pytest.fixture(scope="module", autouse=True)
def torch_grain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    tmp = tmp_path_factory.mktemp("tg")
    out = tmp / "out.txt"
    with open(out, "wb") as f, open(tmp / "err.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _TORCH_GRAIN], stdout=f, stderr=err)
    yield proc, tmp
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------
# What is a URL


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("simplecache::memory://m/ds", True),
        ("blockcache::simplecache::filecache::s3://b/k", True),
        ("simplecache::file:///tmp/ds", True),  # a cache over local files: fsspec's
        ("Simple-Cache.v2+x::gs://b", True),
        ("a::b", False),
        ("/tmp/a::b/ds", False),
        ("./a::b/c", False),
        ("C::", False),
        ("C::/data", False),
        ("C::\\data", False),
        ("C:\\a::b\\c", False),
        ("::memory://x", False),
        ("simplecache::", False),
        ("simplecache::/local/ds", False),
        ("simple cache::memory://x", False),
        ("1cache::memory://x", False),
        ("file:///tmp/a::b", False),
    ],
)
def test_what_is_a_url(path: str, url: bool) -> None:
    assert _fs.is_url(path) is url


# --------------------------------------------------------------------------------------
# Local paths holding "::"


def test_a_local_directory_named_with_double_colons_stays_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fsspec(url: str) -> Any:
        raise AssertionError(f"fsspec asked for a local path: {url}")

    monkeypatch.setattr(_fs, "filesystem", no_fsspec)
    root = tmp_path / "a::b" / "simplecache::memory:"
    out = root / "ds"
    rf.write_dataset({"x": np.arange(7)}, str(out), max_records=3)
    assert (out / "dataset.json").is_file() and len(list(out.glob("*.tfrecord"))) == 3
    forms: list[str | Path] = [
        str(out),
        out,
        f"file://{out}",
        str(out / "*.tfrecord"),
        str(out / "train-*"),
    ]
    for form in forms:
        ds = rf.open_dataset(form)
        assert _xs(ds) == list(range(7)), form
        assert all(not _fs.is_url(f) and os.path.isfile(f) for f in ds.files), ds.files
    monkeypatch.chdir(tmp_path)
    rel = "a::b/simplecache::memory:/ds"
    assert _xs(rf.open_dataset(rel)) == list(range(7))
    assert len(rf.open_dataset(rel + "/*.tfrecord").files) == 3
    assert rf.inspect.verify(rel).ok and rf.inspect.verify(rel).records == 7
    assert rf.inspect.info(rel).records == 7
    assert len(rf.inspect.head(rel, n=3).records) == 3
    assert rf.inspect.stats(rel + "/*.tfrecord").records == 7
    # A second write into it: refused without overwrite, replaced with it.
    with pytest.raises(FileExistsError):
        rf.write_dataset({"x": np.arange(3)}, rel)
    rf.write_dataset({"x": np.arange(3)}, rel, overwrite=True)
    assert _xs(rf.open_dataset(rel)) == [0, 1, 2]
    # A TFRecord file of its own there, written and read by name.
    with rf.TFRecordWriter("a::b/C::") as w:
        w.write(rf.encode_example({"y": 5}))
    assert rf.inspect.stats("a::b/C::").records == 1
    assert (tmp_path / "a::b" / "C::").is_file()


# --------------------------------------------------------------------------------------
# Reading through chains


def test_globs_through_chains_keep_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fsspec.config.conf, "filecache", {"cache_storage": str(tmp_path / "fc")})
    name = _memory_ds()
    cases = {
        f"simplecache::memory://{name}/*.tfrecord": list(range(7)),
        f"simplecache::memory://{name}/train-0000[0-1]-of-00003.tfrecord": list(range(6)),
        f"simplecache::memory://{name}/train-0000?-of-00003.tfrecord": list(range(7)),
        f"filecache::memory://{name}/train-00002-*": [6],
        f"simplecache::filecache::memory://{name}/*.tfrecord": list(range(7)),
    }
    for url, xs in cases.items():
        chain = url.rsplit("::", 1)[0] + "::memory://"
        matches = _fs.glob(url)
        assert matches and all(m.startswith(chain) for m in matches), (url, matches)
        ds = rf.open_dataset(url)
        assert len(ds) == len(xs) and all(f.startswith(chain) for f in ds.files), url
        assert _xs(ds) == xs and [int(ds[i]["x"]) for i in range(len(xs))] == xs
        assert ds.take([len(xs) - 1, 0])["x"].tolist() == [xs[-1], xs[0]]
    assert any((tmp_path / "fc").iterdir())  # filecache kept its copies where it was told
    with pytest.raises(FileNotFoundError, match="nothing-"):
        rf.open_dataset(f"simplecache::memory://{name}/nothing-*.tfrecord")


def test_inspect_reads_through_chains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fsspec.config.conf, "filecache", {"cache_storage": str(tmp_path / "fc")})
    name = _memory_ds()
    for chain in ("simplecache", "filecache", "simplecache::filecache"):
        url = f"{chain}::memory://{name}"
        for form in (url, url + "/*.tfrecord"):
            result = rf.inspect.verify(form)
            assert result.ok and result.records == 7, (form, result)
            assert all(f.path.startswith(chain + "::") for f in result.files)
            assert rf.inspect.info(form).records == 7
            head = rf.inspect.head(form, n=4).records
            assert [int(h.features["x"][0]) for h in head] == [0, 1, 2, 3]
            assert all(h.file.startswith(chain + "::") for h in head)
            stats = rf.inspect.stats(form)
            by = {f.name: f for f in stats.features}
            assert stats.records == 7 and by["x"].numbers is not None
            assert by["x"].numbers["max"] == 6.0
    # blockcache needs files that have blocks: over local files it reads.
    local = tmp_path / "local"
    rf.write_dataset({"x": np.arange(7)}, str(local), max_records=3)
    url = f"blockcache::file://{local}"
    assert _xs(rf.open_dataset(url)) == list(range(7))
    assert rf.inspect.verify(url + "/*.tfrecord").ok


def test_a_damaged_shard_read_through_a_chain_is_named_by_it() -> None:
    name = _memory_ds()
    fs = fsspec.filesystem("memory")
    key = f"/{name}/train-00001-of-00003.tfrecord"
    data = bytearray(fs.cat_file(key))
    data[20] ^= 0x10  # inside the first record's payload
    fs.pipe_file(key, bytes(data))
    url = f"simplecache::memory://{name}"
    result = rf.inspect.verify(url)
    assert not result.ok
    assert {p.file for p in result.problems if p.kind == "crc"} == {
        f"{url}/train-00001-of-00003.tfrecord"
    }
    stats = rf.inspect.stats(url)
    # (3 records, then a damaged first record: that file's rest skipped, then 1)
    assert stats.records == 4 and [p.kind for p in stats.problems] == ["crc"]


# --------------------------------------------------------------------------------------
# Writing through chains


@pytest.fixture
def fresh_thread_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsspec keeps a file system instance per thread id, and the OS reuses the id of
    a thread that ended: a writer's upload thread then gets the instance (the cache) of
    an earlier one, or not, by chance. Here every thread gets its own, always."""
    serial = itertools.count()

    def ident() -> int:
        t: Any = threading.current_thread()
        if not hasattr(t, "_adv25_serial"):
            t._adv25_serial = next(serial)
        return int(t._adv25_serial)

    shim = types.SimpleNamespace(RLock=threading.RLock, get_ident=ident)
    monkeypatch.setattr(fsspec.spec, "threading", shim)


def test_a_write_through_a_chain_refuses_and_resumes(
    fresh_thread_instances: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _name()
    url = f"simplecache::memory://{name}"
    resumed: list[bool] = []
    prepare = RemoteOutputDir._prepare

    def spy(self: RemoteOutputDir, overwrite: bool) -> None:
        prepare(self, overwrite)
        resumed.append(self.resumed)

    monkeypatch.setattr(RemoteOutputDir, "_prepare", spy)

    def items(stop: int | None) -> Iterator[dict[str, int]]:
        for i in range(10):
            if i == stop:
                raise KeyboardInterrupt  # a kill, between shards
            yield {"x": i}

    with pytest.raises(KeyboardInterrupt):
        rf.write_dataset(items(7), url, max_records=2)
    left = fsspec.filesystem("memory").ls(f"/{name}", detail=False)
    assert any(p.endswith(".recordforge-progress.json") for p in left)
    with pytest.raises(rf.UnfinishedConversionError):
        rf.open_dataset(url)
    rf.write_dataset(items(None), url, max_records=2)
    assert resumed == [False, True]
    ds = rf.open_dataset(url)
    assert len(ds) == 10 and _xs(ds) == list(range(10))
    names = sorted(
        p.rsplit("/", 1)[-1] for p in fsspec.filesystem("memory").ls(f"/{name}", detail=False)
    )
    assert names == ["dataset.json"] + [f"train-{k:05d}-of-00005.tfrecord" for k in range(5)]
    with pytest.raises(FileExistsError, match="complete dataset"):
        rf.write_dataset({"x": np.arange(3)}, url)
    assert rf.inspect.verify(f"memory://{name}").ok


@pytest.mark.parametrize("chain", ["simplecache", "filecache"])
def test_an_overwrite_through_a_chain_reads_back_the_new_dataset(
    chain: str, fresh_thread_instances: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fsspec.config.conf, "filecache", {"cache_storage": str(tmp_path / "fc")})
    name = _name()
    url = f"{chain}::memory://{name}"
    rf.write_dataset({"x": np.arange(5)}, url)
    rf.write_dataset({"x": np.arange(100, 107)}, url, overwrite=True)
    assert _xs(rf.open_dataset(f"memory://{name}")) == list(range(100, 107))
    ds = rf.open_dataset(url)
    assert _xs(ds) == list(range(100, 107))  # (the shards are the new ones)
    assert len(ds) == 7  # 5: the old dataset.json
    result = rf.inspect.verify(url)
    assert result.ok, [p.message for p in result.problems]


def test_an_overwrite_through_a_chain_on_a_reused_upload_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fsspec's instance token made the thread's name: the second write's upload thread
    # (recordforge-upload_0 again) gets the first one's instance, as it does by chance
    # when the OS hands out the same thread id.
    shim = types.SimpleNamespace(
        RLock=threading.RLock, get_ident=lambda: threading.current_thread().name
    )
    monkeypatch.setattr(fsspec.spec, "threading", shim)
    url = f"simplecache::memory://{_name()}"
    rf.write_dataset({"x": np.arange(5)}, url)
    try:
        rf.write_dataset({"x": np.arange(100, 107)}, url, overwrite=True)
    except RecordforgeError as e:
        assert "took this output over" in str(e)
        raise AssertionError(f"the overwrite stopped: {e}") from None


# --------------------------------------------------------------------------------------
# torch and grain (last: their subprocess ran meanwhile)


def test_to_torch_and_to_grain_read_a_chained_glob(torch_grain: tuple[Any, Path]) -> None:
    proc, tmp = torch_grain
    if proc.wait(timeout=120) != 0:
        err = (tmp / "err.txt").read_text()
        if "No module named 'torch'" in err or "No module named 'grain'" in err:
            pytest.skip("torch or grain is not installed")
        raise AssertionError(err[-2000:])
    got = json.loads((tmp / "out.txt").read_text().splitlines()[-1])
    assert len(got["files"]) == 3
    assert all(f.startswith("simplecache::memory://") for f in got["files"])
    assert got["torch"] == list(range(7)) and got["grain"] == list(range(7))

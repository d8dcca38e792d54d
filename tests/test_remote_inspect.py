"""The inspect commands on remote datasets (``s3://`` on a moto server behind a counting
loopback proxy): info, head, count --verify, verify, stats and index stream each shard
(ranged reads read ahead, CRCs checked as they arrive) and give what they give on a local
copy; nothing is staged on local disk; damage and truncation are named by URL and
byte; a dropped connection is retried; ``verify --fast`` compares the store's CRC32C
without reading the data, or says plainly that it could not."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import moto_s3, moto_server_process
from test_remote_ranged import Proxy

import recordforge as rf
from recordforge import _core, _fs, _ranged
from recordforge.cli.__main__ import main
from recordforge.inspect import _fast

s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

BUCKET = "recordforge-inspect"
ROWS = 600
PAYLOAD = 2_000


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, Proxy]]:
    proxies: list[Proxy] = []

    def front(address: tuple[str, int]) -> tuple[str, int]:
        proxies.append(Proxy(address))
        return "127.0.0.1", proxies[0].port

    with moto_s3(BUCKET, front) as fs:
        try:
            yield fs, proxies[0]
        finally:
            proxies[0].listener.close()


def _rows(n: int = ROWS, payload: int = PAYLOAD) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    return {
        "id": np.arange(n),
        "name": np.array([f"item-{i % 7}" for i in range(n)], dtype=object),
        "score": rng.random(n).astype(np.float32),
        "blob": np.array([rng.bytes(payload) for _ in range(n)], dtype=object),
    }


def _upload(fs: Any, local: Path, prefix: str) -> str:
    for f in sorted(local.iterdir()):
        fs.put_file(str(f), f"{BUCKET}/{prefix}/{f.name}")
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module")
def datasets(s3: tuple[Any, Proxy], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Local datasets (plain with .idx, GZIP) and their uploaded copies; ~0.5 MB shards."""
    fs, _ = s3
    root = tmp_path_factory.mktemp("inspect")
    out = {}
    for kind, options in {
        "plain": {"index": True},
        "gzip": {"compression": "gzip"},
    }.items():
        local = root / kind
        rf.write_dataset(_rows(), local, max_bytes="500KB", **options)
        out[f"{kind}-local"] = str(local)
        out[kind] = _upload(fs, local, kind)
    return out


@pytest.fixture
def no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Temporary files go to a fresh directory, which must stay empty; staging a remote
    file is an error."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))

    def staged(path: str) -> str:
        raise AssertionError(f"{path} staged")

    monkeypatch.setattr(_fs, "staged", staged)
    yield scratch
    assert list(scratch.iterdir()) == []


def _shards(path: str | Path) -> list[Any]:
    manifest = rf.open_dataset(str(path)).manifest
    assert manifest is not None
    return list(manifest.splits["train"])


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def as_remote(result: Any, local: str, url: str) -> Any:
    """A local command's JSON with the local directory named as the URL."""
    return json.loads(json.dumps(result).replace(local, url))


COMMANDS = [
    ("info",),
    ("count",),
    ("count", "--verify"),
    ("verify",),
    ("stats",),
    ("head", "-n", "3"),
]


@pytest.mark.parametrize("kind", ["plain", "gzip"])
def test_every_command_gives_what_it_gives_locally_and_stages_nothing(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    _, proxy = s3
    url, local = datasets[kind], datasets[f"{kind}-local"]
    shard_bytes = sum(s.bytes for s in _shards(local))
    for argv in COMMANDS:
        code, mine = run_json(capsys, *argv, url)
        code_local, theirs = run_json(capsys, *argv, local)
        assert code == code_local == 0, (argv, mine)
        assert mine == as_remote(theirs, local, url), argv
    result = rf.inspect.verify(url)
    assert result.ok and result.records == ROWS
    assert "manifest (counts, sizes, checksums)" in result.checked
    assert rf.inspect.count(url, verify=True).records == ROWS
    # Each shard streamed once: verify reads no more than the shards (and headers).
    proxy.reset()
    rf.inspect.verify(url)
    assert shard_bytes <= proxy.sent < shard_bytes + 64 * 1024, (proxy.sent, shard_bytes)


def test_index_writes_each_idx_beside_its_remote_shard(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fs, _ = s3
    local = Path(datasets["plain-local"])
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in local.iterdir():
        if not f.name.endswith(".idx"):
            (bare / f.name).write_bytes(f.read_bytes())
    url = _upload(fs, bare, "bare")
    assert not [p for p in fs.ls(f"{BUCKET}/bare") if p.endswith(".idx")]
    code, out = run_json(capsys, "index", url)
    assert code == 0 and not out["problems"]
    names = sorted(f.name for f in local.iterdir() if f.name.endswith(".idx"))
    assert [f["index_path"] for f in out["files"]] == [f"{url}/{n}" for n in names]
    fs.invalidate_cache()
    for name in names:
        assert fs.cat_file(f"{BUCKET}/bare/{name}") == (local / name).read_bytes()
    assert not [p for p in fs.ls(f"{BUCKET}/bare") if "/." in p]  # no temporary key left


def _damaged(fs: Any, local: str, tmp_path: Path, prefix: str, cut: bool) -> tuple[str, str, int]:
    """A copy of ``local`` with its first shard's record 5 flipped (or the shard cut
    short), uploaded; (the URL, the local copy, the record's offset)."""
    copy = tmp_path / prefix
    copy.mkdir()
    for f in Path(local).iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    first = _shards(local)[0].file
    data = bytearray((copy / first).read_bytes())
    starts = [int(v) for v in (copy / f"{first}.idx").read_text().split()[0::2]]
    if cut:
        data = data[: starts[-1] + 30]
    else:
        data[starts[5] + 100] ^= 0x01
    (copy / first).write_bytes(bytes(data))
    return _upload(fs, copy, prefix), str(copy), starts[-1 if cut else 5]


@pytest.mark.parametrize("cut", [False, True], ids=["flipped", "truncated"])
def test_damage_is_named_by_url_record_and_byte(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cut: bool,
) -> None:
    fs, _ = s3
    prefix = "cut" if cut else "flipped"
    url, local, offset = _damaged(fs, datasets["plain-local"], tmp_path, prefix, cut)
    first = _shards(local)[0].file
    for argv in (("verify",), ("count", "--verify")):
        code, mine = run_json(capsys, *argv, url)
        _, theirs = run_json(capsys, *argv, local)
        assert code == 1
        assert mine == as_remote(theirs, local, url), argv
    result = rf.inspect.verify(url)
    framing = [p for p in result.problems if p.kind in ("crc", "truncated")]
    assert len(framing) == 1, result.problems
    (p,) = framing
    assert p.file == f"{url}/{first}" and p.offset == offset
    assert p.record == (_shards(local)[0].records - 1 if cut else 5)
    assert str(p).startswith(f"s3://{BUCKET}/{prefix}/{first}: record ")
    assert main(["verify", url]) == 1
    assert f"{url}/{first}: record {p.record} at byte offset {offset}" in capsys.readouterr().out


def test_a_dropped_connection_is_retried_with_the_same_result(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, proxy = s3
    url = datasets["plain"]
    expected = rf.inspect.verify(url).to_json()
    counted = rf.inspect.count(url, verify=True).to_json()
    proxy.drop_after = 150_000  # inside the first shard's first block
    assert rf.inspect.verify(url).to_json() == expected
    assert proxy.drop_after is None  # the drop happened
    proxy.drop_after = 150_000
    assert rf.inspect.count(url, verify=True).to_json() == counted
    assert proxy.drop_after is None


def _break_off_after_three_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote reads in blocks of 64 kB, whose fourth and later ones always fail with a
    reset connection (retried at once, to no avail)."""
    monkeypatch.setattr(_ranged, "BLOCK", 64 << 10)
    monkeypatch.setattr(_ranged, "BACKOFF", (0.0,))
    fetch = _ranged.ReadAhead._range

    def failing(self: Any, start: int, end: int) -> bytes:
        if start >= 3 * (64 << 10):
            raise ConnectionResetError("connection reset by peer")
        return fetch(self, start, end)

    monkeypatch.setattr(_ranged.ReadAhead, "_range", failing)


def test_a_read_that_keeps_failing_is_an_error_naming_the_url_not_damage(
    datasets: dict[str, str], no_staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that breaks off for good (its retries spent) is an ``OSError`` naming the
    URL: the walker, which saw the pipe end there, must not report a truncated file."""
    url = datasets["plain"]
    _break_off_after_three_blocks(monkeypatch)
    for run in (rf.inspect.verify, lambda u: rf.inspect.count(u, verify=True)):
        with pytest.raises(OSError, match=rf"{url}/train-00000-of-\d+\.tfrecord: .*reset"):
            run(url)


def test_salvage_streams_a_remote_damaged_shard(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs, _ = s3
    url, local, _ = _damaged(fs, datasets["plain-local"], tmp_path, "salvage", cut=False)
    first = _shards(local)[0].file
    mine = rf.inspect.salvage(f"{url}/{first}", tmp_path / "mine.tfrecord")
    theirs = rf.inspect.salvage(f"{local}/{first}", tmp_path / "theirs.tfrecord")
    assert (mine.records, mine.lost) == (theirs.records, theirs.lost)
    assert mine.lost_records == 1
    assert (tmp_path / "mine.tfrecord").read_bytes() == (tmp_path / "theirs.tfrecord").read_bytes()

    # Salvaged into the store: streamed there (no local file), the same records, and no
    # temporary key left beside it.
    def no_local_dir() -> Any:
        raise AssertionError("a remote salvage written to a local directory")

    monkeypatch.setattr(_fs, "local_dir", no_local_dir)
    there = rf.inspect.salvage(f"{url}/{first}", f"{url}-fixed/{first}", compression="gzip")
    assert (there.records, there.lost) == (theirs.records, theirs.lost)
    fs.invalidate_cache()
    assert fs.ls(f"{url}-fixed".removeprefix("s3://"), detail=False) == [
        f"{url}-fixed/{first}".removeprefix("s3://")
    ]
    assert list(rf.read_records(f"{url}-fixed/{first}")) == list(
        rf.read_records(tmp_path / "theirs.tfrecord")
    )


def test_a_remote_salvage_that_fails_leaves_nothing_in_the_store(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source's stream breaks off for good in the middle of a salvage into the
    store: the error names the source, and no object, temporary key or unfinished
    multipart upload is left under the output prefix."""
    fs, _ = s3
    url = datasets["plain"]
    first = fs.ls(url.removeprefix("s3://"), detail=False)
    shard = next(k for k in first if k.endswith(".tfrecord"))
    _break_off_after_three_blocks(monkeypatch)
    monkeypatch.setattr(_fs, "part_size", lambda: 5 << 20)
    out = f"s3://{BUCKET}/salvage-failed/fixed.tfrecord"
    with pytest.raises(OSError, match=rf"{shard}: .*reset"):
        rf.inspect.salvage(f"s3://{shard}", out)
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/salvage-failed")
    uploads = fs.call_s3("list_multipart_uploads", Bucket=BUCKET, Prefix="salvage-failed/")
    assert not uploads.get("Uploads")


def test_a_salvage_into_the_store_clears_what_a_killed_one_left(
    s3: tuple[Any, Proxy], datasets: dict[str, str], no_staging: Path, tmp_path: Path
) -> None:
    """A salvage killed in the middle of its upload leaves an unfinished multipart
    upload of its temporary key; one killed after the commit, the temporary object. The
    next salvage to the same output aborts the one and replaces the other, and leaves
    neither."""
    fs, _ = s3
    url, local, _ = _damaged(fs, datasets["plain-local"], tmp_path, "rerun", cut=False)
    first = _shards(local)[0].file
    out = f"s3://{BUCKET}/salvage-rerun/fixed.tfrecord"
    temporary = "salvage-rerun/.fixed.tfrecord.salvage"
    fs.call_s3("create_multipart_upload", Bucket=BUCKET, Key=temporary)
    fs.pipe_file(f"{BUCKET}/{temporary}", b"the killed run's")
    result = rf.inspect.salvage(f"{url}/{first}", out)
    theirs = rf.inspect.salvage(f"{local}/{first}", tmp_path / "theirs.tfrecord")
    assert (result.records, result.lost) == (theirs.records, theirs.lost)
    fs.invalidate_cache()
    assert fs.ls(f"{BUCKET}/salvage-rerun", detail=False) == [
        f"{BUCKET}/salvage-rerun/fixed.tfrecord"
    ]
    listing = fs.call_s3("list_multipart_uploads", Bucket=BUCKET, Prefix="salvage-rerun/")
    assert not listing.get("Uploads")


def _put_with_crc32c(fs: Any, local: Path, prefix: str) -> str:
    """Uploads ``local``'s files with a CRC32C kept by the store (a PUT that carries
    ``x-amz-sdk-checksum-algorithm: CRC32C`` and the value: botocore computes CRC32C only
    with awscrt, not installed here)."""
    client = boto3.client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )

    def algorithm(request: Any, **_: Any) -> None:
        request.headers["x-amz-sdk-checksum-algorithm"] = "CRC32C"

    client.meta.events.register("before-sign.s3.PutObject", algorithm)
    for f in sorted(local.iterdir()):
        data = f.read_bytes()
        crc = base64.b64encode(_core.crc32c(data).to_bytes(4, "big")).decode()
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{f.name}", Body=data, ChecksumCRC32C=crc)
    return f"s3://{BUCKET}/{prefix}"


def test_verify_fast_without_a_store_checksum_says_sizes_only(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fs, proxy = s3
    url = datasets["plain"]  # uploaded by s3fs: S3 keeps a CRC32 of each, not a CRC32C
    shards = _shards(datasets["plain-local"])
    proxy.reset()
    code, out = run_json(capsys, "verify", "--fast", url)
    assert proxy.sent < 64 * 1024  # metadata only: no shard read
    assert code == 3 and out["ok"] is True
    assert [p["file"] for p in out["unchecked"]] == [f"{url}/{s.file}" for s in shards]
    assert all("checksum NOT checked" in p["message"] for p in out["unchecked"])
    assert main(["verify", "--fast", url]) == 3
    text = capsys.readouterr().out
    assert "INCOMPLETE" in text and "OK" not in text
    assert f"not checked: {url}/{shards[0].file}: size checked, checksum NOT checked" in text
    # A shard replaced by a shorter one: its size gives it away.
    copy = tmp_path / "short"
    copy.mkdir()
    for f in Path(datasets["plain-local"]).iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / shards[1].file).write_bytes((copy / shards[1].file).read_bytes()[:-100])
    short = _upload(fs, copy, "short")
    code, out = run_json(capsys, "verify", "--fast", short)
    assert code == 1
    (problem,) = out["problems"]
    assert problem["file"] == f"{short}/{shards[1].file}"
    assert (
        f"size is {shards[1].bytes - 100} bytes, dataset.json says {shards[1].bytes}"
        in (problem["message"])
    )


def test_verify_fast_compares_the_store_crc32c(
    s3: tuple[Any, Proxy],
    datasets: dict[str, str],
    no_staging: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fs, proxy = s3
    local = Path(datasets["plain-local"])
    url = _put_with_crc32c(fs, local, "crc32c")
    shards = _shards(str(local))
    proxy.reset()
    code, out = run_json(capsys, "verify", "--fast", url)
    assert (code, out["ok"], out["unchecked"]) == (0, True, [])
    assert any(c.startswith("checksums") for c in out["checked"])
    assert proxy.sent < 64 * 1024
    assert main(["verify", "--fast", url]) == 0
    assert "OK" in capsys.readouterr().out
    # A shard whose bytes changed but not its size: the store's CRC32C differs.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in local.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / shards[0].file).read_bytes())
    data[1000] ^= 0x01
    (tampered / shards[0].file).write_bytes(bytes(data))
    bad = _put_with_crc32c(fs, tampered, "crc32c-tampered")
    code, out = run_json(capsys, "verify", "--fast", bad)
    assert code == 1
    (problem,) = out["problems"]
    assert problem["file"] == f"{bad}/{shards[0].file}"
    assert f"(kept by the store), dataset.json says {shards[0].checksum}" in problem["message"]
    assert f"crc32c:{_core.crc32c(bytes(data)):08x}" in problem["message"]


def test_gcs_crc32c_is_read_from_the_object_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfs is not installed here: a stand-in file system gives what gcsfs's ``info``
    gives (``crc32c``: base64 of the big-endian CRC32C)."""
    data = b"some object"
    crc = _core.crc32c(data)

    class FakeGCS:
        protocol = ("gs", "gcs")

        def info(self, path: str) -> dict[str, Any]:
            assert path == "bucket/obj"
            return {"size": len(data), "crc32c": base64.b64encode(crc.to_bytes(4, "big")).decode()}

    monkeypatch.setattr(_fs, "filesystem", lambda url: (FakeGCS(), url.split("://", 1)[1]))
    assert _fast.store_crc32c("gs://bucket/obj") == (crc, "")


def test_a_composite_s3_checksum_is_not_taken_for_the_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class FakeS3:
        protocol = ("s3", "s3a")

        def call_s3(self, method: str, **kwargs: Any) -> dict[str, Any]:
            assert (method, kwargs["ChecksumMode"]) == ("head_object", "ENABLED")
            return {"ChecksumCRC32C": "AAAAAA==-3", "ChecksumType": "COMPOSITE"}

    monkeypatch.setattr(_fs, "filesystem", lambda url: (FakeS3(), url.split("://", 1)[1]))
    crc, why = _fast.store_crc32c("s3://bucket/obj")
    assert crc is None and "parts" in why


@contextlib.contextmanager
def _moto_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server in a process of its own (the in-process one keeps the objects,
    and copies them, in this process's memory), with s3fs pointed at it."""
    with moto_server_process() as store:
        for name, value in store.items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            fs = s3fs.S3FileSystem(anon=False)
            fs.mkdir(BUCKET)
            yield fs
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


def test_a_remote_verify_holds_the_read_ahead_not_the_shard(
    s3: tuple[Any, Proxy],
    no_staging: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = tmp_path / "big"
    rf.write_dataset(_rows(1_000, 20_000), local, max_bytes="64MB")
    (shard,) = _shards(str(local))
    assert shard.bytes > 20_000_000
    monkeypatch.setattr(_ranged, "BLOCK", 1 << 20)
    monkeypatch.setenv("RECORDFORGE_READ_AHEAD", str(2 << 20))
    with _moto_process(monkeypatch) as fs:
        url = _upload(fs, local, "big")
        rf.inspect.verify(url, fast=True)  # botocore's models loaded (~12 MB, once)
        tracemalloc.start()
        try:
            result = rf.inspect.verify(url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.ok and result.records == 1_000
    # Blocks queued (2) + the one read + the one fetched + the CRC's copy: ~5 MiB.
    assert peak < 8 << 20, peak

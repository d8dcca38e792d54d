"""Conversions streamed into an object store (``recordforge/_remote.py``), against a moto
S3 server on loopback behind a proxy that injects faults: nothing is staged on local
disk, each shard is uploaded while it is written (multipart) and committed only when
complete, 503s and a connection dropped in the middle of a part upload are retried with
identical bytes, and a remote conversion killed at any stage of the writer (or in the
middle of a part upload) resumes to the bytes of an uninterrupted run, abandoned uploads
aborted."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import moto_s3, moto_server_process

import recordforge as rf
from recordforge import _fs
from recordforge._outdir import LOCK_NAME
from recordforge._shardwriter import UPLOADS
from recordforge.cli.__main__ import main

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "recordforge-write"
_REQUEST = re.compile(rb"^(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.1\r\n")


class FaultProxy:
    """A TCP proxy on loopback in front of the S3 server. Per request (its request line
    seen at the start of a client's send), a rule may answer ``503 Slow Down`` instead
    of the server, or cut the connection after some bytes of the request's body; the
    requests seen are kept (method, path)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.seen: list[tuple[str, str]] = []
        self.faults: list[str] = []
        # (what to do, how many times, request filter), applied in order.
        self.rules: list[list[Any]] = []
        self.on_request: Callable[[str, str], None] | None = None
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def add(self, action: str, times: int, match: Callable[[str, str], bool]) -> None:
        with self.lock:
            self.rules.append([action, times, match])

    def _rule(self, method: str, path: str) -> str | None:
        with self.lock:
            self.seen.append((method, path))
            for rule in self.rules:
                if rule[1] > 0 and rule[2](method, path):
                    rule[1] -= 1
                    self.faults.append(f"{rule[0]} {method} {path}")
                    return str(rule[0])
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        cut: int | None = None  # body bytes still forwarded before the cut
        try:
            while data := client.recv(1 << 16):
                head = _REQUEST.match(data)
                if head is not None:
                    method, path = head.group(1).decode(), head.group(2).decode()
                    if self.on_request is not None:
                        self.on_request(method, path)
                    action = self._rule(method, path)
                    if action == "503":
                        body = b"<Error><Code>SlowDown</Code><Message>slow</Message></Error>"
                        client.sendall(
                            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                        )
                        break
                    if action == "cut":
                        cut = 1 << 20
                if cut is not None:
                    if len(data) >= cut:
                        server.sendall(data[:cut])
                        break
                    cut -= len(data)
                server.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, FaultProxy]]:
    proxies: list[FaultProxy] = []

    def front(address: tuple[str, int]) -> tuple[str, int]:
        proxies.append(FaultProxy(address))
        return "127.0.0.1", proxies[0].port

    with moto_s3(BUCKET, front) as fs:
        yield fs, proxies[0]


@pytest.fixture
def s3(served: tuple[Any, FaultProxy]) -> Any:
    return served[0]


@pytest.fixture
def proxy(served: tuple[Any, FaultProxy]) -> Iterator[FaultProxy]:
    p = served[1]
    p.rules.clear()
    p.faults.clear()
    p.seen.clear()
    p.on_request = None
    yield p
    p.rules.clear()
    p.on_request = None


@pytest.fixture
def prefix(s3: Any, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    return f"s3://{BUCKET}/{name}"


@pytest.fixture
def fresh_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TMPDIR`` (and ``tempfile``'s directory) pointed at a fresh empty directory."""
    import tempfile

    tmp = tmp_path / "TMPDIR"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


class DiskWatch:
    """The largest number of bytes under a directory, polled every 2 ms."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak, self.stop = path, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            total = 0
            for root, _, files in os.walk(self.path):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(root, f)).st_size
            self.peak = max(self.peak, total)
            time.sleep(0.002)

    def __enter__(self) -> DiskWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _objects(fs: Any, url: str) -> dict[str, bytes]:
    key = url.split("://", 1)[1]
    fs.invalidate_cache()
    return {p[len(key) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(key))}


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _uploads(fs: Any, url: str) -> list[str]:
    bucket, key = url.split("://", 1)[1].split("/", 1)
    listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key + "/")
    return [u["Key"] for u in listing.get("Uploads", [])]


def _no_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails a test that downloads a remote file to local disk or makes a local
    directory to write a remote dataset in."""
    staged = _fs.staged

    def refuse_remote(path: str) -> str:
        assert not _fs.is_url(path), f"staged on local disk: {path}"
        return staged(path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a local directory made: {args}")

    monkeypatch.setattr(_fs, "staged", refuse_remote)
    monkeypatch.setattr(_fs, "local_dir", refuse)


def test_coco_and_taxi_csv_stream_to_s3_with_nothing_on_local_disk(
    s3: Any,
    prefix: str,
    shared_data: Path,
    tmp_path: Path,
    fresh_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI's conversions of tiny COCO and the TFX taxi CSV into s3:// write the
    same objects, byte for byte (dataset.json included), as into a local directory,
    with TMPDIR empty throughout; every read API gives the local records back."""
    tiny = shared_data / "tiny_coco"
    coco = [
        "convert",
        "coco",
        "--annotations",
        str(tiny / "annotations" / "instances_val2017.json"),
        "--images",
        str(tiny / "val2017"),
        "--max-records",
        "16",
        "--index",
    ]
    taxi = [
        "convert",
        "table",
        str(shared_data / "tfx_chicago_taxi" / "data.csv"),
        "--max-records",
        "4000",
        "--compression",
        "gzip",
    ]
    local = tmp_path / "local"
    assert main([*coco, "--out", str(local / "coco")]) == 0
    assert main([*taxi, "--out", str(local / "taxi")]) == 0
    _no_staging(monkeypatch)
    with DiskWatch(fresh_tmp) as watch:
        assert main([*coco, "--out", f"{prefix}/coco"]) == 0
        assert main([*taxi, "--out", f"{prefix}/taxi"]) == 0
    assert watch.peak == 0
    assert list(fresh_tmp.iterdir()) == []
    for name in ("coco", "taxi"):
        assert _objects(s3, f"{prefix}/{name}") == _files(local / name), name
        assert _uploads(s3, f"{prefix}/{name}") == []
    there, here = rf.open_dataset(f"{prefix}/coco"), rf.open_dataset(local / "coco")
    assert len(there) == len(here) > 16
    assert [r["image/source_id"] for r in there] == [r["image/source_id"] for r in here]
    assert there[7]["image/encoded"] == here[7]["image/encoded"]
    picked = [3, 0, len(here) - 1, 3]
    got, want = there.take(picked), here.take(picked)
    assert list(got["image/source_id"]) == list(want["image/source_id"])
    assert list(got["image/encoded"]) == list(want["image/encoded"])
    taxi_there = rf.open_dataset(f"{prefix}/taxi")
    counted = sum(len(next(iter(b.values()))) for b in taxi_there.batches(1000))
    assert counted == 15_000
    # S3 keeps a CRC32C of each whole shard (made when it is moved to its final key):
    # verify --fast checks every checksum against dataset.json without reading a shard.
    for name in ("coco", "taxi"):
        report = rf.inspect.verify(f"{prefix}/{name}", fast=True)
        assert (report.ok, report.unchecked) == (True, []), name


def _rows(n: int, size: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": i, "blob": (i.to_bytes(4, "little") * (size // 4 + 1))[:size]}


def test_part_uploads_survive_503s_and_a_dropped_connection(
    s3: Any,
    proxy: FaultProxy,
    prefix: str,
    tmp_path: Path,
    fresh_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 12 MB shard goes up in 5 MiB parts; the first two part uploads are answered
    503, the next is cut after 1 MiB of its body; the upload is retried and the bytes
    equal the local ones."""
    monkeypatch.setenv("RECORDFORGE_PART_SIZE", str(5 << 20))

    def part(method: str, path: str) -> bool:
        return method == "PUT" and "partNumber=" in path

    proxy.add("503", 2, part)
    proxy.add("cut", 1, part)
    local = rf.write_dataset(_rows(300, 40_000), tmp_path / "local", max_bytes="13MB")
    _no_staging(monkeypatch)
    with DiskWatch(fresh_tmp) as watch:
        remote = rf.write_dataset(_rows(300, 40_000), f"{prefix}/out", max_bytes="13MB")
    assert [f.split()[0] for f in proxy.faults] == ["503", "503", "cut"]
    parts = [p for m, p in proxy.seen if part(m, p)]
    assert len(set(parts)) >= 2  # a multipart upload
    assert len(parts) == len(set(parts)) + 3  # each fault answered by one retry
    assert watch.peak == 0
    assert remote == local
    assert _objects(s3, f"{prefix}/out") == _files(tmp_path / "local")
    assert _uploads(s3, f"{prefix}/out") == []


MEMORY = """
import sys, tracemalloc
import recordforge as rf
n = int(sys.argv[2])
rows = ({"id": i, "blob": bytes([i % 251]) * 40_000} for i in range(n))
tracemalloc.start()
rf.write_dataset(rows, sys.argv[1], max_bytes="100MB")
print(tracemalloc.get_traced_memory()[1])
"""


def test_upload_memory_does_not_grow_with_the_shard(s3: Any, prefix: str, tmp_path: Path) -> None:
    """The writer's Python memory (traced in its own process: the moto server's copy of
    the parts lives in this one) is the same for a 12 MB and a 48 MB shard: parts are
    uploaded as they fill, the shard is never held whole."""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY)
    peaks = []
    for n in (300, 1200):
        done = subprocess.run(
            [sys.executable, str(script), f"{prefix}/out{n}", str(n)],
            env={**os.environ, "RECORDFORGE_PART_SIZE": str(5 << 20)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]))
        assert (
            s3.size(f"{prefix}/out{n}/train-00000-of-00001.tfrecord".split("://")[1]) > n * 40_000
        )
    assert peaks[1] < peaks[0] + (8 << 20), peaks


@pytest.mark.slow
def test_a_failed_upload_is_aborted_and_nothing_is_committed(
    s3: Any, proxy: FaultProxy, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that keeps refusing a part: the conversion fails naming the URL, the
    multipart upload is aborted, no shard is committed, and the prefix is left empty
    (nothing worth resuming)."""
    monkeypatch.setenv("RECORDFORGE_PART_SIZE", str(5 << 20))
    proxy.add("503", 1000, lambda m, p: m == "PUT" and "partNumber=" in p)
    monkeypatch.setattr("botocore.retryhandler.delay_exponential", lambda *a, **k: 0.0)
    with pytest.raises(OSError) as raised:
        rf.write_dataset(_rows(200, 40_000), f"{prefix}/out", max_bytes="13MB")
    assert raised.value.filename == f"{prefix}/out/.train-00000.shard"
    assert f"{prefix}/out/.train-00000.shard" in str(raised.value)
    proxy.rules.clear()
    assert _uploads(s3, f"{prefix}/out") == []
    assert _objects(s3, f"{prefix}/out") == {}


# A conversion into the URL argv[1]: two splits, a skipped item, indexes, shards of 40
# records; stopped at the stage RECORDFORGE_KILL_AT if set.
SCRIPT = """
import sys
import recordforge as rf

def rows(first, n):
    for i in range(first, first + n):
        if i % 37 == 5:
            yield {"id": "bad"}
        else:
            yield {"id": i, "blob": bytes([i % 251]) * (200 + i % 300)}

def to_records(row):
    if row["id"] == "bad":
        raise rf.ItemError("bad row", "not a number")
    return [rf.encode_example(row)]

rf.write_dataset(
    splits={"train": list(rows(0, 230)), "test": list(rows(1000, 90))},
    out=sys.argv[1],
    to_records=to_records,
    on_error="skip",
    max_records=40,
    index=True,
)
"""


def _run(script: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), url],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_kill_a_remote_conversion_at_every_kind_of_stage_then_resume(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    """A subprocess converting into s3:// is SIGKILLed at the first and last stage of
    each kind; a rerun gives the objects of an uninterrupted run byte for byte
    (dataset.json included), with no working object and no open upload left."""
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    log = tmp_path / "stages.log"
    done = _run(script, f"{prefix}/reference", RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    reference = _objects(s3, f"{prefix}/reference")
    assert not [n for n in reference if n.startswith(".")]
    assert len([n for n in reference if n.endswith(".tfrecord")]) == 9
    names = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    for kind in (
        "journal saved",
        "shard closed",
        "shard uploaded to its intermediate key",
        "shard index written",
        "renamed to a final name",
        "dataset.json written",
        "journal marked finished",
        "journal removed",
    ):
        assert kind in names, kind
    picked = sorted(
        {names.index(k) + 1 for k in names} | {len(names) - names[::-1].index(k) for k in names}
    )
    for n in picked:
        url = f"{prefix}/kill-{n}"
        killed = _run(script, url, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, names[n - 1], killed.stderr)
        if names[n - 1] != "journal removed":
            with pytest.raises(rf.UnfinishedConversionError):
                rf.open_dataset(url)
        resumed = _run(script, url)
        if names[n - 1] == "journal removed":
            # Killed once the journal was gone: the dataset is complete, a rerun refused.
            assert "already holds a complete dataset" in resumed.stderr
        else:
            assert resumed.returncode == 0, (n, names[n - 1], resumed.stderr)
        assert _objects(s3, url) == reference, (n, names[n - 1])
        assert _uploads(s3, url) == []


def test_killed_in_the_middle_of_a_part_upload_then_resumed(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """SIGKILL while the second part of a shard is being uploaded (seen by the proxy):
    the store keeps the unfinished upload; the rerun aborts it and writes the same
    objects as an uninterrupted run."""
    script = tmp_path / "convert.py"
    script.write_text(
        "import sys, recordforge as rf\n"
        "rows = ({'id': i, 'blob': bytes([i % 251]) * 60_000} for i in range(400))\n"
        "rf.write_dataset(rows, sys.argv[1], max_bytes='12MB')\n"
    )
    env = {"RECORDFORGE_PART_SIZE": str(5 << 20)}
    assert _run(script, f"{prefix}/reference", **env).returncode == 0
    reference = _objects(s3, f"{prefix}/reference")
    url = f"{prefix}/killed"
    child = subprocess.Popen(
        [sys.executable, str(script), url],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
    )
    parts = []

    def kill_at_second_part(method: str, path: str) -> None:
        if method == "PUT" and "partNumber=2" in path and f"/{url.rsplit('/', 1)[1]}/" in path:
            parts.append(path)
            os.kill(child.pid, signal.SIGKILL)

    proxy.on_request = kill_at_second_part
    assert child.wait(timeout=120) == -signal.SIGKILL
    proxy.on_request = None
    assert parts
    assert _uploads(s3, url) != []  # the killed writer's upload is still open
    resumed = _run(script, url, **env)
    assert resumed.returncode == 0, resumed.stderr
    assert _objects(s3, url) == reference
    assert _uploads(s3, url) == []


def test_a_rerun_takes_over_and_the_old_run_stops(s3: Any, prefix: str, tmp_path: Path) -> None:
    """Object stores have no flock: a second run into the same prefix takes it over by
    its token in .recordforge.lock, and the first run stops at its next journal save
    with an error naming the URL, instead of interleaving its shards."""
    url = f"{prefix}/out"
    rows = [{"id": i} for i in range(200)]
    seen = []

    def progress(records: int, payload: int) -> None:
        seen.append(records)
        if len(seen) == 50:  # after the first shard: another run takes over
            s3.pipe_file(f"{url.split('://', 1)[1]}/.recordforge.lock", b'{"run": "other"}')

    with pytest.raises(rf.RecordforgeError, match="another conversion took this output over"):
        rf.write_dataset(rows, url, max_records=40, progress=progress)
    resumed = rf.write_dataset(rows, url, max_records=40)
    local = rf.write_dataset(rows, tmp_path / "local", max_records=40)
    assert resumed == local
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_overwrite_and_foreign_prefixes(s3: Any, prefix: str) -> None:
    rows = [{"id": i} for i in range(10)]
    url = f"{prefix}/out"
    first = rf.write_dataset(rows, url, max_records=4)
    with pytest.raises(FileExistsError, match="already holds a complete dataset"):
        rf.write_dataset(rows, url, max_records=4)
    other = rf.write_dataset(rows[:5], url, max_records=4, overwrite=True)
    assert other != first
    assert sorted(_objects(s3, url)) == ["dataset.json", *[s.file for s in other.splits["train"]]]
    s3.pipe_file(f"{BUCKET}/{prefix.rsplit('/', 1)[1]}/foreign/notes.txt", b"mine")
    with pytest.raises(FileExistsError, match="not a recordforge dataset"):
        rf.write_dataset(rows, f"{prefix}/foreign")
    assert _objects(s3, f"{prefix}/foreign") == {"notes.txt": b"mine"}


def test_workers_upload_their_shards_with_the_bytes_of_one_and_leave_nothing_local(
    s3: Any, prefix: str, tmp_path: Path, fresh_tmp: Path
) -> None:
    """With workers, shards are written locally (at planned offsets) and each uploaded
    when complete: the objects equal one in-process writer's, gzip included, and the
    local staging directory is gone afterwards."""
    rows = [{"id": i, "blob": bytes([i % 251]) * (100 + i % 700)} for i in range(3000)]
    for compression in (None, "gzip"):
        name = f"w-{compression}"
        options = {"max_records": 700, "index": compression is None, "compression": compression}
        one = rf.write_dataset(rows, f"{prefix}/{name}-1", **options)
        two = rf.write_dataset(rows, f"{prefix}/{name}-2", workers=2, **options)
        assert one == two
        assert _objects(s3, f"{prefix}/{name}-1") == _objects(s3, f"{prefix}/{name}-2")
        local = rf.write_dataset(rows, tmp_path / name, **options)
        assert local == one
        assert _objects(s3, f"{prefix}/{name}-2") == _files(tmp_path / name)
        report = rf.inspect.verify(f"{prefix}/{name}-2", fast=True)
        assert (report.ok, report.unchecked) == (True, [])
    assert list(fresh_tmp.iterdir()) == []


def test_big_shards_get_the_store_crc32c_of_the_whole_object(
    s3: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3fs copies an object over 150 MiB (MANAGED_COPY_THRESHOLD, lowered here to
    5 MiB) in parts, whose checksum is not the whole object's: recordforge's move makes
    one CopyObject up to 5 GiB (S3's limit), so verify --fast checks a default-size
    (256 MB) shard. Over that limit (lowered here) the copy is in parts and verify
    --fast says the checksum is not checked, never a false mismatch."""
    import s3fs  # type: ignore[import-untyped]

    monkeypatch.setattr(s3fs.core, "MANAGED_COPY_THRESHOLD", 5 << 20)
    rows = [{"id": i, "blob": bytes([i]) * (1 << 20)} for i in range(7)]  # one 7 MiB shard
    rf.write_dataset(rows, f"{prefix}/big", max_bytes="1GB")
    report = rf.inspect.verify(f"{prefix}/big", fast=True)
    assert (report.ok, report.unchecked) == (True, [])
    monkeypatch.setattr(rf._fs, "_COPY_LIMIT", 6 << 20)
    rf.write_dataset(rows, f"{prefix}/huge", max_bytes="1GB")
    report = rf.inspect.verify(f"{prefix}/huge", fast=True)
    assert report.ok and report.problems == []
    (unchecked,) = report.unchecked
    assert "checksum NOT checked" in unchecked.message


def _shard_put(name: str) -> Callable[[str, str], bool]:
    """Matches the upload of a shard's intermediate object ``name`` (one request: a
    shard smaller than a part is put whole)."""
    return lambda method, path: method == "PUT" and path.split("?")[0].endswith(f"/{name}")


def test_shard_uploads_overlap_and_at_most_uploads_are_in_flight(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """Each shard's upload is held 0.4 s by the proxy: a writer that waited for each
    shard's upload before writing the next would start them 0.4 s apart; here several
    start together, never more than UPLOADS in any 0.4 s, and the objects are those of
    a local conversion."""
    starts: list[float] = []

    def slow_shard_puts(method: str, path: str) -> None:
        if method == "PUT" and path.split("?")[0].endswith(".shard"):
            starts.append(time.monotonic())
            time.sleep(0.4)

    proxy.on_request = slow_shard_puts
    url = f"{prefix}/out"
    rf.write_dataset(list(_rows(400, 3000)), url, max_records=40, index=True)
    proxy.on_request = None
    assert len(starts) == 10
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) < 0.2, gaps  # overlapping uploads
    k = UPLOADS
    assert all(starts[i + k] - starts[i] >= 0.39 for i in range(len(starts) - k)), starts
    local = rf.write_dataset(list(_rows(400, 3000)), tmp_path / "local", max_records=40, index=True)
    assert local.records() == 400
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_a_remote_write_costs_eleven_requests_a_shard(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """The requests of a remote conversion, counted at the proxy (each costs a round
    trip to the store, tens of ms on a real one). A shard of one part: its PUT, a HEAD
    for its size, its ``.idx``, two reads of the lock (before the shard is committed,
    and before its journal entry), the entry, two copies to the final keys and three
    deletes (shard, ``.idx``, entry); then ~20 for the whole run. A small object is read
    by one GET (s3fs would ask for its size first), ``dataset.json`` is written by one
    PUT (a store commits it whole: no temporary key to copy), and the objects a listing
    found are removed without asking the store what each is. At 729f668: 178 requests
    for these 10 shards, 61 of them HEADs."""
    url = f"{prefix}/out"
    rf.write_dataset(list(_rows(400, 3000)), url, max_records=40, index=True)
    shards = 10
    seen = list(proxy.seen)
    heads = [path for method, path in seen if method == "HEAD"]
    assert len(seen) <= 11 * shards + 24, collections.Counter(m for m, _ in seen)
    assert len(heads) <= shards + 1, heads
    assert not [p for p in heads if LOCK_NAME in p or "progress" in p], heads
    touching = [(m, p.split("?")[0]) for m, p in seen if "dataset.json" in p]
    assert touching == [("PUT", f"/{BUCKET}/{prefix.rsplit('/', 1)[1]}/out/dataset.json")]
    local = tmp_path / "local"
    rf.write_dataset(list(_rows(400, 3000)), local, max_records=40, index=True)
    assert _objects(s3, url) == _files(local)


def test_small_objects_are_read_by_one_request_and_an_empty_one_too(
    s3: Any, proxy: FaultProxy, prefix: str
) -> None:
    """The journal's and the lock's reads (``_remote._get``): one GET from byte 0; an
    empty object, which has no byte 0 (S3 answers 416), is read again whole; a missing
    one is None."""
    from recordforge import _remote

    key = prefix.split("://", 1)[1]
    s3.pipe_file(f"{key}/full", b'{"run": "x"}')
    s3.pipe_file(f"{key}/empty", b"")
    proxy.seen.clear()
    assert _remote._get(f"{prefix}/full") == b'{"run": "x"}'
    assert [m for m, _ in proxy.seen] == ["GET"]
    assert _remote._get(f"{prefix}/empty") == b""
    assert _remote._get(f"{prefix}/missing") is None


@pytest.mark.slow
def test_a_failed_upload_among_uploads_in_flight_keeps_the_shards_before_it(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third shard's upload keeps failing while the next ones upload: the error
    names that shard; the journal keeps the two before it and none after it (their
    uploads had finished: not recorded, since the third is not), so the rerun converts
    the items from the third shard on and gives the objects of a local conversion."""
    monkeypatch.setattr("botocore.retryhandler.delay_exponential", lambda *a, **k: 0.0)
    proxy.add("503", 1000, _shard_put(".train-00002.shard"))
    url = f"{prefix}/out"
    rows = list(_rows(400, 3000))
    with pytest.raises(OSError) as raised:
        rf.write_dataset(rows, url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/.train-00002.shard"
    later = [p for m, p in proxy.seen if _shard_put(".train-00004.shard")(m, p)]
    assert later, "the shards after the failed one were uploading meanwhile"
    proxy.rules.clear()
    calls = [0]

    def progress(records: int, payload: int) -> None:
        calls[0] += 1

    rf.write_dataset(rows, url, max_records=40, index=True, progress=progress)
    assert calls[0] == 400 - 80
    rf.write_dataset(rows, tmp_path / "local", max_records=40, index=True)
    assert _objects(s3, url) == _files(tmp_path / "local")
    assert _uploads(s3, url) == []


def test_killed_while_several_shard_uploads_are_in_flight_then_resumed(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """SIGKILL once three shards' uploads are held in flight by the proxy: the rerun
    gives the objects of an uninterrupted run (dataset.json included), with no working
    object and no open upload left."""
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    assert _run(script, f"{prefix}/reference").returncode == 0
    reference = _objects(s3, f"{prefix}/reference")
    url = f"{prefix}/killed"
    child = subprocess.Popen(
        [sys.executable, str(script), url], env=dict(os.environ), stderr=subprocess.PIPE
    )
    held: list[str] = []
    release = threading.Event()

    def hold_then_kill(method: str, path: str) -> None:
        if method == "PUT" and path.split("?")[0].endswith(".shard") and "/killed/" in path:
            held.append(path)
            if len(held) == 3:
                os.kill(child.pid, signal.SIGKILL)
            release.wait(30)

    proxy.on_request = hold_then_kill
    assert child.wait(timeout=120) == -signal.SIGKILL
    proxy.on_request = None
    release.set()
    assert len(held) >= 3
    resumed = _run(script, url)
    assert resumed.returncode == 0, resumed.stderr
    assert _objects(s3, url) == reference
    assert _uploads(s3, url) == []


@pytest.mark.parametrize("after", [10, 50], ids=["before-any-shard", "after-a-shard"])
def test_a_run_taken_over_leaves_the_new_runs_lock_journal_and_uploads(
    s3: Any, prefix: str, tmp_path: Path, after: int
) -> None:
    """The run that finds its output taken over stops without touching the prefix: it
    aborted every multipart upload under it (the new run's shard in flight among them)
    and, with no shard of its own recorded, removed the working objects, the new run's
    lock and journal included."""
    url = f"{prefix}/out"
    key = url.split("://", 1)[1]
    bucket, path = key.split("/", 1)
    rows = [{"id": i} for i in range(200)]
    seen = []
    new_lock = b'{"run": "other"}'
    new_journal = b'{"the new run": "journal"}\n'
    upload: dict[str, Any] = {}

    def progress(records: int, payload: int) -> None:
        seen.append(records)
        if len(seen) == after:  # another run takes over and starts its first shard
            s3.pipe_file(f"{key}/.recordforge.lock", new_lock)
            s3.pipe_file(f"{key}/.recordforge-progress.json", new_journal)
            upload.update(
                s3.call_s3(
                    "create_multipart_upload", Bucket=bucket, Key=f"{path}/.train-00000.shard"
                )
            )

    with pytest.raises(rf.RecordforgeError, match="another conversion took this output over"):
        rf.write_dataset(rows, url, max_records=40, progress=progress)
    objects = _objects(s3, url)
    assert objects[".recordforge.lock"] == new_lock
    assert objects[".recordforge-progress.json"] == new_journal
    assert _uploads(s3, url) == [f"{path}/.train-00000.shard"]
    s3.call_s3(
        "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
    )


def test_a_store_clients_own_error_on_a_shard_names_the_shards_url(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every HEAD of the second shard's object (the size read after its upload) is
    answered by a 503 with a body, a malformed answer to a HEAD: the store client fails
    with an exception of its own (aiohttp's ``BadHttpMessage``), not an OSError. The
    conversion fails with an OSError whose filename is that shard's URL (before: the
    client's exception, naming no object), and a rerun completes with the objects of a
    local conversion."""
    monkeypatch.setattr("botocore.retryhandler.delay_exponential", lambda *a, **k: 0.0)

    def head_of_second_shard(method: str, path: str) -> bool:
        return method == "HEAD" and path.split("?")[0].endswith("/.train-00001.shard")

    proxy.add("503", 1000, head_of_second_shard)
    url = f"{prefix}/out"
    rows = list(_rows(200, 100))
    with pytest.raises(OSError) as raised:
        rf.write_dataset(rows, url, max_records=40)
    assert raised.value.filename == f"{url}/.train-00001.shard"
    assert f"{url}/.train-00001.shard" in str(raised.value)
    proxy.rules.clear()
    rf.write_dataset(rows, url, max_records=40)
    rf.write_dataset(rows, tmp_path / "local", max_records=40)
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_a_run_taken_over_commits_no_more_shards(s3: Any, prefix: str) -> None:
    """Another run takes the output over while the first is writing its second shard:
    the first run's upload of that shard (and of any later one) is not committed, since
    it would replace the new run's object of the same name (with other bytes after an
    --overwrite with other options). Before, the upload in flight was committed while
    the error was being raised."""
    url = f"{prefix}/out"
    key = url.split("://", 1)[1]
    rows = [{"id": i} for i in range(200)]
    seen = []

    def progress(records: int, payload: int) -> None:
        seen.append(records)
        if len(seen) == 50:  # in the second shard (40 records a shard)
            s3.pipe_file(f"{key}/.recordforge.lock", b'{"run": "other"}')

    with pytest.raises(rf.RecordforgeError, match="another conversion took this output over"):
        rf.write_dataset(rows, url, max_records=40, progress=progress)
    shards = sorted(n for n in _objects(s3, url) if n.endswith(".shard"))
    assert shards in ([], [".train-00000.shard"])  # the first: committed before, or not
    assert _uploads(s3, url) == []


FORK_AFTER_STORE = r"""
import json, os, sys, threading, warnings
import recordforge as rf
from recordforge import _fs, _workers
from recordforge.sources.coco import CocoSource
from recordforge.writer import write_source

bucket, tiny = sys.argv[1], sys.argv[2]
fs, _ = _fs.filesystem(f"s3://{bucket}/x")
fs.mkdir(bucket)
fs.put(f"{tiny}/val2017", f"{bucket}/val2017", recursive=True)
fs.put(f"{tiny}/annotations/instances_val2017.json", f"{bucket}/instances.json")
threads = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
with warnings.catch_warnings():
    warnings.simplefilter("error")  # a spawn would warn
    method = _workers.start_method()
outs = {}
for workers in (1, 2):
    source = CocoSource.from_files(
        f"s3://{bucket}/instances.json", f"s3://{bucket}/val2017", per="annotation"
    )
    out = f"s3://{bucket}/out{workers}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_source(source, out, workers=workers, max_records=100, index=True)
    outs[workers] = {p.rsplit("/", 1)[1]: fs.cat(p) for p in fs.ls(f"{bucket}/out{workers}")}
report = rf.inspect.verify(f"s3://{bucket}/out2")
print(json.dumps({"threads": threads, "method": method, "same": outs[1] == outs[2],
                  "files": sorted(outs[2]), "ok": report.ok}))
"""


@pytest.mark.slow
def test_workers_fork_after_the_store_was_read_and_the_parent_uploads_after(
    tmp_path: Path, tiny: dict[str, Path]
) -> None:
    """A process that has read from a bucket has fsspec's I/O threads (its event loop
    and that loop's executor): workers fork all the same (fsspec gives a forked child
    loops of its own), without a warning, and the parent goes on using the store (it
    uploads the shards the workers wrote). The objects equal one worker's. The store is
    a moto server in its own process (one in this process would be a thread)."""
    with moto_server_process() as store:
        env = {**os.environ, **store}
        env.pop("RECORDFORGE_START_METHOD", None)
        env.pop("AWS_PROFILE", None)
        root = tiny["annotations"].parent.parent
        script = tmp_path / "fork_after_store.py"
        script.write_text(FORK_AFTER_STORE)
        run = subprocess.run(
            [sys.executable, str(script), "forked", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "fsspecIO" in result["threads"], result
    assert result["method"] == "fork" and result["same"] and result["ok"], result
    assert "dataset.json" in result["files"] and len(result["files"]) > 3, result

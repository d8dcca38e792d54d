"""Remote datasets read by range (``recordforge/_ranged.py``): ``ds[i]`` and ``take`` on
``s3://`` read the records' frames only, and sequential reads stream each shard once
(read ahead on a thread), counted on the wire by a loopback proxy in front of a moto S3
server, which also drops a connection mid-response; nothing is staged on local disk; a
damaged frame is an error naming the URL and byte."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import moto_s3

import recordforge as rf

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "recordforge-ranged"


class Proxy:
    """A TCP proxy on loopback that counts the bytes the server sends and the requests
    the client makes (``GET`` request lines)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = 0  # server -> client
        self.gets = 0
        self.drop_after: int | None = None  # cut the next response after this many bytes
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.sent = self.gets = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    if from_server:
                        self.sent += len(data)
                        if self.drop_after is not None and len(data) > self.drop_after:
                            data, self.drop_after = data[: self.drop_after], None
                            dst.sendall(data)
                            raise OSError("dropped")  # the connection, mid-response
                        if self.drop_after is not None:
                            self.drop_after -= len(data)
                    else:
                        self.gets += data.count(b"GET /")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


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


ROWS = 2_000
PAYLOAD = 2_000  # bytes of the blob of each record


def _rows() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    blobs = [rng.bytes(PAYLOAD) for _ in range(ROWS)]
    return {"id": np.arange(ROWS), "blob": np.array(blobs, dtype=object)}


@pytest.fixture(scope="module")
def written(s3: tuple[Any, Proxy], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same rows in a local dataset and in two remote ones (with and without .idx);
    shards of ~1 MB."""
    local = tmp_path_factory.mktemp("ranged") / "local"
    rf.write_dataset(_rows(), local, max_bytes="1MB", index=True)
    urls = {"local": str(local)}
    for index in (True, False):
        url = f"s3://{BUCKET}/{'indexed' if index else 'bare'}"
        rf.write_dataset(_rows(), url, max_bytes="1MB", index=index)
        urls["indexed" if index else "bare"] = url
    return urls


def shards(ds: rf.Dataset) -> list[Any]:
    assert ds.manifest is not None
    return list(ds.manifest.splits["train"])


@pytest.fixture
def no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files go to a fresh directory, which must stay empty."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    return scratch


def test_twenty_random_records_cost_their_bytes_not_their_shards(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    fs, proxy = s3
    local = rf.open_dataset(written["local"])
    remote = rf.open_dataset(written["indexed"])
    assert len(remote) == ROWS
    shard_bytes = sum(s.bytes for s in shards(remote))
    idx_bytes = sum(fs.size(p) for p in fs.find(f"{BUCKET}/indexed") if p.endswith(".idx"))
    picks = np.random.default_rng(3).choice(ROWS, 20, replace=False).tolist()
    proxy.reset()
    for i in picks:
        mine, theirs = remote[i], local[i]
        assert mine["id"] == theirs["id"] and mine["blob"] == theirs["blob"]
    record_bytes = 20 * (PAYLOAD + 40)
    # The records, the .idx of each shard touched, HTTP headers (< 1 kB a response).
    assert proxy.sent < record_bytes + idx_bytes + 20 * 1024 + 8 * 1024, proxy.sent
    assert proxy.sent < shard_bytes / 10
    assert list(no_staging.iterdir()) == []


def test_take_coalesces_nearby_records_into_one_request(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    _, proxy = s3
    remote = rf.open_dataset(written["indexed"])
    local = rf.open_dataset(written["local"])
    remote.take([0])  # the first shard's .idx, read once
    proxy.reset()
    wanted = [40, 3, 17, 3, 25]  # one shard, a repeat, out of order
    got = remote.take(wanted)
    assert got["id"].tolist() == wanted
    assert list(got["blob"]) == list(local.take(wanted)["blob"])
    assert proxy.gets == 1, proxy.gets
    assert proxy.sent < (41 - 3) * (PAYLOAD + 40) + 4096
    assert list(no_staging.iterdir()) == []


def test_without_an_index_one_streamed_walk_finds_the_offsets(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    remote = rf.open_dataset(written["bare"])
    local = rf.open_dataset(written["local"])
    for i in (0, 999, ROWS - 1, -5):
        assert remote[i]["blob"] == local[i]["blob"]
    assert remote.take([5, 1500])["id"].tolist() == [5, 1500]
    assert list(no_staging.iterdir()) == []


def test_a_damaged_frame_names_the_url_and_byte(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    fs, _ = s3
    url = f"s3://{BUCKET}/damaged"
    fs.copy(f"{BUCKET}/indexed", f"{BUCKET}/damaged", recursive=True)
    remote = rf.open_dataset(url)
    first = shards(remote)[0].file
    data = bytearray(fs.cat_file(f"{BUCKET}/damaged/{first}"))
    offset = 3 * (PAYLOAD + 40)  # inside record 3 or 4: find its frame from the index
    idx = fs.cat_file(f"{BUCKET}/damaged/{first}.idx").decode().split()
    starts = [int(v) for v in idx[0::2]]
    victim = max(k for k, s in enumerate(starts) if s <= offset)
    data[starts[victim] + 100] ^= 0xFF
    fs.pipe_file(f"{BUCKET}/damaged/{first}", bytes(data))
    assert remote[victim + 1]["id"] == victim + 1  # its neighbour is intact
    with pytest.raises(rf.CorruptRecordError, match=rf"{first}.*{starts[victim]}.*data CRC"):
        remote[victim]
    assert list(no_staging.iterdir()) == []


def test_sequential_reads_stream_each_shard_once_without_disk(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    _, proxy = s3
    local = rf.open_dataset(written["local"])
    remote = rf.open_dataset(written["indexed"])
    shard_bytes = sum(s.bytes for s in shards(remote))
    expected = [(b["id"].tolist(), list(b["blob"])) for b in local.batches(256)]
    proxy.reset()
    got = [(b["id"].tolist(), list(b["blob"])) for b in remote.batches(256)]
    assert got == expected
    assert shard_bytes <= proxy.sent < shard_bytes * 1.02 + 64 * 1024, (proxy.sent, shard_bytes)
    first = shards(remote)[0]
    assert rf.scan_records(f"{written['indexed']}/{first.file}").records == first.records
    assert list(no_staging.iterdir()) == []


def test_a_connection_dropped_mid_read_is_retried_with_the_same_records(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    _, proxy = s3
    local = rf.open_dataset(written["local"])
    remote = rf.open_dataset(written["bare"])
    expected = [b["id"].tolist() for b in local.batches(500)]
    proxy.drop_after = 300_000  # inside the first shard's bytes
    assert [b["id"].tolist() for b in remote.batches(500)] == expected
    assert proxy.drop_after is None  # it was dropped
    proxy.drop_after = 50_000
    assert remote.take([1999, 3])["id"].tolist() == [1999, 3]
    assert list(no_staging.iterdir()) == []


def test_read_ahead_is_bounded(s3: tuple[Any, Proxy], written: dict[str, str]) -> None:
    from recordforge._ranged import ReadAhead

    first = shards(rf.open_dataset(written["indexed"]))[0].file
    url = f"{written['indexed']}/{first}"
    with ReadAhead(url, block=64 << 10, ahead=256 << 10) as f:
        assert f._blocks.maxsize == 4
        first = f.read(10)
        assert len(first) == 10 and f.read(0) == b""
    with ReadAhead(url, block=64 << 10) as f:
        assert f.read() == s3[0].cat_file(url.split("://", 1)[1])


def test_to_tf_dataset_of_s3_without_tensorflow_io(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    """TensorFlow has no s3:// file system of its own (tensorflow-io is not installed):
    recordforge's streamed reader feeds tf.data, the batches those of the local files."""
    tf = pytest.importorskip("tensorflow")
    from recordforge.integrations.tf import _tf_opens

    remote = rf.open_dataset(written["indexed"])
    local = rf.open_dataset(written["local"])
    assert not _tf_opens(tf, remote.files[0]) and _tf_opens(tf, local.files[0])
    for interleave in (False, True):
        got = [
            (b["id"].numpy().tolist(), b["blob"].numpy().tolist())
            for b in remote.to_tf_dataset(batch_size=300, interleave=interleave)
        ]
        want = [
            (b["id"].numpy().tolist(), b["blob"].numpy().tolist())
            for b in local.to_tf_dataset(batch_size=300, interleave=interleave)
        ]
        if interleave:  # both interleave the shards; the same records
            got = sorted(row for ids, blobs in got for row in zip(ids, blobs, strict=True))
            want = sorted(row for ids, blobs in want for row in zip(ids, blobs, strict=True))
        assert got == want
    # TensorFlow's autograph leaves its small generated modules there; no shard was staged.
    left = [p for p in no_staging.rglob("*") if p.is_file()]
    assert all(p.name.startswith("__autograph") and p.stat().st_size < 65536 for p in left)


def test_the_first_access_reads_the_indexes_side_by_side_and_bounded(
    s3: tuple[Any, Proxy], written: dict[str, str], no_staging: Path
) -> None:
    """The first ds[i] checks every shard's count (a wrong one would give one record for
    another): one listing, then the .idx files fetched at once; an oversized or lying
    .idx is read no further than an index of its shard can be, then not believed (the
    shard's framing is walked instead)."""
    fs, proxy = s3
    fs.copy(f"{BUCKET}/indexed", f"{BUCKET}/hostile-idx", recursive=True)
    remote = rf.open_dataset(f"s3://{BUCKET}/hostile-idx")
    files = shards(remote)
    proxy.reset()
    assert remote[1234]["id"] == 1234
    assert proxy.gets <= len(files) + 3, proxy.gets  # listing, indexes, the record
    bomb = f"{BUCKET}/hostile-idx/{files[1].file}.idx"
    fs.pipe_file(bomb, b"0 16\n" * 2_000_000)  # 10 MB of lines that do not cover it
    lying = f"{BUCKET}/hostile-idx/{files[2].file}.idx"
    fs.pipe_file(lying, b"0 17\n")
    fs.invalidate_cache()  # (this process's s3fs is the library's: it cached the listing)
    again = rf.open_dataset(f"s3://{BUCKET}/hostile-idx")
    local = rf.open_dataset(written["local"])
    proxy.reset()
    picks = [files[0].records + 5, files[0].records + files[1].records + 7]
    assert again.take(picks)["blob"].tolist() == local.take(picks)["blob"].tolist()
    bound = 42 * (files[1].bytes // 16 + 1)  # _index.max_size of shard 1
    walked = files[1].bytes + files[2].bytes
    assert proxy.sent < bound + walked + files[0].bytes + 256 * 1024, proxy.sent
    assert list(no_staging.iterdir()) == []

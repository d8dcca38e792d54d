"""Hostile tests of the concurrent remote shard uploads (``ShardWriter._upload`` and
``settle`` in ``recordforge/_shardwriter.py``): shards failing first, last, twice, in
their ``.idx`` PUT or their HEAD; the journal failing or interrupted while a shard is
recorded; interrupts, item errors and a takeover while uploads are held in flight; two
splits, gzip, empty and tiny conversions, big multipart shards (memory), and kills of a
subprocess with uploads in flight. After each, a rerun must give the objects of a local
conversion byte for byte, with no open upload, no working object and no upload thread
left."""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_remote_write
from test_remote_write import SCRIPT, FaultProxy, _files, _objects, _rows, _run, _uploads

import recordforge as rf
from recordforge._shardwriter import UPLOADS

# The moto server behind the fault proxy, its s3fs, the proxy and a prefix per test.
served, s3, proxy, prefix = (
    test_remote_write.served,
    test_remote_write.s3,
    test_remote_write.proxy,
    test_remote_write.prefix,
)

SNAPSHOT = ".recordforge-progress.json"
LOCK = ".recordforge.lock"


def _key(url: str) -> str:
    return url.split("://", 1)[1]


def _path(path: str) -> str:
    return path.split("?")[0]


def _put_of(name: str) -> Callable[[str, str], bool]:
    """The upload of the object ``name`` (a whole PUT, or a part of a multipart one)."""
    return lambda method, path: method == "PUT" and _path(path).endswith(f"/{name}")


def _upload_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recordforge-upload")]


def _journal(fs: Any, url: str) -> dict[str, list[str]]:
    """The shards (intermediate names) per split of the journal a rerun would load: the
    snapshot, then the entry objects numbered on from it without a gap."""
    fs.invalidate_cache()
    key = _key(url)
    head = json.loads(fs.cat_file(f"{key}/{SNAPSHOT}").split(b"\n", 1)[0])
    splits = {name: [s["tmp"] for s in state["shards"]] for name, state in head["splits"].items()}
    number = int(head.get("entries", 0)) + 1
    while fs.exists(f"{key}/.recordforge-progress.{number:08d}.json"):
        entry = json.loads(fs.cat_file(f"{key}/.recordforge-progress.{number:08d}.json"))
        if "shard" in entry:
            splits.setdefault(entry["split"], []).append(entry["shard"]["tmp"])
        number += 1
    return splits


def _in_order(names: list[str], split: str = "train") -> bool:
    return names == [f".{split}-{i:05d}.shard" for i in range(len(names))]


def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("botocore.retryhandler.delay_exponential", lambda *a, **k: 0.0)


def _hold_shard_puts(proxy: FaultProxy, seconds: float, where: str = "/out/") -> None:
    """Each shard PUT (whole or a part) under ``where`` is held ``seconds`` by the proxy:
    several uploads are in flight at once."""

    def hold(method: str, path: str) -> None:
        if method == "PUT" and ".shard" in path and where in path and ".idx" not in path:
            time.sleep(seconds)

    proxy.on_request = hold


ROWS = list(_rows(400, 3000))  # shards of 40: ten, .train-00000 .. .train-00009


def _local(tmp_path: Path, rows: list[dict[str, Any]] = ROWS, **options: Any) -> dict[str, bytes]:
    rf.write_dataset(rows, tmp_path / "local", **{"max_records": 40, "index": True, **options})
    return _files(tmp_path / "local")


def _rerun_counts(url: str, rows: list[dict[str, Any]] = ROWS, **options: Any) -> int:
    """Reruns the conversion into ``url``: the items it converted."""
    calls = [0]

    def progress(records: int, payload: int) -> None:
        calls[0] += 1

    options = {"max_records": 40, "index": True, **options}
    rf.write_dataset(rows, url, progress=progress, **options)
    return calls[0]


def _clean(fs: Any, url: str, tmp_path: Path, local: dict[str, bytes] | None = None) -> None:
    """``url`` holds the objects of a local conversion, nothing else, no open upload, and
    no upload thread runs."""
    assert _objects(fs, url) == (local if local is not None else _files(tmp_path / "local"))
    assert _uploads(fs, url) == []
    assert _upload_threads() == []


# --------------------------------------------------------------------------------------
# An upload failing among uploads in flight


def test_the_first_shard_fails_while_the_next_ones_are_committed(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 0 keeps failing while shards 1.. upload and commit: the error names shard 0,
    nothing is recorded, so the conversion leaves nothing worth resuming and removes its
    working objects (the committed later shards too); the rerun converts every item."""
    _no_retry_delay(monkeypatch)
    proxy.add("503", 1000, _put_of(".train-00000.shard"))
    url = f"{prefix}/out"
    with pytest.raises(OSError) as raised:
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/.train-00000.shard"
    assert [p for m, p in proxy.seen if _put_of(".train-00001.shard")(m, p)]
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    assert _objects(s3, url) == {}
    proxy.rules.clear()
    assert _rerun_counts(url) == 400
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_the_last_shard_fails(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last shard's upload keeps failing (it is waited for by the final settle, not
    by a later shard's): the error names it, the nine before it are kept, the rerun
    converts its 40 items only."""
    _no_retry_delay(monkeypatch)
    proxy.add("503", 1000, _put_of(".train-00009.shard"))
    url = f"{prefix}/out"
    with pytest.raises(OSError) as raised:
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/.train-00009.shard"
    assert _journal(s3, url) == {"train": [f".train-{i:05d}.shard" for i in range(9)]}
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    proxy.rules.clear()
    assert _rerun_counts(url) == 40
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_two_failed_shards_the_error_is_the_first_ones(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards 2 and 5 keep failing (5's while 3 and 4 commit): the error names shard 2,
    the journal keeps 0 and 1 only; the rerun converts items 80.. and equals a local
    conversion."""
    _no_retry_delay(monkeypatch)
    proxy.add("503", 1000, _put_of(".train-00002.shard"))
    proxy.add("503", 1000, _put_of(".train-00005.shard"))
    url = f"{prefix}/out"
    with pytest.raises(OSError) as raised:
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/.train-00002.shard"
    assert _journal(s3, url) == {"train": [".train-00000.shard", ".train-00001.shard"]}
    assert _upload_threads() == []
    proxy.rules.clear()
    assert _rerun_counts(url) == 400 - 80
    _clean(s3, url, tmp_path, _local(tmp_path))


@pytest.mark.parametrize("failing", ["idx", "head"])
def test_the_index_put_or_the_size_head_after_a_committed_upload_fails(
    s3: Any,
    proxy: FaultProxy,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """Shard 3's upload is committed but what follows it in the upload thread (the HEAD
    for its size, or the PUT of its .idx) keeps failing: the error names shard 3's key,
    shard 3 and those after it are not recorded; the rerun redoes items 120.. and the
    objects are a local conversion's (the committed shard 3 replaced, no .idx left
    over)."""
    _no_retry_delay(monkeypatch)
    if failing == "idx":
        proxy.add("503", 1000, _put_of(".train-00003.shard.idx"))
    else:
        proxy.add(
            "503",
            1000,
            lambda m, p: m == "HEAD" and _path(p).endswith("/.train-00003.shard"),
        )
    url = f"{prefix}/out"
    # (The proxy's 503 has a body, which a HEAD's answer may not: the client fails it as
    # a bad response, not an OSError; it names the object's URL.)
    with pytest.raises(OSError if failing == "idx" else Exception) as raised:
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    assert proxy.faults, "the fault was injected"
    if failing == "idx":
        assert raised.value.filename == f"{url}/.train-00003.shard"  # type: ignore[attr-defined]
    else:
        assert f"{_key(url)}/.train-00003.shard" in str(raised.value)
    assert _journal(s3, url) == {"train": [f".train-{i:05d}.shard" for i in range(3)]}
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    proxy.rules.clear()
    assert _rerun_counts(url) == 400 - 120
    _clean(s3, url, tmp_path, _local(tmp_path))


# --------------------------------------------------------------------------------------
# The journal failing or interrupted while a shard is recorded, uploads in flight


def _lock_get(method: str, path: str) -> bool:
    return method == "GET" and _path(path).endswith(f"/{LOCK}")


def _slow_third_shard(proxy: FaultProxy, then: Callable[[str, str], None] | None = None) -> None:
    """Shard 2's upload is held 0.3 s, so that it is recorded (by the settle of a later
    shard's hand-off) while the shards after it are in flight; ``then`` sees every
    request too."""

    def hold(method: str, path: str) -> None:
        if _put_of(".train-00002.shard")(method, path):
            time.sleep(0.3)
        if then is not None:
            then(method, path)

    proxy.on_request = hold


def test_the_lock_read_fails_while_a_shard_is_recorded(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording shard 2 in the journal fails (every try of the read of the lock that
    comes before its entry is answered 503) while shards 3.. are uploading: the error
    is raised, and the journal a rerun loads must hold shards in order with none
    missing (0, 1 and nothing after); the rerun must give a local conversion's objects."""
    _no_retry_delay(monkeypatch)
    url = f"{prefix}/out"
    # How many requests one read of an object makes when every one is answered 503.
    s3.pipe_file(f"{_key(prefix)}/probe/{LOCK}", b"{}")
    proxy.add("503", 1000, _lock_get)
    with pytest.raises(OSError):
        rf._remote._get(f"{prefix}/probe/{LOCK}")
    tries = len(proxy.faults)
    assert tries >= 1
    proxy.rules.clear()
    armed = [False]

    def arm(method: str, path: str) -> None:
        # Shard 1's entry is written: the next read of the lock is shard 2's record.
        if _put_of(".recordforge-progress.00000002.json")(method, path) and "/out/" in path:
            armed[0] = True

    _slow_third_shard(proxy, arm)
    # Every read of the lock from then on fails: the uploads in flight read it too
    # (before they commit), so a count of 503s would be shared out between the reads
    # and each read would get through on a retry.
    proxy.add("503", 1000, lambda m, p: armed[0] and _lock_get(m, p) and "/out/" in p)
    with pytest.raises(OSError) as raised:
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/{LOCK}"
    assert f"reading {url}/{LOCK}" in str(raised.value)
    assert proxy.rules[0][1] <= 1000 - tries, "the record of shard 2 failed"
    proxy.rules.clear()
    proxy.on_request = None
    assert _upload_threads() == []
    journal = _journal(s3, url)["train"]
    assert _in_order(journal), journal
    assert _rerun_counts(url) == 400 - 40 * len(journal)
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_ctrl_c_while_a_shard_is_recorded(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """SIGINT (Ctrl-C) arrives while the writer reads the lock to record shard 2, shards
    3.. uploading: the conversion stops with KeyboardInterrupt; the journal a rerun
    loads must hold shards in order, none missing, and the rerun must give a local
    conversion's objects."""
    url = f"{prefix}/out"
    reads = [0]

    def interrupt(method: str, path: str) -> None:
        if _lock_get(method, path) and "/out/" in path:
            reads[0] += 1
            if reads[0] == 3:  # shard 2's record (0 and 1 came first)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the writer is still waiting for the answer

    _slow_third_shard(proxy, interrupt)
    with pytest.raises(KeyboardInterrupt):
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    proxy.on_request = None
    assert reads[0] >= 3
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    journal = _journal(s3, url)["train"]
    assert _in_order(journal), journal
    assert _rerun_counts(url) == 400 - 40 * len(journal)
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_a_journal_entry_put_that_fails_keeps_the_journal_in_order(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUT of shard 2's journal entry keeps failing while 3.. upload: whatever the
    writer records afterwards, the journal a rerun loads holds shards 0 and 1, in
    order, and the rerun gives a local conversion's objects."""
    _no_retry_delay(monkeypatch)
    url = f"{prefix}/out"
    _slow_third_shard(proxy)
    proxy.add("503", 1000, _put_of(".recordforge-progress.00000003.json"))
    with pytest.raises(OSError):
        rf.write_dataset(ROWS, url, max_records=40, index=True)
    proxy.on_request = None
    proxy.rules.clear()
    assert _upload_threads() == []
    assert _journal(s3, url) == {"train": [".train-00000.shard", ".train-00001.shard"]}
    assert _rerun_counts(url) == 400 - 80
    _clean(s3, url, tmp_path, _local(tmp_path))


# --------------------------------------------------------------------------------------
# Interrupts, item errors and a takeover while uploads are held in flight


def test_ctrl_c_from_progress_while_uploads_are_held(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """KeyboardInterrupt from the progress callback after item 250 while every shard PUT
    is held 0.3 s (several in flight): the uploads in flight end and the six complete
    shards (items 0..239) are all kept in the journal, in order; no upload thread runs
    once write_dataset has raised; the rerun converts items 240.. only."""
    url = f"{prefix}/out"
    _hold_shard_puts(proxy, 0.3)
    seen = [0]

    def progress(records: int, payload: int) -> None:
        seen[0] += 1
        if seen[0] == 250:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rf.write_dataset(ROWS, url, max_records=40, index=True, progress=progress)
    assert _upload_threads() == []
    proxy.on_request = None
    assert _uploads(s3, url) == []
    assert _journal(s3, url) == {"train": [f".train-{i:05d}.shard" for i in range(6)]}
    assert _rerun_counts(url) == 400 - 240
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_an_item_error_raised_while_uploads_are_held(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """An item's error (on_error="raise") at item 250, uploads held in flight: the
    ItemError is what is raised, the six complete shards are kept, and a rerun whose
    item converts converts items 240.. and equals a local conversion."""
    url = f"{prefix}/out"
    _hold_shard_puts(proxy, 0.3)
    failing = [True]

    def to_records(row: dict[str, Any]) -> list[bytes]:
        if row["id"] == 250 and failing[0]:
            raise rf.ItemError(f"row {row['id']}", "refused")
        return [rf.encode_example(row)]

    with pytest.raises(rf.ItemError, match="refused"):
        rf.write_dataset(
            ROWS, url, max_records=40, index=True, to_records=to_records, on_error="raise"
        )
    assert _upload_threads() == []
    proxy.on_request = None
    assert _journal(s3, url) == {"train": [f".train-{i:05d}.shard" for i in range(6)]}
    failing[0] = False
    assert _rerun_counts(url, to_records=to_records, on_error="raise") == 400 - 240
    _clean(s3, url, tmp_path, _local(tmp_path))


def test_a_takeover_while_uploads_are_in_flight_stops_the_run_and_it_records_nothing_more(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """Another run takes the prefix over (its token in the lock) while shard uploads
    are held in flight: the old run stops with the takeover error, writes no journal
    entry after the takeover (not even for its uploads that were committed), and a
    rerun gives the objects of a local conversion."""
    url = f"{prefix}/out"
    _hold_shard_puts(proxy, 0.2)
    entries: list[str] = []
    seen = [0]

    def progress(records: int, payload: int) -> None:
        seen[0] += 1
        if seen[0] == 130:
            s3.pipe_file(f"{_key(url)}/{LOCK}", b'{"run": "other"}')
            s3.invalidate_cache()
            entries.extend(n for n in s3.ls(_key(url)) if ".recordforge-progress." in n)

    with pytest.raises(rf.RecordforgeError, match="another conversion took this output over"):
        rf.write_dataset(ROWS, url, max_records=40, index=True, progress=progress)
    assert _upload_threads() == []
    proxy.on_request = None
    s3.invalidate_cache()
    after = [n for n in s3.ls(_key(url)) if ".recordforge-progress." in n]
    assert sorted(after) == sorted(entries)
    journal = _journal(s3, url).get("train", [])
    assert _in_order(journal) and len(journal) <= 3, journal
    assert _rerun_counts(url) == 400 - 40 * len(journal)
    _clean(s3, url, tmp_path, _local(tmp_path))


# --------------------------------------------------------------------------------------
# Two splits, gzip, empty and tiny conversions


TEST_ROWS = list(_rows(130, 2000))  # four shards of the split "test" (40, 40, 40, 10)


def _entry_splits(fs: Any, url: str) -> list[tuple[str, str]]:
    """The journal's entry objects in order: (split, shard name or "done")."""
    fs.invalidate_cache()
    key, out = _key(url), []
    number = 1
    while fs.exists(f"{key}/.recordforge-progress.{number:08d}.json"):
        entry = json.loads(fs.cat_file(f"{key}/.recordforge-progress.{number:08d}.json"))
        out.append((entry["split"], entry["shard"]["tmp"] if "shard" in entry else "done"))
        number += 1
    return out


def test_two_splits_with_uploads_in_flight_fail_in_the_second_then_resume(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two splits, every shard PUT held (uploads overlap), the second split's shard 1
    failing: the journal's entries are train's ten shards in order, train done, then
    test's shard 0 (nothing of test before train is done, nothing after the failed
    shard); the rerun converts the 90 items of test after its shard 0 and equals a
    local conversion, dataset.json included."""
    _no_retry_delay(monkeypatch)
    _hold_shard_puts(proxy, 0.1)
    proxy.add("503", 1000, _put_of(".test-00001.shard"))
    url = f"{prefix}/out"
    splits = {"train": ROWS, "test": TEST_ROWS}
    with pytest.raises(OSError) as raised:
        rf.write_dataset(splits=splits, out=url, max_records=40, index=True)
    assert raised.value.filename == f"{url}/.test-00001.shard"
    assert _upload_threads() == []
    proxy.on_request = None
    proxy.rules.clear()
    assert _entry_splits(s3, url) == [
        *[("train", f".train-{i:05d}.shard") for i in range(10)],
        ("train", "done"),
        ("test", ".test-00000.shard"),
    ]
    calls = [0]

    def progress(records: int, payload: int) -> None:
        calls[0] += 1

    rf.write_dataset(splits=splits, out=url, max_records=40, index=True, progress=progress)
    assert calls[0] == 130 - 40
    rf.write_dataset(splits=splits, out=tmp_path / "local", max_records=40, index=True)
    _clean(s3, url, tmp_path)


def test_gzip_shards_uploaded_together_equal_local_ones(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """gzip shards closed (the stream's end written) on the upload threads, several at
    once: the objects equal a local conversion's, and every shard decodes."""
    starts: list[float] = []

    def hold(method: str, path: str) -> None:
        if _path(path).endswith(".shard") and method == "PUT" and "/out/" in path:
            starts.append(time.monotonic())
            time.sleep(0.2)

    proxy.on_request = hold
    url = f"{prefix}/out"
    rows = list(_rows(400, 5000))
    rf.write_dataset(rows, url, max_records=40, compression="gzip")
    proxy.on_request = None
    assert len(starts) == 10 and min(b - a for a, b in itertools.pairwise(starts)) < 0.1
    rf.write_dataset(rows, tmp_path / "local", max_records=40, compression="gzip")
    _clean(s3, url, tmp_path)
    assert [int(r["id"]) for r in rf.open_dataset(url)] == list(range(400))


@pytest.mark.parametrize(
    ("n", "options"),
    [
        (0, {"max_records": 40}),
        (1, {"max_records": 40}),
        (40, {"max_records": 40}),
        (3, {"num_shards": 8}),
        (0, {"num_shards": 5}),
        (41, {"max_records": 1}),
    ],
    ids=["empty", "one-record", "exactly-one-shard", "fewer-items-than-shards", "empty-5", "41"],
)
def test_small_and_empty_conversions(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path, n: int, options: dict[str, Any]
) -> None:
    """No record, one, exactly one full shard, num_shards larger than the items (empty
    shards handed to the upload threads back to back), a shard per record: the objects
    (dataset.json included) equal a local conversion's, or both fail alike."""
    rows = list(_rows(n, 100))
    url = f"{prefix}/out"
    try:
        local = rf.write_dataset(rows, tmp_path / "local", index=True, **options)
    except Exception as e:  # the same refusal remotely
        with pytest.raises(type(e)):
            rf.write_dataset(rows, url, index=True, **options)
        assert _upload_threads() == []
        return
    remote = rf.write_dataset(rows, url, index=True, **options)
    assert remote == local
    _clean(s3, url, tmp_path)


# --------------------------------------------------------------------------------------
# Big shards of several parts uploaded together: bytes and memory

MEMORY = """
import sys, tracemalloc
import recordforge as rf
n = int(sys.argv[2])
rows = ({"id": i, "blob": bytes([i % 251]) * 40_000} for i in range(n))
tracemalloc.start()
rf.write_dataset(rows, sys.argv[1], max_bytes="24MB", index=True)
print(tracemalloc.get_traced_memory()[1])
"""
PART = 5 << 20
# Records of 40,046 bytes framed: 599 fill a 24 MB shard.
SHARD = 599
# The copies of one part an upload can hold: fsspec's write buffer, the part s3fs reads
# from it, and aiohttp's copy of the request body.
PART_COPIES = 3


@pytest.mark.slow
def test_multipart_shards_uploaded_together_hold_a_part_each_and_equal_local_ones(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """24 MB shards in 5 MiB parts, each part PUT held 50 ms (several shards' uploads in
    flight): the writer's traced Python memory for six shards exceeds that for one
    shard by less than the final parts of the UPLOADS - 1 shards that may finish their
    uploads while the next is written, each in the copies the HTTP stack makes of it
    (47 MB); uploads holding their whole shard would take 3 x 24 MB more. The objects
    equal a local conversion's. (With 12 MB shards, the bound could not tell the two
    apart, and a run under load came within its margin: 36.8 MB over one shard.)"""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY)
    starts: list[float] = []

    def hold(method: str, path: str) -> None:
        if method == "PUT" and "/mem" in path and ".shard" in path and ".idx" not in path:
            starts.append(time.monotonic())
            time.sleep(0.05)

    proxy.on_request = hold
    peaks = {}
    for n in (SHARD, 6 * SHARD):  # one shard, six
        done = subprocess.run(
            [sys.executable, str(script), f"{prefix}/mem{n}", str(n)],
            env={**os.environ, "RECORDFORGE_PART_SIZE": str(PART)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        peaks[n] = int(done.stdout.split()[-1])
    proxy.on_request = None
    assert len(starts) >= 6 * 4  # every shard in parts
    whole_shards = (UPLOADS - 1) * SHARD * 40_000
    bound = (UPLOADS - 1) * PART_COPIES * PART
    assert bound < whole_shards
    assert peaks[6 * SHARD] < peaks[SHARD] + bound, peaks
    rows = ({"id": i, "blob": bytes([i % 251]) * 40_000} for i in range(6 * SHARD))
    rf.write_dataset(rows, tmp_path / "local", max_bytes="24MB", index=True)
    local = _files(tmp_path / "local")
    assert len([n for n in local if n.endswith(".tfrecord")]) == 6
    assert _objects(s3, f"{prefix}/mem{6 * SHARD}") == local
    assert _uploads(s3, f"{prefix}/mem{6 * SHARD}") == []


def test_a_part_of_shard_2_fails_while_the_shards_before_it_upload(
    s3: Any,
    proxy: FaultProxy,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6 MB shards in 5 MiB parts; shards 0 and 1 finish their uploads slowly (their
    last parts held 0.4 s) while shard 2 is written, and shard 2's parts keep failing
    (its first part goes up when it is closed, on an upload thread): the error names
    shard 2's key, not one of the shards still uploading; those two are kept in the
    journal; the rerun converts the items from shard 2 on and equals a local
    conversion."""
    _no_retry_delay(monkeypatch)
    monkeypatch.setenv("RECORDFORGE_PART_SIZE", str(PART))
    rows = [{"id": i, "blob": bytes([i % 251]) * 40_000} for i in range(600)]
    proxy.add("503", 1000, lambda m, p: _put_of(".train-00002.shard")(m, p) and "partNumber" in p)

    def hold(method: str, path: str) -> None:
        slow = any(f"/out/.train-0000{i}.shard?partNumber=2&" in path for i in (0, 1))
        if method == "PUT" and slow:
            time.sleep(0.4)

    proxy.on_request = hold
    url = f"{prefix}/out"
    with pytest.raises(OSError) as raised:
        rf.write_dataset(rows, url, max_bytes="6MB", index=True)
    proxy.on_request = None
    proxy.rules.clear()
    assert raised.value.filename == f"{url}/.train-00002.shard"
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    journal = _journal(s3, url)["train"]
    assert journal == [".train-00000.shard", ".train-00001.shard"]
    calls = [0]

    def progress(records: int, payload: int) -> None:
        calls[0] += 1

    rf.write_dataset(rows, url, max_bytes="6MB", index=True, progress=progress)
    manifest = rf.write_dataset(rows, tmp_path / "local", max_bytes="6MB", index=True)
    local = _files(tmp_path / "local")
    per_shard = manifest.splits["train"][0].records
    assert calls[0] == 600 - 2 * per_shard
    _clean(s3, url, tmp_path, local)


def test_a_shard_whose_close_fails_on_an_upload_thread_is_discarded(
    s3: Any, proxy: FaultProxy, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 1's parts keep failing when it is closed (on an upload thread): once
    write_dataset has raised and its error is dropped, nothing of the conversion is
    left to act later: collecting garbage makes no request to the store, warns of no
    unclosed writer and raises nothing unraisable (before the uploads were made on
    threads, the writer whose close failed was discarded by abandon())."""
    gc.collect()  # what earlier tests left
    _no_retry_delay(monkeypatch)
    monkeypatch.setenv("RECORDFORGE_PART_SIZE", str(PART))
    rows = [{"id": i, "blob": bytes([i % 251]) * 40_000} for i in range(300)]
    proxy.add("503", 1000, lambda m, p: _put_of(".train-00001.shard")(m, p) and "partNumber" in p)
    url = f"{prefix}/out"
    with pytest.raises(OSError) as raised:
        rf.write_dataset(rows, url, max_bytes="6MB")
    assert raised.value.filename == f"{url}/.train-00001.shard"
    assert any("upload" in str(f.f_code.co_name) for f, _ in _frames(raised.value))
    del raised
    assert _upload_threads() == []
    assert _uploads(s3, url) == []
    requests = len(proxy.seen)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        time.sleep(0.2)
    assert [p for _, p in proxy.seen[requests:] if f"/{_key(url).split('/', 1)[1]}/" in p] == []
    assert [str(w.message) for w in caught if "unclosed" in str(w.message)] == []
    assert [repr(u.exc_value) for u in unraisable] == []


def _frames(error: BaseException) -> list[tuple[Any, int]]:
    """The frames of ``error``'s traceback and those of the errors it was raised from."""
    out: list[tuple[Any, int]] = []
    seen: BaseException | None = error
    while seen is not None:
        out.extend(traceback.walk_tb(seen.__traceback__))
        seen = seen.__cause__ or seen.__context__
    return out


# --------------------------------------------------------------------------------------
# SIGKILL with uploads in flight, then resume

KILL_POINTS = {
    # shard 2 committed, its .idx being put, shards after it uploading
    "idx-of-train-2": lambda m, p: _put_of(".train-00002.shard.idx")(m, p),
    # shard 3's journal entry being written, shards after it uploading
    "entry-4": lambda m, p: _put_of(".recordforge-progress.00000004.json")(m, p),
    # the size of the last train shard asked, the first test shards uploading
    "head-of-train-5": lambda m, p: m == "HEAD" and _path(p).endswith("/.train-00005.shard"),
    # the second split's first shard uploading
    "put-of-test-0": lambda m, p: _put_of(".test-00000.shard")(m, p),
}


@pytest.mark.slow
def test_killed_at_moments_of_overlapping_uploads_then_resumed(
    s3: Any, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """The two-split conversion of test_remote_write (skipped items, indexes, shards of
    40), every shard PUT held 0.15 s so that uploads overlap, is SIGKILLed when the
    proxy sees a request of each kind that happens while others are in flight: each
    rerun gives the objects of an uninterrupted run (dataset.json included), with no
    working object and no open upload left."""
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    done = _run(script, f"{prefix}/reference")
    assert done.returncode == 0, done.stderr
    reference = _objects(s3, f"{prefix}/reference")
    assert len([n for n in reference if n.endswith(".tfrecord")]) == 9
    for name, when in KILL_POINTS.items():
        url = f"{prefix}/{name}"
        killed = _kill_when(proxy, script, url, when)
        assert killed, name
        resumed = _run(script, url)
        assert resumed.returncode == 0, (name, resumed.stderr)
        assert _objects(s3, url) == reference, name
        assert _uploads(s3, url) == [], name


def _kill_when(
    proxy: FaultProxy, script: Path, url: str, when: Callable[[str, str], bool]
) -> list[str]:
    """Runs ``script`` into ``url`` (the proxy holding each of its shard PUTs 0.15 s)
    and SIGKILLs it at the first request under ``url`` that ``when`` matches; that
    request."""
    name = url.rsplit("/", 1)[1]
    child = subprocess.Popen(
        [sys.executable, str(script), url], env=dict(os.environ), stderr=subprocess.DEVNULL
    )
    killed: list[str] = []

    def kill(method: str, path: str) -> None:
        if f"/{name}/" not in path:
            return
        if when(method, path) and not killed:
            killed.append(f"{method} {path}")
            os.kill(child.pid, signal.SIGKILL)
        elif method == "PUT" and _path(path).endswith(".shard"):
            time.sleep(0.15)

    proxy.on_request = kill
    try:
        assert child.wait(timeout=120) == -signal.SIGKILL, url
    finally:
        proxy.on_request = None
    return killed

"""Adversarial tests of verify's pipelined header walk (``walk_windows`` in
``crates/recordforge-core/src/verify.rs``): one thread walks 8 MiB windows of record
headers and hands them to checking threads, whose per-window CRC32Cs are combined in
order into the shard's CRC32C; any damage goes to the careful walk; records of 64 KB or
more have their data CRC combined into the shard's instead of hashed twice.

``threads=1`` takes the sequential walk, ``threads > 1`` the windowed one: every result
(offsets, sizes, data CRCs, damage, shard CRC32C, parse errors) must be the same, the
CRC32C must be that of ``google_crc32c`` over the file's bytes, and TensorFlow's reader
must agree on where the first damage is."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import _core

google_crc32c = pytest.importorskip("google_crc32c")

WINDOW = 8 << 20  # WALK_WINDOW in verify.rs
COMBINE_MIN = 64 << 10  # COMBINE_MIN in verify.rs
THREADS = [1, 2, 3, 4, 8]


# ---------------------------------------------------------------- framing by hand


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return int(google_crc32c.value(bytes(data)))


def masked(data: bytes | bytearray | memoryview) -> int:
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def header(length: int) -> bytes:
    n = struct.pack("<Q", length)
    return n + struct.pack("<I", masked(n))


def frame(payload: bytes) -> bytes:
    return header(len(payload)) + payload + struct.pack("<I", masked(payload))


def build(sizes: list[int], seed: int = 0) -> tuple[bytes, list[int], list[int]]:
    """A record stream of random payloads of ``sizes``; its bytes, offsets, framed sizes."""
    rng = np.random.default_rng(seed)
    blob = rng.bytes(sum(sizes))
    parts, offsets, framed = [], [], []
    pos = at = 0
    for s in sizes:
        f = frame(blob[at : at + s])
        at += s
        parts.append(f)
        offsets.append(pos)
        framed.append(len(f))
        pos += len(f)
    return b"".join(parts), offsets, framed


def window_starts(framed: list[int], window: int = WINDOW) -> list[int]:
    """Indices of the first record of each window of the header walk (verify.rs: records
    are added to a window while its bytes are under ``window``)."""
    starts, acc = [0], 0
    for i, s in enumerate(framed):
        acc += s
        if acc >= window and i + 1 < len(framed):
            starts.append(i + 1)
            acc = 0
    return starts


def snap(v: Any) -> tuple[Any, ...]:
    return (
        v.offsets.tolist(),
        v.sizes.tolist(),
        v.crc_ok.tolist(),
        list(v.damage),
        v.crc32c,
        list(v.errors),
        v.kinds.tolist(),
        v.counts.tolist(),
        v.sums.tolist(),
    )


def verify_all(
    path: Path, threads: list[int] = THREADS, **kw: Any
) -> dict[tuple[int, bool], tuple[Any, ...]]:
    """verify_file with each number of threads, with and without the shard checksum;
    asserts they all agree (the checksum only where asked for), returns them."""
    out = {}
    for t in threads:
        for checksum in (True, False):
            out[(t, checksum)] = snap(_core.verify_file(str(path), [], [], t, checksum, **kw))
    ref = out[(1, True)]
    for (t, checksum), got in out.items():
        if checksum:
            assert got == ref, f"threads={t} differs from the sequential walk"
        else:
            assert got[4] is None
            assert got[:4] == ref[:4] and got[5:] == ref[5:], f"threads={t}, no checksum"
    return out


@pytest.fixture(scope="module")
def tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def tf_count(tf: Any, path: Path) -> tuple[int, bool]:
    """Records TensorFlow reads before its first error, and whether it hit one."""
    n = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)):
            n += 1
    except tf.errors.DataLossError:
        return n, True
    return n, False


# ---------------------------------------------------------------- the mixed stream


# ~41 MiB, 5+ windows: 1 KB records, 100 KB records, three 5 MB records (one window
# each at least), records on both sides of COMBINE_MIN, empty and tiny records.
def _mixed_sizes() -> list[int]:
    rng = np.random.default_rng(7)
    sizes = [1000] * 6000 + [100_000] * 150 + [5_000_000] * 3
    sizes += [COMBINE_MIN - 1, COMBINE_MIN, COMBINE_MIN + 1] * 6
    sizes += [0] * 40 + [1] * 20 + [7] * 20
    order = rng.permutation(len(sizes))
    out = [sizes[i] for i in order]
    # A 5 MB record first and a COMBINE_MIN record last: the edges of the buffer.
    out.remove(5_000_000)
    out.remove(COMBINE_MIN)
    return [5000000, *out, COMBINE_MIN]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sizes = _mixed_sizes()
    data, offsets, framed = build(sizes, seed=1)
    path = tmp_path_factory.mktemp("mixed") / "mixed.tfrecord"
    path.write_bytes(data)
    starts = window_starts(framed)
    assert len(starts) >= 5, starts
    return {
        "path": path,
        "data": data,
        "sizes": sizes,
        "offsets": offsets,
        "framed": framed,
        "starts": starts,
    }


def test_framing_by_hand_is_tfrecord(tmp_path: Path) -> None:
    payloads = [b"", b"x", os.urandom(COMBINE_MIN + 3)]
    path = tmp_path / "w.tfrecord"
    with rf.TFRecordWriter(str(path)) as w:
        for p in payloads:
            w.write(p)
    assert path.read_bytes() == b"".join(frame(p) for p in payloads)


def test_intact_multiwindow_stream_every_thread_count(mixed: dict[str, Any], tf: Any) -> None:
    res = verify_all(mixed["path"], [*THREADS, 16, 300])
    offsets, sizes, crc_ok, damage, crc, *_ = res[(1, True)]
    assert offsets == mixed["offsets"]
    assert sizes == mixed["framed"]
    assert all(crc_ok) and damage == []
    expected = crc32c(mixed["data"])
    assert crc == expected
    assert _core.file_crc32c(str(mixed["path"]), 1) == expected
    assert _core.file_crc32c(str(mixed["path"]), 4) == expected
    # TensorFlow reads the same records.
    lengths = [len(r) for r in tf.data.TFRecordDataset(str(mixed["path"])).as_numpy_iterator()]
    assert lengths == mixed["sizes"]


def test_threads_zero_is_one(mixed: dict[str, Any]) -> None:
    a = snap(_core.verify_file(str(mixed["path"]), [], [], 0, True))
    b = snap(_core.verify_file(str(mixed["path"]), [], [], 1, True))
    assert a == b


def _damage_cases(m: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """name -> (byte to flip, index of the record it damages)."""
    off, fr, starts = m["offsets"], m["framed"], m["starts"]
    big = [i for i, s in enumerate(m["sizes"]) if s == 5_000_000]
    at_min = [i for i, s in enumerate(m["sizes"]) if s == COMBINE_MIN]
    below = [i for i, s in enumerate(m["sizes"]) if s == COMBINE_MIN - 1]
    empty = [i for i, s in enumerate(m["sizes"]) if s == 0]
    last = len(off) - 1
    mid = starts[len(starts) // 2]
    lastw = starts[-1]
    return {
        "first record payload (5 MB, combined)": (off[0] + 12 + 4_000_000, 0),
        "first record data CRC": (off[0] + fr[0] - 1, 0),
        "first record length CRC": (off[0] + 9, 0),
        "second window first header": (off[starts[1]] + 2, starts[1]),
        "second window first payload byte": (off[starts[1]] + 12, starts[1]),
        "last record of first window data CRC": (off[starts[1]] - 2, starts[1] - 1),
        "middle window start length": (off[mid], mid),
        "middle window last payload byte": (off[mid] - 5, mid - 1),
        "last window first header CRC": (off[lastw] + 11, lastw),
        "last record payload (COMBINE_MIN)": (off[last] + 12 + COMBINE_MIN - 1, last),
        "last byte of the file": (len(m["data"]) - 1, last),
        "a 5 MB record's last payload byte": (off[big[1]] + fr[big[1]] - 5, big[1]),
        "a 64 KB record's first payload byte": (off[at_min[2]] + 12, at_min[2]),
        "a 64 KB - 1 record's last payload byte": (off[below[3]] + fr[below[3]] - 5, below[3]),
        "an empty record's data CRC": (off[empty[5]] + 13, empty[5]),
    }


def _case_names() -> list[str]:
    sizes = _mixed_sizes()
    framed = [s + 16 for s in sizes]
    offsets = np.concatenate([[0], np.cumsum(framed)[:-1]]).tolist()
    m = {
        "offsets": offsets,
        "framed": framed,
        "sizes": sizes,
        "data": b"\0" * sum(framed),
        "starts": window_starts(framed),
    }
    return list(_damage_cases(m))


@pytest.mark.parametrize("case", _case_names())
def test_one_flipped_byte_anywhere(
    mixed: dict[str, Any], tmp_path: Path, case: str, tf: Any
) -> None:
    at, record = _damage_cases(mixed)[case]
    data = bytearray(mixed["data"])
    data[at] ^= 0x10
    path = tmp_path / "damaged.tfrecord"
    path.write_bytes(data)
    res = verify_all(path)
    offsets, sizes, crc_ok, damage, crc, *_ = res[(1, True)]
    assert crc == crc32c(data) != crc32c(mixed["data"])
    assert len(damage) >= 1
    start, end, before, reason = damage[0]
    assert before == record, (case, damage)
    assert start == mixed["offsets"][record]
    in_payload = mixed["offsets"][record] + 12 <= at
    if in_payload:  # a payload or data CRC byte: one record failing its data CRC
        assert reason == "data CRC mismatch"
        assert offsets == mixed["offsets"] and sizes == mixed["framed"]
        assert [i for i, ok in enumerate(crc_ok) if not ok] == [record]
        assert end == start + mixed["framed"][record]
        assert len(damage) == 1
    else:  # a header: that record is lost, the walk resumes at the next
        assert "length CRC" in reason or "length" in reason, reason
        assert offsets == mixed["offsets"][:record] + mixed["offsets"][record + 1 :]
        assert all(crc_ok)
        if record + 1 < len(mixed["offsets"]):
            assert end == mixed["offsets"][record + 1]
    n, err = tf_count(tf, path)
    assert err and n == record


@pytest.mark.parametrize(
    "where",
    [
        "mid header",
        "mid payload",
        "in data CRC",
        "record boundary",
        "one byte short",
        "only a header",
        "window boundary",
        "window boundary + 11",
    ],
)
def test_truncated(mixed: dict[str, Any], tmp_path: Path, where: str) -> None:
    off, fr, starts = mixed["offsets"], mixed["framed"], mixed["starts"]
    k = starts[2] + 3
    cut = {
        "mid header": off[k] + 5,
        "mid payload": off[k] + 12 + fr[k] // 2 - 8,
        "in data CRC": off[k] + fr[k] - 2,
        "record boundary": off[k],
        "one byte short": len(mixed["data"]) - 1,
        "only a header": off[k] + 12,
        "window boundary": off[starts[3]],
        "window boundary + 11": off[starts[3]] + 11,
    }[where]
    data = mixed["data"][:cut]
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(data)
    res = verify_all(path)
    offsets, _sizes, crc_ok, damage, crc, *_ = res[(1, True)]
    assert crc == crc32c(data)
    assert all(crc_ok)
    whole = [o for o, s in zip(off, fr, strict=False) if o + s <= cut]
    assert offsets == whole
    if cut in off:  # ends at a record boundary: an intact, shorter stream
        assert damage == []
    else:
        assert len(damage) == 1
        start, end, before, reason = damage[0]
        assert (start, end, before) == (whole[-1] + fr[len(whole) - 1], cut, len(whole))
        assert reason.startswith("truncated"), reason


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    cases = {
        "empty": b"",
        "one empty record": frame(b""),
        "one byte record": frame(b"x"),
        "one 64 KB record": frame(b"\xab" * COMBINE_MIN),
        "one 64 KB - 1 record": frame(b"\xab" * (COMBINE_MIN - 1)),
        "one 64 KB + 1 record": frame(b"\xab" * (COMBINE_MIN + 1)),
        "one 9 MiB record": frame(b"\xcd" * (9 << 20)),
        "11 bytes": b"\x01" * 11,
        "12 zero bytes": b"\0" * 12,
        "a header alone": header(5),
        "a header of an empty record, no CRC": header(0),
        "an empty record then 3 bytes": frame(b"") + b"abc",
    }
    for name, data in cases.items():
        path = tmp_path / "f.tfrecord"
        path.write_bytes(data)
        res = verify_all(path)
        offsets, sizes, crc_ok, damage, crc, *_ = res[(1, True)]
        assert crc == crc32c(data), name
        if name == "empty":
            assert offsets == [] and damage == [] and crc == 0
        elif name.startswith("one "):
            assert offsets == [0] and sizes == [len(data)] and crc_ok == [True], name
            assert damage == [], name
        else:
            assert damage, name
            assert damage[-1][1] == len(data), (name, damage)


@pytest.mark.parametrize("length", [COMBINE_MIN - 1, COMBINE_MIN, COMBINE_MIN + 1])
@pytest.mark.parametrize("spot", ["first", "last", "crc"])
def test_records_around_combine_min(tmp_path: Path, length: int, spot: str) -> None:
    # 200 records of the size, so several per window of the CRC read-ahead (256 KB) and
    # two walk windows; damage record 150 at its first or last payload byte or data CRC.
    rng = np.random.default_rng(length)
    payloads = [rng.bytes(length) for _ in range(140)]
    data = b"".join(frame(p) for p in payloads)
    assert len(data) > WINDOW
    path = tmp_path / "c.tfrecord"
    path.write_bytes(data)
    res = verify_all(path)
    assert res[(1, True)][4] == crc32c(data) and res[(1, True)][3] == []
    k = 130
    start = k * (length + 16)
    at = {"first": start + 12, "last": start + 12 + length - 1, "crc": start + length + 14}[spot]
    bad = bytearray(data)
    bad[at] ^= 0x80
    path.write_bytes(bad)
    res = verify_all(path)
    _offsets, _sizes, crc_ok, damage, crc, *_ = res[(1, True)]
    assert crc == crc32c(bad)
    assert damage == [(start, start + length + 16, k, "data CRC mismatch")]
    assert crc_ok.count(False) == 1 and not crc_ok[k]


def test_lying_lengths(mixed: dict[str, Any], tmp_path: Path) -> None:
    """Headers with a valid length CRC whose length lies: past the end, one byte past the
    end, ending exactly on a window boundary (inside another record), a huge value."""
    off, fr, starts = mixed["offsets"], mixed["framed"], mixed["starts"]
    n = len(mixed["data"])
    k = starts[1] - 3
    lies = {
        "past the end": n,
        "one past the end": n - off[k] - 16 + 1,
        "exactly to the end": n - off[k] - 16,
        "to the middle of the next window": WINDOW + 12345 - off[k],
        "to the next window's first record": off[starts[2]] - off[k] - 16,
        "huge": (1 << 64) - 1,
        "2**63": 1 << 63,
        "zero": 0,
    }
    for name, length in lies.items():
        data = bytearray(mixed["data"])
        data[off[k] : off[k] + 12] = header(length)
        path = tmp_path / "lie.tfrecord"
        path.write_bytes(data)
        res = verify_all(path)
        offsets, sizes, crc_ok, damage, crc, *_ = res[(1, True)]
        assert crc == crc32c(data), name
        assert damage, name
        assert damage[0][2] == k and damage[0][0] == off[k], (name, damage[0])
        # Everything before the lie is intact, and every later record is found again.
        assert offsets[:k] == off[:k], name
        assert set(off[k + 1 :]) <= set(offsets), name
    # A lie that is the truth: a record whose length and data CRC are rewritten to swallow
    # its successor is one valid (bigger) record.
    data = bytearray(mixed["data"])
    payload = bytes(data[off[k] + 12 : off[k + 1] + fr[k + 1] - 4])
    data[off[k] : off[k + 1] + fr[k + 1]] = frame(payload)
    path = tmp_path / "merged.tfrecord"
    path.write_bytes(data)
    res = verify_all(path)
    offsets, sizes, crc_ok, damage, crc, *_ = res[(1, True)]
    assert damage == [] and all(crc_ok) and crc == crc32c(data)
    assert offsets == off[: k + 1] + off[k + 2 :]
    assert sizes[k] == fr[k] + fr[k + 1]


def test_max_record_bytes(mixed: dict[str, Any]) -> None:
    path = mixed["path"]
    big = [i for i, s in enumerate(mixed["sizes"]) if s == 5_000_000]
    # Exactly the largest record: intact.
    res = verify_all(path, max_record_bytes=5_000_000)
    assert res[(1, True)][3] == [] and res[(1, True)][0] == mixed["offsets"]
    assert res[(1, True)][4] == crc32c(mixed["data"])
    # One byte less: every 5 MB record is damage, the rest found; CRC32C still the file's.
    res = verify_all(path, max_record_bytes=4_999_999)
    offsets, _sizes, _crc_ok, damage, crc, *_ = res[(1, True)]
    assert crc == crc32c(mixed["data"])
    assert [d[2] for d in damage] == [i - j for j, i in enumerate(big)]
    assert [d[0] for d in damage] == [mixed["offsets"][i] for i in big]
    assert len(offsets) == len(mixed["offsets"]) - 3
    # A limit under COMBINE_MIN: the 64 KB records and the big ones.
    res = verify_all(path, [1, 2, 5], max_record_bytes=COMBINE_MIN - 1)
    offsets, _sizes, _crc_ok, damage, crc, *_ = res[(1, True)]
    assert crc == crc32c(mixed["data"])
    too_big = [i for i, s in enumerate(mixed["sizes"]) if s > COMBINE_MIN - 1]
    # (adjacent refused records make one damaged region)
    for i in too_big:
        o = mixed["offsets"][i]
        assert any(d[0] <= o < d[1] for d in damage), (i, o)
    assert all(d[0] in {mixed["offsets"][i] for i in too_big} for d in damage)
    assert len(offsets) == len(mixed["offsets"]) - len(too_big)


@pytest.mark.slow
def test_random_damage_fuzz(tmp_path: Path) -> None:
    """Rounds of 1-4 random bit flips (some in headers, some at window boundaries) and cut
    tails on a ~20 MB stream of random record sizes (0 B to 300 KB): every thread count
    agrees with the sequential walk, the CRC32C is the file's."""
    rng = np.random.default_rng(42)
    kinds = rng.integers(0, 10, 2500)
    sizes = [
        int(rng.integers(0, 2000)) if k < 7 else int(rng.integers(COMBINE_MIN - 2, 300_000))
        for k in kinds
    ]
    data, offsets, framed = build(sizes, seed=3)
    starts = window_starts(framed)
    assert len(starts) >= 3
    path = tmp_path / "fuzz.tfrecord"
    for rnd in range(16):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            r = rng.random()
            if r < 0.3:
                i = int(rng.choice(starts))
                i = max(0, min(len(offsets) - 1, i + int(rng.integers(-1, 2))))
                at = offsets[i] + int(rng.integers(0, 16))
            elif r < 0.5:
                i = int(rng.integers(0, len(offsets)))
                at = offsets[i] + int(rng.integers(0, 12))
            else:
                at = int(rng.integers(0, len(buf)))
            buf[at] ^= 1 << int(rng.integers(0, 8))
        if rnd % 6 == 5:
            del buf[len(buf) - int(rng.integers(1, 400_000)) :]
        path.write_bytes(buf)
        res = verify_all(path, [1, 2, 3, 5])
        assert res[(1, True)][4] == crc32c(buf), rnd
        assert res[(1, True)][3], rnd  # a flipped bit is always found


# ---------------------------------------------------------------- rf.inspect.verify


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    n = 3000
    sizes = [1024] * n
    for i in range(0, n, 20):
        sizes[i] = 100_000
    sizes[1777] = sizes[2500] = 5_000_000
    sizes[2001] = COMBINE_MIN
    blobs = [rng.bytes(s) for s in sizes]
    out = tmp_path_factory.mktemp("ds") / "ds"
    rf.write_dataset({"id": np.arange(n), "blob": blobs}, out, max_records=n)
    manifest = json.loads((out / "dataset.json").read_text())
    (shard,) = manifest["splits"]["train"]["shards"]
    path = out / shard["file"]
    data = path.read_bytes()
    found = _core.verify_file(str(path), [], [], 1, True)
    return {
        "dir": out,
        "path": path,
        "data": data,
        "shard": shard,
        "offsets": found.offsets.tolist(),
        "framed": found.sizes.tolist(),
    }


def test_dataset_intact(dataset: dict[str, Any]) -> None:
    assert len(dataset["data"]) > 3 * WINDOW
    assert dataset["shard"]["checksum"] == f"crc32c:{crc32c(dataset['data']):08x}"
    result = rf.inspect.verify(dataset["dir"])
    assert result.ok, result.problems
    assert result.records == 3000
    res = verify_all(dataset["path"], [1, 2, 7])
    assert res[(1, True)][4] == crc32c(dataset["data"])
    assert res[(1, True)][5] == []  # every record parses as an Example


@pytest.mark.parametrize("record", [0, 1777, 2001, 2999, "window start"])
def test_dataset_damaged_payload_found(
    dataset: dict[str, Any], tmp_path: Path, record: int | str, tf: Any
) -> None:
    import shutil

    d = tmp_path / "ds"
    shutil.copytree(dataset["dir"], d)
    path = d / dataset["path"].name
    off, fr = dataset["offsets"], dataset["framed"]
    k = window_starts(fr)[2] if record == "window start" else int(record)
    data = bytearray(dataset["data"])
    data[off[k] + fr[k] - 20] ^= 0x01  # in the payload, near its end
    path.write_bytes(data)
    result = rf.inspect.verify(d)
    assert not result.ok
    crcs = [p for p in result.problems if p.kind == "crc"]
    assert [(p.record, p.offset) for p in crcs] == [(k, off[k])]
    sums = [p for p in result.problems if p.kind == "manifest" and "checksum" in p.message]
    assert len(sums) == 1
    assert f"checksum is crc32c:{crc32c(data):08x}" in sums[0].message
    n, err = tf_count(tf, path)
    assert err and n == k


def test_dataset_damaged_header_at_window_boundary(dataset: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "ds"
    shutil.copytree(dataset["dir"], d)
    path = d / dataset["path"].name
    off, fr = dataset["offsets"], dataset["framed"]
    k = window_starts(fr)[1]
    data = bytearray(dataset["data"])
    data[off[k] + 3] ^= 0x04
    path.write_bytes(data)
    result = rf.inspect.verify(d)
    assert not result.ok
    framing = [p for p in result.problems if p.kind == "framing"]
    assert [(p.record, p.offset) for p in framing] == [(k, off[k])]
    assert any("2999 records, dataset.json says 3000" in p.message for p in result.problems)
    assert any(f"crc32c:{crc32c(data):08x}" in p.message for p in result.problems)


# ---------------------------------------------------------------- memory

_MEASURE = textwrap.dedent(
    """
    import sys, threading, time
    from recordforge import _core

    def anon():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon")

    path, threads, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if how == "inspect":
        import recordforge as rf
    base = anon()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    if how == "inspect":
        r = rf.inspect.verify(path)
        assert r.ok, r.problems[:3]
        n = r.records
    else:
        v = _core.verify_file(path, [], [], threads, True)
        assert v.damage == []
        n = len(v.offsets)
    done.set()
    t.join()
    print(n, peak[0] - base)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_bounded_on_200mb_of_small_records(tmp_path: Path) -> None:
    """A 200 MB shard of ~100-byte Examples: the anonymous memory the verify adds (the
    mapped file's pages are the page cache's) stays well under the file's size, and the
    windowed walk (2 and 8 threads) adds little over the sequential one."""
    payload = rf.encode_example({"x": 12345, "b": b"a" * 70})
    f = frame(payload)
    count = (200 << 20) // len(f)
    path = tmp_path / "big.tfrecord"
    with open(path, "wb") as out:
        chunk = f * 100_000
        for _ in range(count // 100_000):
            out.write(chunk)
        out.write(f * (count % 100_000))
    size = path.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(Path(rf.__file__).parent.parent)}
    grew = {}
    for threads, how in [(1, "core"), (2, "core"), (8, "core"), (2, "inspect")]:
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path), str(threads), how],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        n, delta = map(int, proc.stdout.split())
        assert n == count
        grew[(threads, how)] = delta
    print("anon growth (MB):", {k: v >> 20 for k, v in grew.items()}, "file", size >> 20)
    # Per record the walk keeps an offset, a size, a CRC flag and a slice (~33 bytes):
    # about 28% of a 116-byte frame.
    for key, delta in grew.items():
        assert delta < 0.5 * size, (key, delta, size, grew)
    assert grew[(2, "core")] < grew[(1, "core")] + (48 << 20), grew
    assert grew[(8, "core")] < grew[(1, "core")] + (64 << 20), grew


# ---------------------------------------------------------------- more edges


@pytest.mark.parametrize("framed_size", [1 << 20, WINDOW, WINDOW - 1, WINDOW + 1, 4 << 20])
def test_windows_filled_exactly(tmp_path: Path, framed_size: int) -> None:
    """Records whose framed sizes add up exactly to a window (or one byte either side):
    the window ends on the record that reaches it; damage in the record after each
    boundary and in the one before it is found, the CRC32C is the file's."""
    count = max(3, (3 * WINDOW) // framed_size + 1)
    rng = np.random.default_rng(framed_size)
    data = b"".join(frame(rng.bytes(framed_size - 16)) for _ in range(count))
    path = tmp_path / "exact.tfrecord"
    path.write_bytes(data)
    res = verify_all(path, [1, 2, 3])
    assert res[(1, True)][3] == [] and res[(1, True)][4] == crc32c(data)
    starts = window_starts([framed_size] * count)
    assert len(starts) >= 2
    for k in {starts[1] - 1, starts[1], starts[-1], count - 1}:
        bad = bytearray(data)
        bad[k * framed_size + 12] ^= 1
        path.write_bytes(bad)
        res = verify_all(path, [1, 2, 3])
        damage = res[(1, True)][3]
        assert damage == [(k * framed_size, (k + 1) * framed_size, k, "data CRC mismatch")]
        assert res[(1, True)][4] == crc32c(bad)


def test_concurrent_verifies_from_python_threads(mixed: dict[str, Any], tmp_path: Path) -> None:
    """verify_file releases the GIL: several calls at once (intact and damaged files, 1-4
    threads each) give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    bad = bytearray(mixed["data"])
    k = mixed["starts"][2]
    bad[mixed["offsets"][k] + 40] ^= 2
    damaged = tmp_path / "bad.tfrecord"
    damaged.write_bytes(bad)
    paths = [mixed["path"], damaged]
    alone = {str(p): snap(_core.verify_file(str(p), [], [], 1, True)) for p in paths}
    assert alone[str(damaged)][3][0][2] == k

    def one(i: int) -> tuple[str, tuple[Any, ...]]:
        p = str(paths[i % 2])
        return p, snap(_core.verify_file(p, [], [], 1 + i % 4, True))

    with ThreadPoolExecutor(6) as pool:
        for p, got in pool.map(one, range(12)):
            assert got == alone[p]

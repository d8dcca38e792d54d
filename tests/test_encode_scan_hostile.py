"""Adversarial review of 5af5620 (encode_example sized first, into an un-zeroed bytes,
GIL released) and c6ba6f3 (scan_records walks window n+1 while CRC threads check n).
The last tests are the bugs this review found, fixed: big-endian uint64 arrays, a lone
surrogate named as the feature's EncodeError, lists of NumPy scalars (and of bytearrays)
encoded as TensorFlow encodes them, and a huge scan thread count clamped."""

from __future__ import annotations

import array
import gzip
import io
import os
import random
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

import recordforge as rf
from recordforge.errors import CorruptRecordError, EncodeError

pytest.importorskip("tensorflow")
from tensorflow.core.example import example_pb2

INTS = [0, 1, -1, 127, 128, 16383, 16384, 2**21, 2**35, 2**56, 2**62, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.5, float("inf"), float("nan"), 3.4e38, 1e-45, 0.1]
LENS = [0, 1, 127, 128, 300, 16383, 16384]


def tf_example(model: dict) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, (kind, values) in model.items():
        lst = getattr(ex.features.feature[key], kind)
        lst.SetInParent()
        lst.value.extend(values)
    return ex


def as_model(decoded: dict) -> dict:
    kinds = {"i": "int64_list", "f": "float_list"}
    return {
        k: ("bytes_list", v) if isinstance(v, list) else (kinds[v.dtype.kind], v.tolist())
        for k, v in decoded.items()
    }


def same_message(data: bytes, model: dict) -> None:
    ref = tf_example(model)
    parsed = example_pb2.Example.FromString(data)
    assert parsed.SerializeToString(deterministic=True) == ref.SerializeToString(deterministic=True)
    assert len(data) == ref.ByteSize()  # the computed size is TF's size
    assert example_pb2.Example.FromString(data) == example_pb2.Example.FromString(
        tf_example(as_model(rf.decode_example(data))).SerializeToString()
    )


def random_model(r: random.Random) -> dict:
    model = {}
    for j in range(r.randrange(1, 6)):
        key = r.choice(["", "é" * r.randrange(70), "k" * r.choice(LENS[:5])]) + str(j)
        kind = r.choice(["int64_list", "float_list", "bytes_list"])
        n = r.choice([1, 2, 5, 200])
        if kind == "int64_list":
            vals = [r.choice(INTS) for _ in range(n)]
        elif kind == "float_list":
            vals = [r.choice(FLOATS) for _ in range(n)]
        else:
            vals = [bytes([r.randrange(256)]) * r.choice(LENS) for _ in range(min(n, 5))]
        model[key] = (kind, vals)
    return model


def as_python(model: dict, r: random.Random) -> dict:
    dtypes = {"int64_list": np.int64, "float_list": np.float32, "bytes_list": object}
    forms = [lambda v, k: v[0] if len(v) == 1 else v, lambda v, k: np.array(v, dtypes[k])]
    forms.append(lambda v, k: tuple(v))
    return {k: r.choice(forms)(v, kind) for k, (kind, v) in model.items()}


def test_random_examples_match_tensorflow_byte_size_and_parse():
    r = random.Random(17)
    for _ in range(150):
        model = random_model(r)
        same_message(rf.encode_example(as_python(model, r)), model)


@pytest.mark.parametrize("n", [1, 2, 15, 16, 127, 128, 2045, 2046, 16380, 16384, 2**21 - 10])
def test_sizes_across_varint_boundaries(n):
    # lengths of the value, the list, the Feature, the entry and the Example all near a
    # varint boundary: a size computed apart from the writer would be off by one here
    for pad in range(-3, 4):
        m = max(0, n + pad)
        model = {"k" * (m % 200): ("bytes_list", [b"v" * m]), "i": ("int64_list", [-1] * (m % 9))}
        data = rf.encode_example({"k" * (m % 200): b"v" * m, "i": np.full(m % 9, -1)})
        same_message(data, model)


ARRAYS = [np.array(5), np.array(b"xx"), np.arange(20)[::3], np.float16(2.5), np.int8(-3)]
ARRAYS += [np.asfortranarray(np.arange(6).reshape(2, 3)), np.bool_(True), np.bytes_(b"q")]
ARRAYS += [np.arange(24, dtype=np.int16).reshape(2, 3, 4)[:, ::-1, 1::2]]
ARRAYS += [np.array([1, 2], dtype=">i8"), np.array([1.5, -0.0], dtype=">f8")]
ARRAYS += [np.array([1.5], dtype=np.longdouble), np.array([0.1, 65504], dtype=np.float16)]
ARRAYS += [np.array([True, False]), np.array([255, 0], np.uint8), np.array([2**63 - 1], np.uint64)]
ARRAYS += [np.array(["é", "ab", ""]), np.array([b"a", b"", b"\xff"]), np.array([], "S3")]
ARRAYS += [np.array([], dtype=np.int64), np.array([], dtype=np.float32)]


@pytest.mark.parametrize("value", ARRAYS, ids=lambda a: f"{np.asarray(a).dtype}{np.shape(a)}")
def test_numpy_forms_equal_their_list_form(value):
    flat = np.asarray(value).ravel().tolist()
    kind = np.asarray(value).dtype.kind
    if kind in "SU":
        listed = [v.encode() if isinstance(v, str) else v for v in flat]
        model = {"x": ("bytes_list", listed)}
    elif kind == "f":
        model = {"x": ("float_list", [float(v) for v in flat])}
    else:
        model = {"x": ("int64_list", [int(v) for v in flat])}
    data = rf.encode_example({"x": value})
    same_message(data, model)
    if flat:
        assert data == rf.encode_example({"x": model["x"][1]})


def test_bytes_likes_and_str():
    assert rf.encode_example({"b": bytearray(b"abc")}) == rf.encode_example({"b": b"abc"})
    s = "héllo☃𝄞"
    assert rf.encode_example({s: s}) == rf.encode_example({s: s.encode()})
    same_message(rf.encode_example({s: [s, b""]}), {s: ("bytes_list", [s.encode(), b""])})
    assert rf.encode_example({"b": type("B", (bytes,), {})(b"z")}) == rf.encode_example({"b": b"z"})
    for unsupported in (memoryview(b"abc"), array.array("i", [1])):
        with pytest.raises(EncodeError, match='"v"'):
            rf.encode_example({"v": unsupported})
    with pytest.raises(EncodeError, match="does not fit in int64"):
        rf.encode_example({"v": 2**63})


def test_output_deterministic_no_uninitialised_bytes():
    value = {"img": os.urandom(200_000), "ids": list(range(-500, 500)), "f": [0.5] * 300}
    first = rf.encode_example(value)
    for i in range(40):
        junk = [bytes([i]) * len(first) for _ in range(3)]  # reuse freed memory
        del junk
        assert rf.encode_example(value) == first


def test_lying_objects_are_read_once_under_the_gil():
    calls = []
    lying = type("Lying", (int,), {"__float__": lambda s: calls.append(1) or 99.0 + len(calls)})
    n = []
    arr = type("Arr", (), {"__array__": lambda s, *a, **k: n.append(1) or np.arange(len(n))})

    out = rf.decode_example(rf.encode_example({"f": [lying(1), 0.5], "a": arr()}))
    assert out["f"].tolist() == [100.0, 0.5] and out["a"].tolist() == [0]


def test_bytearray_resized_by_other_threads_while_encoding():
    # values are copied under the GIL, so a resize during the GIL-free encode is harmless
    buf = bytearray(b"a" * 100_000)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            buf[:] = b"b" * random.choice([0, 10, 300_000])

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            (v,) = rf.decode_example(rf.encode_example({"b": buf, "k": [b"x"]}))["b"]
            assert len(v) in (0, 10, 100_000, 300_000) and len(set(v)) <= 1
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_other_encoders_agree_with_encode_example(tmp_path):
    cols = {
        "i": np.array([0, -1, 2**62, -(2**63)]),
        "u": np.array([0, 2**63 - 1, 7, 1], dtype=np.uint64),
        "b": np.array([True, False, True, False]),
        "f": np.array([0.1, 1e30, -0.0, np.nan]),
        "s": np.array(["é", "", "abc", "x" * 200]),
        "m": np.arange(8, dtype=np.int32).reshape(4, 2),
        "t": ["a", "bb", "ccc", ""],
    }
    rows = [rf.encode_example({k: v[i] for k, v in cols.items()}) for i in range(4)]
    assert rf.encode_columns(cols) == rows
    rf.write_dataset(cols, tmp_path / "ds")
    (shard,) = sorted((tmp_path / "ds").rglob("*.tfrecord*"))
    assert list(rf.read_records(shard)) == rows
    with rf.TFRecordWriter(tmp_path / "w.tfrecord") as w:
        w.write_many(rows)
    assert list(rf.read_records(tmp_path / "w.tfrecord")) == rows
    ctx, _ = rf.decode_sequence_example(rf.encode_sequence_example({"s": "é", "i": [1, 2]}, {}))
    assert rf.encode_example(ctx) == rf.encode_example({"s": [b"\xc3\xa9"], "i": [1, 2]})


def test_big_endian_uint64_array():
    a = np.array([1, 2], dtype=">u8")
    assert rf.encode_example({"x": a}) == rf.encode_example({"x": [1, 2]})


def test_surrogate_str_raises_encode_error_naming_the_feature():
    with pytest.raises(EncodeError, match='"name"'):
        rf.encode_example({"name": "\ud800"})


def test_list_of_numpy_scalars_encodes_like_the_array():
    assert rf.encode_example({"x": [np.int64(1), np.int64(2)]}) == rf.encode_example({"x": [1, 2]})
    assert rf.encode_example({"x": [np.bool_(True)]}) == rf.encode_example({"x": [1]})
    assert rf.encode_example({"x": (np.float32(1.5), 2)}) == rf.encode_example({"x": [1.5, 2.0]})
    assert rf.encode_example({"x": [bytearray(b"ab"), b"c"]}) == rf.encode_example(
        {"x": [b"ab", b"c"]}
    )
    with pytest.raises(EncodeError, match="unsupported list element of type list"):
        rf.encode_example({"x": [[1, 2], [3]]})  # nested lists are still refused


# scan_records


def outcome(fn, *args, **kw):
    try:
        s = fn(*args, **kw)
        return ("ok", s.records, s.payload_bytes, s.stream_bytes)
    except CorruptRecordError as e:
        return ("err", e.offset, e.reason)


def sequential(src, **kw):
    n = payload = 0
    for rec in rf.read_records(src, **kw):
        n, payload = n + 1, payload + len(rec)
    return rf.RecordStats(records=n, payload_bytes=payload, stream_bytes=payload + 16 * n)


def write(path: Path, sizes: list[int]) -> list[int]:
    with rf.TFRecordWriter(path) as w:
        for i, s in enumerate(sizes):
            w.write(bytes([i % 251]) * s)
    return [sum(sizes[:i]) + 16 * i for i in range(len(sizes))]


def flip(path, offsets):
    with open(path, "r+b") as f:
        for o in offsets:
            f.seek(o)
            b = f.read(1)[0]
            f.seek(o)
            f.write(bytes([b ^ 0x10]))


def agree(path, threads=(0, 1, 2, 5), **kw):
    for verify in (True, False):
        want = outcome(sequential, path, verify=verify, **kw)
        for t in threads:
            got = outcome(rf.scan_records, path, verify=verify, threads=t, **kw)
            assert got == want, (verify, t)


MIB = 1 << 20
LAYOUTS = {
    "windows": [1000] * 20 + [65 * MIB] + [0] * 3 + [30 * MIB] * 3 + [5],
    "exact_window": [64 * MIB - 16, 0, 64 * MIB - 16, 1],
    "one_window_file": [64 * MIB - 16],
    "huge_then_small": [70 * MIB, 10, 0, 3],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_damage_across_windows_reports_lowest_offset(tmp_path, layout):
    sizes = LAYOUTS[layout]
    path = tmp_path / "d.tfrecord"
    offsets = write(path, sizes)
    r = random.Random(layout)
    agree(path)
    agree(path, max_record_bytes=40 * MIB)
    for _ in range(5):
        flips = []
        for _ in range(r.choice([1, 2, 3])):
            i = r.randrange(len(sizes))
            flips.append(offsets[i] + r.choice([r.randrange(12), 12 + sizes[i] + r.randrange(4)]))
            if sizes[i]:
                flips.append(offsets[i] + 12 + r.randrange(sizes[i]))
        flips = r.sample(flips, r.randrange(1, len(flips) + 1))
        flip(path, flips)
        agree(path, threads=(1, 5))
        flip(path, flips)  # restored
    cut = offsets[-1] + r.randrange(sizes[-1] + 16)
    os.truncate(path, cut)
    agree(path, threads=(1, 2))


def test_small_damaged_streams_files_and_compressed():
    r = random.Random(3)
    buf = io.BytesIO()
    with rf.TFRecordWriter(buf) as w:
        for i in range(150):
            w.write(bytes([i]) * r.choice([0, 1, 100, 5000]))
    base = buf.getvalue()
    for _ in range(60):
        d = bytearray(base)
        for _ in range(r.randrange(3)):
            d[r.randrange(len(d))] ^= 1 << r.randrange(8)
        d = bytes(d[: r.randrange(len(d) + 1)] if r.random() < 0.3 else d)
        for comp, enc in ((None, bytes), ("gzip", gzip.compress), ("zlib", zlib.compress)):
            p = enc(d)
            want = outcome(sequential, io.BytesIO(p), compression=comp)
            for t in (0, 1, 2, 5):
                got = outcome(rf.scan_records, io.BytesIO(p), compression=comp, threads=t)
                assert got == want


def test_degenerate_files(tmp_path):
    cases = {"empty": b"", "short": b"\x01" * 11, "header_only": b"\x00" * 12}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        agree(tmp_path / name)
    write(tmp_path / "zeros", [0] * 1000)
    agree(tmp_path / "zeros")
    assert rf.scan_records(tmp_path / "zeros").records == 1000
    write(tmp_path / "big", [2 * MIB] * 3)
    agree(tmp_path / "big", max_record_bytes=2 * MIB - 1)
    agree(tmp_path / "big", max_record_bytes=2 * MIB)


SCAN_HUGE_THREADS = """
import sys, recordforge as rf
with rf.TFRecordWriter(sys.argv[1]) as w:
    w.write_many([b"x" * 10_000] * 300)
s = rf.scan_records(sys.argv[1], threads=int(sys.argv[2]))
print(s.records, s.payload_bytes, s.stream_bytes)
"""


def test_huge_thread_count_does_not_abort(tmp_path):
    args = [sys.executable, "-c", SCAN_HUGE_THREADS, str(tmp_path / "a"), str(2**58)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-300:]
    assert p.stdout.split() == ["300", "3000000", "3004800"]


def test_huge_thread_count_is_clamped(tmp_path):
    path = tmp_path / "a"
    write(path, [10_000] * 300)
    assert rf.scan_records(path, threads=2**62) == rf.scan_records(path, threads=5)


HUGE_THREADS = """
import sys
import numpy as np
import recordforge as rf
from recordforge import _core

out, huge = sys.argv[1], int(sys.argv[2])
blobs = [bytes([i]) * 50_000 for i in range(120)]  # 6 MB: every path goes parallel
rf.write_dataset({"id": np.arange(120), "blob": blobs}, out, max_records=60)
ds = rf.open_dataset(out)
(path, *_) = ds.files
print(sum(len(b["id"]) for b in ds.batches(7, threads=huge)))
files = [_core.RecordFile(f) for f in ds.files]
offsets = np.concatenate([f.offsets() for f in files]).astype(np.uint64)
which = np.repeat(np.arange(len(files)), [len(f.offsets()) for f in files]).astype(np.int64)
for arena in (None, _core.Arena()):
    got = _core.take_records(files, which, offsets, ds._wanted(), threads=huge, arena=arena)
    print(len(got[0][0]))
print(_core.file_crc32c(path, threads=huge) == _core.file_crc32c(path, threads=1))
print(_core.verify_file(path, ["id"], [True], threads=huge).offsets.size)
print(len(_core.encode_record_batch({"blob": blobs * 20}, threads=huge)))
"""


@pytest.mark.parametrize("huge", [2**20, 2**62])
def test_a_huge_thread_count_is_clamped_everywhere(tmp_path, huge):
    # Each path that starts threads by a count starts at most 256 (was: an abort, a
    # panic, or a thread per record).
    args = [sys.executable, "-c", HUGE_THREADS, str(tmp_path / "d"), str(huge)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-400:]
    assert p.stdout.split() == ["120", "120", "120", "True", "60", "2400"], p.stdout

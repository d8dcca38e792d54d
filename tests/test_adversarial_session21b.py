"""Adversarial tests (helper session 21b) of cb43559 (workers fork beside fsspec's I/O
threads), d79dde2 (with_bytes through memoryview.tobytes; no more workers than items
left) and ecfa467 (the Capped sink of a TFRecordWriter without a checksum).

Everything that forks, kills or starts a store runs in a subprocess (with a timeout), so
that no thread is left in this process and a hang fails instead of blocking."""

from __future__ import annotations

import array
import io
import json
import mmap
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import moto_server_process, run_file

import recordforge as rf
from recordforge import _core

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PY = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    env.pop("AWS_PROFILE", None)
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **extra}


def run_script(code: str, *args: str, timeout: float = 120, **env: str) -> Any:
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# =======================================================================================
# 1. cb43559: which threads let workers fork


IDENTIFY = r"""
import asyncio, json, sys, threading, time, warnings
import fsspec.asyn as A
from recordforge import _workers

case = sys.argv[1]
stop = threading.Event()

async def in_executor():
    return await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0)

def method():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = _workers.start_method()
    return m, [str(w.message) for w in caught]

if case == "fsspec":  # fsspec's loop and its executor's threads only
    A.sync(A.get_loop(), in_executor)
elif case == "named":  # a user's thread that calls itself fsspecIO
    threading.Thread(target=stop.wait, name="fsspecIO", daemon=True).start()
elif case == "named_executor":  # a user's thread named like an executor thread
    A.sync(A.get_loop(), in_executor)
    threading.Thread(target=stop.wait, name="asyncio_0", daemon=True).start()
elif case == "user_loop":  # a user's own asyncio loop, with a default executor
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="userloop", daemon=True).start()
    asyncio.run_coroutine_threadsafe(in_executor(), loop).result()
    A.sync(A.get_loop(), in_executor)
elif case == "user_loop_no_fsspec":  # a user loop, fsspec never used
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="fsspecIO", daemon=True).start()
    asyncio.run_coroutine_threadsafe(in_executor(), loop).result()
elif case == "user_calls_fsspec":  # a user thread inside an fsspec call right now
    A.get_loop()
    entered = threading.Event()
    async def slow():
        entered.set()
        await asyncio.sleep(3)
    threading.Thread(target=A.sync, args=(A.get_loop(), slow), name="caller", daemon=True).start()
    entered.wait()
m, warned = method()
print(json.dumps({"method": m, "warned": warned,
                  "threads": sorted(t.name for t in threading.enumerate())}))
"""


@pytest.mark.parametrize(
    "case, expected",
    [
        ("fsspec", "fork"),
        ("named", "spawn"),
        ("named_executor", "spawn"),
        ("user_loop", "spawn"),
        ("user_loop_no_fsspec", "spawn"),
        ("user_calls_fsspec", "spawn"),
    ],
)
def test_only_fsspecs_own_threads_let_workers_fork(case: str, expected: str) -> None:
    run = run_script(IDENTIFY, case, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["method"] == expected, result
    if expected == "fork":
        assert not result["warned"], result
        assert "fsspecIO" in result["threads"], result
    else:
        assert result["warned"] and "spawned" in result["warned"][0], result


PENDING = r"""
import asyncio, json, os, sys, threading, time, warnings
import fsspec.asyn as A
import recordforge as rf
from recordforge import _workers

warnings.simplefilter("error")  # a spawn would warn

async def child_work(i):
    await asyncio.sleep(0)
    return i * 3

def to_records(i):
    # in a worker: fsspec's loop of the forked child (made anew there)
    v = A.sync(A.get_loop(), child_work, i)
    return [rf.encode_example({"i": i, "v": v, "pad": b"z" * (i % 7) * 50})]

async def busy():
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: None)  # a pending callback
    await loop.run_in_executor(None, time.sleep, 1.5)  # an executor thread busy at fork
    return "done"

A.sync(A.get_loop(), child_work, 0)
rows = list(range(40))
out = sys.argv[1]
results = []
for rnd in range(4):  # forks again and again in one process
    pending = asyncio.run_coroutine_threadsafe(busy(), A.get_loop())
    time.sleep(0.05)
    assert _workers.start_method() == "fork"
    rf.write_dataset(rows, f"{out}/w2-{rnd}", to_records=to_records, workers=2, max_records=7)
    results.append(pending.result(timeout=30))
    assert A.sync(A.get_loop(), child_work, 5) == 15  # the parent's loop still works
rf.write_dataset(rows, f"{out}/w1", to_records=to_records, workers=1, max_records=7)
print(json.dumps({"results": results}))
"""


def test_fork_with_fsspec_loop_busy_and_callbacks_pending_repeatedly(tmp_path: Path) -> None:
    run = run_script(PENDING, str(tmp_path), timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1])["results"] == ["done"] * 4
    ref = listing(tmp_path / "w1")
    for rnd in range(4):
        assert listing(tmp_path / f"w2-{rnd}") == ref, rnd


# -- against a moto server in its own process -------------------------------------------


STORE = r"""
import asyncio, hashlib, json, os, sys, threading, warnings
import fsspec.asyn as A
import recordforge as rf
from recordforge import _fs, _workers
from recordforge.sources.coco import CocoSource
from recordforge.sources.images import ImageFolderSource
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

bucket, SH = sys.argv[1], sys.argv[2]
fs, _ = _fs.filesystem(f"s3://{bucket}/x")
fs.mkdir(bucket)
tiny = f"{SH}/tiny_coco"
imgs = sorted(os.listdir(f"{tiny}/val2017"))
fs.put(f"{tiny}/val2017", f"{bucket}/val2017", recursive=True)
fs.put(f"{tiny}/annotations/instances_val2017.json", f"{bucket}/instances.json")
for i, n in enumerate(imgs[:9]):
    fs.put(f"{tiny}/val2017/{n}", f"{bucket}/folder/c{i % 3}/{n}")
fs.put(f"{SH}/tfx_chicago_taxi/data.csv", f"{bucket}/taxi.csv")
fs.pipe(f"{bucket}/big", os.urandom(8 << 20))

def objs(url):
    key = url.split("://", 1)[1]
    return {p.rsplit("/", 1)[1]: hashlib.sha256(fs.cat(p)).hexdigest() for p in fs.find(key)}

res = {}
sources = {
    "coco": lambda: CocoSource.from_files(
        f"s3://{bucket}/instances.json", f"s3://{bucket}/val2017", per="image"),
    "folder": lambda: ImageFolderSource(f"s3://{bucket}/folder"),
    "csv": lambda: TableSource(f"s3://{bucket}/taxi.csv", part_bytes=400_000),
}
for name, make in sources.items():
    outs = {}
    for w in (1, 2):
        # a store call in flight on fsspec's loop (no thread waits for it) at the fork
        inflight = asyncio.run_coroutine_threadsafe(fs._cat_file(f"{bucket}/big"), A.get_loop())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            write_source(make(), f"s3://{bucket}/{name}{w}", workers=w,
                         max_records=2000 if name == "csv" else 3)
        assert len(inflight.result(timeout=60)) == 8 << 20
        outs[w] = objs(f"s3://{bucket}/{name}{w}")
    res[name] = [outs[1] == outs[2], len(outs[1]), rf.inspect.verify(f"s3://{bucket}/{name}2").ok]
# a user thread inside an fsspec call: spawn (with the warning), the same objects
entered, stop = threading.Event(), threading.Event()
async def slow():
    entered.set()
    await asyncio.sleep(2)
t = threading.Thread(target=A.sync, args=(A.get_loop(), slow), name="caller")
t.start(); entered.wait()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res["method_busy"] = _workers.start_method()
t.join()
res["method_after"] = _workers.start_method()
print(json.dumps(res))
"""


@pytest.mark.slow
def test_forked_workers_read_and_write_s3_like_one_worker() -> None:
    with moto_server_process() as env:
        run = run_script(STORE, "bkt21b", str(SHARED), timeout=240, **env)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout.splitlines()[-1])
    for name in ("coco", "folder", "csv"):
        assert res[name][0] and res[name][1] > 3 and res[name][2], (name, res)
    assert res["method_busy"] == "spawn" and res["method_after"] == "fork", res


# =======================================================================================
# 2. d79dde2: with_bytes


def _mmap() -> mmap.mmap:
    m = mmap.mmap(-1, 16)
    m.write(b"mmap-data")
    return m


_a = np.arange(24, dtype=np.uint8).reshape(4, 6)
GOOD: dict[str, Any] = {
    "bytearray": bytearray(b"ab\x00c"),
    "bytearray_empty": bytearray(),
    "memoryview": memoryview(b"abcdef"),
    "mv_slice": memoryview(b"abcdefgh")[2:5],
    "mv_strided": memoryview(b"abcdefgh")[::2],
    "mv_reversed": memoryview(b"abcdefgh")[::-1],
    "mv_cast_I": memoryview(b"abcdefgh").cast("I"),
    "mv_2d": memoryview(bytes(range(12))).cast("B", (3, 4)),
    "mv_readonly": memoryview(bytearray(b"xyz")).toreadonly(),
    "mv_empty": memoryview(b""),
    "array_i": array.array("i", [1, -2, 3]),
    "array_d": array.array("d", [1.5, -0.0]),
    "array_u": array.array("u", "h\u00e9"),
    "array_empty": array.array("B"),
    "mmap": _mmap(),
    "picklebuffer": pickle.PickleBuffer(b"pick"),
    "picklebuffer_ba": pickle.PickleBuffer(bytearray(b"pick2")),
    "bytesio_buffer": io.BytesIO(b"bio").getbuffer(),
    "u8_fortran": np.asfortranarray(_a),
    "u8_T": _a.T,
    "u8_strided": _a[:, ::2],
    "u8_reversed": _a[::-1],
    "u8_readonly": np.frombuffer(b"ro", np.uint8),
    "u8_0d": np.array(200, np.uint8),
    "u8_scalar": np.uint8(200),
    "u8_empty": np.zeros(0, np.uint8),
    "u8_empty_2d": np.zeros((0, 5), np.uint8),
    "u8_broadcast": np.broadcast_to(np.arange(3, dtype=np.uint8), (2, 3)),
    "u8_subclass": np.arange(4, dtype=np.uint8).view(type("Sub", (np.ndarray,), {})),
    "u8_offset": np.frombuffer(b"xabcdef", np.uint8)[1:],
    "i4_fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    "i2_0d": np.array(300, np.int16),
    "bool": np.array([True, False, True]),
    "structured": np.array([(1, 2)], dtype=[("a", "u1"), ("b", "<i4")]),
    "structured_scalar": np.array([(1, 2)], dtype=[("a", "u1"), ("b", "<i4")])[0],
    "S3_scalar": np.bytes_(b"ab"),
    "U_scalar": np.str_("\u00e9"),
    "void_scalar": np.void(b"\x01\x02\x03\x04"),
}
for _dt in ["i1", "u2", "<i2", ">u4", "i8", "f2", "f4", ">f8", "c8", "c16", "?"]:
    GOOD[f"scalar_{_dt}"] = np.array([7], _dt)[0]
    GOOD[f"0d_{_dt}"] = np.array(7, _dt)
    GOOD[f"arr_{_dt}"] = np.arange(3).astype(_dt)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_buffer_form_is_its_c_order_bytes_everywhere(name: str, tmp_path: Path) -> None:
    value = GOOD[name]
    expected = memoryview(value).tobytes()
    assert rf.crc32c(value) == rf.crc32c(expected)
    assert rf.masked_crc32c(value) == rf.masked_crc32c(expected)
    assert _core.frame_records([value, b"x"]) == _core.frame_records([expected, b"x"])
    sink = io.BytesIO()
    with rf.TFRecordWriter(sink) as w:
        w.write(value)
        w.write_many([value, value])
        w.write_framed(_core.frame_records([expected]))
    assert [bytes(r) for r in rf.read_records(io.BytesIO(sink.getvalue()), None)] == [expected] * 4


@pytest.mark.parametrize("name", ["bytearray", "memoryview", "u8_fortran", "mmap", "array_empty"])
def test_write_framed_and_decode_accept_buffer_forms(name: str) -> None:
    example = rf.encode_example({"a": 1, "b": b"xy"})
    value = GOOD[name]
    framed = _core.frame_records([example])
    for form in (bytearray(framed), memoryview(framed), np.frombuffer(framed, np.uint8)):
        sink = io.BytesIO()
        with rf.TFRecordWriter(sink) as w:
            w.write_framed(form)
        assert sink.getvalue() == framed
    for form in (bytearray(example), memoryview(example), array.array("B", example)):
        assert rf.decode_example(form)["a"].tolist() == [1]
    del value


@pytest.mark.parametrize(
    "bad",
    [3, -1, 1 << 70, True, 1.5, [1, 2], (1,), "ab", None, {}, iter(b"ab")],
    ids=lambda v: type(v).__name__ if type(v).__name__.endswith("iterator") else repr(v),
)
def test_non_buffers_are_type_errors(bad: Any) -> None:
    with pytest.raises(TypeError):
        rf.crc32c(bad)
    with pytest.raises(TypeError):
        rf.masked_crc32c(bad)
    w = rf.TFRecordWriter(io.BytesIO())
    with pytest.raises(TypeError):
        w.write(bad)
    # write_many and frame_records name the record, with the same type of error
    with pytest.raises(TypeError, match="record 1 is not bytes-like"):
        w.write_many([b"ok", bad])
    with pytest.raises(TypeError, match="record 0 is not bytes-like"):
        _core.frame_records([bad])
    w.close()


def test_an_object_array_is_a_type_error_not_its_pointers() -> None:
    values = np.array([b"a", b"b"], dtype=object)
    sink = io.BytesIO()
    with pytest.raises(TypeError), rf.TFRecordWriter(sink) as w:
        w.write(values)


def test_write_many_copies_a_buffer_mutated_by_the_iterator() -> None:
    """The iterator changes the array it yielded before: each record is the bytes the
    array had when yielded, as with write() of each item."""
    buf = np.zeros(4, np.uint8)
    ba = bytearray(4)

    def items() -> Any:
        for i in range(5):
            buf[:] = i
            yield buf
            ba[:] = bytes([i + 10]) * 4
            yield ba

    sink = io.BytesIO()
    with rf.TFRecordWriter(sink) as w:
        w.write_many(items())
    got = [bytes(r) for r in rf.read_records(io.BytesIO(sink.getvalue()), None)]
    expected = [bytes([x]) * 4 for i in range(5) for x in (i, i + 10)]
    assert got == expected


def test_csv_scanner_feed_forms_agree() -> None:
    text = b'a,b\n1,"x\ny"\n3,4\n' * 50
    forms = [
        text,
        bytearray(text),
        memoryview(text),
        np.frombuffer(text, np.uint8),
        memoryview(text)[::1],
        array.array("B", text),
    ]
    results = []
    for form in forms:
        scanner = _core.CsvRowScanner(ord(","))
        a, b = scanner.feed(form)
        c, d = scanner.finish()
        results.append((a.tolist(), b.tolist(), c.tolist(), d.tolist()))
    assert all(r == results[0] for r in results)
    with pytest.raises(TypeError):
        _core.CsvRowScanner(ord(",")).feed(5)


def test_large_strided_and_2d_inputs_copied_in_c_order() -> None:
    big = np.random.default_rng(1).integers(0, 256, (4096, 4096), dtype=np.uint8)
    for value in (big.T, big[:, ::3], np.asfortranarray(big)):
        assert rf.crc32c(value) == rf.crc32c(np.ascontiguousarray(value).tobytes())


# =======================================================================================
# 3. d79dde2: no more workers than items left


SPLITS = r"""
import sys
import recordforge as rf
def rec(i):
    return [rf.encode_example({"i": i, "pad": b"x" * (i * 37 % 500)})] * (i % 3)
def gen():
    yield from range(5)
splits = {"a": list(range(9)), "b": [4], "c": [], "d": [1, 2, 3], "g": gen()}
rf.write_dataset(None, sys.argv[1], splits=splits, to_records=rec,
                 workers=int(sys.argv[2]), max_records=2, index=True)
"""


@pytest.mark.slow
def test_kill_at_stages_then_rerun_with_more_workers_than_items_left(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(SPLITS)

    def go(out: Path, workers: int, **env: str) -> Any:
        return run_file(script, str(out), str(workers), env=clean_env(**env), timeout=60)

    assert go(tmp_path / "ref", 1).returncode == 0
    ref = listing(tmp_path / "ref")
    log = tmp_path / "log"
    assert go(tmp_path / "w4", 4, RECORDFORGE_STAGE_LOG=str(log)).returncode == 0
    assert listing(tmp_path / "w4") == ref
    count = len(log.read_text().splitlines())
    for n in range(3, count, 9):
        out = tmp_path / f"k{n}"
        killed = go(out, 4, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr[-2000:])
        again = go(out, 6 if n % 2 else 1)
        assert again.returncode == 0, (n, again.stderr[-2000:])
        assert listing(out) == ref, n


def test_worker_count_is_capped_by_items_left(tmp_path: Path, monkeypatch: Any) -> None:
    from recordforge import _parallel

    seen: list[int] = []
    real = _parallel.write_split

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(_parallel, "write_split", spy)
    monkeypatch.setenv("RECORDFORGE_START_METHOD", "fork")

    def rec(i: int) -> list[bytes]:
        return [rf.encode_example({"i": i})]

    splits = {"a": [1], "b": [], "c": [1, 2], "d": list(range(10))}
    rf.write_dataset(None, tmp_path / "o", splits=splits, to_records=rec, workers=8)
    rf.write_dataset(None, tmp_path / "r", splits=splits, to_records=rec, workers=1)
    assert seen == [2, 8]
    assert listing(tmp_path / "o") == listing(tmp_path / "r")
    seen.clear()
    rf.write_dataset((i for i in range(3)), tmp_path / "g", to_records=rec, workers=5)
    assert seen == [5]  # length unknown: as asked


# =======================================================================================
# 4. ecfa467: Capped sink


class Sink(io.RawIOBase):
    def __init__(self, mode: str, n: int = 0) -> None:
        self.buf = bytearray()
        self.calls: list[int] = []
        self.mode, self.n = mode, n

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> Any:
        view = memoryview(b)
        self.calls.append(len(view))
        if self.mode == "short":
            k = min(len(view), self.n)
            self.buf += view[:k]
            return k
        self.buf += view
        return None if self.mode == "none" else len(view)


RECS = [os.urandom(n) for n in (0, 1, 5, (1 << 20) - 16, 1 << 20, (1 << 20) + 1, 3 << 20, 100)]
FRAMED = _core.frame_records(RECS)


@pytest.mark.parametrize("mode, n", [("short", 4093), ("short", 1 << 19), ("none", 0), ("full", 0)])
@pytest.mark.parametrize("checksum", [None, "crc32c", "sha256"])
def test_python_sinks_get_capped_writes_and_all_bytes(mode: str, n: int, checksum: Any) -> None:
    sink = Sink(mode, n)
    kw = {} if checksum is None else {"checksum": checksum}
    w = rf.TFRecordWriter(sink, **kw)
    w.write(RECS[0])
    w.write_many(RECS[1:4])
    w.write_framed(_core.frame_records(RECS[4:]))
    w.flush()
    assert bytes(sink.buf) == FRAMED  # flush pushed everything
    w.close()
    assert bytes(sink.buf) == FRAMED
    assert max(sink.calls) <= 1 << 20


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_compressed_to_short_writing_sink(compression: str) -> None:
    sink = Sink("short", 777)
    with rf.TFRecordWriter(sink, compression=compression) as w:
        w.write_many(RECS)
    assert max(sink.calls) <= 1 << 20
    back = [bytes(r) for r in rf.read_records(io.BytesIO(bytes(sink.buf)), compression)]
    assert back == RECS


def test_a_writer_whose_sink_failed_mid_record_does_not_close_cleanly() -> None:
    class Flaky(Sink):
        def write(self, b: Any) -> Any:
            if self.n == 0 and len(self.buf) > 500_000:
                self.n = 1
                raise OSError(5, "transient")
            return super().write(b)

    sink = Flaky("full")
    w = rf.TFRecordWriter(sink)
    with pytest.raises(OSError):
        w.write(os.urandom(3 << 20))
    with pytest.raises(Exception):  # noqa: B017
        w.write(b"after")
        w.close()


TF_SCRIPT = r"""
import gzip, json, sys, zlib
import numpy as np
import pytest
from helpers import moto_server_process
import tensorflow as tf
import recordforge as rf
out = sys.argv[1]
rng = np.random.default_rng(0)
recs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for n in (0, 1, (1 << 20) - 12, (1 << 20) - 11, 1 << 20, (1 << 20) + 1, 5 << 20)]
big = rng.integers(0, 256, 80 << 20, dtype=np.uint8)
res = {}
for comp in ("", "GZIP", "ZLIB"):
    t, r = f"{out}/tf{comp}", f"{out}/rf{comp}"
    with tf.io.TFRecordWriter(t, options=comp) as w:
        for x in recs:
            w.write(x)
        w.write(big.tobytes())
    with rf.TFRecordWriter(r, compression=comp.lower() or None) as w:
        w.write_many(recs)
        w.write(big)
    a, b = open(t, "rb").read(), open(r, "rb").read()
    un = {"": lambda d: d, "GZIP": gzip.decompress, "ZLIB": zlib.decompress}[comp]
    back = [bytes(x.numpy()) for x in tf.data.TFRecordDataset(r, compression_type=comp)]
    res[comp or "none"] = [un(a) == un(b), back == recs + [big.tobytes()]]
print(json.dumps(res))
"""


@pytest.mark.slow
def test_bytes_equal_tensorflows_writer_with_an_80mb_record(tmp_path: Path) -> None:
    run = run_script(TF_SCRIPT, str(tmp_path), timeout=180, TF_CPP_MIN_LOG_LEVEL="3")
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout.splitlines()[-1])
    assert res == {k: [True, True] for k in ("none", "GZIP", "ZLIB")}, res

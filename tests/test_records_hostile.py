"""Hostile record streams (issue 13): lengths that claim more than the limit, GZIP bombs,
and iterators that stay failed after an error.

A record's length field is input: one that claims more than ``max_record_bytes``
(default 1 GiB) is refused with a ``CorruptRecordError`` naming the file, the offset and
the limit, before anything is allocated for it. Every reader takes the keyword, and every
inspection subcommand ``--max-record-bytes``; peak memory on a GZIP bomb stays small in
``read_records``, ``head``, ``count``, ``verify`` and ``salvage`` (each run in its own
process, its peak RSS read from ``ru_maxrss``).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main as cli

LIMIT = 1 << 30
CLAIM = 1 << 40
# Zeros behind the bomb's header: enough that reading to grow past them (as the readers
# did) costs several times the RSS bound below.
ZEROS = 768 << 20
RSS_BOUND_MB = 300


def header(length: int) -> bytes:
    h = length.to_bytes(8, "little")
    return h + rf.masked_crc32c(h).to_bytes(4, "little")


def frame(data: bytes) -> bytes:
    return header(len(data)) + data + rf.masked_crc32c(data).to_bytes(4, "little")


def gzip_bomb(path: Path, prefix: bytes, zeros: int) -> Path:
    """A GZIP file of ``prefix`` then ``zeros`` zero bytes, made without compressing them
    all: after a full flush zlib starts afresh, so each 16 MiB of zeros compresses to the
    same block, written as often as needed."""
    chunk = 16 << 20
    assert zeros % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH) == block
    tail = c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    zero_chunk = bytes(chunk)
    for _ in range(zeros // chunk):
        crc = zlib.crc32(zero_chunk, crc)
    size = (len(prefix) + zeros) & 0xFFFFFFFF
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + head)
        for _ in range(zeros // chunk):
            f.write(block)
        f.write(tail + crc.to_bytes(4, "little") + size.to_bytes(4, "little"))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2^40-byte claim, behind one intact record, then 768 MiB of zeros: ~750 kB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tfrecord.gz"
    return gzip_bomb(path, frame(b"intact") + header(CLAIM), ZEROS)


def test_the_bomb_is_what_it_says(bomb: Path) -> None:
    assert bomb.stat().st_size < 1 << 20
    d = zlib.decompressobj(31)
    start = d.decompress(bomb.read_bytes()[:4096], 64)
    assert start[:22] == frame(b"intact") and start[22:34] == header(CLAIM)


def test_a_claim_over_the_limit_is_refused_at_its_offset(bomb: Path) -> None:
    reason = f"record claims {CLAIM} bytes, more than the limit of {LIMIT} (max_record_bytes)"
    records = rf.read_records(bomb)
    assert next(records) == b"intact"
    with pytest.raises(rf.CorruptRecordError) as e:
        next(records)
    assert (e.value.path, e.value.offset, e.value.reason) == (str(bomb), 22, reason)
    with pytest.raises(rf.CorruptRecordError) as again:
        rf.scan_records(bomb)
    assert (again.value.offset, again.value.reason) == (22, reason)
    # The same from a file object, and for a plain file (where it fits in no file either).
    with open(bomb, "rb") as f, pytest.raises(rf.CorruptRecordError, match="more than the limit"):
        list(rf.read_records(f))
    plain = bomb.with_name("plain.tfrecord")
    plain.write_bytes(frame(b"x") + header(CLAIM) + bytes(100))
    with pytest.raises(rf.CorruptRecordError, match="claims 1099511627776 bytes") as e:
        list(rf.read_records(plain))
    assert e.value.offset == 17


_PEAK = """
def _peak_mb():
    # VmHWM belongs to this process's memory map, new at exec; ru_maxrss is not: Linux
    # carries it over from the parent (here, a pytest process that may be large).
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def _peak_rss_mb(code: str, *args: str) -> tuple[float, str]:
    """Runs ``code`` in a fresh interpreter; its peak RSS in MB and its output."""
    script = f"import sys\n{_PEAK}\n{code}\nprint('RSS', _peak_mb())\n"
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("RSS "), proc.stdout
    return float(lines[-1].split()[1]), "\n".join(lines[:-1])


READERS = {
    "read_records": (
        "import recordforge as rf\n"
        "it = rf.read_records(sys.argv[1])\n"
        "print(next(it))\n"
        "try:\n    next(it)\nexcept rf.CorruptRecordError as e:\n    print(e.offset, e.reason)"
    ),
    "head": (
        "import recordforge as rf\n"
        "r = rf.inspect.head(sys.argv[1])\n"
        "print(len(r.records), [p.message for p in r.problems])"
    ),
    "count": (
        "import recordforge as rf\n"
        "r = rf.inspect.count(sys.argv[1], scan=True)\n"
        "print(r.records, [p.message for p in r.problems])"
    ),
    "verify": (
        "import recordforge as rf\n"
        "r = rf.inspect.verify(sys.argv[1])\n"
        "print(r.records, [p.message for p in r.problems])"
    ),
    "salvage": (
        "import recordforge as rf\n"
        "r = rf.inspect.salvage(sys.argv[1], sys.argv[2], overwrite=True)\n"
        "print(r.records, [(x.start, x.end, x.reason) for x in r.lost])"
    ),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_a_gzip_bomb_costs_little_memory(bomb: Path, tmp_path: Path, reader: str) -> None:
    rss, out = _peak_rss_mb(READERS[reader], str(bomb), str(tmp_path / "salvaged.tfrecord"))
    assert rss < RSS_BOUND_MB, f"{reader}: peak RSS {rss:.0f} MB\n{out}"
    assert "more than the limit of 1073741824" in out, out
    if reader in ("head", "count", "verify", "salvage"):
        assert out.startswith("1 "), out  # the record before the bomb
    if reader == "salvage":
        # The rest of the stream was walked (no record in it), not copied anywhere.
        assert f"(22, {22 + 12 + ZEROS}," in out, out
        assert list(rf.read_records(tmp_path / "salvaged.tfrecord")) == [b"intact"]


@pytest.mark.parametrize("command", ["head", "count", "verify", "info", "stats", "index"])
def test_the_cli_reports_the_bomb_without_a_traceback(
    bomb: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, str(bomb)] + (["--scan"] if command == "count" else [])
    assert cli(args) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "byte offset 22" in out + err and "more than the limit" in out + err


# --------------------------------------------------------------------------------------
# The limit is a keyword everywhere (and --max-record-bytes)


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Records of 100, 5,000 and 100 bytes: the second is over a 1,000-byte limit."""
    path = tmp_path / "mixed.tfrecord"
    with rf.TFRecordWriter(path) as w:
        for n in (100, 5000, 100):
            w.write(rf.encode_example({"b": [b"x" * (n - 20)]}))
    return path


def test_the_limit_is_settable_in_every_reader(mixed: Path, tmp_path: Path) -> None:
    sizes = [len(r) for r in rf.read_records(mixed)]
    second = sizes[0] + 16
    assert len(sizes) == 3 and sizes[1] > 1000
    small = {"max_record_bytes": 1000}
    match = f"claims {sizes[1]} bytes, more than the limit of 1000"
    it = rf.read_records(mixed, **small)
    assert len(next(it)) == sizes[0]
    with pytest.raises(rf.CorruptRecordError, match=match) as e:
        next(it)
    assert e.value.offset == second
    with pytest.raises(rf.CorruptRecordError, match=match):
        rf.scan_records(mixed, **small)
    with pytest.raises(rf.CorruptRecordError, match=match):
        rf.scan_records(io.BytesIO(mixed.read_bytes()), **small)
    # The limit is inclusive.
    assert len(list(rf.read_records(mixed, max_record_bytes=sizes[1]))) == 3
    # A dataset: the schema inferred at opening, batches, iteration, random access.
    with pytest.raises(rf.CorruptRecordError, match=match):
        rf.open_dataset(mixed, **small)
    schema = rf.Schema({"b": rf.FeatureSpec(dtype="bytes")})
    ds = rf.open_dataset(mixed, schema=schema, **small)
    assert ds.max_record_bytes == 1000
    with pytest.raises(rf.CorruptRecordError, match=match):
        list(ds.batches(2))
    for i in (0, 1):  # random access walks the framing first, which finds record 1
        with pytest.raises(rf.CorruptRecordError, match=match):
            ds[i]
    assert ds.select(["b"]).max_record_bytes == 1000
    skipped = rf.open_dataset(mixed, on_corrupt="skip", **small)
    assert skipped.schema == schema
    assert len(list(skipped)) == 2
    assert "more than the limit" in skipped.skipped[0]["reason"]
    assert len(list(rf.open_dataset(mixed))) == 3


def test_the_inspections_take_the_limit(mixed: Path, tmp_path: Path) -> None:
    small = {"max_record_bytes": 1000}
    assert rf.inspect.count(mixed, scan=True).ok
    counted = rf.inspect.count(mixed, scan=True, **small)
    assert counted.records == 2 and "more than the limit" in counted.problems[0].message
    verified = rf.inspect.verify(mixed, **small)
    assert verified.records == 2 and not verified.ok
    assert verified.problems[0].offset == counted.problems[0].offset
    head = rf.inspect.head(mixed, **small)
    assert len(head.records) == 1 and head.problems[0].record == 1
    assert rf.inspect.stats(mixed, **small).problems
    assert rf.inspect.info(mixed, **small).problems
    salvaged = rf.inspect.salvage(mixed, tmp_path / "out.tfrecord", **small)
    assert salvaged.records == 2 and salvaged.lost[0].records == 0
    assert not rf.inspect.write_index(mixed, **small).ok


def test_the_cli_takes_max_record_bytes(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["count", "--scan", str(mixed)]) == 0
    capsys.readouterr()
    assert cli(["count", "--scan", "--max-record-bytes", "1000", "--json", str(mixed)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 2 and "limit of 1000" in out["problems"][0]["message"]
    assert cli(["verify", "--max-record-bytes", "1KiB", str(mixed)]) == 1
    assert "limit of 1024" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["head", "--max-record-bytes", "0", str(mixed)])
    assert "at least 1 byte" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# After an error, next() raises it again


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Three records; the third's data CRC is wrong."""
    path = tmp_path / "damaged.tfrecord"
    data = bytearray(b"".join(frame(b"r%d" % i) for i in range(3)))
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    return path


def _errors(it: object, n: int = 3) -> list[tuple[str, int, str]]:
    """``next(it)`` ``n`` times, each expected to raise: what each raised."""
    out = []
    for _ in range(n):
        with pytest.raises(rf.CorruptRecordError) as e:
            next(it)  # type: ignore[call-overload]
        out.append((e.value.path, e.value.offset, e.value.reason))
    return out


@pytest.mark.parametrize("how", ["path", "file object", "gzip", "url"])
def test_read_records_keeps_raising_after_an_error(damaged: Path, tmp_path: Path, how: str) -> None:
    source: object = damaged
    if how == "file object":
        source = io.BytesIO(damaged.read_bytes())
    elif how == "gzip":
        source = tmp_path / "damaged.gz"
        source.write_bytes(gzip.compress(damaged.read_bytes()))
    elif how == "url":
        fsspec = pytest.importorskip("fsspec")
        source = "memory://hostile/damaged.tfrecord"
        fsspec.filesystem("memory").pipe(source, damaged.read_bytes())
    it = rf.read_records(source)  # type: ignore[arg-type]
    assert [next(it), next(it)] == [b"r0", b"r1"]
    errors = _errors(it)
    assert errors[0][1] == 36 and "data CRC mismatch" in errors[0][2]
    assert errors == [errors[0]] * 3


def test_dataset_iteration_keeps_raising_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ds.tfrecord"
    with rf.TFRecordWriter(path) as w:
        last = w.write_many([rf.encode_example({"id": i}) for i in range(600)])[-1]
    data = bytearray(path.read_bytes())
    data[-3] ^= 1  # the last record's data CRC
    path.write_bytes(bytes(data))
    ds = rf.open_dataset(path, schema=rf.Schema({"id": rf.FeatureSpec(dtype="int64")}))
    rows = iter(ds)
    assert [int(next(rows)["id"]) for _ in range(512)] == list(range(512))
    errors = _errors(rows)
    assert errors == [errors[0]] * 3 and errors[0][1] == last
    batches = ds.batches(100)
    assert len(next(batches)["id"]) == 100
    while True:
        try:
            next(batches)
        except rf.CorruptRecordError:
            break
    assert _errors(batches) == [errors[0]] * 3
    reader = rf._core.BatchReader([str(path)], [("id", "int64", 1)], 1000)
    assert _errors(reader) == [errors[0]] * 3


def test_an_iterator_that_ended_cleanly_stays_ended(tmp_path: Path) -> None:
    path = tmp_path / "ok.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write(rf.encode_example({"id": 1}))
    it = rf.read_records(path)
    assert len(list(it)) == 1 and next(it, None) is None
    rows = iter(rf.open_dataset(path))
    assert len(list(rows)) == 1 and next(rows, None) is None

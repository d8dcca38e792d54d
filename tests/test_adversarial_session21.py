"""Adversarial checks of three changes: shard CRC32Cs combined from the pieces the
workers write (``_core.crc32c_combine``; ``crc32c`` reading uint8 arrays in place; chunks
of one item / 8 MB at the start), the CSV row-end scan into one reused buffer
(``_csv_lines``, ``CsvRowScanner.feed`` of a uint8 array), and pieces written
``WRITE_BYTES`` a call at most (``_pwrite_all``, spilled chunks included).

The invariant: the files (every shard and ``dataset.json``) are the same bytes for 1, 2
and 3 workers, verify passes, and each manifest checksum is the CRC32C of its file."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import clean_env, cli

import recordforge as rf
from recordforge import _core, _parallel, _workers
from recordforge.inspect import verify
from recordforge.sources._table_parts import csv_parts, scan_lines

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
M = 1 << 20


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def check_output(out: Path) -> rf.Manifest:
    """verify passes, and every manifest checksum is that of the file's bytes."""
    manifest = json.loads((out / "dataset.json").read_text())
    result = verify(out)
    assert result.ok, result
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            data = (out / shard["file"]).read_bytes()
            assert len(data) == shard["bytes"] if "bytes" in shard else True
            kind, _, value = shard["checksum"].partition(":")
            if kind == "crc32c":
                assert value == f"{rf.crc32c(data):08x}", shard
    return manifest


def sized(item: tuple[int, int]) -> list[bytes]:
    """An item (n, seed): one Example of a bytes feature of n random bytes (n = 0: an
    empty Example; n < 0: no record at all)."""
    n, seed = item
    if n < 0:
        return []
    if n == 0:
        return [rf.encode_example({})]
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return [rf.encode_example({"x": data})]


def many(item: tuple[int, int]) -> list[bytes]:
    """An item (k, seed): k records of 0..300 bytes."""
    k, seed = item
    rng = np.random.default_rng(seed)
    return [rf.encode_example({"x": rng.bytes(int(rng.integers(0, 300)))}) for _ in range(k)]


def across_workers(
    rows: list[Any],
    to_records: Any,
    tmp_path: Path,
    counts: tuple[int, ...] = (1, 2, 3),
    **opts: Any,
) -> dict[str, bytes]:
    outs = {}
    for w in counts:
        out = tmp_path / f"w{w}"
        rf.write_dataset(rows, out, to_records=to_records, workers=w, **opts)
        check_output(out)
        outs[w] = listing(out)
    first = outs[counts[0]]
    for w in counts[1:]:
        assert outs[w].keys() == first.keys(), w
        for name in first:
            assert outs[w][name] == first[name], (w, name)
    return first


# ---------------------------------------------------------------------------------------
# crc32c / crc32c_combine


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(1000, dtype=np.uint8),
        lambda: np.zeros(0, np.uint8),
        lambda: np.arange(1000, dtype=np.uint8)[::3],
        lambda: np.arange(1000, dtype=np.uint8)[::-1],
        lambda: np.arange(12, dtype=np.uint8).reshape(3, 4)[:, :2],
        lambda: np.arange(12, dtype=np.uint8).reshape(3, 4),
        lambda: np.arange(100, dtype=np.int8),
        lambda: np.arange(100, dtype=np.uint16),
        lambda: np.arange(100, dtype=">u2"),
        lambda: np.linspace(0, 1, 77, dtype=np.float32),
        lambda: np.array([True, False, True]),
        lambda: np.frombuffer(b"abcdef", dtype="S1"),
    ],
    ids=[
        "u8", "empty", "strided", "reversed", "2d-noncontig", "2d-C", "i8", "u16", ">u2",
        "f32", "bool", "S1",
    ],
)  # fmt: skip
def test_crc32c_of_arrays_equals_that_of_their_bytes(make: Any) -> None:
    array = make()
    assert rf.crc32c(array) == rf.crc32c(array.tobytes())
    assert rf.masked_crc32c(array) == rf.masked_crc32c(array.tobytes())
    array.flags.writeable = False
    assert rf.crc32c(array) == rf.crc32c(array.tobytes())
    assert rf.crc32c(memoryview(array.tobytes())) == rf.crc32c(array.tobytes())
    assert rf.crc32c(bytearray(array.tobytes())) == rf.crc32c(array.tobytes())


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)),
        lambda: np.arange(12, dtype=np.uint8).reshape(3, 4).T,
    ],
    ids=["fortran", "transposed"],
)
def test_crc32c_of_a_fortran_ordered_uint8_array_is_that_of_its_bytes(make: Any) -> None:
    array = make()
    assert bytes(memoryview(array)) == array.tobytes()  # C order, the buffer's bytes
    assert rf.crc32c(array) == rf.crc32c(array.tobytes())


def test_a_fortran_ordered_uint8_record_is_written_as_its_bytes(tmp_path: Path) -> None:
    array = np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    path = tmp_path / "f.tfrecord"
    with rf.TFRecordWriter(str(path)) as w:
        w.write(array)
        w.write_many([array])
    assert list(rf.read_records(str(path))) == [array.tobytes()] * 2


@pytest.mark.parametrize(
    "value", [np.int8(7), np.uint8(7), np.array(7, np.int8), np.array(300, np.int16)],
    ids=["int8", "uint8-scalar", "0d-int8", "0d-int16"],
)  # fmt: skip
def test_crc32c_of_a_numpy_integer_scalar_is_that_of_its_bytes(value: Any) -> None:
    assert rf.crc32c(value) == rf.crc32c(value.tobytes())


def test_crc32c_combine_at_every_cut_and_its_edges() -> None:
    rng = np.random.default_rng(5)
    data = rng.bytes(3000)
    whole = rf.crc32c(data)
    for cut in list(range(0, 40)) + list(range(2960, 3001)) + [1024, 1500]:
        a, b = data[:cut], data[cut:]
        assert _core.crc32c_combine(rf.crc32c(a), rf.crc32c(b), len(b)) == whole, cut
    # Zero-length pieces change nothing, in any place.
    assert _core.crc32c_combine(whole, 0, 0) == whole
    assert _core.crc32c_combine(0, whole, len(data)) == whole
    assert _core.crc32c_combine(0, 0, 0) == 0
    # Many pieces, as a worker combines its views.
    crc, at = 0, 0
    for n in [0, 1, 7, 0, 1000, 3, 1989]:
        crc = _core.crc32c_combine(crc, rf.crc32c(data[at : at + n]), n)
        at += n
    assert at == 3000 and crc == whole
    # Large lengths (a 5 GB shard of zeros: the CRC of zeros, combined).
    z = bytes(1 << 16)
    crc = 0
    for _ in range(16):
        crc = _core.crc32c_combine(crc, rf.crc32c(z), len(z))
    assert crc == rf.crc32c(bytes(1 << 20))
    for bad in [(-1, 0, 0), (1 << 32, 0, 0), (0, 0, -1)]:
        with pytest.raises(OverflowError):
            _core.crc32c_combine(*bad)


def test_crc32c_of_views_of_a_bytearray_then_resized() -> None:
    """A view that pins a bytearray forbids its resize; the CRC is of what it held."""
    buf = bytearray(b"0123456789")
    array = np.frombuffer(buf, np.uint8)
    assert rf.crc32c(array[2:5]) == rf.crc32c(b"234")
    with pytest.raises(BufferError):
        buf.extend(b"x" * 100)
    del array
    buf.extend(b"x")
    assert rf.crc32c(np.frombuffer(buf, np.uint8)) == rf.crc32c(b"0123456789x")


# ---------------------------------------------------------------------------------------
# Record sizes around WRITE_BYTES, CHUNK_BYTES and shard limits

BIG = [0, 1, M - 1, M, M + 1, 3 * M, -1, 9 * M, 1, 20 * M + 3, 5, M - 20, 0]


@pytest.mark.parametrize(
    "opts",
    [
        {"max_bytes": 1},
        {"max_bytes": "2MB", "compression": "gzip"},
        {"num_shards": 3},
        {"max_records": 2, "shuffle": True, "checksum": "sha256"},
        {"max_bytes": "25MB", "index": True},
    ],
    ids=["max_bytes=1", "gzip", "num_shards", "sha256-shuffle", "one-big-shard-ish"],
)
def test_records_around_write_and_chunk_sizes_write_the_same_bytes(
    opts: dict[str, Any], tmp_path: Path
) -> None:
    rows = [(n, i) for i, n in enumerate(BIG)]
    first = across_workers(rows, sized, tmp_path, **opts)
    assert len(first) > 1


@pytest.mark.slow
def test_many_tiny_shards_and_chunks_cut_across_shards(tmp_path: Path) -> None:
    """Hundreds of shards of a few records, chunks of up to 32 items of many records
    (pieces of a chunk in several shards, shards of many pieces)."""
    rows = [(i % 7, i) for i in range(400)]
    for opts in ({"max_bytes": 700}, {"max_records": 3, "shuffle": True, "seed": 9}):
        first = across_workers(rows, many, tmp_path / str(len(opts)), **opts)
        assert len(first) > 100


def test_more_shards_than_records_and_items_without_records(tmp_path: Path) -> None:
    rows = [(-1, 0), (5, 1), (-1, 2), (-1, 3), (0, 4)]
    across_workers(rows, sized, tmp_path / "a", num_shards=6)
    across_workers([(-1, i) for i in range(5)] + [(3, 9)], sized, tmp_path / "b", max_records=1)


def test_one_huge_record_alone_and_then_small_ones_keep_chunks_bounded(tmp_path: Path) -> None:
    """A 12 MB record after many small ones: chunks that grew to 32 items stop at
    CHUNK_BYTES, the rest given to a chunk of their own; same bytes."""
    rows = [(100, i) for i in range(200)] + [(12 * M, 999)] + [(100, i) for i in range(200, 260)]
    across_workers(rows, sized, tmp_path, counts=(1, 2), max_bytes="5MB")


# ---------------------------------------------------------------------------------------
# _pwrite_all


def test_pwrite_all_views_of_every_size_many_views_and_one_byte_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev
    calls: list[tuple[int, int]] = []

    def stingy(fd: int, buffers: list[memoryview], at: int) -> int:
        calls.append((len(buffers), sum(len(b) for b in buffers)))
        # Every other call writes a single byte (a short write), or at most 333 KB.
        first = next(b for b in buffers if len(b))
        if len(calls) % 2:
            return real(fd, [first[:1]], at)
        return real(fd, [b"".join(buffers)[:333_333]], at)

    monkeypatch.setattr(os, "pwritev", stingy)
    rng = np.random.default_rng(1)
    sizes = [1] * 700 + [M - 1, M, M + 1, 0, 2, 3 * M + 7] + [5] * 600 + [M]
    views = [memoryview(rng.bytes(n)) for n in sizes]
    expected = b"".join(bytes(v) for v in views)
    path = tmp_path / "f"
    path.write_bytes(b"#" * 3)
    fd = os.open(path, os.O_WRONLY)
    try:
        _workers._pwrite_all(fd, list(views), 3)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"#" * 3 + expected
    assert max(n for n, _ in calls) <= _workers._IOV
    assert max(b for _, b in calls) <= _workers.WRITE_BYTES


# ---------------------------------------------------------------------------------------
# Real sources: COCO, image folder, tables through the CLI


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    root = SHARED / "tiny_coco"
    if not root.is_dir():
        pytest.skip("no shared data")
    return {
        "annotations": root / "annotations" / "instances_val2017.json",
        "images": root / "val2017",
    }


def test_coco_and_image_folder_same_bytes_and_checksums(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from recordforge.sources.coco import CocoSource
    from recordforge.sources.images import ImageFolderSource
    from recordforge.writer import write_source

    for per, opts in [("image", {"max_bytes": "300kB"}), ("annotation", {"max_records": 17})]:
        outs = []
        for w in (1, 2, 3):
            out = tmp_path / f"coco-{per}-{w}"
            src = CocoSource.from_files(tiny["annotations"], tiny["images"], per=per)
            write_source(src, out, workers=w, **opts)
            check_output(out)
            outs.append(listing(out))
        assert outs[0] == outs[1] == outs[2]
    folder = SHARED / "pypi_bundled"
    images = [p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if images:
        root = tmp_path / "tree"
        for i, p in enumerate(sorted(images)):
            (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            (root / "ab"[i % 2] / p.name).write_bytes(p.read_bytes())
        outs = []
        for w in (1, 2):
            out = tmp_path / f"folder-{w}"
            write_source(ImageFolderSource(str(root)), out, workers=w, max_records=1)
            check_output(out)
            outs.append(listing(out))
        assert outs[0] == outs[1]


def convert_table(
    path: Path, out_root: Path, counts: tuple[int, ...], *extra: str
) -> dict[str, bytes]:
    outs = {}
    for w in counts:
        out = out_root / f"t{w}"
        done = cli("convert", "table", str(path), "--out", str(out), "--workers", str(w), *extra)
        assert done.returncode == 0, done.stderr
        check_output(out)
        outs[w] = listing(out)
    first = outs[counts[0]]
    for w in counts[1:]:
        assert outs[w] == first, w
    return first


def awkward_csv(rows: int, seed: int, long: int = 5000) -> bytes:
    """A CSV with a BOM, CRLF and LF line ends, quoted fields holding commas, quotes,
    CR, LF and CRLF, empty lines, and long fields."""
    rng = np.random.default_rng(seed)
    lines = ["id,text,value"]
    for i in range(rows):
        kind = i % 6
        if kind == 0:
            text = '"a,b ""q"" \r\n x"'
        elif kind == 1:
            text = '"' + "y" * int(rng.integers(0, long)) + '\n"'
        elif kind == 2:
            text = ""
        elif kind == 3:
            text = '"\r"'
        else:
            text = "plain" * int(rng.integers(0, 50))
        end = "\r\n" if i % 3 else "\n"
        lines.append(f"{i},{text},{float(i) / 7}{end}")
        if i % 97 == 0:
            lines.append(end)  # an empty line
    return b"\xef\xbb\xbf" + "\n".join(lines[:1]).encode() + b"\n" + "".join(lines[1:]).encode()


def test_csv_with_every_awkward_row_cut_and_converted_the_same_by_any_workers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "awkward.csv"
    path.write_bytes(awkward_csv(4500, 1))
    assert path.stat().st_size > 2 * M  # rows across the scan's 1 MiB reads
    first = convert_table(
        path, tmp_path, (1, 2, 3), "--part-bytes", "100kB", "--max-bytes", "300kB"
    )
    manifest = json.loads(first["dataset.json"])
    assert sum(s["records"] for s in manifest["splits"]["train"]["shards"]) == 4500
    convert_table(path, tmp_path / "g", (1, 2), "--part-bytes", "64kB", "--compression", "gzip",
                  "--shuffle", "--num-shards", "4")  # fmt: skip


def scan(data: bytes, chunk: int, reader: str = "bytesio") -> list[int]:
    f: Any = io.BytesIO(data)
    if reader == "raw":
        tmp = io.BytesIO(data)

        class Raw:
            def readinto(self, b: memoryview) -> int:
                return tmp.readinto(b[: 1 + len(b) // 3])  # short reads

        f = Raw()
    elif reader == "read":

        class Read:
            def read(self, n: int) -> bytes:
                return io.BytesIO.read(f_, n)

        f_ = io.BytesIO(data)
        f = Read()
    return [int(x) for ends, _ in scan_lines(f, csv=True, chunk=chunk) for x in ends]


@pytest.mark.parametrize("reader", ["bytesio", "raw", "read"])
def test_csv_scan_the_same_for_every_read_boundary(reader: str) -> None:
    """Every chunk boundary of a small awkward file (inside quotes, between CR and LF,
    right after the BOM), read in full, in short reads, or without readinto."""
    data = awkward_csv(60, 3, long=30)[:2500]
    whole = scan(data, 1 << 22)
    assert len(whole) > 10
    for chunk in [*range(3, 40), 97, 128, 1000, 1023, 2048]:
        assert scan(data, chunk, reader) == whole, chunk


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, M - 1, M, M + 1, 2 * M + 3])
def test_csv_scan_of_files_around_the_buffer_size(size: int, tmp_path: Path) -> None:
    """Files of 0..4 bytes (a BOM, part of one), and of 1 MiB +-1: parts cover every
    row once, as pyarrow reads them."""
    if size <= 4:
        data = (b"\xef\xbb\xbfa\n" * 2)[:size]
    else:
        row = b'1,"x\r\ny",2\r\n'
        data = b"a,b,c\r\n" + row * ((size - 7) // len(row) - 1)
        data += b"1,2," + b"9" * (size - len(data) - 4)  # the last row, no line end
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    with open(path, "rb") as f:
        got = [int(x) for ends, _ in scan_lines(f, csv=True) for x in ends]
    assert got == scan(data, 1 << 24)
    if size > 4:
        import pyarrow.csv as pcsv

        rows = pcsv.read_csv(
            path, parse_options=pcsv.ParseOptions(newlines_in_values=True)
        ).num_rows
        with open(path, "rb") as f:
            parts = csv_parts(f, str(path), part_bytes=100_000)
        assert sum(p.rows for p in parts) == rows
        assert parts[0].start == 7 and parts[-1].stop == size
        assert all(a.stop == b.start for a, b in itertools.pairwise(parts))


def test_csv_fifo_is_refused_not_hung(tmp_path: Path) -> None:
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf 'a,b\\n1,2\\n' > {fifo}"])
    try:
        done = cli("convert", "table", str(fifo), "--out", str(tmp_path / "o"), "--workers", "2",
                   timeout=30)  # fmt: skip
    finally:
        writer.kill()
        writer.wait()
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_gzip_csv_jsonl_and_parquet_tables_the_same_by_any_workers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    taxi = SHARED / "tfx_chicago_taxi" / "data.csv"
    if not taxi.is_file():
        pytest.skip("no shared data")
    convert_table(
        taxi, tmp_path / "taxi", (1, 2, 3), "--part-bytes", "200kB", "--max-bytes", "700kB"
    )
    gz = tmp_path / "taxi.csv.gz"
    gz.write_bytes(gzip.compress(taxi.read_bytes()))
    convert_table(gz, tmp_path / "gz", (1, 2), "--max-records", "1000")
    table = pa.csv.read_csv(taxi)
    pq.write_table(table, tmp_path / "taxi.parquet", row_group_size=1000)
    convert_table(tmp_path / "taxi.parquet", tmp_path / "pq", (1, 3), "--max-bytes", "500kB")
    jl = tmp_path / "taxi.jsonl"
    with open(jl, "w") as f:
        for row in table.slice(0, 4000).to_pylist():
            f.write(json.dumps(row) + "\n")
    convert_table(jl, tmp_path / "jl", (1, 2), "--part-bytes", "100kB", "--checksum", "sha256")


# ---------------------------------------------------------------------------------------
# A shard file changed by another program between its writes and its finish


def tampered(how: str) -> Any:
    """The parent's finish of a crc32c shard (``_parallel.finish_shard``), tampering
    with shard 1 first."""
    real = _workers.finish_shard

    def finish(path: str, checksum: str, size: int) -> Any:
        if path.endswith(".partial") and size > 100 and "00001" in path:
            with open(path, "r+b") as f:
                if how == "append":
                    f.seek(0, 2)
                    f.write(b"!")
                elif how == "truncate":
                    f.truncate(size - 1)
                else:  # same size, one byte flipped
                    f.seek(size // 2)
                    byte = f.read(1)
                    f.seek(size // 2)
                    f.write(bytes([byte[0] ^ 0xFF]))
        return real(path, checksum, size)

    return finish


@pytest.mark.parametrize("how", ["append", "truncate"])
def test_a_shard_resized_before_its_finish_fails_naming_it(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel, "finish_shard", tampered(how))
    rows = [(2000, i) for i in range(40)]
    with pytest.raises(rf.RecordforgeError, match=r"00001.*shard file holds"):
        rf.write_dataset(rows, tmp_path / "o", to_records=sized, workers=2, max_records=10)


def test_a_shard_changed_in_place_before_its_finish_is_flagged_by_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum is of what the workers wrote, not of the file: a byte changed by
    someone else is not taken into the manifest, and verify says so."""
    monkeypatch.setattr(_parallel, "finish_shard", tampered("flip"))
    rows = [(2000, i) for i in range(40)]
    out = tmp_path / "o"
    # Without a schema given, the inference reads the records back and fails on the
    # damage (CorruptRecordError naming the shard); with one, verify must flag it.
    with pytest.raises(rf.CorruptRecordError, match="00001"):
        rf.write_dataset(rows, tmp_path / "inferred", to_records=sized, workers=2, max_records=10)
    schema = rf.infer_schema([rf.decode_example(rf.encode_example({"x": b"ab"}))])
    rf.write_dataset(rows, out, to_records=sized, workers=2, max_records=10, schema=schema)
    for fast in (False, True):
        result = verify(out, fast=fast)
        assert not result.ok
        assert any(p.kind == "manifest" and "checksum" in p.message for p in result.problems)


# ---------------------------------------------------------------------------------------
# Crashes: killed at every stage kind (crc32c, uncompressed: the combined checksums),
# rerun with another number of workers

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import recordforge as rf
    sys.path.insert(0, sys.argv[3])
    from test_adversarial_session21 import sized
    SIZES = [5, 3 << 20, 0, 1 << 20, 77, (1 << 20) + 1, 9, 100_000, 9 << 20, 1, 2, 3]
    rows = [(SIZES[i % len(SIZES)], i) for i in range(30)]
    import os, signal
    from recordforge import _workers
    kill_place = int(os.environ.get("ADV_KILL_PLACE", "0"))
    if kill_place:
        real, calls = _workers._place, [0]
        def place(*args, **kwargs):
            result = real(*args, **kwargs)  # written, the answer never sent
            calls[0] += 1
            if calls[0] == kill_place:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        _workers._TASKS["place"] = place
    rf.write_dataset(rows, sys.argv[1], to_records=sized, workers=int(sys.argv[2]),
                     max_bytes="4MB", index=True)
    """
)


def run_crash(
    script: Path, out: Path, workers: int, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(out), str(workers), str(Path(__file__).parent)],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_killed_parent_or_worker_then_rerun_with_other_workers(tmp_path: Path) -> None:
    script = tmp_path / "convert.py"
    script.write_text(CRASH_SCRIPT)
    ref = run_crash(script, tmp_path / "ref", 1)
    assert ref.returncode == 0, ref.stderr
    check_output(tmp_path / "ref")
    reference = listing(tmp_path / "ref")
    log = tmp_path / "stages"
    done = run_crash(script, tmp_path / "logged", 2, RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    assert listing(tmp_path / "logged") == reference
    count = len(log.read_text().splitlines())
    for n in sorted({2, count // 3, count // 2, 2 * count // 3, count - 1}):
        out = tmp_path / f"kill-{n}"
        killed = run_crash(script, out, 2, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        again = run_crash(script, out, 3 if n % 2 else 1)
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == reference, n
    for name, env, then in [
        ("worker", {"RECORDFORGE_KILL_WORKER_AT": "17"}, 2),
        ("placed", {"ADV_KILL_PLACE": "3"}, 1),  # a worker dies after its pieces' writes
    ]:
        out = tmp_path / name
        killed = run_crash(script, out, 3, **env)
        assert killed.returncode == 1 and "a worker process died" in killed.stderr, killed.stderr
        assert "Traceback" not in killed.stderr.split("RecordforgeError")[-1]
        again = run_crash(script, out, then)
        assert again.returncode == 0, again.stderr
        assert listing(out) == reference, name


# ---------------------------------------------------------------------------------------
# Memory


def test_large_records_on_two_workers_keep_bounded_memory(tmp_path: Path) -> None:
    """24 records of 16 MB (384 MB) on 2 workers: each worker's peak RSS stays far below
    the data (held chunks of one record each, three at most; ~135 MB measured, the
    parent's pages shared since the fork included)."""
    code = textwrap.dedent(
        """
        import resource, sys
        import recordforge as rf
        sys.path.insert(0, sys.argv[2])
        from test_adversarial_session21 import sized
        rows = [(16 << 20, i) for i in range(24)]
        rf.write_dataset(rows, sys.argv[1], to_records=sized, workers=2, max_bytes="64MB")
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o"), str(Path(__file__).parent)],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 220, peak_mb
    manifest = json.loads((tmp_path / "o" / "dataset.json").read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        data = (tmp_path / "o" / shard["file"]).read_bytes()
        assert shard["checksum"] == f"crc32c:{rf.crc32c(data):08x}"


def test_generator_input_and_spawned_workers_write_the_same_bytes(tmp_path: Path) -> None:
    """Items not in a sequence (sent to the workers, not forked with them), and spawned
    workers (they import the conversion afresh): the combined checksums are the same."""
    rows = [(BIG[i % len(BIG)] if i % 4 == 0 else 300, i) for i in range(26)]
    outs = []
    for w in (1, 2, 3):
        out = tmp_path / f"g{w}"
        rf.write_dataset((r for r in rows), out, to_records=sized, workers=w, max_bytes="3MB")
        check_output(out)
        outs.append(listing(out))
    assert outs[0] == outs[1] == outs[2]
    code = textwrap.dedent(
        """
        import sys
        import recordforge as rf
        sys.path.insert(0, sys.argv[2])
        from test_adversarial_session21 import sized, BIG
        rows = [(BIG[i % len(BIG)] if i % 4 == 0 else 300, i) for i in range(26)]
        rf.write_dataset(rows, sys.argv[1], to_records=sized, workers=2, max_bytes="3MB")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spawned"), str(Path(__file__).parent)],
        env=clean_env(RECORDFORGE_START_METHOD="spawn"), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert listing(tmp_path / "spawned") == outs[0]


FLAKY: dict[str, Any] = {"flag": None}


def flaky(item: tuple[int, int]) -> list[bytes]:
    """``sized``, except that item 17 raises (not an ItemError) while the flag file is."""
    flag = FLAKY["flag"]
    if item[1] == 17 and flag is not None and os.path.exists(flag):
        raise RuntimeError("item 17 is not ready")
    return sized(item)


@pytest.mark.parametrize("first, second", [(2, 3), (3, 1), (2, 2)])
def test_an_exception_mid_conversion_then_a_rerun_with_other_workers(
    first: int, second: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "flag"
    monkeypatch.setitem(FLAKY, "flag", str(flag))
    rows = [(BIG[i % len(BIG)] // 4 if i % 3 == 0 else 1000, i) for i in range(40)]
    rf.write_dataset(rows, tmp_path / "ref", to_records=flaky, workers=1, max_bytes="2MB")
    reference = listing(tmp_path / "ref")
    flag.touch()
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="item 17"):
        rf.write_dataset(rows, out, to_records=flaky, workers=first, max_bytes="2MB")
    assert any(n.endswith(".shard") for n in os.listdir(out))  # shards before it kept
    flag.unlink()
    rf.write_dataset(rows, out, to_records=flaky, workers=second, max_bytes="2MB")
    assert listing(out) == reference
    check_output(out)


def test_pwrite_all_skips_empty_views_and_refuses_a_write_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty views anywhere (the last one included) are written as nothing, not waited
    on forever; a pwritev that writes nothing is an OSError (named by the caller)."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_WRONLY)
    try:
        views = [
            memoryview(b""),
            memoryview(b"ab"),
            memoryview(b""),
            memoryview(b"c"),
            memoryview(b""),
        ]
        _workers._pwrite_all(fd, views, 0)
        _workers._pwrite_all(fd, [memoryview(b"")], 3)
        monkeypatch.setattr(os, "pwritev", lambda fd, buffers, at: 0)
        with pytest.raises(OSError, match="wrote nothing at byte 3"):
            _workers._pwrite_all(fd, [memoryview(b"d")], 3)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"abc"


def test_csv_scan_of_a_stream_whose_read_gives_none_ends_there() -> None:
    """A non-blocking stream's read() gives None when nothing is ready: the scan ends
    there, as it did before the scan read into one buffer."""

    class Stream:
        def __init__(self) -> None:
            self.chunks = [b"a,b\n1,2\n", b"3,4\n", None]

        def read(self, n: int = -1) -> bytes | None:
            return self.chunks.pop(0) if self.chunks else b""

    ends = [int(x) for e, _ in scan_lines(Stream(), csv=True, chunk=64) for x in e]  # type: ignore[arg-type]
    assert ends == [4, 8, 12]

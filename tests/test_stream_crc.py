"""A shard's CRC32C from its records' own CRCs (``RecordWriter::with_stream_crc``,
``_core.frames_crc32c``): an uncompressed file's checksum carries each record's data CRC,
computed for its frame, into the running CRC instead of reading the data a second time.
The oracle is google-crc32c over the file's bytes; a conversion killed at every stage and
rerun gives an uninterrupted run's bytes, its manifest included."""

from __future__ import annotations

import io
import json
import random
import signal
import textwrap
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest
from helpers import run_script

import recordforge as rf
from recordforge import _core

# Around the size from which a record's CRC is carried in (16 KiB), and across the
# writer's 1 MiB buffer.
SIZES = [0, 1, 11, 16383, 16384, 16385, 70_000, (1 << 20) - 5, (1 << 20) + 17, 3]


def crc_of(path: Path) -> str:
    return f"crc32c:{google_crc32c.value(path.read_bytes()):08x}"


def records(seed: int, sizes: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


@pytest.mark.parametrize("compression", [None, "gzip", "zlib"])
def test_writer_checksum_is_the_crc_of_the_file_for_every_way_of_writing(
    tmp_path: Path, compression: str | None
) -> None:
    data = records(1, SIZES)
    batch = rf.encode_record_batch({"x": np.arange(40, dtype=np.int64)})
    path = tmp_path / "f.tfrecord"
    with rf.TFRecordWriter(str(path), compression, checksum="crc32c") as w:
        for r in data[:4]:
            w.write(r)
        w.write(bytearray(data[4]))  # not bytes: read through the buffer protocol
        w.write_many(data[5:])
        w.write_batch(batch, 3, 30)
        w.write_framed(_core.frame_records(data[:6]))
        w.write(np.frombuffer(data[6], np.uint8))
    assert w.checksum == crc_of(path)
    read = list(rf.read_records(str(path)))
    assert read[: len(SIZES)] == data and len(read) == len(SIZES) + 27 + 7


def test_an_empty_file_and_a_file_object(tmp_path: Path) -> None:
    path = tmp_path / "empty.tfrecord"
    with rf.TFRecordWriter(str(path), checksum="crc32c") as w:
        pass
    assert w.checksum == "crc32c:00000000" == crc_of(path)
    other = tmp_path / "object.tfrecord"
    with open(other, "wb") as f, rf.TFRecordWriter(f, checksum="crc32c") as w:
        w.write_many(records(2, SIZES))
    assert w.checksum == crc_of(other)


def test_frames_whose_data_crc_is_wrong_are_hashed_by_write_framed(tmp_path: Path) -> None:
    """``write_framed`` takes frames from anywhere (their data CRCs are not checked), so
    the checksum reads their bytes: it is the file's even where a stored CRC lies. Only
    frames recordforge made go through ``frames_crc32c``, which trusts them."""
    framed = bytearray(_core.frame_records(records(3, [40_000, 20])))
    framed[12 + 40_000] ^= 0xFF  # the big record's stored data CRC, wrong
    path = tmp_path / "f.tfrecord"
    with rf.TFRecordWriter(str(path), checksum="crc32c") as w:
        w.write_framed(bytes(framed))
    assert w.checksum == crc_of(path)
    assert _core.frames_crc32c(bytes(framed)) != _core.crc32c(bytes(framed))


def test_frames_crc32c_equals_the_crc_of_the_bytes_and_chains() -> None:
    rng = random.Random(4)
    for _ in range(40):
        sizes = [rng.choice([0, 1, 100, 16383, 16384, 50_000]) for _ in range(rng.randint(0, 9))]
        framed = _core.frame_records(records(rng.randrange(1 << 30), sizes))
        assert _core.frames_crc32c(framed) == _core.crc32c(framed)
        assert _core.frames_crc32c(np.frombuffer(framed, np.uint8)) == _core.crc32c(framed)
        assert _core.frames_crc32c(memoryview(framed)) == _core.crc32c(framed)
        cut = sum(n + 16 for n in sizes[: len(sizes) // 2])
        first = _core.frames_crc32c(framed[:cut])
        assert _core.frames_crc32c(framed[cut:], first) == _core.crc32c(framed)
        crc = _core.crc32c(b"before")
        assert _core.frames_crc32c(framed, crc) == _core.crc32c(b"before" + framed)


@pytest.mark.parametrize(
    "damage",
    ["cut in the data", "cut in the header", "length CRC wrong", "length past the end", "extra"],
)
def test_frames_crc32c_refuses_what_is_not_whole_frames(damage: str) -> None:
    framed = bytearray(_core.frame_records(records(5, [30_000, 10])))
    if damage == "cut in the data":
        framed = framed[:-20]
    elif damage == "cut in the header":
        framed = framed[: 30_016 + 5]
    elif damage == "length CRC wrong":
        framed[30_016 + 8] ^= 1
    elif damage == "length past the end":
        framed[0:8] = (1 << 62).to_bytes(8, "little")
        framed[8:12] = _core.masked_crc32c(bytes(framed[0:8])).to_bytes(4, "little")
    else:
        framed += b"\x00"
    with pytest.raises(ValueError, match="not whole TFRecord frames"):
        _core.frames_crc32c(bytes(framed))


# A conversion of records around and above 16 KiB (their CRCs carried in), uncompressed,
# shards of 4 records, with `workers` from argv; stopped at stage RECORDFORGE_KILL_AT.
SCRIPT = textwrap.dedent(
    """
    import random, sys
    import recordforge as rf

    rng = random.Random(7)
    rows = [{"id": i, "blob": rng.randbytes(rng.choice([100, 16384, 20000, 90000]))}
            for i in range(26)]
    rf.write_dataset(rows, sys.argv[1], max_records=4, index=True, workers=int(sys.argv[2]))
    """
)


_run = run_script


def _listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.slow
def test_killed_at_every_stage_then_rerun_gives_the_same_bytes_and_true_checksums(
    tmp_path: Path,
) -> None:
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    reference: dict[str, bytes] = {}
    for workers in (1, 2):
        out = tmp_path / f"reference-{workers}"
        log = tmp_path / f"stages-{workers}"
        done = _run(script, out, workers, RECORDFORGE_STAGE_LOG=str(log))
        assert done.returncode == 0, done.stderr
        got = _listing(out)
        assert not reference or got == reference, "the same bytes for 1 and 2 workers"
        reference = got
        manifest = json.loads(got["dataset.json"])
        shards = manifest["splits"]["train"]["shards"]
        assert len(shards) == 7
        for shard in shards:
            assert shard["checksum"] == crc_of(out / shard["file"]), shard
        names = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
        assert names.count("shard closed") == 7
        # Each kind of stage where it is first reached, the second shard's close and
        # its journal line, and the last five (the manifest, the lock, the journal); with
        # 2 workers every eleventh. Each run is resumed with the other worker count.
        firsts = {names.index(name) + 1 for name in names}
        second = names.index("shard closed", names.index("shard closed") + 1) + 1
        chosen = firsts | {second, second + 4} | set(range(len(names) - 4, len(names) + 1))
        if workers == 2:
            chosen = set(range(2, len(names) + 1, 11))
        for n in sorted(chosen):
            killed_dir = tmp_path / f"kill-{workers}-{n}"
            killed = _run(script, killed_dir, workers, RECORDFORGE_KILL_AT=str(n))
            assert killed.returncode == -signal.SIGKILL, (workers, n, killed.stderr)
            resumed = _run(script, killed_dir, 3 - workers)
            assert resumed.returncode == 0, (workers, n, resumed.stderr)
            assert _listing(killed_dir) == reference, (workers, n)


@pytest.mark.parametrize("checksum", ["crc32c", None])
@pytest.mark.parametrize("n", [1000, 20_000, 3 << 20])
@pytest.mark.parametrize("prefill", [0, (1 << 20) - 100])
def test_a_record_changed_by_the_file_objects_write_is_framed_and_hashed_as_written(
    checksum: str | None, n: int, prefill: int
) -> None:
    """A NumPy record is read in place, and a Python file object's ``write`` runs
    Python code while the writer flushes (another thread could too, the GIL let go):
    the record's CRC is taken once its bytes are copied, and a file object's checksum
    hashes the bytes written (helper-48: with the CRC taken before the write, the
    record was corrupt and the checksum wrong)."""
    record = np.full(n, 1, np.uint8)
    calls = []

    class Changing(io.BytesIO):
        def write(self, b: Any) -> int:
            calls.append(len(b))
            if len(calls) == 1:
                record[:] = 2
            return super().write(b)

    f = Changing()
    w = rf.TFRecordWriter(f, checksum=checksum)
    if prefill:
        w.write(b"p" * prefill)
    w.write(record)
    w.close()
    data = f.getvalue()
    if checksum:
        assert w.checksum == f"crc32c:{google_crc32c.value(data):08x}"
    read = list(rf.read_records(io.BytesIO(data)))  # every CRC checked
    assert set(read[-1]) in ({1}, {2}) and len(read[-1]) == n  # as copied, whole


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "make", [bytearray, lambda b: np.frombuffer(b, np.uint16), lambda b: memoryview(b).cast("H")]
)
def test_records_that_are_not_bytes_are_refused_alike_by_any_number_of_workers(
    tmp_path: Path, workers: int, make: Any
) -> None:
    """helper-48: with 2 workers a record given as a buffer of wider elements was framed
    by its ``len`` in elements (corrupt shards, or a failure naming internal frames), a
    bytearray was taken; one worker refused both without naming the item."""

    def to_records(i: int) -> list[Any]:
        record = rf.encode_example({"i": i, "pad": b"x" * (20_000 + i % 2)})
        return [record if i != 4 else make(record[: len(record) // 2 * 2])]

    with pytest.raises(TypeError, match=r"item 4: record 0 is a \w+, not bytes"):
        rf.write_dataset(list(range(9)), tmp_path / "out", to_records=to_records, workers=workers)

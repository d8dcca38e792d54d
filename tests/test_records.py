"""Framing, compression and error reporting of TFRecordWriter / read_records."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf

RECORDS = [b"", b"a", b"hello world", bytes(range(256)) * 40, b"\x00" * 7]
COMPRESSIONS = [None, "gzip", "zlib"]


def write_file(path: Path, records: list[bytes], compression: str | None = None) -> list[int]:
    with rf.TFRecordWriter(path, compression=compression) as w:
        return [w.write(r) for r in records]


def read_all(source: object, **kwargs: object) -> list[bytes]:
    return list(rf.read_records(source, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_roundtrip_path_and_file_objects(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "data.tfrecord"
    offsets = write_file(path, RECORDS, compression)
    expected_offsets = [0]
    for r in RECORDS[:-1]:
        expected_offsets.append(expected_offsets[-1] + len(r) + 16)
    assert offsets == expected_offsets
    assert read_all(path) == RECORDS
    assert read_all(str(path), compression=compression) == RECORDS
    with open(path, "rb") as f:
        assert read_all(f) == RECORDS
    buf = io.BytesIO()
    with rf.TFRecordWriter(buf, compression=compression) as w:
        assert w.write_many(RECORDS) == expected_offsets
    assert buf.getvalue() == path.read_bytes()
    assert not buf.closed, "a file object passed in is not closed by the writer"


def test_every_compression_of_the_table_is_detected(tmp_path: Path) -> None:
    # The Rust core detects each compression under the name the table gives it.
    assert list(rf.records.COMPRESSION_SUFFIXES) == COMPRESSIONS
    for compression, suffix in rf.records.COMPRESSION_SUFFIXES.items():
        path = tmp_path / f"data.tfrecord{suffix}"
        write_file(path, RECORDS, compression)
        assert rf.records.detect_compression(path) == compression
        assert path.name.endswith(rf.records.RECORD_SUFFIXES)
    assert rf.records.compression_of(b"") is None


def test_compressed_layers_are_plain_gzip_and_zlib(tmp_path: Path) -> None:
    plain, gz, zl = (tmp_path / n for n in ("p", "g", "z"))
    write_file(plain, RECORDS)
    write_file(gz, RECORDS, "gzip")
    write_file(zl, RECORDS, "zlib")
    assert gzip.decompress(gz.read_bytes()) == plain.read_bytes()
    assert zlib.decompress(zl.read_bytes()) == plain.read_bytes()
    # Byte-identical to zlib with TensorFlow's parameters (level 6, window 15, memLevel 9).
    for path, wbits in ((zl, 15), (gz, 31)):
        deflate = zlib.compressobj(6, zlib.DEFLATED, wbits, 9)
        assert path.read_bytes() == deflate.compress(plain.read_bytes()) + deflate.flush()


def test_reader_offsets_and_verify_flag(tmp_path: Path) -> None:
    path = tmp_path / "d.tfrecord"
    offsets = write_file(path, RECORDS)
    it = rf.read_records(path)
    seen = []
    for _ in it:
        seen.append(it.offset)
    assert seen == offsets
    data = bytearray(path.read_bytes())
    data[offsets[2] + 12] ^= 0xFF  # first payload byte of record 2
    path.write_bytes(bytes(data))
    with pytest.raises(rf.CorruptRecordError):
        read_all(path)
    # verify=False skips the CRCs explicitly and returns the damaged payload as it is.
    damaged = read_all(path, verify=False)
    assert damaged[2] != RECORDS[2] and damaged[3:] == RECORDS[3:]


def test_every_single_byte_flip_is_detected_with_its_offset(tmp_path: Path) -> None:
    records = [b"foo", b"0123456789" * 3, b""]
    path = tmp_path / "small.tfrecord"
    offsets = write_file(path, records)
    original = path.read_bytes()
    ends = [*offsets[1:], len(original)]
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0x5A
        record = next(k for k, end in enumerate(ends) if i < end)
        for source in (io.BytesIO(bytes(damaged)), _write(tmp_path / f"f{i}", damaged)):
            with pytest.raises(rf.CorruptRecordError) as info:
                read_all(source)
            assert info.value.offset == offsets[record], (i, info.value)
            assert "CRC mismatch" in info.value.reason or "truncated" in info.value.reason


def _write(path: Path, data: bytes | bytearray) -> Path:
    path.write_bytes(bytes(data))
    return path


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    records = [b"foo", b"bar" * 10]
    path = tmp_path / "t.tfrecord"
    offsets = write_file(path, records)
    original = path.read_bytes()
    boundaries = {*offsets, len(original)}
    for cut in range(len(original)):
        data = original[:cut]
        if cut in boundaries:
            assert read_all(io.BytesIO(data)) == records[: offsets.index(cut) if cut else 0]
            continue
        record = max(k for k, o in enumerate(offsets) if o <= cut)
        with pytest.raises(rf.CorruptRecordError, match="truncated record") as info:
            read_all(_write(tmp_path / "cut", data))
        assert info.value.offset == offsets[record]
        size = len(records[record]) + 16 if cut - offsets[record] >= 12 else 12
        assert info.value.reason == (
            f"truncated record: expected {size} bytes, file ends after {cut - offsets[record]}"
        )


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_truncated_compressed_stream_is_never_a_clean_end(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "c.tfrecord"
    write_file(path, [b"x" * 100, b"y" * 50], compression)
    original = path.read_bytes()
    for cut in range(len(original)):
        with pytest.raises(rf.CorruptRecordError):
            read_all(io.BytesIO(original[:cut]), compression=compression)


def test_error_message_names_file_offset_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "named.tfrecord"
    write_file(path, [b"abc"])
    data = path.read_bytes()
    _write(path, data[:-1])
    with pytest.raises(rf.CorruptRecordError) as info:
        read_all(path)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, rf.RecordforgeError)
    assert err.path == str(path) and err.offset == 0
    assert str(err) == (
        f"{path}: corrupt record at byte offset 0: "
        "truncated record: expected 19 bytes, file ends after 18"
    )


def test_detection_prefers_a_valid_tfrecord_header(tmp_path: Path) -> None:
    # A 0x1f8b-looking length would fool a magic-bytes check; the length CRC decides.
    record = b"\x00" * 0x8B1F
    path = tmp_path / "tricky.tfrecord"
    write_file(path, [record])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert read_all(path) == [record]


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.tfrecord", b"")
    assert read_all(path) == []
    assert read_all(io.BytesIO(b"")) == []


def test_writer_state_and_errors(tmp_path: Path) -> None:
    w = rf.TFRecordWriter(tmp_path / "w.tfrecord", compression="gzip")
    assert w.compression == "gzip" and not w.closed and w.offset == 0
    w.write(bytearray(b"abc"))
    w.write(memoryview(b"defg"))
    assert w.offset == 19 + 20
    w.close()
    w.close()  # closing twice is harmless
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.write(b"x")
    assert read_all(tmp_path / "w.tfrecord") == [b"abc", b"defg"]
    with pytest.raises(ValueError, match="unknown compression"):
        rf.TFRecordWriter(tmp_path / "x", compression="lz4")
    with pytest.raises(FileNotFoundError):
        rf.TFRecordWriter(tmp_path / "missing-dir" / "x")
    with pytest.raises(FileNotFoundError):
        rf.read_records(tmp_path / "missing.tfrecord")
    with pytest.raises(ValueError, match="expected a path or a file object"):
        rf.read_records(42)  # type: ignore[arg-type]


def test_exception_inside_with_block_still_closes_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "partial.tfrecord.gz"
    with pytest.raises(RuntimeError), rf.TFRecordWriter(path, compression="gzip") as w:
        w.write(b"kept")
        raise RuntimeError("boom")
    assert read_all(path) == [b"kept"]


def test_errors_from_a_file_object_propagate() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        read_all(Broken())


def test_large_record_streams_through_file_objects(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    buf = io.BytesIO()
    with rf.TFRecordWriter(buf, compression="zlib") as w:
        w.write(big)
    assert read_all(io.BytesIO(buf.getvalue())) == [big]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_write_framed_is_write_many(tmp_path: Path, compression: str | None) -> None:
    from recordforge._core import frame_records

    framed = frame_records(RECORDS)
    assert framed == write_bytes(tmp_path / "plain", RECORDS)
    batch = rf.encode_record_batch({"id": np.arange(5), "text": [b"x" * i for i in range(5)]})
    assert batch.framed() == frame_records(list(batch))
    assert batch.framed(1, 3) == frame_records([batch[1], batch[2]])
    with pytest.raises(IndexError):
        batch.framed(2, 6)
    with rf.TFRecordWriter(tmp_path / "many", compression) as w:
        expected = w.write_many([b"first", *RECORDS])
    with rf.TFRecordWriter(tmp_path / "framed", compression) as w:
        offsets = [w.write(b"first"), *w.write_framed(framed[:33]).tolist()]
        offsets += w.write_framed(memoryview(framed)[33:]).tolist()
        assert w.write_framed(b"").tolist() == []
        # Not whole frames: refused, and nothing written.
        for bad in (framed[:-1], framed[:25], framed[1:], framed[:12], b"\x00" * 12):
            with pytest.raises(ValueError, match="not whole TFRecord frames"):
                w.write_framed(bad)
    assert offsets == expected
    assert (tmp_path / "framed").read_bytes() == (tmp_path / "many").read_bytes()


def write_bytes(path: Path, records: list[bytes]) -> bytes:
    write_file(path, records)
    return path.read_bytes()


@pytest.mark.parametrize("checksum", [None, "crc32c", "sha256"])
def test_writes_reach_the_file_a_megabyte_a_call_at_most(checksum: str | None) -> None:
    """Framed batches, records and flushes of any size reach the file in calls of at most
    1 MiB, checksum or not (a write of MBs takes page-cache folios as large: memory a
    VM's host may back anew), and the file holds every record."""
    from recordforge._core import frame_records

    class Spy(io.RawIOBase):
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.data = io.BytesIO()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.sizes.append(len(b))
            return self.data.write(b)

    spy = Spy()
    records = [b"x" * (3 << 20), b"", b"y" * ((1 << 20) + 1), b"z" * 7]
    with rf.TFRecordWriter(spy, checksum=checksum) as w:
        w.write_framed(frame_records(records[:2]))
        w.write(records[2])
        w.write_many(records[3:])
    assert max(spy.sizes) == 1 << 20
    assert list(rf.read_records(io.BytesIO(spy.data.getvalue()))) == records

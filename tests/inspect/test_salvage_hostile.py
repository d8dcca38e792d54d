"""Salvage (and the walk that count, verify and ``on_corrupt="skip"`` share) on damage
that used to lose intact records (issue 13): a GZIP stream broken in the middle, a torn
write, a valid-looking header that claims 2^40 bytes.

After any damaged record the walk resynchronises at the next offset holding a whole
record whose length CRC and data CRC both check — every offset, those inside the damaged
record's claimed length too — and a compressed stream keeps every record decompressed
before it breaks off.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import load_fuzz_target

import recordforge as rf
from recordforge.cli.__main__ import main as cli


def header(length: int) -> bytes:
    h = length.to_bytes(8, "little")
    return h + rf.masked_crc32c(h).to_bytes(4, "little")


def frame(data: bytes) -> bytes:
    return header(len(data)) + data + rf.masked_crc32c(data).to_bytes(4, "little")


def whole_records(stream: bytes) -> list[bytes]:
    """The records of a plain stream, in order, up to the first damaged one."""
    out, pos = [], 0
    while pos + 16 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 8], "little")
        end = pos + 16 + length
        if header(length) != stream[pos : pos + 12] or end > len(stream):
            break
        data = stream[pos + 12 : end - 4]
        if rf.masked_crc32c(data) != int.from_bytes(stream[end - 4 : end], "little"):
            break
        out.append(data)
        pos = end
    return out


def is_subsequence(part: list[bytes], whole: list[bytes]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


# --------------------------------------------------------------------------------------
# A GZIP shard with one byte flipped in the middle


@pytest.fixture(scope="module")
def broken_gzip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], int]:
    """A GZIP shard (under 1 MiB compressed) of 10,000 Examples with one byte flipped in
    the middle where zlib stops with an error; its records, and how many of them are
    whole and CRC-valid in what zlib decodes before the error (fed one byte at a time)."""
    rng = np.random.default_rng(13)
    records = [
        rf.encode_example({"id": i, "x": rng.random(16).astype(np.float32)}) for i in range(10_000)
    ]
    d = tmp_path_factory.mktemp("gz")
    good = d / "good.tfrecord.gz"
    with rf.TFRecordWriter(good, compression="gzip") as w:
        w.write_many(records)
    data = good.read_bytes()
    assert len(data) < 1 << 20  # the old salvage lost its first 1 MiB chunk's output
    for at in range(len(data) // 2, len(data)):
        bad = bytearray(data)
        bad[at] ^= 0xFF
        prefix, failed = _inflate_bytewise(bytes(bad))
        if failed:
            break
    path = d / "broken.tfrecord.gz"
    path.write_bytes(bytes(bad))
    return path, records, len(whole_records(prefix))


def _inflate_bytewise(data: bytes) -> tuple[bytes, bool]:
    d = zlib.decompressobj(31)
    out = []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i : i + 1]))
        except zlib.error:
            return b"".join(out), True
    return b"".join(out), False


def test_salvage_keeps_every_record_before_a_break_in_gzip(
    broken_gzip: tuple[Path, list[bytes], int], tmp_path: Path
) -> None:
    path, records, before = broken_gzip
    assert 4000 < before < 6000
    result = rf.inspect.salvage(path, tmp_path / "out.gz")
    kept = list(rf.read_records(tmp_path / "out.gz"))
    assert kept[:before] == records[:before]
    assert result.records == len(kept) >= before
    assert is_subsequence(kept, records)
    assert result.compression == "gzip"
    assert result.lost[-1].end is None and "cannot be decompressed" in result.lost[-1].reason
    # count and verify see the same records before the break, and say where it is.
    counted = rf.inspect.count(path, scan=True)
    verified = rf.inspect.verify(path)
    assert counted.records == verified.records >= before
    assert verified.problems[-1].kind == "compression"
    assert verified.problems[-1].offset == counted.problems[-1].offset


# --------------------------------------------------------------------------------------
# Plain files: a torn write, and a 2^40 length whose CRC checks

RECORDS = [rf.encode_example({"id": i, "pad": [b"p" * (150 + i)]}) for i in range(10)]


def torn(path: Path) -> Path:
    """Records 0-9, but record 3 was torn after 50 bytes of its payload and record 4
    written whole right after: record 4 starts inside record 3's claimed length."""
    framed = [frame(r) for r in RECORDS]
    data = b"".join(framed[:3]) + framed[3][:62] + b"".join(framed[4:])
    assert 62 < len(framed[3]) < 62 + len(framed[4])
    path.write_bytes(data)
    return path


def huge(path: Path, length: int = 1 << 40) -> Path:
    """Record 0, then a header claiming ``length`` bytes (its CRC intact) and 100 bytes
    of garbage, then records 1-9."""
    garbage = np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes()
    path.write_bytes(
        frame(RECORDS[0]) + header(length) + garbage + b"".join(frame(r) for r in RECORDS[1:])
    )
    return path


def test_a_torn_write_loses_only_the_torn_record(tmp_path: Path) -> None:
    path = torn(tmp_path / "torn.tfrecord")
    start = sum(len(r) + 16 for r in RECORDS[:3])
    result = rf.inspect.salvage(path, tmp_path / "out.tfrecord")
    assert list(rf.read_records(tmp_path / "out.tfrecord")) == RECORDS[:3] + RECORDS[4:]
    assert [(r.start, r.end, r.records) for r in result.lost] == [(start, start + 62, 0)]
    assert "an intact record starts inside it" in result.lost[0].reason
    # The same walk counts, verifies and skips.
    assert rf.inspect.count(path, scan=True).records == 9
    verified = rf.inspect.verify(path)
    assert verified.records == 9 and [p.offset for p in verified.problems] == [start]
    skipping = rf.open_dataset(path, on_corrupt="skip")
    assert [int(r["id"]) for r in skipping] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [(s["start"], s["end"]) for s in skipping.skipped] == [(start, start + 62)]


@pytest.mark.parametrize("length", [1 << 40, 1 << 20])
def test_a_huge_length_with_a_valid_crc_loses_nothing_after_it(tmp_path: Path, length: int) -> None:
    path = huge(tmp_path / "huge.tfrecord", length)
    at = len(RECORDS[0]) + 16
    result = rf.inspect.salvage(path, tmp_path / "out.tfrecord")
    assert list(rf.read_records(tmp_path / "out.tfrecord")) == RECORDS
    assert [(r.start, r.end) for r in result.lost] == [(at, at + 112)]
    why = "more than the limit" if length > rf.records.DEFAULT_MAX_RECORD_BYTES else "truncated"
    assert why in result.lost[0].reason and "next valid record at byte" in result.lost[0].reason
    assert rf.inspect.count(path, scan=True).records == 10
    assert rf.inspect.verify(path).records == 10
    assert len(list(rf.open_dataset(path, on_corrupt="skip"))) == 10


def test_salvage_cli_reports_the_regions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = torn(tmp_path / "torn.tfrecord")
    assert cli(["salvage", str(path), str(tmp_path / "out.tfrecord")]) == 1
    out = capsys.readouterr().out
    assert "wrote 9 intact records" in out and "an intact record starts inside it" in out


def test_skipping_reads_of_a_gzip_file_resynchronise_too(tmp_path: Path) -> None:
    import gzip

    plain = torn(tmp_path / "torn.tfrecord")
    path = tmp_path / "torn.tfrecord.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    ds = rf.open_dataset(path, on_corrupt="skip")
    assert [int(r["id"]) for r in ds] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert len(ds) == 9
    assert "an intact record starts inside it" in ds.skipped[0]["reason"]


def test_the_salvage_fuzz_targets_seeds_pass_its_oracles(shared_data: Path) -> None:
    """fuzz/fuzz_salvage.py's checks, replayed on its seeds without atheris."""
    fs = load_fuzz_target("fuzz_salvage")
    files = sorted((shared_data / "tfrecord_vectors").glob("pytorch_data/*.tfrecord"))
    assert files
    signatures = {fs.check(seed) for seed in fs.seeds(files)}
    assert len(signatures) > 5

"""Walking a hostile file past its damage costs time in proportion to its size.

The walk shared by ``count``, ``verify``, ``salvage`` and ``on_corrupt="skip"`` reads
checks the data CRC of every record whose header holds, and after damage tries every
later offset whose 12 bytes pass as a header, checking the data CRC of the record each
one claims. Headers crafted to claim ``L`` bytes each made that O(size x ``L``): a 4.2 MB
file of back-to-back headers with ``L`` = 2 MiB took 27 s to count, a 16 MB file like
the one below would have taken a day, and so did a header claiming ``L`` before each
small record (helper-54: > 90 s for 12 MB with ``L`` = 4 MiB). A walk's data CRCs now
come from prefix CRCs of the bytes wherever claims overlap (``walker::RangeCrcs``): each
byte is hashed at most twice. Each case runs in a fresh process with a timeout hours
below the old cost, and must still find the intact records hidden among the headers.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest
from helpers import cli, peak_rss, run_code

import recordforge as rf

CLAIM = 4 << 20  # each crafted header claims 4 MiB
HEADERS = 8 << 20  # bytes of back-to-back headers
TIMEOUT = 60  # s; before: ~700,000 candidates x 4 MiB of CRC each (about a day)


def header(length: int) -> bytes:
    h = length.to_bytes(8, "little")
    return h + rf.masked_crc32c(h).to_bytes(4, "little")


def frame(data: bytes) -> bytes:
    return header(len(data)) + data + rf.masked_crc32c(data).to_bytes(4, "little")


FIRST = frame(rf.encode_example({"v": b"first"}))
KEPT = frame(rf.encode_example({"v": b"kept"}))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An intact record, headers claiming ``CLAIM`` bytes, another intact record, then
    zeros enough that every header's claimed record is whole in the file (each one's
    data CRC is checked, and fails)."""
    path = tmp_path_factory.mktemp("resync") / "hostile.tfrecord"
    crafted = header(CLAIM) * (HEADERS // 12)
    path.write_bytes(FIRST + crafted + KEPT + bytes(CLAIM + 64))
    return path


@pytest.fixture(scope="module")
def hostile_gz(hostile: Path) -> Path:
    path = hostile.with_name("hostile.tfrecord.gz")
    path.write_bytes(gzip.compress(hostile.read_bytes(), compresslevel=1))
    return path


def test_the_file_is_what_it_says(hostile: Path) -> None:
    data = hostile.read_bytes()
    at = len(FIRST) + HEADERS // 12 * 12
    assert data[at : at + len(KEPT)] == KEPT
    assert data[len(FIRST) : len(FIRST) + 12] == header(CLAIM)
    with pytest.raises(rf.CorruptRecordError, match="data CRC"):
        rf.scan_records(hostile)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_count_and_verify_finish_and_name_the_damage(
    hostile: Path, hostile_gz: Path, compressed: bool
) -> None:
    path = str(hostile_gz if compressed else hostile)
    counted = cli("count", "--verify", path, timeout=TIMEOUT)
    assert counted.returncode == 1, counted.stderr
    out = counted.stdout + counted.stderr
    assert f"record 1 at byte offset {len(FIRST)}: data CRC mismatch" in out, out
    assert "Traceback" not in out
    verified = cli("verify", path, timeout=TIMEOUT)
    assert verified.returncode == 1, verified.stderr
    assert "Traceback" not in verified.stdout + verified.stderr


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_salvage_keeps_the_intact_record_with_bounded_memory(
    hostile: Path, hostile_gz: Path, compressed: bool, tmp_path: Path
) -> None:
    path = hostile_gz if compressed else hostile
    out = tmp_path / "saved.tfrecord"
    command = [sys.executable, "-m", "recordforge", "salvage", str(path), str(out)]
    rss, code, stderr = peak_rss(command, timeout=TIMEOUT)
    assert code == 1, stderr  # (damage found)
    assert "Traceback" not in stderr
    assert list(rf.read_records(out)) == [FIRST[12:-4], KEPT[12:-4]]
    # A window of the file's records (the claim), never the whole of it many times.
    assert rss < 200 << 20, rss


def _skipping(path: Path) -> list[bytes]:
    """The values ``v`` read from ``path`` with ``on_corrupt="skip"`` in a fresh process,
    a record at a time and in batches (the two must agree)."""
    code = (
        "import sys, recordforge as rf\n"
        "ds = rf.open_dataset([sys.argv[1]], on_corrupt='skip')\n"
        "rows, batches = [r['v'] for r in ds], [v for b in ds.batches(64) for v in b['v']]\n"
        "assert rows == batches, (len(rows), len(batches))\n"
        "print(sum(v == b'kept' for v in rows), sum(v == b'first' for v in rows), len(rows))\n"
    )
    run = run_code(code, str(path), timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    kept, first, total = map(int, run.stdout.split())
    assert kept + first == total
    return [b"first"] * first + [b"kept"] * kept


def test_a_read_that_skips_damage_finishes_and_keeps_the_records(hostile: Path) -> None:
    assert _skipping(hostile) == [b"first", b"kept"]


@pytest.mark.parametrize("stray", [False, True], ids=["claim-record", "byte-claim-record"])
def test_a_claim_before_each_record_costs_no_more(tmp_path: Path, stray: bool) -> None:
    """A header claiming ``CLAIM`` bytes before each small record: checked in step (its
    data CRC fails, the record after it is found inside its claim), or, after a stray
    byte, found by a resynchronisation of its own. Every record is kept, and salvage
    lists the first damaged regions, then how many more."""
    unit = (b"\xff" if stray else b"") + header(CLAIM) + KEPT
    path = tmp_path / "claims.tfrecord"
    path.write_bytes(FIRST + unit * ((4 << 20) // len(unit)) + bytes(CLAIM + 64))
    units = (4 << 20) // len(unit)
    counted = cli("count", "--verify", "--json", str(path), timeout=TIMEOUT)
    assert counted.returncode == 1, counted.stderr
    assert '"records": ' in counted.stdout
    out = tmp_path / "saved.tfrecord"
    saved = cli("salvage", str(path), str(out), timeout=TIMEOUT)
    assert saved.returncode == 1, saved.stderr
    regions = units + 1  # (one a claim, and the zeros at the end)
    assert f"... and {regions - 1000:,} more damaged regions (use --json" in saved.stdout
    assert len(saved.stdout.splitlines()) < 1010
    assert list(rf.read_records(out)) == [FIRST[12:-4]] + [KEPT[12:-4]] * units
    assert _skipping(path) == [b"first"] + [b"kept"] * units

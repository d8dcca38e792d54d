"""A record's length is followed only when its CRC holds, whatever ``verify`` says
(``verify`` is for the data's CRC), as TensorFlow's reader does.

Before, with ``verify=False`` (and in ``count`` without ``--verify``, which walks the
framing that way) 16 zero bytes appended to a shard were counted as one more record
(``count`` said 51 where the file holds 50, exit 0), and a flipped length bit sent the
walk to wherever the length pointed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import cli

import recordforge as rf


def _shard(tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    rf.write_dataset(
        [{"i": i, "b": b"x" * i} for i in range(50)], out, options=rf.WriteOptions(index=False)
    )
    [shard] = sorted(out.glob("*.tfrecord"))
    return shard


def test_zero_bytes_appended_are_no_record(tmp_path: Path) -> None:
    shard = _shard(tmp_path)
    with open(shard, "ab") as f:
        f.write(b"\0" * 16)
    for verify in (True, False):
        with pytest.raises(rf.CorruptRecordError, match="length CRC mismatch"):
            rf.scan_records(shard, verify=verify)
        got = []
        with pytest.raises(rf.CorruptRecordError, match="length CRC mismatch") as caught:
            for record in rf.read_records(shard, verify=verify):
                got.append(record)
        assert len(got) == 50 and caught.value.offset == shard.stat().st_size - 16
    done = cli("count", str(shard.parent), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["records"] == 50, result
    assert "length CRC mismatch" in done.stdout, done.stdout


def test_a_flipped_length_bit_is_not_followed(tmp_path: Path) -> None:
    data = _shard(tmp_path).read_bytes()
    first_len = int.from_bytes(data[:8], "little")
    second = 16 + first_len  # the first record's frame: 12 + its payload + 4
    bad = bytearray(data)
    bad[second] ^= 0x40  # record 1's length 64 bytes longer: its CRC no longer holds
    for verify in (True, False):
        it = rf.read_records(io.BytesIO(bytes(bad)), verify=verify)
        assert next(it) == data[12 : 12 + first_len]
        with pytest.raises(rf.CorruptRecordError, match="length CRC mismatch") as caught:
            next(it)
        assert caught.value.offset == second

"""The inspection subcommands end to end: exit codes, --json output, problem lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_every_command_on_foreign_files(
    vectors: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taxi = str(shared_data / "tfx_chicago_taxi" / "tfrecord_gzip")
    od = str(vectors / "datumaro_tf_od_api")
    code, out = run_json(capsys, "count", taxi)
    assert (code, out["records"], out["ok"]) == (0, 15_000, True)
    code, out = run_json(capsys, "verify", taxi, str(vectors / "pytorch_data"))
    assert (code, out["ok"], out["records"]) == (0, True, 15_008)
    code, out = run_json(capsys, "info", str(vectors / "tf_ranking"))
    assert (code, out["record_type"]) == (0, "ExampleListWithContext")
    code, out = run_json(capsys, "head", "-n", "1", od, "--features", "image/encoded")
    image = out["records"][0]["features"]["image/encoded"][0]  # type: ignore[index]
    assert (code, image) == (0, {"image": "JPEG", "width": 4, "height": 5, "bytes": 631})
    code, out = run_json(capsys, "stats", od)
    assert code == 0 and out["records"] == 3
    code, out = run_json(capsys, "preview", od, "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").is_file()
    copy = tmp_path / "example.tfrecord"
    copy.write_bytes((vectors / "pytorch_data" / "example.tfrecord").read_bytes())
    code, out = run_json(capsys, "index", str(copy))
    assert code == 0 and Path(f"{copy}.idx").read_text().startswith("0 124\n")


def test_damage_is_reported_with_file_record_and_offset(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray((vectors / "pytorch_data" / "example.tfrecord").read_bytes())
    data[255 + 40] ^= 1  # inside the third record (offset 255)
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(data))
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: record 2 at byte offset 255: data CRC mismatch" in out
    assert "FAILED" in out
    assert main(["count", "--verify", str(bad)]) == 1
    assert "record 2 at byte offset 255" in capsys.readouterr().out
    assert main(["count", str(bad)]) == 0  # the framing is intact: 4 records
    assert "4 records" in capsys.readouterr().out
    assert main(["salvage", str(bad), str(tmp_path / "fixed.tfrecord")]) == 1
    assert "bytes 255..389: data CRC mismatch" in capsys.readouterr().out
    assert len(list(rf.read_records(tmp_path / "fixed.tfrecord"))) == 3
    code, out = run_json(capsys, "salvage", str(bad), str(tmp_path / "f2"), "--compression", "gzip")
    assert (code, out["records"], out["lost_records"], out["compression"]) == (1, 3, 1, "gzip")
    assert main(["index", str(bad)]) == 1
    assert not Path(f"{bad}.idx").exists()
    assert main(["head", str(tmp_path / "nothing*")]) == 1
    assert "matches no files" in capsys.readouterr().err


def test_human_output(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(vectors / "pytorch_data" / "sequence_example.tfrecord")]) == 0
    out = capsys.readouterr().out
    assert "SequenceExample records: 4" in out and "x_int_seq" in out
    assert main(["head", "-n", "1", str(vectors / "datumaro_tf_od_api" / "train.tfrecord")]) == 0
    out = capsys.readouterr().out
    assert "image/encoded: [<JPEG 16x16, 631 B>]" in out
    assert "image/object/class/text: ['label_2', 'label_3', '']" in out
    assert main(["stats", str(vectors / "datumaro_tf_od_api")]) == 0
    assert "classes: label_3 (2)" in capsys.readouterr().out
    assert main(["verify", str(vectors / "tf_ranking")]) == 0
    assert "OK: 19 records in 2 file(s)" in capsys.readouterr().out

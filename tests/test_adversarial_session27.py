"""Findings of the session-27 adversarial reviews (helper-49: tables, helper-50: reads),
each failing before its fix.

- A local ``.idx`` that covers its shard exactly (contiguous lines, the last ending at
  the end) but cuts a record where its value holds a whole valid frame, and merges two
  later lines to keep the ends: ``ds[i]`` and ``take`` returned the embedded frame as a
  record and could not reach the merged one. Local offsets now come from the framing.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import recordforge as rf


def _frame(payload: bytes) -> bytes:
    head = struct.pack("<Q", len(payload))
    return (
        head
        + struct.pack("<I", rf.masked_crc32c(head))
        + payload
        + struct.pack("<I", rf.masked_crc32c(payload))
    )


def _lying_index(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Ten records, the fourth holding a whole frame of another Example in its value,
    and an index that passes every check of its lines against the file."""
    path = tmp_path / "data.tfrecord"
    evil = _frame(rf.encode_example({"s": b"EVIL-999"}))
    records = [rf.encode_example({"s": b"row%d" % i}) for i in range(10)]
    records[3] = rf.encode_example({"s": evil})
    assert records[3].endswith(evil)
    with rf.TFRecordWriter(path) as w:
        offsets = [w.write(r) for r in records]
    offsets.append(path.stat().st_size)
    lines = [(offsets[k], offsets[k + 1] - offsets[k]) for k in range(10)]
    (o3, s3), cut = lines[3], lines[3][1] - (len(evil) + 4)
    merged = (lines[5][0], lines[5][1] + lines[6][1])
    lying = [*lines[:3], (o3, cut), (o3 + cut, len(evil) + 4), lines[4], merged, *lines[7:]]
    assert len(lying) == 10 and sum(s for _, s in lying) == offsets[-1] and s3 > cut
    Path(f"{path}.idx").write_text("".join(f"{o} {s}\n" for o, s in lying))
    return path, records


@pytest.mark.parametrize("how", ["getitem", "take", "take-views"])
def test_a_lying_index_does_not_change_what_random_access_reads(tmp_path: Path, how: str) -> None:
    path, records = _lying_index(tmp_path)
    truth = [rf.decode_example(r)["s"][0] for r in records]
    ds = rf.open_dataset(str(path))
    if how == "getitem":
        got = [bytes(ds[i]["s"]) for i in range(10)]
    else:
        taken = ds.take(list(range(10)), copy=how == "take")["s"]
        got = [bytes(v) for v in taken]
    assert got == [bytes(t) for t in truth]
    assert b"EVIL-999" not in got
    assert got == [bytes(v) for b in ds.batches(10) for v in b["s"]]


def test_a_manifest_of_no_split_is_refused_by_every_reader_and_never_written(
    tmp_path: Path,
) -> None:
    """``"splits": {}`` in dataset.json: ``info`` raised an IndexError (a traceback for
    the CLI) while ``count``, ``verify``, ``stats`` and ``head`` said OK with 0 records;
    ``write_dataset(splits={})`` wrote such a file."""
    import json
    import subprocess
    import sys

    out = tmp_path / "ds"
    rf.write_dataset({"id": list(range(10))}, out, max_records=5)
    manifest = json.loads((out / "dataset.json").read_text())
    manifest["splits"] = {}
    (out / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(rf.SchemaError, match=r"dataset\.json: splits: no split"):
        rf.open_dataset(out)
    for command in ("info", "count", "verify", "stats", "head"):
        done = subprocess.run(
            [sys.executable, "-m", "recordforge", command, str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode != 0, command
        assert "Traceback" not in done.stderr and "splits: no split" in done.stderr, done.stderr
    with pytest.raises(ValueError, match="no split given"):
        rf.write_dataset(splits={}, out=tmp_path / "none")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "fifo"])
def test_records_by_path_of_a_fifo_or_device_are_refused(tmp_path: Path, device: str) -> None:
    """``read_records`` and ``scan_records`` by path gave 0 records and no error for
    ``/dev/zero``, ``/dev/urandom`` and a FIFO fed valid records (and hung on a FIFO fed
    a gzip shard); opened by the caller, the FIFO's records are read."""
    import os
    import threading

    path = device
    if device == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    for read in (lambda p: list(rf.read_records(p)), rf.scan_records):
        with pytest.raises(rf.RecordforgeError, match="not a regular file"):
            read(path)
    if device == "fifo":
        good = tmp_path / "good.tfrecord"
        with rf.TFRecordWriter(good) as w:
            w.write_many([b"r%d" % i for i in range(50)])

        def feed() -> None:
            with open(path, "wb") as f:
                f.write(good.read_bytes())

        feeder = threading.Thread(target=feed)
        feeder.start()
        with open(path, "rb") as f:
            assert len(list(rf.read_records(f))) == 50
        feeder.join()


def test_an_input_rewritten_while_it_is_converted_gives_no_dataset(tmp_path: Path) -> None:
    """The CSV rewritten (same size, new values) after its first part was converted:
    the conversion exited 0 with a dataset.json over a mix of old and new rows (55,900
    and 244,100 in helper-49's run). Now it fails naming the file, writes no
    dataset.json, a plain rerun is refused (the input is not the one it started on) and
    a rerun with overwrite converts the file as it is."""
    from recordforge.sources.table import TableSource
    from recordforge.writer import write_source

    path = tmp_path / "t.csv"
    old = "n,s\n" + "".join(f"{i},old{i:06d}\n" for i in range(20_000))
    path.write_text(old)

    class Rewritten(TableSource):
        seen = 0

        def to_records(self, item: object) -> object:  # type: ignore[override]
            Rewritten.seen += 1
            if Rewritten.seen == 2:  # after the first part: same size, new values
                path.write_text(old.replace("old", "new"))
            return super().to_records(item)  # type: ignore[arg-type]

    source = Rewritten(path, part_bytes=64 << 10)
    assert len(source.items()) > 2
    out = tmp_path / "out"
    with pytest.raises(rf.RecordforgeError, match=r"t\.csv: changed while it was converted"):
        write_source(source, out)
    assert not (out / "dataset.json").exists()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_source(TableSource(path, part_bytes=64 << 10), out)
    write_source(TableSource(path, part_bytes=64 << 10), out, overwrite=True)
    values = {bytes(r["s"])[:3] for r in rf.open_dataset(out)}
    assert values == {b"new"}


def test_an_output_made_inside_an_image_folder_is_no_input_change(tmp_path: Path) -> None:
    """The folder's modification time changes when the output directory is made in it:
    that is no change of an input file."""
    from PIL import Image

    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    from recordforge.cli.__main__ import main

    assert (
        main(
            [
                "convert",
                "images",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "photos" / "out"),
            ]
        )
        == 0
    )
    assert rf.Manifest.load(tmp_path / "photos" / "out").records() == 3


@pytest.mark.parametrize("damage", ["emptied", "appended"])
def test_stats_and_head_report_a_shard_that_holds_other_records_than_claimed(
    tmp_path: Path, damage: str
) -> None:
    """A shard emptied (a failed copy), or one with another shard's records appended:
    ``stats`` printed statistics of the records left and ``head`` printed them, both
    with exit status 0, where every other reader refuses the dataset."""
    import subprocess
    import sys

    out = tmp_path / "ds"
    rf.write_dataset({"id": list(range(200))}, out, max_records=50)
    shard = out / "train-00001-of-00004.tfrecord"
    if damage == "emptied":
        shard.write_bytes(b"")
    else:
        shard.write_bytes(shard.read_bytes() + (out / "train-00002-of-00004.tfrecord").read_bytes())
    found = 0 if damage == "emptied" else 100
    for command in (["stats"], ["head", "-n", "300"]):
        done = subprocess.run(
            [sys.executable, "-m", "recordforge", *command, str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, (command, done.stdout[-500:], done.stderr[-500:])
        both = done.stdout + done.stderr
        assert f"{found:,} records where dataset.json says 50" in both, both[-800:]
        assert "Traceback" not in both


def test_a_compressed_csv_read_whole_names_its_bad_rows_by_the_file_not_a_wrong_row(
    tmp_path: Path,
) -> None:
    """helper-51: in a ``.csv.gz`` (one stream, read whole) a row of the wrong number of
    values is left out and cannot be found again, so the rows after it were numbered one
    too low ("row 7" for row 8). Its errors now name the file's rows; the records are
    those of the plain CSV."""
    import gzip

    from recordforge.sources.table import TableSource
    from recordforge.writer import write_source

    rows = ["n,s"] + [f"{i},v{i}" for i in range(1, 11)]
    rows[3], rows[8] = "3", "oops,v8"
    text = "\n".join(rows) + "\n"
    (tmp_path / "t.csv").write_text(text)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text.encode()))
    schema = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})
    skipped = {}
    for name in ("t.csv", "t.csv.gz"):
        out = tmp_path / f"out-{name}"
        write_source(TableSource(tmp_path / name, schema=schema), out, on_error="skip")
        skipped[name] = [s["item"] for s in rf.Manifest.load(out).report["skipped"]]
        assert [int(r["n"]) for r in rf.open_dataset(out)] == [1, 2, 4, 5, 6, 7, 9, 10]
    assert skipped["t.csv"] == [f"{tmp_path / 't.csv'}: row {i}" for i in (3, 8)]
    assert skipped["t.csv.gz"] == [f"{tmp_path / 't.csv.gz'}: rows 1-10"] * 2

"""Adversarial review of session 22's changes: the parent's fsync of a crc32c shard
(Workers.run_here), CSV parts with quoted line ends and raw-line skip_rows, the readers'
shard/shuffle/drop_remainder/index checks, and image metadata kept by a resize."""

from __future__ import annotations

import collections
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sources._table_parts import scan_lines
from recordforge.sources.table import TableSource

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")


def env() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return {**environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def plain_rows(src: TableSource) -> list[dict[str, Any]]:
    rows = []
    for part in src.items():
        for r in src.to_records(part).records:
            ex = rf.decode_example(r)
            rows.append(
                {
                    k: [b.decode() if isinstance(b, bytes) else b.item() for b in v]
                    for k, v in ex.items()
                }
            )
    return rows


# -- 1. the parent's fsync of a crc32c shard -------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, warnings
    import recordforge as rf
    from recordforge import _forking, _parallel

    MODE, OUT, WORKERS = sys.argv[1], sys.argv[2], int(sys.argv[3])
    REAL_FSYNC, REAL_FINISH = os.fsync, _parallel.finish_shard

    def to_records(item):
        if item["id"] % 11 == 4:
            raise rf.ItemError(f"row {item['id']}", "refused")
        return [rf.encode_example({**item, "k": k}) for k in range(1 + item["id"] % 3)]

    def kill_at_fsync(fd):
        if ".train-00002." in os.readlink(f"/proc/self/fd/{fd}"):
            os.kill(os.getpid(), signal.SIGKILL)
        REAL_FSYNC(fd)

    def tamper(path, checksum, size):
        if ".train-00002." in path:
            if MODE == "removed":
                os.unlink(path)
            else:
                with open(path, "ab") as f:
                    f.write(b"x")
        return REAL_FINISH(path, checksum, size)

    if __name__ == "__main__":
        warnings.filterwarnings("error", message="worker processes are spawned")
        if MODE == "kill":
            os.fsync = kill_at_fsync
        if MODE in ("removed", "grown"):
            _parallel.finish_shard = tamper
        splits = {s: [{"id": i + 100 * n} for i in range(40)]
                  for n, s in enumerate(["train", "val", "test", "extra"])}
        try:
            rf.write_dataset(splits=splits, out=OUT, workers=WORKERS, to_records=to_records,
                             on_error="skip", max_records=4, index=True)
        except rf.RecordforgeError as e:
            print(f"failed: {e}", file=sys.stderr)
            sys.exit(3)
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print(f"{left}|{_forking.start_method()}")
    """
)


def run_script(tmp_path: Path, mode: str, out: Path, workers: int) -> Any:
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), mode, str(out), str(workers)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_many_splits_leave_no_sync_thread_and_still_fork(tmp_path: Path) -> None:
    done = run_script(tmp_path, "plain", tmp_path / "o", 2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]|fork"  # no warning (they are errors), no thread left


@pytest.mark.parametrize("mode", ["removed", "grown"])
def test_a_shard_changed_before_the_parents_fsync_is_an_error_naming_it(
    tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "o"
    done = run_script(tmp_path, mode, out, 2)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert ".train-00002." in done.stderr and "bytes where" in done.stderr
    # Nothing of the run is left: its partial files, or the whole --out it made (when
    # the failure came before any shard was committed: which, depends on the timing).
    assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_killed_at_the_parents_fsync_resumes_at_three_workers_byte_identical(
    tmp_path: Path,
) -> None:
    ref = tmp_path / "ref"
    assert run_script(tmp_path, "plain", ref, 1).returncode == 0
    out = tmp_path / "o"
    killed = run_script(tmp_path, "kill", out, 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = run_script(tmp_path, "plain", out, 3)
    assert again.returncode == 0, again.stderr
    assert listing(out) == listing(ref)


# -- 2. CSV parts ---------------------------------------------------------------------------


def _random_csv(rng: random.Random) -> tuple[bytes, int]:
    def cell() -> bytes:
        if rng.random() < 0.5:
            return b"x" + bytes(rng.choice(b"ab ") for _ in range(rng.randint(0, 3)))
        pieces = [b"a", b"\n", b"\r", b"\r\n", b'""', b","]
        return b'"x' + b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) + b'"'

    skip = rng.randint(0, 3)
    junk = [b"a", b'"', b",", b"z"]
    lines = [b"".join(rng.choice(junk) for _ in range(rng.randint(0, 5))) for _ in range(skip)]
    lines += [b"a,b"] + [cell() + b"," + cell() for _ in range(rng.randint(0, 5))]
    data = b"".join(line + rng.choice([b"\n", b"\r\n", b"\r"]) for line in lines)
    if rng.random() < 0.3:
        data = data.rstrip(b"\r\n")
    if rng.random() < 0.2:
        data = b"\xef\xbb\xbf" + data
    return data, skip


def test_random_quoted_csvs_with_skip_rows_are_what_pyarrow_reads(tmp_path: Path) -> None:
    rng = random.Random(22)
    for trial in range(80):
        data, skip = _random_csv(rng)
        path = tmp_path / f"t{trial}.csv"
        path.write_bytes(data)
        try:
            table = pcsv.read_csv(
                path,
                read_options=pcsv.ReadOptions(skip_rows=skip),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(column_types={"a": "string", "b": "string"}),
            )
        except pa.ArrowInvalid:  # (no header left, say): recordforge refuses it too
            with pytest.raises(rf.RecordforgeError):
                plain_rows(TableSource(path, skip_rows=skip, part_bytes=1))
            continue
        want = [{k: [v] for k, v in row.items()} for row in table.to_pylist()]
        for part_bytes in sorted({1, 2, 3, 5, 8, len(data), len(data) + 1}):
            got = plain_rows(TableSource(path, skip_rows=skip, part_bytes=part_bytes))
            assert got == want, (trial, part_bytes, data)


def test_scan_lines_is_the_same_at_every_chunk_size() -> None:
    rng = random.Random(7)
    pieces = [b"a", b'"', b",", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf"]
    for _ in range(150):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for skip in range(4):

            def scan(chunk: int, data: bytes = data, skip: int = skip) -> tuple[list, list]:
                ends: list[int] = []
                marks: list[int] = []
                for e, m in scan_lines(io.BytesIO(data), csv=True, chunk=chunk, skip=skip):
                    ends += e.tolist()
                    marks += m.tolist()
                return ends, marks

            ref = scan(1 << 16)
            for chunk in range(1, len(data) + 2):
                assert scan(chunk) == ref, (data, skip, chunk)


def test_a_huge_quoted_value_in_the_first_row_converts_as_in_the_second(
    tmp_path: Path,
) -> None:
    value = b"a" * (9 << 20)
    second = tmp_path / "second.csv"
    second.write_bytes(b'a,b\n1,x\n2,"' + value + b'"\n3,y\n')
    assert len(plain_rows(TableSource(second, part_bytes=1))) == 3  # holds
    first = tmp_path / "first.csv"
    first.write_bytes(b'a,b\n1,"' + value + b'"\n3,y\n')
    rows = plain_rows(TableSource(first, part_bytes=1))
    assert len(rows) == 2 and rows[0]["b"] == [value.decode()]


# -- 3. readers -----------------------------------------------------------------------------


@pytest.fixture
def ds23(tmp_path: Path) -> Any:
    rf.write_dataset({"id": np.arange(23)}, tmp_path / "d", max_records=10, index=True)
    return rf.open_dataset(tmp_path / "d")


def test_index_forms(ds23: Any) -> None:
    ids = lambda idx: ds23.take(idx)["id"].tolist()  # noqa: E731
    assert ids([np.int32(3), np.uint8(4)]) == [3, 4]
    assert ids(np.array(5)) == [5]
    assert ids((1, 2)) == ids(range(1, 3)) == [1, 2]
    assert ids([]) == ids(np.array([], np.float64)) == []
    assert ids(np.array([-1], np.int8)) == [22] and ids([-23]) == [0]
    assert ds23[np.int8(-1)]["id"] == 22 and ds23[-3:]["id"].tolist() == [20, 21, 22]
    for bad, error in [
        ([-(2**63)], IndexError),
        ([2**63], IndexError),
        (np.array([2**64 - 1], np.uint64), IndexError),
        ([-24], IndexError),
        (np.array([255], np.uint8), IndexError),
        ([1.0], TypeError),
        (np.array([1.0]), TypeError),
        ("1", TypeError),
        (np.array([True, False]), TypeError),
    ]:
        with pytest.raises(error):
            ds23.take(bad)
    with pytest.raises(TypeError):
        ds23[np.True_]


def test_a_python_bool_is_not_a_record_index(ds23: Any) -> None:
    with pytest.raises(TypeError):
        ds23[True]


def test_drop_remainder_and_record_shards_read_each_record_once(ds23: Any) -> None:
    for bs in (1, 3, 5, 7, 10, 23, 24):
        for threads in (0, 2):
            n = sum(len(b["id"]) for b in ds23.batches(bs, drop_remainder=True, threads=threads))
            assert n == 23 // bs * bs, (bs, threads)
    for count in (3, 4, 7):
        for epochs_before in (0, 1):
            seen: collections.Counter[int] = collections.Counter()
            for host in range(count):
                s = ds23.shard(host, count).shuffle(8, seed=host * 11 + 1)
                for _ in range(epochs_before):
                    list(s.batches(4))
                for b in s.batches(4, drop_remainder=False):
                    seen.update(b["id"].tolist())
            assert sorted(seen) == list(range(23)) and set(seen.values()) == {1}


# -- 4. images: metadata kept by --reencode / --resize -----------------------------------------


def _coco(tmp_path: Path, files: dict[str, Any]) -> tuple[Path, Path]:
    images = tmp_path / "img"
    images.mkdir()
    entries = []
    for k, (name, save) in enumerate(files.items(), 1):
        save(images / name)
        entries.append({"id": k, "file_name": name, "width": 40, "height": 30})
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps({"images": entries, "annotations": [], "categories": [{"id": 1, "name": "c"}]})
    )
    return ann, images


def _convert_coco(ann: Path, images: Path, out: Path, *extra: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "recordforge", "convert", "coco", "--annotations", str(ann),
         "--images", str(images), "--out", str(out), *extra],
        env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_coco_reencode_of_a_cmyk_jpeg_drops_its_profile(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    cms = pytest.importorskip("PIL.ImageCms")
    icc = cms.ImageCmsProfile(cms.createProfile("sRGB")).tobytes()

    def save(p: Path) -> None:
        pil.new("CMYK", (40, 30), (0, 50, 100, 0)).save(p, icc_profile=icc, quality=90)

    ann, images = _coco(tmp_path, {"b.jpg": save})
    for extra in (["--reencode", "90"], ["--resize", "20"]):
        out = tmp_path / extra[0].strip("-")
        done = _convert_coco(ann, images, out, *extra)
        assert done.returncode == 0, done.stderr
        (record,) = list(rf.open_dataset(out))
        stored = pil.open(io.BytesIO(bytes(record["image/encoded"])))
        assert stored.mode == "RGB" and not stored.info.get("icc_profile")


def test_coco_reencode_of_a_png_with_a_huge_exif_converts_or_names_it(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")

    def save(p: Path) -> None:
        exif = pil.Exif()
        exif[0x010E] = "x" * 100_000  # ImageDescription
        pil.new("RGB", (40, 30), (10, 200, 30)).save(p, exif=exif.tobytes())

    ann, images = _coco(tmp_path, {"a.png": save})
    done = _convert_coco(ann, images, tmp_path / "out", "--reencode", "90")
    assert "Traceback" not in done.stderr
    assert done.returncode == 0 or "a.png" in done.stderr, done.stderr

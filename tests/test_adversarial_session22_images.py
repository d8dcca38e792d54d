"""Adversarial checks of image-folder conversion (``recordforge convert images``) and of
its resume: kills at the writer's stages then a rerun (same or other ``--workers``),
input changed between the kill and the rerun, a rerun with other image options, walks
over odd names and files, pixel bombs and re-encoding with ``--resize``.

Everything that runs the CLI does it in a child process with a timeout (kill points
SIGKILL the process; peak memory is measured as a child's ``ru_maxrss``). The bugs found
are ``xfail(strict=True)``:

* the fingerprint of an image-folder conversion holds the root folder's size and mtime
  but nothing of the class folders (``_outdir._input_identity`` stats only the paths
  ``describe()`` names): an image added to or removed from a class folder between a kill
  and the rerun is resumed over, and the output holds one image twice and loses another;
* ``--resize`` and ``--max-image-bytes`` are not in the fingerprint either
  (``ImageFolderSource.describe`` names neither): a rerun with other values resumes and
  mixes images stored both ways;
* a file name that is not UTF-8 stops the conversion even with ``--on-error skip``, with
  an error that names a feature but not the file;
* ``--resize`` keeps the first frame of an animated GIF only, and drops a JPEG's EXIF
  orientation and ICC profile (it keeps its comment), silently;
* a PNG declaring 9500x9500 RGBA pixels (a few hundred KB) is decoded in full for
  ``--resize`` (Pillow only warns below twice its pixel limit): peak RSS ~735 MiB.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import recordforge as rf
from recordforge.sources.images import ImageFolderSource

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageCms  # noqa: E402

TIMEOUT = 120
# The bound the hostile-input tests of COCO and image folders hold a conversion to.
RSS_LIMIT = 300 << 20


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``recordforge ARGS`` in a child process (kill points and stage logs from ``env``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return subprocess.run(
        [sys.executable, "-m", "recordforge", *args],
        env={**environ, **env},
        capture_output=True,
        # a file name that is not UTF-8 is printed as its bytes (as ls prints it)
        encoding="utf-8",
        errors="surrogateescape",
        timeout=TIMEOUT,
    )


def peak_rss(*args: str) -> tuple[int, int, str]:
    """``recordforge ARGS``' peak RSS in bytes, exit status and stderr."""
    return helpers.peak_rss([sys.executable, "-m", "recordforge", *args], TIMEOUT)


def listing(out: Path) -> dict[str, bytes]:
    """Every file of ``out`` (hidden ones too) by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def stored(out: Path) -> list[dict[str, Any]]:
    """The decoded records of a finished dataset, shard by shard."""
    manifest = rf.Manifest.load(out)
    return [
        rf.decode_example(record)
        for split in manifest.splits.values()
        for shard in split
        for record in rf.read_records(out / shard.file)
    ]


def noise_png(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def make_tree(root: Path, per_class: int = 4, big_cats: bool = False) -> Path:
    """ROOT/cat and ROOT/dog with ``per_class`` PNGs each (cats of random noise, so
    bigger on disk, when ``big_cats``)."""
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            if big_cats and name == "cat":
                noise_png(root / name / f"{i}.png", 80 + i, 60, seed=i)
            else:
                Image.new("RGB", (80 + i, 60), (i * 40, 100, 50 * label)).save(
                    root / name / f"{i}.png"
                )
    return root


def stage_log(args: list[str], out: Path) -> list[str]:
    log = out.parent / f"{out.name}.stages"
    done = run_cli(*args, "--out", str(out), RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def second_shard_journalled(stages: list[str]) -> int:
    """The 1-based stage at which the journal has saved its second shard."""
    saves = [
        n + 1
        for n, name in enumerate(stages)
        if name == "journal saved" and n > 0 and "renamed to its intermediate" in stages[n - 1]
    ]
    assert len(saves) >= 2, stages
    return saves[1]


def refused_or_redone(again: subprocess.CompletedProcess[str], out: Path, expected: Path) -> None:
    """A rerun after a change either refuses clearly or writes the uninterrupted run's
    bytes: never a mix of before and after."""
    assert "Traceback" not in again.stderr, again.stderr
    if again.returncode != 0:
        assert again.returncode == 1 and "--overwrite" in again.stderr, again.stderr
        return
    assert listing(out) == listing(expected)


# --- resume over input changed between the kill and the rerun ---------------------------


def _add_first_cat(root: Path) -> None:
    Image.new("RGB", (11, 11)).save(root / "cat" / "00.png")  # sorts before cat/0.png


def _remove_first_cat(root: Path) -> None:
    (root / "cat" / "0.png").unlink()


def _replace_first_cat(root: Path) -> None:
    Image.new("RGB", (13, 13), (255, 0, 0)).save(root / "cat" / "0.png")


@pytest.mark.parametrize("change", [_add_first_cat, _remove_first_cat, _replace_first_cat])
def test_images_changed_in_a_class_folder_after_a_kill_are_not_resumed_over(
    tmp_path: Path, change: Any
) -> None:
    root = make_tree(tmp_path / "root")
    args = ["convert", "images", str(root), "--max-records", "2"]
    kill_at = second_shard_journalled(stage_log(args, tmp_path / "probe"))
    out = tmp_path / "out"
    killed = run_cli(*args, "--out", str(out), RECORDFORGE_KILL_AT=str(kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    change(root)
    again = run_cli(*args, "--out", str(out))
    expected = tmp_path / "expected"
    assert run_cli(*args, "--out", str(expected)).returncode == 0
    refused_or_redone(again, out, expected)


def test_a_class_folder_added_after_a_kill_is_refused_then_overwrite_redoes_it(
    tmp_path: Path,
) -> None:
    """A change directly under the root (its mtime) is caught: the rerun is refused with
    the way out named, and ``--overwrite`` gives the uninterrupted run's bytes."""
    root = make_tree(tmp_path / "root")
    args = ["convert", "images", str(root), "--max-records", "2"]
    kill_at = second_shard_journalled(stage_log(args, tmp_path / "probe"))
    out = tmp_path / "out"
    assert run_cli(*args, "--out", str(out), RECORDFORGE_KILL_AT=str(kill_at)).returncode == -9
    (root / "bird").mkdir()
    Image.new("RGB", (9, 9)).save(root / "bird" / "0.png")
    again = run_cli(*args, "--out", str(out))
    assert again.returncode == 1 and "input files changed" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert run_cli(*args, "--out", str(out), "--overwrite").returncode == 0
    expected = tmp_path / "expected"
    assert run_cli(*args, "--out", str(expected)).returncode == 0
    assert listing(out) == listing(expected)
    assert sorted(e["image/class/text"][0] for e in stored(out))[:1] == [b"bird"]


# --- resume with other image options -----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["--resize", "40"], ["--resize", "20"]),
        (["--resize", "40"], []),
        ([], ["--max-image-bytes", "4KB"]),
    ],
    ids=["resize-40-then-20", "resize-then-none", "max-image-bytes-then-lower"],
)
def test_a_rerun_with_other_image_options_is_refused_or_redone(
    tmp_path: Path, first: list[str], second: list[str]
) -> None:
    root = make_tree(tmp_path / "root", big_cats=True)
    assert all((root / "cat" / f"{i}.png").stat().st_size > 4000 for i in range(4))
    args = ["convert", "images", str(root), "--max-records", "2", "--on-error", "skip"]
    kill_at = second_shard_journalled(stage_log([*args, *first], tmp_path / "probe"))
    out = tmp_path / "out"
    killed = run_cli(*args, *first, "--out", str(out), RECORDFORGE_KILL_AT=str(kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = run_cli(*args, *second, "--out", str(out))
    expected = tmp_path / "expected"
    assert run_cli(*args, *second, "--out", str(expected)).returncode == 0
    refused_or_redone(again, out, expected)


# --- kills at every kind of stage, with workers, and an honest report --------------------


def test_killed_at_stages_with_two_workers_resumes_to_the_same_files_and_report(
    tmp_path: Path,
) -> None:
    """Bad items (a FIFO, a text file, a zero-byte file, a JPEG cut short) skipped and
    images that straddle shards: killed at stages spread over the whole run with two
    workers, rerun with one (and the other way round), the bytes of an uninterrupted
    run, whose report counts what the shards hold."""
    root = make_tree(tmp_path / "root", per_class=5)
    os.mkfifo(root / "cat" / "pipe.png")
    (root / "dog" / "notes.png").write_text("not an image")
    (root / "dog" / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, format="PNG")
    (root / "dog" / "cut.png").write_bytes(buffer.getvalue()[:-30])
    args = ["convert", "images", str(root), "--max-records", "3", "--on-error", "skip"]
    args += ["--verify-images", "--index"]
    reference = tmp_path / "reference"
    stages = stage_log([*args, "--workers", "2"], reference)
    expected = listing(reference)
    manifest = json.loads(expected["dataset.json"])
    report = manifest["report"]
    skipped = sorted(Path(s["item"]).name for s in report["skipped"])
    assert skipped == ["cut.png", "empty.png", "notes.png", "pipe.png"], report
    records = stored(reference)
    assert report["items"] == 14 and report["records"] == len(records) == 10
    assert sum(s["records"] for s in manifest["splits"]["train"]["shards"]) == 10
    names = [e["image/filename"][0].decode() for e in records]
    assert names == [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5)]
    points = sorted({*range(2, len(stages), max(1, len(stages) // 6)), len(stages) - 1})
    for n, (kill_workers, rerun_workers) in zip(
        points, [("2", "1"), ("1", "2")] * len(points), strict=False
    ):
        out = tmp_path / f"kill-{n}"
        killed = run_cli(
            *args, "--workers", kill_workers, "--out", str(out), RECORDFORGE_KILL_AT=str(n)
        )
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        again = run_cli(*args, "--workers", rerun_workers, "--out", str(out))
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == expected, n


# --- odd names and files in the walk -----------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_stored_or_skipped_by_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", per_class=1)
    shutil.copy(root / "cat" / "0.png", os.fsdecode(bytes(root / "cat") + b"/b\xfe.png"))
    out = tmp_path / "out"
    failed = run_cli("convert", "images", str(root), "--out", str(tmp_path / "fail"))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "cat/b" in failed.stderr, failed.stderr
    done = run_cli("convert", "images", str(root), "--out", str(out), "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    report = rf.Manifest.load(out).report
    assert report["items"] == 3 and len(stored(out)) + len(report["skipped"]) == 3


def test_odd_names_and_files_are_items_or_errors_naming_them(tmp_path: Path) -> None:
    """Class names differing by case or by Unicode normalization stay distinct classes;
    a newline in a name, a nested folder, an empty class folder, hidden files and folders,
    loose files at the root: every file is either stored once or skipped by name."""
    root = tmp_path / "root"
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    classes = sorted(["Cat", "cat", nfc, nfd, "empty"])
    for name in classes:
        (root / name).mkdir(parents=True)
    good = {
        "Cat/a.png": (3, 4),
        "cat/a.png": (5, 6),
        f"{nfc}/x.png": (7, 8),
        f"{nfd}/x.png": (9, 10),
        "cat/new\nline.png": (11, 12),
        "cat/deep/er/z.png": (13, 14),
    }
    for rel, size in good.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / rel, format="PNG")
    (root / "cat" / ".hidden.png").write_bytes(b"ignored")
    (root / "cat" / ".git").mkdir()
    (root / "cat" / ".git" / "x.png").write_bytes(b"ignored")
    (root / ".trash").mkdir()
    (root / ".trash" / "y.png").write_bytes(b"ignored")
    (root / "loose.png").write_bytes(b"ignored")
    (root / "Cat" / "zero.png").write_bytes(b"")
    Image.new("RGB", (2, 2)).save(root / "Cat" / "jpeg_bytes.png", format="JPEG")
    src = ImageFolderSource(root)
    assert src.names == tuple(classes)
    out = tmp_path / "out"
    manifest = rf.write_dataset(
        src.items(), out, to_records=src.to_records, schema=src.schema(), on_error="skip"
    )
    skipped = sorted(s["item"] for s in manifest.report["skipped"])
    assert skipped == [str(root / "Cat" / "jpeg_bytes.png"), str(root / "Cat" / "zero.png")]
    assert "holds JPEG bytes" in str(manifest.report["skipped"])
    records = stored(out)
    got = {
        e["image/filename"][0].decode(): (int(e["image/width"][0]), int(e["image/height"][0]))
        for e in records
    }
    assert got == good and len(records) == len(good)
    for e in records:
        name = e["image/filename"][0].decode().split("/")[0]
        assert classes[int(e["image/class/label"][0])] == name
        assert e["image/class/text"][0].decode() == name
    assert manifest.report["items"] == len(good) + 2


# --- decoding with --resize --------------------------------------------------------------


def test_resize_keeps_every_frame_of_an_animated_gif_or_refuses_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    frames = [Image.new("RGB", (96, 64), (i * 40, 0, 0)) for i in range(5)]
    frames[0].save(root / "a" / "anim.gif", save_all=True, append_images=frames[1:], loop=0)
    out = tmp_path / "out"
    done = run_cli("convert", "images", str(root), "--resize", "32", "--out", str(out))
    if done.returncode != 0:  # refused, by name: acceptable
        assert "anim.gif" in done.stderr and "Traceback" not in done.stderr
        return
    [record] = stored(out)
    with Image.open(io.BytesIO(record["image/encoded"][0])) as im:
        assert im.size == (32, 21)
        assert getattr(im, "n_frames", 1) == 5


def test_resize_keeps_a_jpegs_orientation_and_colour_profile(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(1)
    pixels = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to display
    pixels.save(root / "a" / "x.jpg", exif=exif.tobytes(), icc_profile=icc, comment=b"hi")
    src = ImageFolderSource(root, resize=32)
    [item] = src.items()
    record = rf.decode_example(src.to_records(item)[0])
    with Image.open(io.BytesIO(record["image/encoded"][0])) as im:
        assert im.size == (32, 21) and im.info.get("comment") == b"hi"
        assert im.getexif().get(0x0112) == 6
        assert im.info.get("icc_profile") == icc


def _png(width: int, height: int, *, rows: int) -> bytes:
    """An RGBA PNG of ``width`` x ``height`` declared, ``rows`` rows of zeros given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + 4 * width)
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("resize", [[], ["--resize", "64"], ["--verify-images"]])
def test_a_png_declaring_60000_squared_pixels_is_refused_by_name_in_bounded_memory(
    tmp_path: Path, resize: list[str]
) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "bomb.png").write_bytes(_png(60000, 60000, rows=1))
    Image.new("RGB", (5, 5)).save(root / "a" / "ok.png")
    out = tmp_path / "out"
    rss, code, stderr = peak_rss("convert", "images", str(root), *resize, "--out", str(out))
    assert code == 1 and "Traceback" not in stderr, stderr
    assert str(root / "a" / "bomb.png") in stderr and "decompression bomb" in stderr
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"
    skip = tmp_path / "skip"
    done = run_cli(
        "convert", "images", str(root), *resize, "--on-error", "skip", "--out", str(skip)
    )
    assert done.returncode == 0, done.stderr
    assert [e["image/filename"][0] for e in stored(skip)] == [b"a/ok.png"]
    assert [s["item"] for s in rf.Manifest.load(skip).report["skipped"]] == [
        str(root / "a" / "bomb.png")
    ]


def test_a_pixel_bomb_png_resized_stays_in_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    data = _png(9500, 9500, rows=9500)
    assert len(data) < 1 << 20
    (root / "a" / "bomb.png").write_bytes(data)
    out = tmp_path / "out"
    rss, code, stderr = peak_rss(
        "convert", "images", str(root), "--resize", "64", "--out", str(out)
    )
    assert "Traceback" not in stderr, stderr
    if code == 1:  # refused by name: acceptable
        assert str(root / "a" / "bomb.png") in stderr
    else:
        assert code == 0, stderr
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB for a {len(data):,}-byte file"


def test_the_bomb_png_without_resize_is_stored_as_it_is_in_bounded_memory(
    tmp_path: Path,
) -> None:
    """Without --resize only the header is read: the same file costs no memory."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    data = _png(9500, 9500, rows=9500)
    (root / "a" / "bomb.png").write_bytes(data)
    out = tmp_path / "out"
    rss, code, stderr = peak_rss("convert", "images", str(root), "--out", str(out))
    assert code == 0 and "Traceback" not in stderr, stderr
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"
    [record] = stored(out)
    assert record["image/encoded"][0] == data
    assert (int(record["image/width"][0]), int(record["image/height"][0])) == (9500, 9500)


def test_resize_keeps_modes_palettes_transparency_and_16_bits(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    rgb.convert("P").save(root / "a" / "pal.png", transparency=0)
    Image.fromarray(rng.integers(0, 65535, (64, 96), dtype=np.uint16)).save(root / "a" / "g16.png")
    rgb.convert("LA").save(root / "a" / "la.png")
    rgb.convert("CMYK").save(root / "a" / "cmyk.jpg", quality=95)
    src = ImageFolderSource(root, resize=32)
    for item in src.items():
        record = rf.decode_example(src.to_records(item)[0])
        encoded = io.BytesIO(record["image/encoded"][0])
        with Image.open(root / item.path) as original, Image.open(encoded) as small:
            assert small.size == (32, 21), item.path
            assert small.mode == original.mode, item.path
            assert small.info.get("transparency") == original.info.get("transparency")
            if small.mode == "CMYK":  # not inverted by the round trip
                want = np.asarray(original.convert("RGB").resize((32, 21))).astype(int)
                got = np.asarray(small.convert("RGB")).astype(int)
                assert np.abs(want - got).mean() < 20
            if small.mode.startswith("I"):
                assert np.asarray(small).max() > 255  # still 16 bits

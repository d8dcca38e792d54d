"""Hostile and damaged input on the converting side (issue 13, items 12-15): image
files that escape their directory, FIFOs, devices and huge files (COCO and image
folders); COCO values of the wrong type or shape; non-finite boxes; ``verify --images``
on corrupt JPEGs and PNGs stored as JPEGs. Every case: ``on_error="skip"`` names the
item and why, ``on_error="raise"`` stops with that message, the CLI exits 1 without a
traceback. Inputs are built in tmp_path from the real tiny COCO subset."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import recordforge as rf
from recordforge.cli.__main__ import main
from recordforge.sources.coco import CocoSource, rle_from_string, tiny_jpeg
from recordforge.sources.images import ImageFolderSource

# A hung or memory-hungry conversion must not take the test run with it.
SUBPROCESS_TIMEOUT = 60
# Enough for a conversion of three images (the interpreter, NumPy, the Rust core);
# far below what reading /dev/zero to the end asks for.
RSS_LIMIT = 300 * 1024 * 1024
ADDRESS_SPACE_LIMIT = 3 << 30


@pytest.fixture
def coco(tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    """Three real images (copied into tmp_path/images) with their annotations."""
    tiny = shared_data / "tiny_coco"
    data = json.loads((tiny / "annotations" / "instances_val2017.json").read_text())
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    annotated = {a["image_id"] for a in data["annotations"]}
    chosen = [i for i in data["images"] if i["id"] in annotated][:3]
    for info in chosen:
        shutil.copy(tiny / "val2017" / info["file_name"], images_dir / info["file_name"])
    ids = {i["id"] for i in chosen}
    return {
        "dir": tmp_path,
        "images_dir": images_dir,
        "json": {
            "images": [dict(i) for i in chosen],
            "annotations": [dict(a) for a in data["annotations"] if a["image_id"] in ids],
            "categories": data["categories"],
        },
    }


def write(coco: dict[str, Any]) -> Path:
    path: Path = coco["dir"] / "instances.json"
    path.write_text(json.dumps(coco["json"]))
    return path


def source(coco: dict[str, Any], **kwargs: Any) -> CocoSource:
    return CocoSource.from_files(write(coco), coco["images_dir"], **kwargs)


def convert(src: Any, out: Path, **kwargs: Any) -> rf.Manifest:
    if isinstance(src, CocoSource):
        kwargs.setdefault("report", src.report())
    return rf.write_dataset(
        src.items(),
        out,
        to_records=src.to_records,
        schema=src.schema(),
        source=src.describe(),
        **kwargs,
    )


def stored(out: Path, manifest: rf.Manifest) -> list[dict[str, Any]]:
    return [
        rf.decode_example(r)
        for s in manifest.splits["train"]
        for r in rf.read_records(out / s.file)
    ]


def image_name(info: dict[str, Any]) -> str:
    return f"image {info['file_name']} (id {info['id']})"


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "recordforge", *args]


def run_cli(
    *args: str, limit_memory: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Runs ``recordforge ARGS`` in a child process; returns it and its wall time."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))

    start = time.monotonic()
    result = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        preexec_fn=limits if limit_memory else None,
    )
    return result, time.monotonic() - start


def peak_rss(*args: str) -> tuple[int, str, int]:
    """``recordforge ARGS``' peak RSS in bytes, stderr and exit status, its address
    space capped."""
    rss, code, stderr = helpers.peak_rss(
        cli_command(*args), SUBPROCESS_TIMEOUT, address_space=ADDRESS_SPACE_LIMIT
    )
    return rss, stderr, code


def assert_cli_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def coco_cli(coco: dict[str, Any], out: Path, *extra: str) -> list[str]:
    return [
        "convert",
        "coco",
        "--annotations",
        str(write(coco)),
        "--images",
        str(coco["images_dir"]),
        "--out",
        str(out),
        *extra,
    ]


# --- item 12: COCO image reads stay inside the image directory ----------------------


def _link_out(coco: dict[str, Any], info: dict[str, Any]) -> str:
    outside = coco["dir"] / "outside"
    outside.mkdir()
    target = outside / info["file_name"]
    (coco["images_dir"] / info["file_name"]).rename(target)
    (coco["images_dir"] / info["file_name"]).symlink_to(target)
    return "outside the image directory"


def _dotdot(coco: dict[str, Any], info: dict[str, Any]) -> str:
    shutil.copy(coco["images_dir"] / info["file_name"], coco["dir"] / "outside.jpg")
    info["file_name"] = "../outside.jpg"
    return "escapes the image directory"


def _absolute(coco: dict[str, Any], info: dict[str, Any]) -> str:
    info["file_name"] = str((coco["images_dir"] / info["file_name"]).resolve())
    return "escapes the image directory"


def _directory(coco: dict[str, Any], info: dict[str, Any]) -> str:
    path = coco["images_dir"] / info["file_name"]
    path.unlink()
    path.mkdir()
    return "not a regular file (a directory)"


def _too_big(coco: dict[str, Any], info: dict[str, Any]) -> str:
    limit = max(p.stat().st_size for p in coco["images_dir"].iterdir())
    path = coco["images_dir"] / info["file_name"]
    path.write_bytes(path.read_bytes() + bytes(limit + 1 - path.stat().st_size))
    coco["limit"] = str(limit)
    return f"{limit + 1} bytes, over the limit of {limit} bytes"


def _dev_zero(coco: dict[str, Any], info: dict[str, Any]) -> str:
    path = coco["images_dir"] / info["file_name"]
    path.unlink()
    path.symlink_to("/dev/zero")
    return "outside the image directory"


def _fifo(coco: dict[str, Any], info: dict[str, Any]) -> str:
    path = coco["images_dir"] / info["file_name"]
    path.unlink()
    os.mkfifo(path)
    return "not a regular file (a FIFO)"


def _device(coco: dict[str, Any], info: dict[str, Any]) -> str:
    path = coco["images_dir"] / info["file_name"]
    path.unlink()
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        pytest.skip("making a device node needs root")
    return "not a regular file (a character device)"


SAFE_ESCAPES = [_link_out, _dotdot, _absolute, _directory, _too_big]
# Before the fix these hang (FIFO) or read without end (/dev/zero, the device): tried
# only in a child process with a timeout and an address-space limit.
BLOCKING = [_dev_zero, _fifo, _device]


@pytest.mark.parametrize("escape", SAFE_ESCAPES)
def test_coco_image_reads_stay_in_the_image_directory(
    coco: dict[str, Any], tmp_path: Path, escape: Callable[..., str]
) -> None:
    info = coco["json"]["images"][1]
    reason = escape(coco, info)
    kwargs = {"max_image_bytes": int(coco["limit"])} if "limit" in coco else {}
    src = source(coco, **kwargs)
    with pytest.raises(rf.ItemError) as e:
        convert(src, tmp_path / "fail")
    assert e.value.item == image_name(info) and reason in e.value.reason
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [image_name(info)]
    assert reason in manifest.report["skipped"][0]["reason"]
    assert manifest.records() == 2


@pytest.mark.parametrize("escape", SAFE_ESCAPES)
def test_coco_cli_escapes_exit_1_or_are_skipped(
    coco: dict[str, Any],
    tmp_path: Path,
    escape: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = coco["json"]["images"][1]
    reason = escape(coco, info)
    extra = ["--max-image-bytes", coco["limit"]] if "limit" in coco else []
    assert main(coco_cli(coco, tmp_path / "fail", *extra)) == 1
    err = capsys.readouterr().err
    assert image_name(info) in err and reason in err
    assert main(coco_cli(coco, tmp_path / "skip", "--on-error", "skip", *extra)) == 0
    assert rf.Manifest.load(tmp_path / "skip").report["skipped"][0]["item"] == image_name(info)


@pytest.mark.parametrize("blocking", BLOCKING)
def test_coco_fifo_and_devices_never_block(
    coco: dict[str, Any], tmp_path: Path, blocking: Callable[..., str]
) -> None:
    info = coco["json"]["images"][1]
    reason = blocking(coco, info)
    result, seconds = run_cli(*coco_cli(coco, tmp_path / "fail"), limit_memory=True)
    assert_cli_error(result, image_name(info), reason)
    assert seconds < SUBPROCESS_TIMEOUT / 2
    result, _ = run_cli(*coco_cli(coco, tmp_path / "skip", "--on-error", "skip"), limit_memory=True)
    assert result.returncode == 0, result.stderr
    manifest = rf.Manifest.load(tmp_path / "skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [image_name(info)]
    assert reason in manifest.report["skipped"][0]["reason"]
    assert manifest.records() == 2


def test_coco_dev_zero_in_bounded_memory(coco: dict[str, Any], tmp_path: Path) -> None:
    info = coco["json"]["images"][1]
    _dev_zero(coco, info)
    rss, stderr, code = peak_rss(*coco_cli(coco, tmp_path / "fail"))
    assert code == 1 and "Traceback" not in stderr and image_name(info) in stderr, stderr
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"


def test_coco_links_inside_the_directory_are_read(coco: dict[str, Any], tmp_path: Path) -> None:
    info = coco["json"]["images"][1]
    real = coco["images_dir"] / "sub" / info["file_name"]
    real.parent.mkdir()
    (coco["images_dir"] / info["file_name"]).rename(real)
    (coco["images_dir"] / info["file_name"]).symlink_to(Path("sub") / info["file_name"])
    manifest = convert(source(coco), tmp_path / "out")
    assert manifest.records() == 3 and not manifest.report["skipped"]


def test_read_module_doctests() -> None:
    import doctest

    from recordforge.sources import _read

    result = doctest.testmod(_read, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed


def test_max_image_bytes_is_validated(coco: dict[str, Any]) -> None:
    assert source(coco).max_image_bytes == 256 * 2**20
    assert source(coco, max_image_bytes="1MiB").max_image_bytes == 2**20
    for bad in (0, -5, "lots", 1.5):
        with pytest.raises(ValueError, match="max_image_bytes"):
            source(coco, max_image_bytes=bad)


# --- item 12: image folders ------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    """ROOT/cat and ROOT/dog with two real JPEGs each, and an image outside ROOT."""
    jpegs = sorted((shared_data / "tiny_coco" / "val2017").glob("*.jpg"))
    root = tmp_path / "root"
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for j in range(2):
            shutil.copy(jpegs[2 * k + j], root / name / f"{j}.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(jpegs[4], outside / "secret.jpg")
    return {"root": root, "outside": outside, "size": jpegs[0].stat().st_size}


def _folder_dir_link_out(folder: dict[str, Any]) -> tuple[str, str]:
    (folder["root"] / "cat" / "more").symlink_to(folder["outside"], target_is_directory=True)
    return "cat/more", "outside the image folder"


def _folder_file_link_out(folder: dict[str, Any]) -> tuple[str, str]:
    (folder["root"] / "cat" / "x.jpg").symlink_to(folder["outside"] / "secret.jpg")
    return "cat/x.jpg", "outside the image folder"


def _folder_loop(folder: dict[str, Any]) -> tuple[str, str]:
    (folder["root"] / "cat" / "loop").symlink_to(folder["root"] / "cat")
    return "cat/loop", "a link to a folder already read"


def _folder_class_link_out(folder: dict[str, Any]) -> tuple[str, str]:
    (folder["root"] / "bird").symlink_to(folder["outside"], target_is_directory=True)
    return "bird", "outside the image folder"


def _folder_too_big(folder: dict[str, Any]) -> tuple[str, str]:
    shutil.copy(folder["outside"] / "secret.jpg", folder["root"] / "cat" / "big.jpg")
    size = (folder["root"] / "cat" / "big.jpg").stat().st_size
    folder["limit"] = str(size - 1)
    return "cat/big.jpg", f"over the limit of {size - 1}"


def _folder_dev_zero(folder: dict[str, Any]) -> tuple[str, str]:
    (folder["root"] / "cat" / "zero.jpg").symlink_to("/dev/zero")
    return "cat/zero.jpg", "outside the image folder"


def _folder_fifo(folder: dict[str, Any]) -> tuple[str, str]:
    os.mkfifo(folder["root"] / "cat" / "x.jpg")
    return "cat/x.jpg", "not a regular file (a FIFO)"


def _folder_device(folder: dict[str, Any]) -> tuple[str, str]:
    try:
        os.mknod(folder["root"] / "cat" / "x.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return "cat/x.jpg", "not a regular file (a character device)"


@pytest.mark.parametrize(
    "escape",
    [
        _folder_dir_link_out,
        _folder_file_link_out,
        _folder_class_link_out,
        _folder_loop,
        _folder_too_big,
    ],
)
def test_image_folder_reads_stay_in_the_root(
    folder: dict[str, Any], tmp_path: Path, escape: Callable[..., tuple[str, str]]
) -> None:
    item, reason = escape(folder)
    kwargs = {"max_image_bytes": int(folder["limit"])} if "limit" in folder else {}
    src = ImageFolderSource(folder["root"], **kwargs)
    name = str(folder["root"] / item)
    with pytest.raises(rf.ItemError) as e:
        convert(src, tmp_path / "fail")
    assert e.value.item == name and reason in e.value.reason
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [name]
    assert reason in manifest.report["skipped"][0]["reason"]
    assert manifest.records() == 4
    names = sorted(ex["image/filename"][0].decode() for ex in stored(tmp_path / "skip", manifest))
    assert names == ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg"]


@pytest.mark.parametrize("blocking", [_folder_dev_zero, _folder_fifo, _folder_device])
def test_image_folder_fifo_and_devices_never_block(
    folder: dict[str, Any], tmp_path: Path, blocking: Callable[..., tuple[str, str]]
) -> None:
    item, reason = blocking(folder)
    args = ["convert", "images", str(folder["root"]), "--out"]
    result, seconds = run_cli(*args, str(tmp_path / "fail"), limit_memory=True)
    assert_cli_error(result, str(folder["root"] / item), reason)
    assert seconds < SUBPROCESS_TIMEOUT / 2
    result, _ = run_cli(*args, str(tmp_path / "skip"), "--on-error", "skip", limit_memory=True)
    assert result.returncode == 0, result.stderr
    manifest = rf.Manifest.load(tmp_path / "skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [str(folder["root"] / item)]
    assert manifest.records() == 4


def test_image_folder_dev_zero_in_bounded_memory(folder: dict[str, Any], tmp_path: Path) -> None:
    _folder_dev_zero(folder)
    out = tmp_path / "out"
    rss, stderr, code = peak_rss("convert", "images", str(folder["root"]), "--out", str(out))
    assert code == 1 and "Traceback" not in stderr and "cat/zero.jpg" in stderr, stderr
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"


def test_image_folder_cli_size_limit(
    folder: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item, reason = _folder_too_big(folder)
    args = ["convert", "images", str(folder["root"]), "--max-image-bytes", folder["limit"]]
    assert main([*args, "--out", str(tmp_path / "fail")]) == 1
    err = capsys.readouterr().err
    assert item in err and reason in err
    assert main([*args, "--out", str(tmp_path / "skip"), "--on-error", "skip"]) == 0


def test_image_folder_links_inside_the_root_are_read(
    folder: dict[str, Any], tmp_path: Path
) -> None:
    (folder["root"] / "cat" / "again.jpg").symlink_to(folder["root"] / "dog" / "0.jpg")
    (folder["root"] / "cat" / "dogs").symlink_to(folder["root"] / "dog")
    manifest = convert(ImageFolderSource(folder["root"]), tmp_path / "out")
    assert manifest.records() == 7 and not manifest.report["skipped"]


# --- item 13: COCO values of the wrong type or shape --------------------------------


def _ann(coco: dict[str, Any]) -> dict[str, Any]:
    """The first annotation of the second image (the one every mutation breaks)."""
    image_id = coco["json"]["images"][1]["id"]
    return next(a for a in coco["json"]["annotations"] if a["image_id"] == image_id)


def _crowd(coco: dict[str, Any], counts: Any, size: Any = None) -> None:
    info = coco["json"]["images"][1]
    ann = _ann(coco)
    ann["iscrowd"] = 1
    ann["segmentation"] = {"counts": counts, "size": size or [info["height"], info["width"]]}


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(coco: dict[str, Any]) -> None:
        if value is _DELETE:
            del _ann(coco)[field]
        else:
            _ann(coco)[field] = value

    return mutate


def _set_image(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(coco: dict[str, Any]) -> None:
        if value is _DELETE:
            del coco["json"]["images"][1][field]
        else:
            coco["json"]["images"][1][field] = value

    return mutate


_DELETE = object()


def _zero_size_jpeg(coco: dict[str, Any]) -> None:
    info = coco["json"]["images"][1]
    (coco["images_dir"] / info["file_name"]).write_bytes(tiny_jpeg(width=0, height=0))
    info["width"] = info["height"] = 0


def _zero_size_header(coco: dict[str, Any]) -> None:
    info = coco["json"]["images"][1]
    (coco["images_dir"] / info["file_name"]).write_bytes(tiny_jpeg(width=0, height=0))


def _rle_wrong_sum(coco: dict[str, Any]) -> None:
    info = coco["json"]["images"][1]
    _crowd(coco, [5, info["height"] * info["width"]])


def _rle_full(coco: dict[str, Any]) -> None:
    info = coco["json"]["images"][1]
    _crowd(coco, [0, (info["height"] + 1) * info["width"]], [info["height"] + 1, info["width"]])


def _duplicate_id(coco: dict[str, Any]) -> None:
    first = coco["json"]["annotations"][0]
    _ann(coco)["id"] = first["id"]


def _unknown_category(coco: dict[str, Any]) -> None:
    _ann(coco)["category_id"] = 12  # a gap in COCO's ids


# (mutation, what the error says); every one breaks the second image only.
VALUE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("rle_counts_P", lambda c: _crowd(c, "P"), "RLE 'counts'"),
    ("rle_counts_type", lambda c: _crowd(c, 12), "RLE 'counts'"),
    ("rle_counts_strings", lambda c: _crowd(c, ["1", "2"]), "RLE 'counts'"),
    ("rle_counts_negative", lambda c: _crowd(c, [-1, 5]), "RLE 'counts'"),
    ("rle_counts_sum", _rle_wrong_sum, "RLE 'counts' sum to"),
    ("rle_size", lambda c: _crowd(c, [1], ["a", 2]), "RLE 'size'"),
    ("rle_size_not_image", _rle_full, "RLE 'size'"),
    ("zero_size_jpeg", _zero_size_jpeg, "'width' must be"),
    ("zero_size_header", _zero_size_header, "a size of 0x0"),
    ("area_string", _set("area", "12"), "'area' must be a finite number"),
    ("area_nan", _set("area", float("nan")), "'area' must be a finite number"),
    ("iscrowd_string", _set("iscrowd", "0"), "'iscrowd' must be 0 or 1"),
    ("iscrowd_two", _set("iscrowd", 2), "'iscrowd' must be 0 or 1"),
    ("polygon_strings", _set("segmentation", [["1", "2", "3", "4", "5", "6"]]), "polygon"),
    ("polygon_not_lists", _set("segmentation", [1, 2, 3, 4, 5, 6]), "polygon"),
    ("polygon_odd", _set("segmentation", [[1, 2, 3, 4, 5]]), "polygon"),
    ("polygon_inf", _set("segmentation", [[1, 2, 3, float("inf"), 5, 6]]), "polygon"),
    ("segmentation_string", _set("segmentation", "abc"), "'segmentation'"),
    ("bbox_short", _set("bbox", [1, 2, 3]), "'bbox' must be 4"),
    ("bbox_string", _set("bbox", [1, 2, "3", 4]), "'bbox' must be 4"),
    ("bbox_not_list", _set("bbox", "1 2 3 4"), "'bbox' must be 4"),
    ("bbox_missing", _set("bbox", _DELETE), "'bbox' must be 4"),
    ("category_string", _set("category_id", "1"), "'category_id' must be int"),
    ("category_unknown", _unknown_category, "category_id 12 is unknown"),
    ("id_missing", _set("id", _DELETE), "'id' must be int"),
    ("id_too_big", _set("id", 2**63), "'id' must fit in int64"),
    ("id_duplicate", _duplicate_id, "duplicate annotation id"),
    ("image_id_string", _set("image_id", "1"), "'image_id' must be int"),
    ("file_name_nul", _set_image("file_name", "a\x00.jpg"), "NUL"),
    ("file_name_number", _set_image("file_name", 12), "'file_name' must be str"),
    ("file_name_empty", _set_image("file_name", ""), "'file_name' must not be empty"),
    ("width_string", _set_image("width", "640"), "'width' must be int"),
    ("width_negative", _set_image("width", -640), "'width' must be"),
    ("width_float", _set_image("width", 640.0), "'width' must be int"),
    ("height_zero", _set_image("height", 0), "'height' must be"),
    ("height_missing", _set_image("height", _DELETE), "'height' must be int"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES]
)
def test_coco_bad_values_are_named_item_errors(
    coco: dict[str, Any], tmp_path: Path, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    info = coco["json"]["images"][1]
    ann_id = _ann(coco)["id"]
    mutate(coco)
    src = source(coco)
    with pytest.raises(rf.ItemError) as e:
        convert(src, tmp_path / "fail")
    assert message in str(e.value)
    # Named: the image (by id, and by file name where it has a usable one) or the
    # annotation (by id).
    named = f"id {info['id']}" in str(e.value) or f"annotation {ann_id}" in str(e.value)
    assert named, str(e.value)
    assert str(coco["dir"] / "instances.json") in str(e.value) or "image" in e.value.item
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    assert len(manifest.report["skipped"]) == 1, manifest.report["skipped"]
    assert message in manifest.report["skipped"][0]["reason"]
    kept = {int(ex["image/source_id"][0]) for ex in stored(tmp_path / "skip", manifest)}
    # An annotation that names no usable image is skipped alone; otherwise its image is.
    alone = manifest.report["skipped"][0]["item"] == f"annotation {ann_id}"
    assert kept == {
        image["id"] for k, image in enumerate(coco["json"]["images"]) if alone or k != 1
    }


@pytest.mark.parametrize("case", ["rle_counts_P", "area_string", "file_name_nul", "width_string"])
def test_coco_cli_bad_values_exit_1_without_traceback(
    coco: dict[str, Any], tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, mutate, message = next(c for c in VALUE_CASES if c[0] == case)
    mutate(coco)
    assert main(coco_cli(coco, tmp_path / "fail")) == 1
    assert message in capsys.readouterr().err
    assert main(coco_cli(coco, tmp_path / "skip", "--on-error", "skip")) == 0
    (skipped,) = rf.Manifest.load(tmp_path / "skip").report["skipped"]
    assert message in skipped["reason"]


def test_coco_image_without_an_id_is_named_by_its_place(
    coco: dict[str, Any], tmp_path: Path
) -> None:
    info = coco["json"]["images"][1]
    image_id = info.pop("id")
    src = source(coco)
    where = f"{coco['dir'] / 'instances.json'}: images[1]"
    with pytest.raises(rf.ItemError, match=r"images\[1\]: 'id' must be int, found None"):
        convert(src, tmp_path / "fail")
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    skipped = [s["item"] for s in manifest.report["skipped"]]
    own = [a["id"] for a in coco["json"]["annotations"] if a["image_id"] == image_id]
    # The image by its place; its annotations, which now name no image, each by id.
    assert sorted(skipped) == sorted([where, *(f"annotation {i}" for i in own)])
    assert manifest.records() == 2


def test_coco_keypoints_of_the_wrong_shape(coco: dict[str, Any], tmp_path: Path) -> None:
    ann = _ann(coco)
    names = ["nose", "left_eye"]
    keypoints = {
        "categories": [{"id": 1, "name": "person", "keypoints": names}],
        "annotations": [dict(ann, keypoints=[1, 2, 2, 4, 5], num_keypoints=2)],
    }
    kp_path = coco["dir"] / "keypoints.json"
    kp_path.write_text(json.dumps(keypoints))
    src = CocoSource.from_files(write(coco), coco["images_dir"], keypoints=kp_path)
    with pytest.raises(rf.ItemError, match="'keypoints' must be 6 numbers"):
        convert(src, tmp_path / "fail")
    for k, bad in enumerate((["1", 2, 2, 4, 5, 2], [1, 2, 2, 4, 5, float("nan")])):
        keypoints["annotations"][0]["keypoints"] = bad
        kp_path.write_text(json.dumps(keypoints))
        src = CocoSource.from_files(write(coco), coco["images_dir"], keypoints=kp_path)
        manifest = convert(src, tmp_path / f"skip{k}", on_error="skip")
        (skipped,) = manifest.report["skipped"]
        assert skipped["item"] == image_name(coco["json"]["images"][1])
        assert "'keypoints' must be 6 numbers" in skipped["reason"]
        assert f"annotation {ann['id']}" in skipped["reason"]
    keypoints["annotations"][0].update(keypoints=[1, 2, 2, 4, 5, 2], num_keypoints="2")
    kp_path.write_text(json.dumps(keypoints))
    src = CocoSource.from_files(write(coco), coco["images_dir"], keypoints=kp_path)
    with pytest.raises(rf.ItemError, match="'num_keypoints' must be int"):
        convert(src, tmp_path / "num")


def test_rle_from_string_rejects_a_cut_value() -> None:
    with pytest.raises(ValueError, match="ends inside a value"):
        rle_from_string("P")
    with pytest.raises(ValueError, match="not an RLE character"):
        rle_from_string("6\x00")
    assert rle_from_string("61X13") == [6, 1, 40, 4]


# --- item 14: non-finite boxes --------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("per", ["image", "annotation"])
@pytest.mark.parametrize("mode", ["keep", "clip", "skip", "fail"])
def test_non_finite_boxes_are_item_errors_in_every_mode(
    coco: dict[str, Any], tmp_path: Path, value: str, per: str, mode: str
) -> None:
    info = coco["json"]["images"][1]
    ann = _ann(coco)
    ann["bbox"] = [10.0, "VALUE", 20.0, 5.0]
    path = coco["dir"] / "instances.json"
    path.write_text(json.dumps(coco["json"]).replace('"VALUE"', value))
    src = CocoSource.from_files(path, coco["images_dir"], per=per, bad_boxes=mode)
    with pytest.raises(rf.ItemError) as e:
        convert(src, tmp_path / "fail")
    assert e.value.item == image_name(info)
    assert f"annotation {ann['id']}" in e.value.reason and "finite" in e.value.reason
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [image_name(info)]
    for ex in stored(tmp_path / "skip", manifest):
        for name, values in ex.items():
            if isinstance(values, np.ndarray) and values.dtype == np.float32:
                assert np.isfinite(values).all(), name


# --- item 15: verify --images decodes fully and checks the format -------------------------


def _corrupt_middle(jpeg: bytes) -> bytes:
    data = bytearray(jpeg)
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    return bytes(data)


def _png_of(jpeg: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(io.BytesIO(jpeg)) as im:
        im.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_dataset(tmp_path: Path, shared_data: Path) -> tuple[Path, list[bytes]]:
    pytest.importorskip("PIL")
    jpegs = [p.read_bytes() for p in sorted((shared_data / "tiny_coco" / "val2017").glob("*.jpg"))]
    images = [jpegs[0], _corrupt_middle(jpegs[1]), _png_of(jpegs[2]), jpegs[3]]
    schema = rf.Schema(
        {
            "image": rf.FeatureSpec(dtype="bytes", meaning=rf.Image(format="jpeg")),
            "label": rf.FeatureSpec(dtype="int64"),
        }
    )
    out = tmp_path / "ds"
    rows = [{"image": image, "label": k} for k, image in enumerate(images)]
    rf.write_dataset(rows, out, schema=schema)
    return out, images


def test_verify_images_decodes_fully_and_checks_the_format(
    image_dataset: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = image_dataset
    result = rf.inspect.verify(out, images=True)
    assert not result.ok
    problems = sorted((p.record, p.kind, p.message) for p in result.problems)
    assert [(r, k) for r, k, _ in problems] == [(1, "image"), (2, "image")]
    shard = next(out.glob("*.tfrecord"))
    assert all(p.file == str(shard) for p in result.problems)
    assert "feature 'image'[0]" in problems[0][2] and "Corrupt JPEG data" in problems[0][2]
    assert "feature 'image'[0]" in problems[1][2]
    assert "PNG" in problems[1][2] and "the schema says jpeg" in problems[1][2]
    assert rf.inspect.verify(out).ok  # without --images, the records themselves are fine
    assert main(["verify", "--images", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "Corrupt JPEG data" in printed and "the schema says jpeg" in printed


def test_verify_images_without_a_schema_checks_every_image(
    image_dataset: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    out, _ = image_dataset
    shard = tmp_path / "alone.tfrecord"  # no dataset.json beside it: no schema
    shutil.copy(next(out.glob("*.tfrecord")), shard)
    result = rf.inspect.verify(shard, images=True)
    assert [p.record for p in result.problems] == [1]
    assert "Corrupt JPEG data" in result.problems[0].message


def test_coco_png_named_jpg_is_an_item_error(coco: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    info = coco["json"]["images"][1]
    path = coco["images_dir"] / info["file_name"]
    path.write_bytes(_png_of(path.read_bytes()))
    src = source(coco)
    assert src.schema()["image/encoded"].meaning == rf.Image(format="jpeg")
    with pytest.raises(rf.ItemError, match="holds PNG bytes, but the schema says jpeg") as e:
        convert(src, tmp_path / "fail")
    assert e.value.item == image_name(info)
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [image_name(info)]
    assert rf.inspect.verify(tmp_path / "skip", images=True).ok


def test_image_folder_png_named_jpg_and_corrupt_jpeg(
    folder: dict[str, Any], tmp_path: Path
) -> None:
    png = folder["root"] / "cat" / "0.jpg"
    png.write_bytes(_png_of(png.read_bytes()))
    corrupt = folder["root"] / "dog" / "1.jpg"
    corrupt.write_bytes(_corrupt_middle(corrupt.read_bytes()))
    src = ImageFolderSource(folder["root"], verify=True)
    manifest = convert(src, tmp_path / "skip", on_error="skip")
    skipped = {s["item"]: s["reason"] for s in manifest.report["skipped"]}
    assert sorted(skipped) == [str(png), str(corrupt)]
    assert "holds PNG bytes, but the schema says jpeg" in skipped[str(png)]
    assert "Corrupt JPEG data" in skipped[str(corrupt)]
    assert rf.inspect.verify(tmp_path / "skip", images=True).ok
    # Without verify, the corrupt body is not looked at; the PNG still is refused.
    manifest = convert(ImageFolderSource(folder["root"]), tmp_path / "fast", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [str(png)]


def test_plain_names_opened_without_resolving_keep_every_refusal(tmp_path: Path) -> None:
    # A one-component name is opened as it is (O_NOFOLLOW), without resolving the
    # directory; a link there, and every error, take the resolving way as before.
    from recordforge.sources._read import Refused, read_inside

    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    (real / "in.jpg").symlink_to(real / "a.jpg")
    (real / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    where = "the image directory"
    for root in (real, tmp_path / "via"):  # the directory itself may be a link
        assert read_inside(str(root), "a.jpg", limit=10, where=where) == b"jpeg"
        assert read_inside(str(root), "in.jpg", limit=10, where=where) == b"jpeg"
        with pytest.raises(Refused, match="outside the image directory"):
            read_inside(str(root), "out.jpg", limit=10, where=where)
        with pytest.raises(FileNotFoundError, match=str(real / "missing.jpg")):
            read_inside(str(root), "missing.jpg", limit=10, where=where)
        with pytest.raises(Refused, match="over the limit"):
            read_inside(str(root), "a.jpg", limit=3, where=where)

"""Image folders -> records: labels from folder names, byte-identical images, header
sizes, format detection, bad files (fail / skip) and resizing."""

from __future__ import annotations

import doctest
import io
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

import recordforge as rf
import recordforge.sources.images as images_module
from recordforge.sources.images import ImageFolderSource, image_format

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

SKIMAGE = ("camera.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg")
SKLEARN = ("china.jpg", "flower.jpg")


@pytest.fixture
def tree(shared_data: Path, tmp_path: Path) -> Path:
    """ROOT/{skimage,sklearn,made}/..., copied (or drawn) at test time."""
    root = tmp_path / "root"
    bundled = shared_data / "pypi_bundled"
    # Created out of name order: labels come from sorted names, not creation order.
    for folder, names in (("sklearn", SKLEARN), ("skimage", SKIMAGE)):
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copyfile(bundled / folder / name, root / folder / name)
    (root / "skimage" / "nested").mkdir()
    shutil.copyfile(bundled / "skimage" / "retina.jpg", root / "skimage" / "nested" / "retina.jpg")
    made = root / "made"
    made.mkdir()
    for fmt, size in (("GIF", (30, 20)), ("BMP", (7, 9)), ("WEBP", (40, 25))):
        Image.new("RGB", size, (200, 10, 10)).save(made / f"x.{fmt.lower()}", format=fmt)
    # The header decides the format, not the name.
    Image.new("RGB", (5, 6)).save(made / "really_jpeg.png", format="JPEG")
    (root / "skimage" / ".hidden.png").write_bytes(b"ignored")
    (root / "loose.jpg").write_bytes(b"ignored: not in a class folder")
    return root


def _convert(src: ImageFolderSource, out: Path, **kwargs: Any) -> list[dict[str, Any]]:
    manifest = rf.write_dataset(
        src.items(), out, to_records=src.to_records, schema=src.schema(), **kwargs
    )
    return [
        rf.decode_example(record)
        for shard in manifest.splits["train"]
        for record in rf.read_records(out / shard.file)
    ]


def test_labels_bytes_sizes_and_formats(tree: Path, tmp_path: Path) -> None:
    src = ImageFolderSource(tree)
    assert src.names == ("made", "skimage", "sklearn")
    schema = src.schema()
    assert schema["image/class/label"].meaning == rf.ClassLabel(names=src.names)
    assert schema["image/encoded"].meaning == rf.Image(format=None)  # mixed formats
    examples = _convert(src, tmp_path / "out", max_records=4)
    filenames = [ex["image/filename"][0].decode() for ex in examples]
    assert filenames == [
        "made/really_jpeg.png",
        "made/x.bmp",
        "made/x.gif",
        "made/x.webp",
        "skimage/camera.png",
        "skimage/chelsea.png",
        "skimage/coffee.png",
        "skimage/hubble_deep_field.jpg",
        "skimage/nested/retina.jpg",
        "skimage/rocket.jpg",
        "sklearn/china.jpg",
        "sklearn/flower.jpg",
    ]
    for ex, name in zip(examples, filenames, strict=True):
        path = tree / name
        assert ex["image/encoded"] == [path.read_bytes()]
        with Image.open(path) as im:
            assert (ex["image/width"].tolist(), ex["image/height"].tolist()) == (
                [im.width],
                [im.height],
            )
            assert ex["image/format"] == [str(im.format).lower().encode()]
        folder = name.split("/")[0]
        assert ex["image/class/text"] == [folder.encode()]
        assert ex["image/class/label"].tolist() == [src.names.index(folder)]
    formats = {f: ex["image/format"][0] for f, ex in zip(filenames, examples, strict=True)}
    assert formats["made/really_jpeg.png"] == b"jpeg"
    assert formats["made/x.gif"] == b"gif"
    assert formats["made/x.bmp"] == b"bmp"
    assert formats["made/x.webp"] == b"webp"
    assert formats["skimage/camera.png"] == b"png"


def test_tensorflow_parses_with_schema(tree: Path, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    src = ImageFolderSource(tree, class_names=["sklearn", "skimage"])
    examples = _convert(src, tmp_path / "out")
    assert [ex["image/class/label"][0] for ex in examples] == [0, 0] + [1] * 6
    records = [
        r
        for s in rf.Manifest.load(tmp_path / "out").splits["train"]
        for r in rf.read_records(tmp_path / "out" / s.file)
    ]
    description = src.schema().to_tf_feature_description()
    for record, ex in zip(records, examples, strict=True):
        parsed = tf.io.parse_single_example(record, description)
        pixels = tf.io.decode_image(parsed["image/encoded"])
        assert pixels.shape[:2] == (int(parsed["image/height"]), int(parsed["image/width"]))
        assert parsed["image/filename"].numpy() == ex["image/filename"][0]


def test_non_image_file_fails_or_is_skipped(tree: Path, tmp_path: Path) -> None:
    bad = tree / "skimage" / "notes.txt"
    bad.write_text("not an image", encoding="utf-8")
    fake = tree / "sklearn" / "broken.jpg"
    fake.write_bytes(b"\xff\xd8\xff" + b"\x00" * 10)  # a JPEG signature and nothing else
    src = ImageFolderSource(tree)
    with pytest.raises(rf.ItemError) as e:
        _convert(src, tmp_path / "fail")
    assert e.value.item == str(bad)
    assert "not a JPEG, PNG, GIF, BMP or WebP image" in e.value.reason
    report = rf.ConversionReport()
    examples = _convert(src, tmp_path / "skip", on_error="skip", report=report)
    assert [s["item"] for s in report.skipped] == [str(bad), str(fake)]
    assert "cannot decode jpeg image" in report.skipped[1]["reason"]
    assert len(examples) == len(src.items()) - 2 == 12
    manifest = rf.Manifest.load(tmp_path / "skip")
    assert manifest.report["skipped"] == report.skipped
    # Taking only some extensions leaves the text file out.
    assert str(bad.relative_to(tree)) not in [
        i.path for i in ImageFolderSource(tree, extensions=["jpg", ".PNG"]).items()
    ]


def test_verify_catches_a_corrupt_body(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "a" / "cut.png").write_bytes(buffer.getvalue()[:60])
    item = ImageFolderSource(tmp_path).items()[0]
    assert ImageFolderSource(tmp_path).to_records(item)  # header only: accepted
    with pytest.raises(rf.ItemError, match=r"cut\.png"):
        ImageFolderSource(tmp_path, verify=True).to_records(item)


def test_resize_bounds_the_longer_side(tree: Path, tmp_path: Path) -> None:
    src = ImageFolderSource(tree, resize=64)
    examples = _convert(src, tmp_path / "out")
    drafted = []
    for ex in examples:
        name = ex["image/filename"][0].decode()
        data = ex["image/encoded"][0]
        with Image.open(tree / name) as original, Image.open(io.BytesIO(data)) as stored:
            assert stored.format == original.format  # re-encoded in its own format
            assert stored.size == (ex["image/width"][0], ex["image/height"][0])
            if max(original.size) <= 64:
                assert data == (tree / name).read_bytes()  # small ones are untouched
            else:
                assert max(stored.size) == 64
                ratio = original.width / original.height
                assert abs(stored.width / stored.height - ratio) < 0.1 * ratio
            if original.format == "JPEG" and max(original.size) >= 128:
                # Decoded at a reduced scale (libjpeg's DCT scaling) first, then resized
                # bicubic: byte for byte that recipe, not a full-size decode's.
                drafted.append(name)
                assert data == _jpeg_resized(tree / name, stored.size, draft=True)
                assert data != _jpeg_resized(tree / name, stored.size, draft=False)
    assert len(drafted) >= 3, drafted


def _jpeg_resized(path: Path, size: tuple[int, int], draft: bool) -> bytes:
    with Image.open(path) as im:
        if draft:
            im.draft(None, size)
        small = im.resize(size, resample=3) if im.size != size else im.copy()
        # kept: the EXIF and the colour profile (same mode)
        metadata = {k: im.info[k] for k in ("icc_profile", "exif") if im.info.get(k)}
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=95, **metadata)
    return out.getvalue()


def test_image_format_signatures() -> None:
    assert image_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert image_format(b"GIF87a") == "gif"
    assert image_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_format(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert image_format(b"BM") is None  # too short for a BMP header
    assert image_format(b"") is None


def test_bad_roots_and_options(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        ImageFolderSource(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderSource(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="not found"):
        ImageFolderSource(tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="resize"):
        ImageFolderSource(tmp_path, resize=0)


def test_picklable_and_schema_format_from_extensions(tree: Path) -> None:
    src = ImageFolderSource(tree, class_names=["sklearn"])
    assert pickle.loads(pickle.dumps(src)) == src
    assert src.schema()["image/encoded"].meaning == rf.Image(format="jpeg")
    item = src.items()[0]
    assert pickle.loads(pickle.dumps(src)).to_records(item) == src.to_records(item)


def test_module_docstring_examples() -> None:
    result = doctest.testmod(images_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_workers_give_the_same_shards(tree: Path, tmp_path: Path) -> None:
    src = ImageFolderSource(tree, resize=32)
    out1, out2 = tmp_path / "w1", tmp_path / "w2"
    m1 = rf.write_dataset(src.items(), out1, to_records=src.to_records, workers=1, max_records=5)
    m2 = rf.write_dataset(src.items(), out2, to_records=src.to_records, workers=2, max_records=5)
    assert m1.splits == m2.splits
    assert len(m1.splits["train"]) == 3


def test_a_folder_that_cannot_be_listed_is_an_item_error_not_left_out(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subfolder of a class that cannot be listed (no permission: simulated, as root
    may list anything) is an item refused by name, so the conversion stops on it or,
    with on_error="skip", lists it in the report: its images are never left out in
    silence. The class folder itself likewise."""
    import os

    scandir = os.scandir
    locked = {str(tree / "skimage" / "nested"), str(tree / "made")}

    def refusing(path: Any = ".") -> Any:
        if str(path) in locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    src = ImageFolderSource(tree)
    refused = {i.path: i.problem for i in src.items() if i.problem}
    assert refused == {
        "made": "cannot list this folder: Permission denied",
        "skimage/nested": "cannot list this folder: Permission denied",
    }
    with pytest.raises(rf.ItemError) as e:
        _convert(src, tmp_path / "fail")
    assert e.value.item.endswith("made") and "cannot list" in e.value.reason
    report = rf.ConversionReport()
    _convert(src, tmp_path / "skip", on_error="skip", report=report)
    assert sorted(s["item"].rsplit("root/", 1)[1] for s in report.skipped) == sorted(refused)


def test_a_remote_folder_that_cannot_be_listed_is_an_item_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for a folder behind an fsspec URL (here fsspec's memory filesystem): its
    own ``walk`` passes ``on_error`` to the top folder only, and omits a subfolder it
    cannot list by default."""
    import fsspec

    fs = fsspec.filesystem("memory")
    png = io.BytesIO()
    Image.new("RGB", (4, 3)).save(png, format="PNG")
    files = ["cat/a.png", "cat/sub/b.png", "cat/sub/deeper/e.png", "cat/sub2/d.png", "dog/c.png"]
    for name in files:
        fs.pipe(f"/rf-walk/{name}", png.getvalue())
    try:
        listed = [(i.path, i.problem) for i in ImageFolderSource("memory://rf-walk").items()]
        assert listed == [(name, None) for name in files]
        ls = type(fs).ls

        def refusing(self: Any, path: str, detail: bool = True, **kwargs: Any) -> Any:
            if path.rstrip("/").endswith("cat/sub"):
                raise PermissionError(13, "Permission denied", path)
            return ls(self, path, detail=detail, **kwargs)

        monkeypatch.setattr(type(fs), "ls", refusing)
        listed = [(i.path, i.problem) for i in ImageFolderSource("memory://rf-walk").items()]
        assert listed == [
            ("cat/a.png", None),
            ("cat/sub", "cannot list this folder: Permission denied"),
            ("cat/sub2/d.png", None),
            ("dog/c.png", None),
        ]
    finally:
        fs.rm("/rf-walk", recursive=True)

"""``rf.images``: decode to uint8 HWC, decode_batch on threads, resize; JPEG pixels equal
TensorFlow's decode_jpeg's for both IDCTs (all three libjpeg-turbo) and Pillow's for the
accurate one, all formats the sources detect."""

from __future__ import annotations

import doctest
import io
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import images

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def encode(array: np.ndarray, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (23, 31, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (23, 31), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (23, 31, 4), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "TIFF"])
def test_lossless_formats_exact(fmt: str) -> None:
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    got = images.decode(encode(RGB, fmt, **kwargs))
    assert got.dtype == np.uint8 and got.shape == (23, 31, 3) and got.flags.writeable
    np.testing.assert_array_equal(got, RGB)


def test_channels_and_conversions() -> None:
    gray = encode(GRAY, "PNG")
    assert images.decode(gray, channels=1)[:, :, 0].tolist() == GRAY.tolist()
    rgb = images.decode(gray)  # grayscale replicated
    assert rgb.shape == (23, 31, 3) and (rgb == GRAY[:, :, None]).all()
    rgba = encode(RGBA, "PNG")
    np.testing.assert_array_equal(images.decode(rgba, channels=4), RGBA)
    np.testing.assert_array_equal(images.decode(rgba), RGBA[:, :, :3])  # alpha dropped
    palette = Image.fromarray(RGB).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="GIF")
    assert images.decode(buf.getvalue()).shape == (23, 31, 3)
    with pytest.raises(ValueError, match="channels"):
        images.decode(gray, channels=2)


def test_bad_images_name_position() -> None:
    good = encode(RGB, "PNG")
    with pytest.raises(rf.DecodeError, match="not an image format"):
        images.decode(b"hello")
    with pytest.raises(rf.DecodeError, match=r"image 2 of 3: .*png"):
        images.decode_batch([good, good, good[:40]], threads=2)


def test_decode_batch_threads_and_sizes() -> None:
    data = [encode(RNG.integers(0, 256, (10 + k, 20, 3), dtype=np.uint8), "PNG") for k in range(9)]
    one = images.decode_batch(data, threads=1)
    many = images.decode_batch(data, threads=3)
    assert [a.shape for a in one] == [(10 + k, 20, 3) for k in range(9)]
    assert all((a == b).all() for a, b in zip(one, many, strict=True))
    stacked = images.decode_batch(data, size=(8, 12), threads=2)
    assert stacked.shape == (9, 8, 12, 3) and stacked.dtype == np.uint8
    for k in range(9):
        np.testing.assert_array_equal(stacked[k], images.resize(one[k], (8, 12)))
    assert images.decode_batch([], size=4).shape == (0, 4, 4, 3)
    assert images.decode_batch([]) == []
    with pytest.raises(ValueError, match="threads"):
        images.decode_batch(data, threads=0)


def test_resize() -> None:
    assert images.resize(RGB, 7).shape == (7, 7, 3)
    assert images.resize(RGB, (46, 62), method="nearest")[::2, ::2].tolist() == RGB.tolist()
    assert images.resize(GRAY, (5, 6)).shape == (5, 6)
    assert images.resize(GRAY[:, :, None], (5, 6), method="area").shape == (5, 6, 1)
    flat = np.full((9, 9, 3), 77, np.uint8)
    for method in ("nearest", "bilinear", "bicubic", "lanczos", "area"):
        assert (images.resize(flat, (4, 5), method=method) == 77).all()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        images.resize(RGB, 4, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        images.resize(RGB.astype(np.float32), 4)
    with pytest.raises(ValueError, match="image size"):
        images.resize(RGB, (0, 4))


def test_draft_is_close_and_faster_path() -> None:
    smooth = np.linspace(0, 255, 480 * 640 * 3).reshape(480, 640, 3).astype(np.uint8)
    jpeg = encode(smooth, "JPEG", quality=95)
    exact = images.decode_batch([jpeg], size=(60, 80))
    draft = images.decode_batch([jpeg], size=(60, 80), draft=True)
    assert draft.shape == exact.shape == (1, 60, 80, 3)
    assert np.abs(draft.astype(int) - exact).mean() < 3.0
    assert (draft != exact).any()  # decoded at 1/8 scale, not resized from full size


def _decode_in_child(data: list[bytes]) -> list[tuple[int, ...]]:
    return [a.shape for a in images.decode_batch(data, threads=2)]


def test_thread_pool_survives_fork() -> None:
    data = [encode(RGB, "PNG")] * 4
    images.decode_batch(data, threads=2)  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_decode_in_child, (data,)) == [(23, 31, 3)] * 4


def _jpegs(shared: Path) -> list[bytes]:
    coco = sorted((shared / "tiny_coco" / "val2017").glob("*.jpg"))
    bundled = sorted((shared / "pypi_bundled").rglob("*.jp*g"))
    return [p.read_bytes() for p in [*coco, *bundled]]


TF_DCT = {"INTEGER_FAST": "", "INTEGER_ACCURATE": "INTEGER_ACCURATE"}


def _tf_decode(tf: Any, jpeg: bytes, channels: int, dct_method: str) -> np.ndarray:
    return tf.io.decode_jpeg(jpeg, channels=channels, dct_method=TF_DCT[dct_method]).numpy()


def _pillow_rgb(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("dct_method", ["INTEGER_FAST", "INTEGER_ACCURATE"])
def test_jpeg_equals_tensorflow_decode(shared_data: Path, dct_method: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    data = _jpegs(shared_data)
    assert len(data) >= 50
    for channels in (3, 1):
        ours = images.decode_batch(data, channels=channels, dct_method=dct_method, threads=2)
        for array, jpeg in zip(ours, data, strict=True):
            want = _tf_decode(tf, jpeg, channels, dct_method)
            assert array.shape == want.shape and array.flags.writeable
            assert array.tobytes() == want.tobytes()  # bit-exact


def test_jpeg_idct_choice(shared_data: Path) -> None:
    """INTEGER_ACCURATE is Pillow's decode; the default (INTEGER_FAST) is off by about a
    level: the choice reaches the decoder, and the default is the fast one."""
    data = _jpegs(shared_data)
    diffs = []
    for jpeg in data:
        accurate = images.decode(jpeg, dct_method="INTEGER_ACCURATE")
        assert accurate.tobytes() == _pillow_rgb(jpeg).tobytes()
        fast = images.decode(jpeg)
        assert fast.tobytes() == images.decode(jpeg, dct_method="INTEGER_FAST").tobytes()
        diffs.append(np.abs(fast.astype(np.int16) - accurate).mean())
    assert 0.2 < float(np.mean(diffs)) < 2.0
    with pytest.raises(ValueError, match="dct_method"):
        images.decode(data[0], dct_method="FLOAT")  # type: ignore[arg-type]


def _generated_jpegs() -> dict[str, bytes]:
    """Shapes, subsamplings and encodings a JPEG decoder treats differently."""
    y, x = np.mgrid[0:64, 0:80]
    base = np.stack([x * 3, y * 4, (x * y) % 256], axis=-1).astype(np.uint8)
    base = np.clip(base.astype(int) + RNG.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 (not applied, as by TF)
    out = {}
    for h, w in [(1, 1), (5, 7), (17, 33), (64, 31), (64, 80)]:
        rgb = np.ascontiguousarray(base[:h, :w])
        out[f"{h}x{w} 4:2:0"] = encode(rgb, "JPEG", quality=85)
        out[f"{h}x{w} 4:2:2"] = encode(rgb, "JPEG", quality=85, subsampling=1)
        out[f"{h}x{w} 4:4:4"] = encode(rgb, "JPEG", quality=85, subsampling=0)
        out[f"{h}x{w} progressive"] = encode(rgb, "JPEG", quality=90, progressive=True)
        out[f"{h}x{w} grayscale"] = encode(np.ascontiguousarray(rgb[:, :, 1]), "JPEG")
        out[f"{h}x{w} grayscale progressive"] = encode(
            np.ascontiguousarray(rgb[:, :, 0]), "JPEG", progressive=True
        )
    rgb = np.ascontiguousarray(base[:40, :56])
    out["restart markers"] = encode(rgb, "JPEG", quality=95, restart_marker_blocks=2)
    out["quality 100"] = encode(rgb, "JPEG", quality=100)
    out["exif orientation 6"] = encode(rgb, "JPEG", exif=exif.tobytes())
    return out


GENERATED = _generated_jpegs()


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_jpegs_equal_tensorflow(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    jpeg = GENERATED[name]
    for dct_method in ("INTEGER_FAST", "INTEGER_ACCURATE"):
        for channels in (1, 3):
            got = images.decode(jpeg, channels=channels, dct_method=dct_method)  # type: ignore[arg-type]
            want = _tf_decode(tf, jpeg, channels, dct_method)
            assert got.shape == want.shape, (dct_method, channels)
            assert got.tobytes() == want.tobytes(), (dct_method, channels)
        rgba = images.decode(jpeg, channels=4, dct_method=dct_method)  # type: ignore[arg-type]
        np.testing.assert_array_equal(rgba[:, :, :3], _tf_decode(tf, jpeg, 3, dct_method))
        assert (rgba[:, :, 3] == 255).all()
    assert images.decode(jpeg, dct_method="INTEGER_ACCURATE").tobytes() == (
        _pillow_rgb(jpeg).tobytes()
    )


def test_without_simplejpeg_pillow_decodes_accurately(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow alone: the accurate IDCT whatever ``dct_method`` says, and the same luma
    plane for ``channels=1`` as libjpeg-turbo gives."""
    tf = pytest.importorskip("tensorflow")
    with_simplejpeg = {
        n: images.decode(j, dct_method="INTEGER_ACCURATE") for n, j in GENERATED.items()
    }
    monkeypatch.setattr(images, "_simplejpeg", lambda: None)
    for name, jpeg in GENERATED.items():
        assert images.decode(jpeg).tobytes() == with_simplejpeg[name].tobytes(), name
        gray = images.decode(jpeg, channels=1)
        assert gray.tobytes() == _tf_decode(tf, jpeg, 1, "INTEGER_ACCURATE").tobytes(), name


def test_cmyk_jpeg_goes_to_pillow() -> None:
    cmyk = Image.fromarray(RGB).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    np.testing.assert_array_equal(images.decode(jpeg), _pillow_rgb(jpeg))


DAMAGED = {
    "truncated in the scan": GENERATED["64x80 4:2:0"][:2000],
    "header only": GENERATED["64x80 4:2:0"][:100],
    "garbage after SOI": b"\xff\xd8\xff" + bytes(range(200)),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_jpegs_raise_naming_the_image(name: str) -> None:
    """The errors are Pillow's, as before simplejpeg, and name the image's position."""
    good, bad = GENERATED["64x80 4:2:0"], DAMAGED[name]
    with pytest.raises(rf.DecodeError, match=r"^image 1 of 2: cannot decode image \(jpeg, \d+ "):
        images.decode_batch([good, bad], threads=2)
    with pytest.raises(rf.DecodeError, match=r"^cannot decode image \(jpeg, \d+ bytes\): "):
        images.decode(bad)


def test_jpeg_with_libjpeg_warning_decodes_as_pillow_does() -> None:
    jpeg = GENERATED["64x80 4:2:0"]
    sos = jpeg.index(b"\xff\xda")
    extraneous = jpeg[:sos] + b"\x00" * 10 + jpeg[sos:]  # libjpeg: "Corrupt JPEG data"
    np.testing.assert_array_equal(images.decode(extraneous), _pillow_rgb(extraneous))


def test_png_equals_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    for data in (encode(GRAY, "PNG"), encode(RGB, "PNG"), encode(RGBA, "PNG")):
        want = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        np.testing.assert_array_equal(images.decode(data), want)


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(images, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def _address(array: np.ndarray) -> int:
    address: int = array.__array_interface__["data"][0]
    return address


def _big_jpegs(n: int) -> list[bytes]:
    """JPEGs of 300x400 and 400x300: a batch of them has over 1 MB of pixels (smaller
    batches get an array per image)."""
    rng = np.random.default_rng(7)
    shapes = [(300, 400, 3), (400, 300, 3)]
    return [encode(rng.integers(0, 256, shapes[i % 2], dtype=np.uint8), "JPEG") for i in range(n)]


BIG = _big_jpegs(10)


def test_a_mixed_batch_decodes_as_one_image_at_a_time() -> None:
    """JPEGs go into the batch's shared buffer; a PNG, a CMYK JPEG and one libjpeg-turbo
    warns about get arrays of their own; every one equals :func:`images.decode`."""
    cmyk = io.BytesIO()
    Image.fromarray(RGB).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    jpeg = GENERATED["64x80 4:2:0"]
    sos = jpeg.index(b"\xff\xda")
    warns = jpeg[:sos] + b"\x00" * 10 + jpeg[sos:]
    jpegs = [*BIG, *GENERATED.values()]
    batch = [*jpegs, encode(RGB, "PNG"), cmyk.getvalue(), warns]
    for channels in (1, 3, 4):
        for threads in (1, 2):
            got = images.decode_batch(batch, channels=channels, threads=threads)
            assert len(got) == len(batch)
            for array, data in zip(got, batch, strict=True):
                want = images.decode(data, channels=channels)
                assert array.shape == want.shape and array.dtype == np.uint8
                assert array.tobytes() == want.tobytes()
                assert array.flags.writeable and array.flags.c_contiguous
            shared = [a for a in got[: len(jpegs)] if a.base is not None]
            assert len(shared) == len(jpegs)  # every JPEG in the one buffer
            assert len({id(a.base) for a in shared}) == 1
            assert all(a.base is None for a in got[len(jpegs) :])
    # A batch of under 1 MB of pixels: an array per image.
    assert all(a.base is None for a in images.decode_batch(list(GENERATED.values())))


def test_a_small_batch_does_not_pin_a_large_buffer() -> None:
    images.decode_batch(BIG * 4)  # a large buffer, freed at once
    small = images.decode_batch(BIG[:3])
    assert small[0].base is not None
    assert small[0].base.nbytes <= 2 * sum(a.nbytes for a in small) + 3 * 64


def test_an_image_too_large_for_the_buffer_gets_its_own_array() -> None:
    jpeg = bytearray(BIG[0])
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    # The header claims 60000x60000 (10.8 GB of RGB): no buffer that size for the batch;
    # the image fails alone, named, and the others are not allocated for its sake.
    with pytest.raises(rf.DecodeError, match=r"^image 1 of 3: .*3600000000 pixels"):
        images.decode_batch([BIG[1], bytes(jpeg), BIG[2]], threads=1)


def test_the_buffer_is_reused_only_after_every_array_of_its_batch_is_gone() -> None:
    data = list(BIG)
    first = images.decode_batch(data, threads=2)
    kept = first[3]
    expected = kept.copy()
    start = _address(first[0])
    del first
    # One array of the first batch is alive: its buffer must not be handed out again.
    for _ in range(3):
        other = images.decode_batch(data[::-1], threads=2)
        assert not any(np.shares_memory(kept, a) for a in other)
        del other
    assert kept.tobytes() == expected.tobytes()
    del kept
    # Now it is free: the next batch decodes into memory already mapped.
    # (the last buffer freed is the first one taken).
    assert _address(images.decode_batch(data, threads=2)[0]) == start


def test_a_tensor_keeps_the_buffer_alive() -> None:
    torch = pytest.importorskip("torch")
    data = list(BIG)
    tensor = torch.from_numpy(images.decode_batch(data, threads=2)[-1])
    expected = tensor.clone()
    for _ in range(3):
        images.decode_batch(data[::-1], threads=2)
    assert torch.equal(tensor, expected)


@pytest.mark.parametrize(
    "shape,size",
    [
        ((375, 500, 3), (224, 224)),
        ((500, 375, 3), (224, 224)),
        ((7, 9, 1), (3, 2)),
        ((7, 9, 4), (20, 31)),
        ((1, 1, 3), (5, 4)),
        ((33, 17, 3), (33, 17)),
        ((480, 640, 3), (299, 299)),
        ((6, 6, 5), (4, 9)),
    ],
)
def test_resize_is_tensorflow_bilinear(shape: tuple[int, int, int], size: tuple[int, int]) -> None:
    """``float32`` out of the core equals ``tf.image.resize`` bit for bit; ``resize``
    (``uint8``) equals ``np.round`` of it, for every shape and channel count."""
    tf = pytest.importorskip("tensorflow")
    from recordforge import _core

    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    want = tf.image.resize(image, size).numpy()
    exact = np.empty((*size, shape[2]), np.float32)
    _core.resize_bilinear(image, exact)
    assert exact.tobytes() == want.tobytes()
    got = images.resize(image, size)
    assert got.dtype == np.uint8 and got.flags.writeable
    assert np.array_equal(got, np.round(want))
    if shape[2] == 1:
        assert np.array_equal(images.resize(image[:, :, 0], size), np.round(want[:, :, 0]))


def test_resize_methods_and_errors() -> None:
    image = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    tf_way = images.resize(image, (20, 30))
    smooth = images.resize(image, (20, 30), antialias=True)
    assert np.array_equal(smooth, _pillow_resize(image, (20, 30)))
    assert not np.array_equal(tf_way, smooth)  # antialiasing averages more pixels
    assert images.resize(image, 8, method="nearest").shape == (8, 8, 3)
    from recordforge import _core

    with pytest.raises(ValueError, match="cannot resize"):
        _core.resize_bilinear(image, np.empty((5, 5, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 or float32"):
        _core.resize_bilinear(image, np.empty((5, 5, 3), np.float64))


def _pillow_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def test_decode_batch_resizes_as_tensorflow(shared_data: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    data = _jpegs(shared_data)[:12]
    for size in [(224, 224), (61, 93)]:
        got = images.decode_batch(data, size=size, threads=2)
        for array, jpeg in zip(got, data, strict=True):
            want = tf.image.resize(tf.io.decode_jpeg(jpeg, channels=3), size).numpy()
            assert np.array_equal(array, np.round(want))
    # Pillow-only decoding (no simplejpeg) resizes the same way.
    png = encode(RGB, "PNG")
    want = tf.image.resize(tf.io.decode_png(png, channels=3), (7, 5)).numpy()
    assert np.array_equal(images.decode_batch([png], size=(7, 5))[0], np.round(want))


def test_draft_scales_are_the_fast_ones() -> None:
    """1/2, 1/4 or 1/8 when that stays at least the target size, else the full size
    (3/8 and 5/8 decode more slowly than full size)."""
    simplejpeg = pytest.importorskip("simplejpeg")
    smooth = np.linspace(0, 255, 64 * 80 * 3).reshape(64, 80, 3).astype(np.uint8)
    jpeg = encode(smooth, "JPEG", quality=95)
    assert images._draft_size(64, 80, (30, 40)) == (32, 40)
    assert images._draft_size(64, 80, (8, 10)) == (8, 10)
    assert images._draft_size(64, 80, (9, 10)) == (16, 20)
    assert images._draft_size(64, 80, (40, 50)) == (64, 80)  # not 5/8 (40x50)
    assert images._draft_size(375, 500, (224, 224)) == (375, 500)
    half = simplejpeg.decode_jpeg(jpeg, fastdct=True, min_height=32, min_width=40)
    assert half.shape == (32, 40, 3)
    got = images.decode_batch([jpeg], size=(30, 40), draft=True)[0]
    assert np.array_equal(got, images.resize(half, (30, 40)))
    full = images.decode_batch([jpeg], size=(40, 50), draft=True)[0]
    assert np.array_equal(full, images.decode_batch([jpeg], size=(40, 50))[0])


def test_a_jpeg_claiming_a_huge_size_is_refused_before_any_pixel_is_written(
    tmp_path: Path,
) -> None:
    # A 60000x60000 header on a small JPEG: Pillow's bomb limit, said at once. Before,
    # libjpeg-turbo allocated and wrote the 10.8 GB the header claims (~35 s) first.
    import subprocess
    import sys
    import textwrap

    jpeg = bytearray(BIG[0])
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(jpeg))
    code = textwrap.dedent(f"""
        import recordforge as rf
        from recordforge import images
        try:
            images.decode_batch([open({str(path)!r}, "rb").read()], threads=1)
        except rf.DecodeError as e:
            print("pixels" in str(e))
        # (VmHWM: this program's peak; ru_maxrss keeps the forking parent's)
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        print(int(hwm[0].split()[1]) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    refused, peak_mb = done.stdout.split()
    assert refused == "True", done.stderr[-2000:]
    assert int(peak_mb) < 1024, f"{peak_mb} MB"

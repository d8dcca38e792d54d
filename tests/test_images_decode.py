"""``rf.images``: decode to uint8 HWC, decode_batch on threads, resize; JPEG pixels equal
TensorFlow's accurate decoder's (both libjpeg-turbo), all formats the sources detect."""

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


def test_jpeg_equals_tensorflow_accurate_decode(shared_data: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    data = _jpegs(shared_data)
    assert len(data) >= 50
    ours = images.decode_batch(data)
    fast_diff = []
    for array, jpeg in zip(ours, data, strict=True):
        accurate = tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy()
        assert array.shape == accurate.shape
        assert array.tobytes() == accurate.tobytes()  # bit-exact
        default = tf.io.decode_jpeg(jpeg, channels=3).numpy()  # TF's INTEGER_FAST IDCT
        fast_diff.append(np.abs(array.astype(np.int16) - default).mean())
    assert max(fast_diff) < 2.0  # off by a level or so, not a different image


def test_grayscale_jpeg_and_png_equal_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    for data in (encode(GRAY, "JPEG"), encode(RGB, "PNG"), encode(RGBA, "PNG")):
        want = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        if data[:3] == b"\xff\xd8\xff":
            want = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy()
        np.testing.assert_array_equal(images.decode(data), want)


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(images, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

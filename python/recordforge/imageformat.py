"""What encoded image bytes are, from their first bytes, without decoding: the one
place that knows the formats' signatures (conversion, ``verify --images``, ``inspect``
and the decoders all ask here), and the size a JPEG or PNG header gives.

>>> from recordforge.imageformat import image_format, sniff_image, tiny_jpeg
>>> image_format(tiny_jpeg(width=3, height=2)), sniff_image(tiny_jpeg(width=3, height=2))
('jpeg', ('jpeg', 3, 2))
"""

from __future__ import annotations

import struct

__all__ = [
    "PNG_SIGNATURE",
    "image_dimensions",
    "image_format",
    "resized_size",
    "sniff_image",
    "tiny_jpeg",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# JPEG start-of-frame markers (those that carry the image size): C0-CF but C4, C8, CC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def pillow_refuses(pixels: int) -> bool:
    """Whether Pillow refuses an image of ``pixels`` as a decompression bomb (over twice
    ``Image.MAX_IMAGE_PIXELS``): such a JPEG is left to Pillow, which says so at once,
    where libjpeg-turbo would allocate and fill every pixel its header claims first (a
    2 KB JPEG claiming 60000 x 60000: 10.8 GB written, ~35 s, before the data ran out)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > 2 * limit


def image_format(data: bytes) -> str | None:
    """The image format from the first bytes (``jpeg``, ``png``, ``gif``, ``bmp``,
    ``webp``), or ``None`` when they are none of these.

    >>> image_format(b"\\x89PNG\\r\\n\\x1a\\n..."), image_format(b"GIF89a..."), image_format(b"hi")
    ('png', 'gif', None)
    """
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_image(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` of a JPEG or PNG from its header, without decoding;
    raises ``ValueError`` saying what is wrong (not an image, truncated).

    >>> sniff_image(tiny_jpeg(width=3, height=2))
    ('jpeg', 3, 2)
    """
    fmt = image_format(data)
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG without an IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        if b"IEND" not in data[-16:]:
            raise ValueError("PNG without its IEND chunk (truncated?)")
        if not (width and height):
            raise ValueError(f"PNG header gives a size of {width}x{height}")
        return "png", width, height
    if fmt != "jpeg":
        raise ValueError(f"not a JPEG or PNG (starts with {data[:8]!r})")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError(f"bad JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            # A marker FF D9 cannot occur inside entropy-coded data (FF is stuffed), so a
            # file that lacks it near its end was cut short.
            if _JPEG_EOI not in data[-1024:]:
                raise ValueError("JPEG without its end marker (truncated?)")
            if not (width and height):
                raise ValueError(f"JPEG frame header gives a size of {width}x{height}")
            return "jpeg", width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    raise ValueError("JPEG without a frame header (truncated?)")


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG or PNG from its header (:func:`sniff_image`), or
    ``None`` when the header does not give one.

    >>> image_dimensions(tiny_jpeg(width=3, height=2)), image_dimensions(b"GIF89a")
    ((3, 2), None)
    """
    try:
        _, width, height = sniff_image(data)
    except (ValueError, struct.error):
        return None
    return width, height


def tiny_jpeg(*, width: int, height: int) -> bytes:
    """The header-only skeleton of a baseline JPEG (SOI, SOF0, EOI) of the given size:
    enough for :func:`sniff_image`, not for a decoder. For docs and tests."""
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 11, 8, height, width, 1) + b"\x01\x11\x00"
    return _JPEG_SOI + sof + _JPEG_EOI


def resized_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int] | None:
    """The ``(width, height)`` an image of ``size`` is resized to so that its longer side
    is ``max_side`` (the aspect kept, each side rounded, at least 1), or None where it is
    no larger already (or ``max_side`` is None).

    >>> resized_size((640, 480), 256), resized_size((100, 50), 256)
    ((256, 192), None)
    """
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))

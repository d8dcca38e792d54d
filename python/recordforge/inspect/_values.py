"""What a decoded feature value is (an image, text, other bytes, numbers) and how it
reads on one line or in JSON."""

from __future__ import annotations

from typing import Any

import numpy as np

from recordforge.imageformat import image_dimensions, image_format


def image_of(value: bytes) -> str | None:
    """The image format of ``value`` from its first bytes, upper case (``JPEG``), by the
    one sniffer that conversion and ``verify --images`` use too."""
    fmt = image_format(bytes(value[:32]))
    return fmt.upper() if fmt else None


def is_text(value: bytes) -> bool:
    try:
        text = value[:256].decode("utf-8")
    except UnicodeDecodeError:
        return len(value) > 256  # cut inside a character
    return all(c.isprintable() or c in "\n\t\r" for c in text)


def _size_text(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1000**2:
        return f"{n / 1000:.0f} KB"
    return f"{n / 1000**2:.1f} MB"


def describe_bytes(value: bytes, width: int = 60) -> str:
    image = image_of(value)
    if image is not None:
        size = image_dimensions(value)
        dims = f"{size[0]}x{size[1]}" if size else "?x?"
        return f"<{image} {dims}, {_size_text(len(value))}>"
    if is_text(value):
        text = value.decode("utf-8", "replace")
        if len(text) > width:
            return repr(text[: width - 3] + "...") + f" ({len(text)} chars)"
        return repr(text)
    head_hex = value[:12].hex(" ")
    return f"<{len(value)} bytes: {head_hex}{' ...' if len(value) > 12 else ''}>"


def describe_value(value: Any, *, limit: int = 8) -> str:
    """A one-line rendering of a decoded feature value: at most ``limit`` values, long
    text cut, binary bytes abbreviated, images as ``<JPEG 640x480, 162 KB>``.

    >>> import numpy as np
    >>> from recordforge.inspect import describe_value
    >>> describe_value(np.arange(20))
    '[0, 1, 2, 3, 4, 5, 6, 7, ...] (20 values)'
    >>> describe_value(np.array([0.1, 2], np.float32)), describe_value([b"cat", b"\\x00\\x01"])
    ('[0.1, 2.0]', "['cat', <2 bytes: 00 01>]")
    """
    if isinstance(value, np.ndarray):
        shown = [str(v) for v in value[:limit]]
    else:
        shown = [describe_bytes(v) if isinstance(v, bytes) else repr(v) for v in value[:limit]]
    more = len(value) > limit
    text = "[" + ", ".join(shown) + (", ...]" if more else "]")
    return text + (f" ({len(value)} values)" if more else "")


def bytes_json(value: bytes) -> Any:
    image = image_of(value)
    if image is not None:
        size = image_dimensions(value)
        return {
            "image": image,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "bytes": len(value),
        }
    if is_text(value):
        return value.decode("utf-8", "replace")
    return {"bytes": len(value), "hex": value[:32].hex()}

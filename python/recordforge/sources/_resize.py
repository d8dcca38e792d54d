"""JPEGs decoded to be resized for storage (``--resize`` of COCO and image folders).

A JPEG is decoded at the DCT scale (1/8, 1/4, 1/2 or 1) that Pillow's ``draft`` picks
for the target size, by libjpeg-turbo (``simplejpeg``) with its warnings as errors: a
JPEG whose data is damaged (cut in its middle with its end marker put back, corrupt
entropy-coded data) is refused instead of being stored re-encoded, gray where its data
was missing, as a clean image. Its pixels are Pillow's for the same scale (both decode
with libjpeg-turbo's accurate IDCT and fancy upsampling), so the stored bytes are those
of ``Image.open`` + ``draft`` + ``resize``.

>>> draft_size((640, 428), (320, 214)), draft_size((640, 427), (320, 214))
((320, 214), (640, 427))
"""

from __future__ import annotations

from typing import Any

from recordforge.errors import DecodeError


def draft_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The ``(width, height)`` Pillow's ``draft`` decodes an image of ``size`` to for
    ``target``: the largest of 1/8, 1/4 and 1/2 that divides both sides (rounded down)
    into at least the target's, else full size; the sides rounded up."""
    scale = min(size[0] // target[0], size[1] // target[1])
    s = next((s for s in (8, 4, 2) if scale >= s), 1)
    return -(-size[0] // s), -(-size[1] // s)


def decode_scaled_jpeg(data: bytes, image: Any, target: tuple[int, int] | None) -> Any:
    """``data``, a JPEG that Pillow opened as ``image`` (not loaded), decoded for a resize
    to ``target`` (None: at full size): a Pillow image of ``image``'s mode (``L`` or
    ``RGB``) and ``info`` (its comment is saved again). None where Pillow is to decode
    it: not a JPEG, no ``simplejpeg``, a decompression bomb (Pillow raises its error),
    or a CMYK or YCCK JPEG, which Pillow converts as it does (libjpeg-turbo checks it
    first, at 1/8 scale). :class:`~recordforge.DecodeError` for an error or warning of
    libjpeg-turbo's, a header it cannot read included."""
    if image.format != "JPEG":
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    from PIL import Image

    try:
        rows, columns, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if Image.MAX_IMAGE_PIXELS is not None and rows * columns > 2 * Image.MAX_IMAGE_PIXELS:
            return None
        if image.mode not in ("L", "RGB") or (columns, rows) != image.size:
            cmyk = colorspace in ("CMYK", "YCCK")
            simplejpeg.decode_jpeg(
                data, "CMYK" if cmyk else "RGB", min_height=1, min_width=1, strict=True
            )
            return None
        width, height = image.size if target is None else draft_size(image.size, target)
        gray = image.mode == "L"
        array = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if gray else "RGB",
            min_width=width,
            min_height=height,
            strict=True,
        )
    except ValueError as e:
        raise DecodeError(f"damaged JPEG ({len(data)} bytes): {e}") from None
    decoded = Image.fromarray(array[:, :, 0] if gray else array)
    decoded.info = dict(image.info)
    return decoded


def decode_for_resize(data: bytes, image: Any, target: tuple[int, int] | None) -> Any:
    """``data``, which Pillow opened as ``image``, decoded (loaded) for a resize to
    ``target`` (None: at full size): by :func:`decode_scaled_jpeg` where it takes it,
    else by Pillow, a JPEG at its ``draft`` scale (the same scale either way)."""
    decoded = decode_scaled_jpeg(data, image, target)
    if decoded is not None:
        return decoded
    if target is not None and image.format == "JPEG":
        image.draft(None, target)
    image.load()
    return image

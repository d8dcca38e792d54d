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
from recordforge.imageformat import pillow_refuses


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
        if pillow_refuses(rows * columns):
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


#: Bytes an image may take decoded for a resize (its pixels at the scale decoded): a small
#: file can declare a huge image (a PNG of 9500 x 9500 RGBA, a few hundred KB on disk, is
#: 361 MB decoded). A 48-megapixel RGB photo (144 MB) fits.
MAX_DECODED_BYTES = 192 << 20

#: Decoded bytes per pixel of Pillow's modes (others: 4).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "RGB": 3}

#: The most EXIF bytes a JPEG holds (one APP1 segment), and the EXIF orientation tag.
_EXIF_BYTES, _ORIENTATION = 65533, 0x0112

#: Formats whose animations a resize would cut to their first frame.
_ANIMATED = frozenset(("GIF", "PNG", "WEBP"))


def decode_for_resize(
    data: bytes, image: Any, target: tuple[int, int] | None, rgb_copy: bool = False
) -> Any:
    """``data``, which Pillow opened as ``image``, decoded (loaded) for a resize to
    ``target`` (None: at full size): by :func:`decode_scaled_jpeg` where it takes it,
    else by Pillow, a JPEG at its ``draft`` scale (the same scale either way).
    :class:`~recordforge.DecodeError` for an image over :data:`MAX_DECODED_BYTES` decoded
    (before any decoding; with ``rgb_copy``, its RGB copy counted too, where the caller
    converts a mode other than ``L`` or ``RGB`` before resizing), and for an animation (a
    GIF, PNG or WebP of several frames: stored resized it would keep only its first)."""
    if image.format in _ANIMATED and getattr(image, "is_animated", False):
        raise DecodeError(
            f"an animated {image.format} ({getattr(image, 'n_frames', 'several')} frames): "
            "resized it would keep only its first frame; convert it without resizing"
        )
    width, height = image.size
    if target is not None and image.format == "JPEG":
        width, height = draft_size(image.size, target)
    decoded_bytes = width * height * _PIXEL_BYTES.get(image.mode, 4)
    if rgb_copy and image.mode not in ("L", "RGB"):
        decoded_bytes += width * height * 3
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DecodeError(
            f"a {image.format} image of {image.size[0]:,} x {image.size[1]:,} pixels "
            f"({image.mode}) takes {decoded_bytes / 2**20:,.0f} MiB decoded, over the "
            f"{MAX_DECODED_BYTES >> 20} MiB a resize decodes"
        )
    decoded = decode_scaled_jpeg(data, image, target)
    if decoded is not None:
        return decoded
    if target is not None and image.format == "JPEG":
        image.draft(None, target)
    image.load()
    return image


def kept_metadata(image: Any, saved_mode: str) -> dict[str, Any]:
    """What a resized image is saved with of the original's metadata (Pillow's JPEG and
    WebP writers keep it only when given it): its EXIF (orientation included), and its
    ICC colour profile where the pixels saved are in the original's mode (a CMYK or gray
    profile does not describe RGB pixels)."""
    keys = ("icc_profile", "exif") if image.mode == saved_mode else ("exif",)
    kept = {key: image.info[key] for key in keys if image.info.get(key)}
    if len(kept.get("exif", b"")) > _EXIF_BYTES:  # more than a JPEG holds: the orientation
        del kept["exif"]
        try:
            from PIL import Image

            orientation = image.getexif().get(_ORIENTATION)
            if isinstance(orientation, int) and 0 <= orientation <= 0xFFFF:  # a SHORT
                exif = Image.Exif()
                exif[_ORIENTATION] = orientation
                kept["exif"] = exif.tobytes()
        except Exception:  # an EXIF Pillow cannot read (or write back): none kept
            pass
    return kept

"""Encoded images (JPEG, PNG, GIF, BMP, WebP) to ``uint8`` NumPy arrays, height x width x
channels. JPEGs are decoded by libjpeg-turbo through ``simplejpeg``, everything else by
Pillow (both in the ``images`` extra, imported when first needed).

:func:`decode_batch` decodes a list of images on a thread pool: both decoders release
the GIL, so the threads use every core.

JPEG pixels are TensorFlow's, bit for bit: ``dct_method="INTEGER_FAST"`` (the default)
gives what ``tf.io.decode_jpeg`` and ``tf.io.decode_image`` give by default
(libjpeg-turbo's fast integer IDCT, smooth chroma upsampling), so arrays decoded here
equal those of a ``tf.data`` pipeline, :func:`recordforge.integrations.tf.to_tf_dataset`
without ``image_size`` included; ``dct_method="INTEGER_ACCURATE"`` gives
``tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")``'s, which are also Pillow's. The two
differ by about one level on average. ``channels=1`` of a colour JPEG is its luma plane
as decoded (TF's ``channels=1``), ``channels=4`` adds an opaque alpha. EXIF orientation
is not applied (nor is it by TF). Three kinds of JPEG go to Pillow instead, with its
accurate IDCT: CMYK / YCCK JPEGs (Pillow's CMYK-to-RGB conversion, as before), files
libjpeg-turbo reads only with a warning (damaged but decodable data: Pillow decodes them
or raises the error), and every JPEG when ``simplejpeg`` is not installed.

Resizing (:func:`resize`, ``decode_batch(size=...)``) is by default TensorFlow's
bilinear ``tf.image.resize``, computed in Rust and rounded to ``uint8``: the NumPy path
gives what the ``tf.data`` path gives (``to_tf_dataset(image_size=...)``), rounded.

Only ``draft=True`` trades exactness for speed: a JPEG to be resized is decoded straight
to 1/2, 1/4 or 1/8 scale (the smallest that stays at least the target size; else full
size), before the resize.

>>> import io, numpy as np
>>> from PIL import Image
>>> from recordforge import images
>>> buf = io.BytesIO()
>>> Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
>>> png = buf.getvalue()
>>> images.decode(png).shape, images.decode(png).dtype, images.decode(png)[0, 0].tolist()
((30, 40, 3), dtype('uint8'), [200, 10, 10])
>>> images.decode(png, channels=1).shape
(30, 40, 1)
>>> images.decode_batch([png, png], size=(16, 24)).shape
(2, 16, 24, 3)
>>> images.resize(images.decode(png), 10).shape
(10, 10, 3)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import numbers
import os
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from recordforge.errors import DecodeError
from recordforge.imageformat import image_format, pillow_refuses

__all__ = ["check", "decode", "decode_batch", "default_threads", "image_size", "resize"]

Method = Literal["nearest", "bilinear", "bicubic", "lanczos", "area"]
DctMethod = Literal["INTEGER_FAST", "INTEGER_ACCURATE"]
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_JPEG_COLORSPACES = {"L": "GRAY", "RGB": "RGB", "RGBA": "RGBA"}
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
#: Arena buffers whose batch has been dropped, ready for the next batch (see
#: :func:`_arena`), and the weak references that put them back. Deque appends and pops
#: and dict stores and pops are atomic, so the weakref callbacks take no lock.
_FREE_ARENAS: collections.deque[np.ndarray] = collections.deque(maxlen=4)
_ARENA_REFS: dict[int, weakref.ref[np.ndarray]] = {}
_ARENA_ALIGN = 64
#: Batches of fewer pixel bytes get an array per image (a page fault per 4 KB matters
#: little there); images of more get their own array (and a hostile header's size is
#: not allocated for the whole batch up front); arenas of more are not kept for reuse.
_ARENA_MIN = 1 << 20
_IMAGE_MAX = 64 << 20
_ARENA_KEEP_MAX = 512 << 20


def image_size(size: int | Sequence[int], *, name: str = "image size") -> tuple[int, int]:
    """``(height, width)`` from one int (a square) or a pair, both > 0; ``name`` is what
    the ``ValueError`` for anything else calls the value (the argument it came as).

    >>> image_size(224), image_size((48, 64))
    ((224, 224), (48, 64))
    """
    # NumPy integers count as ints (numbers.Integral).
    given: Any = size
    pair = (given, given) if isinstance(given, numbers.Integral) else tuple(given)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and int(v) > 0 for v in pair):
        raise ValueError(f"{name} must be an int > 0 or (height, width), not {size!r}")
    return (int(pair[0]), int(pair[1]))


#: The ``resample`` that means TensorFlow's bilinear resize, in Rust (not Pillow's).
_TF_BILINEAR = "tf-bilinear"
_SCRATCH = threading.local()


def _resample(method: Method, antialias: bool = True) -> Any:
    """Pillow's filter for ``method``, or :data:`_TF_BILINEAR` for bilinear without
    antialiasing."""
    if method == "bilinear" and not antialias:
        return _TF_BILINEAR
    from PIL import Image

    filters = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
        "area": Image.Resampling.BOX,
    }
    if method not in filters:
        raise ValueError(f"method must be one of {sorted(filters)}, not {method!r}")
    return filters[method]


def _check_channels(channels: int) -> str:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1, 3 or 4, not {channels!r}")
    return _MODES[channels]


def _check_dct(dct_method: str) -> bool:
    """True for the fast IDCT."""
    if dct_method not in ("INTEGER_FAST", "INTEGER_ACCURATE"):
        raise ValueError(
            f"dct_method must be 'INTEGER_FAST' or 'INTEGER_ACCURATE', not {dct_method!r}"
        )
    return dct_method == "INTEGER_FAST"


@functools.cache
def _simplejpeg() -> Any:
    """The ``simplejpeg`` module, or None when it is not installed (Pillow decodes)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def checks_jpeg_strictly() -> bool:
    """Whether :func:`check` decodes JPEGs by libjpeg-turbo with its warnings as errors
    (``simplejpeg`` is installed), rather than by Pillow."""
    return _simplejpeg() is not None


def _scratch(shape: tuple[int, int, int]) -> np.ndarray:
    """This thread's reusable buffer, as an array of ``shape``: an image decoded only to
    be resized is decoded into memory already mapped (no page faults)."""
    nbytes = shape[0] * shape[1] * shape[2]
    buf: np.ndarray | None = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _SCRATCH.buf = np.empty(nbytes + nbytes // 4, np.uint8)
    return buf[:nbytes].reshape(shape)


def _resize_array(
    array: np.ndarray,
    size: tuple[int, int],
    resample: Any,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``array`` at ``size`` in ``out`` (or a new array): a copy when it is that size."""
    if array.shape[:2] == size:
        if out is None:
            return array.copy()
        out[...] = array
        return out
    if resample == _TF_BILINEAR:
        from recordforge import _core

        if out is None:
            out = np.empty((*size, array.shape[2]), np.uint8)
        _core.resize_bilinear(np.ascontiguousarray(array), out)
        return out
    resized = _resize_pillow(array, size, resample)
    if out is None:
        return resized
    out[...] = resized
    return out


def _resize_pillow(array: np.ndarray, size: tuple[int, int], resample: Any) -> np.ndarray:
    from PIL import Image

    squeeze = array.ndim == 3 and array.shape[2] == 1
    im = Image.fromarray(array[:, :, 0] if squeeze else array)
    out = np.asarray(im.resize((size[1], size[0]), resample))
    return out[:, :, None] if out.ndim == 2 else out


@dataclasses.dataclass(frozen=True)
class _How:
    """How to decode: Pillow's mode, the fast IDCT or not, and the size, filter
    (:func:`_resample`) and ``draft`` of a resize (``size`` None: none)."""

    mode: str
    fast: bool
    size: tuple[int, int] | None = None
    resample: Any = None
    draft: bool = False


def _decode_jpeg(data: bytes, how: _How, out: np.ndarray | None = None) -> np.ndarray | None:
    """libjpeg-turbo's decode (through simplejpeg), or None where Pillow is to decode:
    no simplejpeg, a CMYK / YCCK JPEG, or any error or warning from libjpeg-turbo
    (Pillow then decodes what it can and raises the error message users know)."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    size = how.size
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace in ("CMYK", "YCCK") or pillow_refuses(height * width):
            return None
        min_height = min_width = 0
        if how.draft and size is not None:
            height, width = _draft_size(height, width, size)
            min_height, min_width = height, width
        # To be resized: decoded into this thread's scratch buffer, not fresh memory.
        buffer = None if size is None else _scratch((height, width, _CHANNELS[how.mode]))
        array: np.ndarray = simplejpeg.decode_jpeg(
            data,
            colorspace=_JPEG_COLORSPACES[how.mode],
            fastdct=how.fast,
            min_height=min_height,
            min_width=min_width,
            buffer=buffer,
        )
    except ValueError:
        return None
    return array if size is None else _resize_array(array, size, how.resample, out)


def _draft_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The size a JPEG decodes to with ``draft``: the smallest of 1/8, 1/4 and 1/2 scale
    that keeps it at least ``size``, else full size. libjpeg-turbo has SIMD IDCTs for
    these scales only: 3/8 and 5/8 cost more than a full decode (0.95 and 1.48 ms
    against 1.18 for a 500x375 image)."""
    for eighths in (1, 2, 4):
        scaled = (-(-height * eighths // 8), -(-width * eighths // 8))
        if scaled[0] >= size[0] and scaled[1] >= size[1]:
            return scaled
    return height, width


def _decode(data: bytes, how: _How, out: np.ndarray | None = None) -> np.ndarray:
    array = None
    if image_format(bytes(data[:3])) == "jpeg":
        array = _decode_jpeg(data, how, out)
        if array is not None and array is out:
            return out
    if array is None:
        array = _decode_pillow(data, how)
    if out is not None:
        out[...] = array
        return out
    # Pillow hands out read-only views of its bytes; callers (torch.from_numpy) want
    # arrays they own.
    return array if array.flags.writeable else array.copy()


def _decode_pillow(data: bytes, how: _How) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    mode, size, resample = how.mode, how.size, how.resample
    try:
        with Image.open(io.BytesIO(data)) as opened:
            scale = (size[1], size[0]) if how.draft and size is not None else None
            if opened.format == "JPEG" and (scale or mode == "L"):
                # "L": libjpeg's luma plane, as simplejpeg and TF give, rather than
                # Pillow's conversion of the RGB pixels.
                opened.draft("L" if mode == "L" else None, scale)
            opened.load()
            im: Any = opened
            if im.mode != mode:
                im = im.convert(mode)
            pillow_resizes = resample != _TF_BILINEAR
            if pillow_resizes and size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), resample)
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        kind = image_format(bytes(data[:16])) or "not an image format we know"
        raise DecodeError(f"cannot decode image ({kind}, {len(data)} bytes): {e}") from None
    array = array[:, :, None] if array.ndim == 2 else array
    if size is not None and array.shape[:2] != size:
        return _resize_array(array, size, resample)
    return array


def decode(data: bytes, *, channels: int = 3, dct_method: DctMethod = "INTEGER_FAST") -> np.ndarray:
    """One encoded image to a ``uint8`` array ``(height, width, channels)``: 3 for RGB
    (grayscale replicated, alpha dropped, palettes expanded), 1 for grayscale, 4 for RGBA.
    A GIF gives its first frame. ``dct_method`` picks the JPEG IDCT, as
    ``tf.io.decode_jpeg``'s does (see the module docstring). Raises
    :class:`~recordforge.DecodeError` for bytes that are not a decodable image."""
    fast = _check_dct(dct_method)
    return _decode(data, _How(_check_channels(channels), fast))


def check(data: bytes) -> str:
    """Decodes ``data`` fully and strictly, as ``verify --images`` does, and returns its
    format as its bytes say (``jpeg``, ``png``, ``gif``, ``bmp``, ``webp``), whatever
    name or schema it came with. Raises :class:`~recordforge.DecodeError` saying what is
    wrong: bytes of no format we know, or an image that does not decode cleanly. A JPEG is
    decoded by libjpeg-turbo (``simplejpeg``), which TensorFlow decodes with too, with its
    warnings as errors: damaged entropy-coded data that a decoder gets through with a
    warning ("Corrupt JPEG data: premature end of data segment") and Pillow passes
    silently counts as damage. Without ``simplejpeg``, Pillow decodes JPEGs and such
    damage can pass. A PNG has every chunk CRC checked, then is decoded.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("RGB", (4, 3)).save(buf, format="PNG")
    >>> check(buf.getvalue())
    'png'
    >>> check(buf.getvalue()[:40])
    Traceback (most recent call last):
    ...
    recordforge.errors.DecodeError: cannot decode image (png, 40 bytes): ...
    """
    fmt = image_format(bytes(data[:32]))
    if fmt is None:
        raise DecodeError(
            f"not a JPEG, PNG, GIF, BMP or WebP image (starts with {bytes(data[:8])!r})"
        )
    simplejpeg = _simplejpeg()
    if fmt == "jpeg" and simplejpeg is not None:
        try:
            colorspace = simplejpeg.decode_jpeg_header(data)[2]
            target = "CMYK" if colorspace in ("CMYK", "YCCK") else "RGB"
            simplejpeg.decode_jpeg(data, colorspace=target, strict=True)
        except ValueError as e:
            raise DecodeError(f"cannot decode image (jpeg, {len(data)} bytes): {e}") from None
        return fmt
    from PIL import Image

    try:
        if fmt == "png":
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # every chunk's CRC
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # Pillow raises many types for damaged data (EOFError, ...)
        raise DecodeError(f"cannot decode image ({fmt}, {len(data)} bytes): {e}") from None
    return fmt


def resize(
    image: np.ndarray,
    size: int | Sequence[int],
    *,
    method: Method = "bilinear",
    antialias: bool = False,
) -> np.ndarray:
    """A ``uint8`` image ``(height, width, channels)`` (or ``(height, width)``) resized to
    ``size`` (``(height, width)``, or one int for a square; the aspect ratio is not kept).

    The default, ``method="bilinear"`` without ``antialias``, is ``tf.image.resize``'s
    (half-pixel centres, no antialiasing: the Keras example's resize), computed in Rust
    with TensorFlow's ``float32`` arithmetic and rounded to the nearest level (halves to
    even): ``np.round`` of TensorFlow's values, exactly. Any other ``method``, or
    ``antialias=True``, is Pillow's filter of that name, antialiased when shrinking
    (not what ``tf.image.resize(antialias=True)`` gives, which has kernels of its own).
    """
    target = image_size(size)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"resize takes uint8 (H, W[, C]) arrays, not {array.dtype} {array.shape}")
    three = array[:, :, None] if array.ndim == 2 else array
    out = _resize_array(three, target, _resample(method, antialias))
    out = out if out.flags.writeable and out.base is None else out.copy()
    return out[:, :, 0] if array.ndim == 2 else out


def _pool(threads: int) -> ThreadPoolExecutor:
    # Keyed by process too: a pool inherited through fork (DataLoader workers) has no
    # threads in the child.
    key = (os.getpid(), threads)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="rf-decode")
        return pool


def pool_threads() -> set[threading.Thread]:
    """The threads of this process's decode pools."""
    with _POOLS_LOCK:
        pools = [pool for key, pool in _POOLS.items() if key[0] == os.getpid()]
    # ThreadPoolExecutor keeps its threads in ``_threads`` (CPython 3.8 to 3.14).
    return {thread for pool in pools for thread in getattr(pool, "_threads", ())}


def close_pools() -> None:
    """Ends this process's decode threads (their pools made again when next needed),
    so that it may fork: :func:`recordforge._workers.start_method` calls it when these
    threads are the only others. Waits for decodes in flight."""
    with _POOLS_LOCK:
        mine = [key for key in _POOLS if key[0] == os.getpid()]
        pools = [_POOLS.pop(key) for key in mine]
    for pool in pools:
        pool.shutdown(wait=True)


def default_threads() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _arena(nbytes: int) -> np.ndarray:
    """A writable ``uint8`` array of ``nbytes`` for one batch of decoded images, on
    memory reused from an earlier batch once every array of that batch is gone.

    Fresh memory costs a page fault per 4 KB at first touch: ~137 per 500x375 RGB image,
    which made a batch of 64 decodes 25% slower than the same decodes into memory
    already mapped (0.81 -> 1.02-1.17 ms per image, one thread). The arrays handed out
    are views of the returned array, whose base is a ``memoryview`` (so NumPy does not
    collapse their base past it): it lives while any of them does, and when it goes, a
    weakref callback puts the memory back for the next batch."""
    mem = None
    # A free arena fits if it is big enough but not over twice the size: a small batch
    # must not pin a large earlier batch's memory. Those that do not fit are dropped.
    for _ in range(len(_FREE_ARENAS)):
        try:
            candidate = _FREE_ARENAS.pop()
        except IndexError:  # another thread took the last one
            break
        if nbytes <= candidate.nbytes <= 2 * nbytes:
            mem = candidate
            break
    if mem is None:
        mem = np.empty(nbytes + nbytes // 8, np.uint8)
    handle: np.ndarray = np.frombuffer(mem.data, np.uint8)

    def release(ref: weakref.ref[np.ndarray], mem: np.ndarray = mem) -> None:
        _ARENA_REFS.pop(id(ref), None)
        if mem.nbytes <= _ARENA_KEEP_MAX:
            _FREE_ARENAS.append(mem)

    ref = weakref.ref(handle, release)
    _ARENA_REFS[id(ref)] = ref
    return handle


def _plan(images: Sequence[bytes], mode: str) -> list[tuple[int, int, int]] | None:
    """Where each JPEG's pixels go in one arena: ``(offset, height, width)``; offset -1
    for an image simplejpeg is not to decode (not a JPEG, CMYK / YCCK, a bad header) or
    one over ``_IMAGE_MAX`` bytes of pixels, which then gets its own array. None when
    simplejpeg is not installed."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    channels = _CHANNELS[mode]
    plan = []
    at = 0
    for data in images:
        shape = None
        if image_format(bytes(data[:3])) == "jpeg":
            try:
                height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
                small = height * width * channels <= _IMAGE_MAX
                if small and colorspace not in ("CMYK", "YCCK"):
                    shape = (height, width)
            except ValueError:
                pass
        if shape is None:
            plan.append((-1, 0, 0))
            continue
        plan.append((at, *shape))
        at += -(-shape[0] * shape[1] * channels // _ARENA_ALIGN) * _ARENA_ALIGN
    return plan


def _decode_into(
    data: bytes, arena: np.ndarray, where: tuple[int, int, int], how: _How
) -> np.ndarray:
    """One image into its place in ``arena`` (see :func:`_plan`), else as :func:`_decode`."""
    at, height, width = where
    if at >= 0:
        channels = _CHANNELS[how.mode]
        view = arena[at : at + height * width * channels].reshape(height, width, channels)
        try:
            _simplejpeg().decode_jpeg(
                data, colorspace=_JPEG_COLORSPACES[how.mode], fastdct=how.fast, buffer=view
            )
            return view
        except ValueError:  # a warning or an error: Pillow decodes it or says why not
            pass
    return _decode(data, how)


def decode_batch(
    images: Sequence[bytes],
    *,
    size: int | Sequence[int] | None = None,
    channels: int = 3,
    method: Method = "bilinear",
    antialias: bool = False,
    threads: int | None = None,
    draft: bool = False,
    dct_method: DctMethod = "INTEGER_FAST",
) -> Any:
    """Decodes ``images`` (encoded bytes) on ``threads`` threads (default: one per core).

    With ``size`` (``(height, width)`` or one int), every image is resized as by
    :func:`resize` with ``method`` and ``antialias`` (by default TensorFlow's bilinear
    resize, rounded), and the result is one ``uint8`` array
    ``(n, height, width, channels)``; without it, a list of ``(h, w, channels)`` arrays
    (sizes may differ). The JPEGs of one call (from 1 MB of pixels) are decoded into one
    buffer, reused by a later call once all of this call's arrays are gone: keeping one
    array of a batch keeps the buffer (up to twice the batch's pixels) in memory, and up
    to 4 freed buffers stay allocated for reuse. ``draft=True`` (with ``size``) decodes
    JPEGs at a reduced DCT scale first: much faster for large shrinks, not pixel-exact.
    ``dct_method`` as for :func:`decode`. A bad image raises
    :class:`~recordforge.DecodeError` naming its position."""
    mode = _check_channels(channels)
    target = image_size(size) if size is not None else None
    resample = _resample(method, antialias) if target is not None else None
    how = _How(mode, _check_dct(dct_method), target, resample, draft)
    n = len(images)
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    out = None if target is None else np.empty((n, *target, channels), np.uint8)
    # Without a size, the JPEGs' pixels go into one arena per batch (see `_arena`).
    plan = _plan(images, mode) if out is None else None
    arena = None
    last = max(plan) if plan else (-1, 0, 0)
    total = last[0] + last[1] * last[2] * channels
    if last[0] >= 0 and total >= _ARENA_MIN:
        arena = _arena(total)

    def one(i: int) -> np.ndarray:
        try:
            if arena is not None and plan is not None:
                return _decode_into(images[i], arena, plan[i], how)
            return _decode(images[i], how, None if out is None else out[i])
        except DecodeError as e:
            raise DecodeError(f"image {i} of {n}: {e}") from None

    if threads == 1 or n < 2:
        decoded = [one(i) for i in range(n)]
    else:
        # Two images per task: a hand-off (~20 us) is small next to a decode (~1.4 ms at
        # 500x375), and the threads finish a batch together. With 8 per task one thread
        # sat idle for up to 8 decodes at the end of each batch of 64 (bench_decode
        # --turns: recordforge / the decoder alone, wall, 0.80-0.88x with 8, 0.91-1.00x
        # with 2).
        chunk = max(1, min(2, n // (4 * threads)))
        starts = range(0, n, chunk)
        parts = _pool(threads).map(lambda s: [one(i) for i in range(s, min(n, s + chunk))], starts)
        decoded = [a for part in parts for a in part]
    return decoded if out is None else out

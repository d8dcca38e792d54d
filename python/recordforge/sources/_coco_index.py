"""COCO JSON files -> a :class:`CocoIndex`: the images, their annotations, captions
and keypoints, every field checked.

The JSON is untrusted input. Damage to a file as a whole (not JSON, no ``images`` list,
bad categories, duplicate image ids) is a :class:`~recordforge.SchemaError`; a bad value
in one entry is an item error instead (a :class:`CocoProblem`, or a problem of the image
the entry belongs to), named by the annotation or image and the field, so that
``on_error`` decides and one bad annotation does not stop a conversion of 118,000
images. Every value is checked for what it is used as: ids fit in int64, sizes are
ints in 1..2^31-1, boxes / areas / polygons / keypoints are finite numbers (float32's
range), polygons have even length, RLE counts fill their size, which is the image's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from recordforge import _fs
from recordforge._core import coco_polygons, json_loads
from recordforge.errors import SchemaError
from recordforge.sources._coco_fast import FLOAT32_MAX, INT64_MAX, INT64_MIN, plain_annotation

__all__ = [
    "CocoAnnotation",
    "CocoImage",
    "CocoIndex",
    "CocoProblem",
    "load_coco",
    "rle_from_string",
]

# The largest width or height an image may claim (PNG's limit; JPEG's is 65535).
_MAX_SIDE = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class CocoAnnotation:
    """One object. ``bbox`` is COCO's ``(x, y, width, height)`` in pixels; ``polygons``
    one tuple of ``x0, y0, x1, y1, ...`` per polygon; a crowd region has ``rle_counts``
    (uncompressed) and ``rle_size`` ``(height, width)`` instead; ``keypoints`` are
    ``x, y, visibility`` triples when a keypoints file was given."""

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float = 0.0
    iscrowd: int = 0
    polygons: tuple[tuple[float, ...], ...] = ()
    rle_counts: tuple[int, ...] = ()
    rle_size: tuple[int, int] | None = None
    keypoints: tuple[float, ...] = ()
    num_keypoints: int = 0


@dataclasses.dataclass(frozen=True)
class CocoImage:
    """One image entry with its annotations and captions: the item a source converts.
    ``problems`` says what is wrong with entries of this image (a bad annotation or
    caption): converting an image with problems raises :class:`ItemError`."""

    id: int
    file_name: str
    width: int
    height: int
    annotations: tuple[CocoAnnotation, ...] = ()
    captions: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How errors and reports name the image: its file name and id."""
        return _image_name(self.file_name, self.id)


@dataclasses.dataclass(frozen=True)
class CocoProblem:
    """An input entry found bad at load time (e.g. an annotation whose ``image_id``
    names no image). It is an item too: converting it raises :class:`ItemError`, so
    ``on_error="raise"`` stops on it and ``on_error="skip"`` lists it in the report."""

    item: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CocoIndex:
    """The parsed COCO files: images (in file order) with their annotations, the
    categories as ``(id, name)`` pairs, and the problems found while loading."""

    annotations_file: str
    images_dir: str
    images: tuple[CocoImage, ...]
    categories: tuple[tuple[int, str], ...]
    problems: tuple[CocoProblem, ...] = ()
    captions_file: str | None = None
    keypoints_file: str | None = None
    keypoint_names: tuple[str, ...] = ()

    @property
    def num_annotations(self) -> int:
        return sum(len(image.annotations) for image in self.images)


def _read_json(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The file's JSON, parsed by :func:`recordforge._core.json_loads` (the same values
    as ``json.loads``, ~3x as fast on COCO's polygons with the garbage collector paused,
    as :func:`load_coco` does), or by ``json.loads`` where that
    declines: anything but plain standard JSON (``NaN``, a 19-digit number, a syntax
    error...), whose result or error is then ``json.loads``'s own."""
    raw = _fs.read_bytes(path)
    parsed = json_loads(raw)
    data = parsed[0] if parsed is not None else _python_json(raw, path)
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _python_json(raw: bytes, path: str | os.PathLike[str]) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise SchemaError(
            f"{path}: not valid JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: not UTF-8 text at byte {e.start}") from None


def _entries(data: Mapping[str, Any], key: str, path: Any, required: bool = True) -> list[Any]:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise SchemaError(f"{path}: expected a list under {key!r}, found {type(value).__name__}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise SchemaError(f"{path}: {key}[{i}] is not an object")
    return value


def _short(value: Any) -> str:
    """``repr`` of a JSON value, cut: a hostile file's value can be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _get(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise SchemaError(f"{where}: {key!r} must be {kind.__name__}, found {_short(value)}")
    return value


def _int64(entry: Mapping[str, Any], key: str, where: str) -> int:
    value: int = _get(entry, key, int, where)
    if not INT64_MIN <= value <= INT64_MAX:
        raise SchemaError(f"{where}: {key!r} must fit in int64, found {value}")
    return value


def _size(entry: Mapping[str, Any], key: str, where: str) -> int:
    value: int = _get(entry, key, int, where)
    if not 1 <= value <= _MAX_SIDE:
        raise SchemaError(f"{where}: {key!r} must be an int in 1..{_MAX_SIDE}, found {value}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that float32 holds as a finite value (NaN, infinities and values beyond
    float32's range, such as JSON's ``1e999``, are not)."""
    return _is_number(value) and abs(value) <= FLOAT32_MAX  # False for NaN too


_PLAIN_NUMBERS = frozenset((int, float))
_PLAIN_INT = frozenset((int,))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite_list(value: Any) -> TypeGuard[list[Any]]:
    """A list of numbers each :func:`_is_finite`. Polygons are most of a COCO file's
    numbers: a list of plain ints and floats is checked by C loops (a NaN makes the sum
    NaN; then ``min`` and ``max`` are exact, ints against the float bound included),
    anything else one value at a time."""
    if not isinstance(value, list):
        return False
    if not _PLAIN_NUMBERS.issuperset(map(type, value)):
        return all(_is_finite(v) for v in value)
    if not value:
        return True
    try:
        total = sum(value)
    except OverflowError:  # an int beyond float's range
        return False
    return total == total and min(value) >= -FLOAT32_MAX and max(value) <= FLOAT32_MAX


def rle_from_string(counts: str) -> list[int]:
    """Decodes pycocotools' compressed RLE string into run lengths; ``ValueError`` for
    a string that is not one (a character outside ``0``-``o``, a value cut short).

    >>> rle_from_string("61X13")
    [6, 1, 40, 4]
    """
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError(f"the string ends inside a value (at character {p})")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"{counts[p]!r} at character {p} is not an RLE character")
            if k >= 13:  # 13 x 5 bits: beyond int64
                raise ValueError(f"the value ending at character {p} does not fit in int64")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _rle(segmentation: Mapping[str, Any], where: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    size = segmentation.get("size")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_SIDE for v in size
        )
    ):
        raise SchemaError(f"{where}: RLE 'size' must be [height, width], found {_short(size)}")
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        try:
            decoded = rle_from_string(counts)
        except ValueError as e:
            raise SchemaError(f"{where}: RLE 'counts' is not compressed RLE: {e}") from None
    elif isinstance(counts, list):
        decoded = counts
    else:
        raise SchemaError(
            f"{where}: RLE 'counts' must be a list of run lengths or a compressed string, "
            f"found {_short(counts)}"
        )
    # A crowd's counts run to thousands: plain ints are checked by C loops.
    plain = _PLAIN_INT.issuperset(map(type, decoded))
    if not (
        (plain and (not decoded or min(decoded) >= 0))
        or (not plain and all(_is_count(c) for c in decoded))
    ):
        raise SchemaError(
            f"{where}: RLE 'counts' must be run lengths (ints >= 0), found {_short(counts)}"
        )
    height, width = size
    if sum(decoded) != height * width:
        raise SchemaError(
            f"{where}: RLE 'counts' sum to {sum(decoded)}, not height x width = "
            f"{height} x {width} = {height * width}"
        )
    return tuple(decoded), (height, width)


def _polygons(segmentation: list[Any], where: str) -> tuple[tuple[float, ...], ...]:
    """The polygons as tuples of floats: checked in Rust where they are plain finite
    numbers in even counts (nearly always), else one by one here, which names the bad
    one."""
    fast = coco_polygons(segmentation)
    return fast if fast is not None else _checked_polygons(segmentation, where)


def _checked_polygons(segmentation: list[Any], where: str) -> tuple[tuple[float, ...], ...]:
    for k, poly in enumerate(segmentation):
        if not (_finite_list(poly) and len(poly) % 2 == 0):
            raise SchemaError(
                f"{where}: polygon {k} of 'segmentation' must be an even count of finite "
                f"numbers [x0, y0, x1, y1, ...], found {_short(poly)}"
            )
    return tuple(tuple(map(float, poly)) for poly in segmentation)


def _annotation(entry: Mapping[str, Any], where: str) -> CocoAnnotation:
    """One annotation entry, every field checked; SchemaError names the field."""
    plain = plain_annotation(entry)
    if plain is not None:  # the common entry: made without the frozen __init__'s calls
        made = object.__new__(CocoAnnotation)
        made.__dict__.update(zip(_PLAIN_FIELDS, plain, strict=True), **_PLAIN_DEFAULTS)
        return made
    ann_id = _int64(entry, "id", where)
    image_id = _int64(entry, "image_id", where)
    category_id = _int64(entry, "category_id", where)
    bbox = entry.get("bbox")
    if not (_finite_list(bbox) and len(bbox) == 4):
        raise SchemaError(
            f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height], found {_short(bbox)}"
        )
    area = entry.get("area", 0.0)
    if not _is_finite(area):
        raise SchemaError(f"{where}: 'area' must be a finite number, found {_short(area)}")
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, (bool, float)):
        raise SchemaError(f"{where}: 'iscrowd' must be 0 or 1, found {_short(iscrowd)}")
    polygons: tuple[tuple[float, ...], ...] = ()
    rle_counts: tuple[int, ...] = ()
    rle_size = None
    segmentation = entry.get("segmentation")
    if isinstance(segmentation, list):
        polygons = _polygons(segmentation, where)
    elif isinstance(segmentation, dict):
        rle_counts, rle_size = _rle(segmentation, where)
    elif segmentation is not None:
        raise SchemaError(
            f"{where}: 'segmentation' must be polygons (a list) or RLE (an object), "
            f"found {_short(segmentation)}"
        )
    return CocoAnnotation(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
        area=float(area),
        iscrowd=int(iscrowd),
        polygons=polygons,
        rle_counts=rle_counts,
        rle_size=rle_size,
    )


_PLAIN_FIELDS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "polygons")
_PLAIN_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(CocoAnnotation) if f.name not in _PLAIN_FIELDS
}


def _keypoints(
    entry: Mapping[str, Any], names: tuple[str, ...], where: str
) -> tuple[tuple[float, ...], int]:
    values = entry.get("keypoints")
    count = 3 * len(names)
    if names and not (_finite_list(values) and len(values) == count):
        raise SchemaError(
            f"{where}: 'keypoints' must be {count} numbers (x, y, visibility for each of "
            f"{len(names)} keypoints), found {_short(values)}"
        )
    if not (_finite_list(values) and len(values) % 3 == 0):
        raise SchemaError(
            f"{where}: 'keypoints' must be finite numbers, 3 per keypoint, found {_short(values)}"
        )
    num = _get(entry, "num_keypoints", int, where) if "num_keypoints" in entry else 0
    return tuple(float(v) for v in values), num


def _image_name(file_name: str, image_id: int) -> str:
    shown = file_name if file_name.isprintable() else repr(file_name)
    return f"image {shown} (id {image_id})"


class _Loader:
    """Collects the entries of the COCO files. A bad entry is not fatal: it becomes a
    problem of its image (the image is then an item error, so that a record never lacks
    an object that its file has), or a :class:`CocoProblem` of its own when it names no
    usable image. Only damage to the file as a whole (not JSON, no ``images`` list, bad
    categories, duplicate image ids) raises :class:`~recordforge.SchemaError`."""

    def __init__(self, annotations: str | os.PathLike[str]) -> None:
        self.path = annotations
        self.images: dict[int, dict[str, Any]] = {}
        self.bad_images: set[int] = set()
        self.problems: list[CocoProblem] = []

    def image(self, i: int, entry: Mapping[str, Any]) -> None:
        where = f"{self.path}: images[{i}]"
        try:
            image_id = _int64(entry, "id", where)
        except SchemaError as e:  # named by its place (its annotations name no image)
            self.problems.append(CocoProblem(where, str(e)))
            return
        if image_id in self.images or image_id in self.bad_images:
            raise SchemaError(f"{where}: duplicate image id {image_id}")
        file_name = entry.get("file_name")
        name = _image_name(file_name, image_id) if isinstance(file_name, str) else None
        try:
            file_name = _get(entry, "file_name", str, where)
            if not file_name:
                raise SchemaError(f"{where}: 'file_name' must not be empty")
            if "\x00" in file_name:
                raise SchemaError(f"{where}: 'file_name' contains a NUL character")
            width, height = _size(entry, "width", where), _size(entry, "height", where)
        except SchemaError as e:
            self.bad_images.add(image_id)
            self.problems.append(CocoProblem(name or f"image id {image_id}", str(e)))
            return
        self.images[image_id] = {
            "id": image_id,
            "file_name": file_name,
            "width": width,
            "height": height,
            "annotations": [],
            "captions": [],
            "problems": [],
        }

    def reject(self, what: str, image_id: Any, reason: str) -> None:
        """A bad entry (``what`` names it): a problem of its image when it names one."""
        if isinstance(image_id, int) and image_id in self.images:
            self.images[image_id]["problems"].append(f"{what}: {reason}")
        elif not (isinstance(image_id, int) and image_id in self.bad_images):
            self.problems.append(CocoProblem(what, reason))

    def place(self, ann: CocoAnnotation) -> None:
        image = self.images.get(ann.image_id)
        if image is None:
            if ann.image_id not in self.bad_images:
                reason = f"image_id {ann.image_id} names no image in {self.path}"
                self.problems.append(CocoProblem(f"annotation {ann.id}", reason))
            return
        if ann.rle_size is not None and ann.rle_size != (image["height"], image["width"]):
            size = [image["height"], image["width"]]
            reason = f"RLE 'size' {list(ann.rle_size)} is not the image's [height, width] {size}"
            image["problems"].append(f"annotation {ann.id}: {reason}")
            return
        image["annotations"].append(ann)


def _entry_name(entry: Mapping[str, Any], kind: str, where: str) -> str:
    ann_id = entry.get("id")
    return f"{kind} {ann_id}" if isinstance(ann_id, int) else where


def load_coco(
    annotations: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    captions: str | os.PathLike[str] | None = None,
    keypoints: str | os.PathLike[str] | None = None,
) -> CocoIndex:
    """Reads COCO JSON files into a :class:`CocoIndex`.

    Malformed JSON, a file without its ``images`` or ``categories`` list, a bad category
    or a duplicate image id raises :class:`~recordforge.SchemaError` naming the file and
    the position or entry. A bad value in one entry (a field missing or of the wrong
    type, a box with NaN or infinite values, a polygon of odd length, RLE counts that do
    not fill their size, an id beyond int64, a width <= 0) is an item error instead,
    named in ``index.problems`` or in the problems of its image (so ``on_error`` decides):
    an image is never converted with one of its objects silently left out. Annotations,
    captions and keypoints whose ``image_id`` names no image are problems too. Keypoint
    annotations are matched to instance annotations by ``id``.

    Python's cyclic garbage collector is off while it loads (:func:`_no_collections`).
    """
    # (file: URLs: the local paths they name, so that dataset.json and the input
    # fingerprint of a resumed conversion name the files themselves)
    annotations, images_dir = _fs.fspath(annotations), _fs.fspath(images_dir)
    captions = None if captions is None else _fs.fspath(captions)
    keypoints = None if keypoints is None else _fs.fspath(keypoints)
    with _no_collections():
        return _load_coco(annotations, images_dir, captions=captions, keypoints=keypoints)


@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """The cyclic garbage collector off (as it was, after): loading a COCO file makes
    millions of objects that all live on (lists, tuples, dataclasses), and every few
    hundred made start a collection that walks the young ones again: a third of the
    load's time (0.2 of 0.6 s for 14.5 MB of JSON). Nothing made here is cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_coco(
    annotations: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    captions: str | os.PathLike[str] | None,
    keypoints: str | os.PathLike[str] | None,
) -> CocoIndex:
    data = _read_json(annotations)
    loader = _Loader(annotations)
    for i, entry in enumerate(_entries(data, "images", annotations)):
        loader.image(i, entry)
    categories = []
    for i, entry in enumerate(_entries(data, "categories", annotations)):
        where = f"{annotations}: categories[{i}]"
        categories.append((_int64(entry, "id", where), _get(entry, "name", str, where)))
    categories.sort()
    ids = [i for i, _ in categories]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise SchemaError(f"{annotations}: duplicate category id {duplicate}")
    by_id: dict[int, tuple[CocoAnnotation, str]] = {}
    for i, entry in enumerate(_entries(data, "annotations", annotations, required=False)):
        where = f"{annotations}: annotations[{i}]"
        try:
            ann = _annotation(entry, where)
            if ann.id in by_id:
                raise SchemaError(
                    f"{where}: duplicate annotation id {ann.id} (also {by_id[ann.id][1]})"
                )
        except SchemaError as e:
            loader.reject(_entry_name(entry, "annotation", where), entry.get("image_id"), str(e))
            continue
        by_id[ann.id] = ann, where
    keypoint_names: tuple[str, ...] = ()
    if keypoints is not None:
        kp_data = _read_json(keypoints)
        for i, entry in enumerate(_entries(kp_data, "categories", keypoints, required=False)):
            names = entry.get("keypoints") or ()
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise SchemaError(f"{keypoints}: categories[{i}]: 'keypoints' must be names")
            keypoint_names = keypoint_names or tuple(names)
        for i, entry in enumerate(_entries(kp_data, "annotations", keypoints)):
            where = f"{keypoints}: annotations[{i}]"
            try:
                values, num = _keypoints(entry, keypoint_names, where)
                ann_id = _int64(entry, "id", where)
                ann, _ = by_id.get(ann_id) or (_annotation(entry, where), where)
            except SchemaError as e:
                loader.reject(
                    _entry_name(entry, "annotation", where), entry.get("image_id"), str(e)
                )
                continue
            ann = dataclasses.replace(ann, keypoints=values, num_keypoints=num)
            by_id[ann.id] = ann, where
    for ann, _ in by_id.values():
        loader.place(ann)
    if captions is not None:
        cap_data = _read_json(captions)
        for i, entry in enumerate(_entries(cap_data, "annotations", captions)):
            where = f"{captions}: annotations[{i}]"
            try:
                image_id = _int64(entry, "image_id", where)
                text = _get(entry, "caption", str, where)
            except SchemaError as e:
                loader.reject(_entry_name(entry, "caption", where), entry.get("image_id"), str(e))
                continue
            if image_id in loader.images:
                loader.images[image_id]["captions"].append(text)
            elif image_id not in loader.bad_images:
                loader.problems.append(
                    CocoProblem(
                        f"caption {entry.get('id')}",
                        f"image_id {image_id} names no image in {annotations}",
                    )
                )
    return CocoIndex(
        annotations_file=os.fspath(annotations),
        images_dir=os.fspath(images_dir),
        images=tuple(
            CocoImage(
                id=e["id"],
                file_name=e["file_name"],
                width=e["width"],
                height=e["height"],
                annotations=tuple(e["annotations"]),
                captions=tuple(e["captions"]),
                problems=tuple(e["problems"]),
            )
            for e in loader.images.values()
        ),
        categories=tuple(categories),
        problems=tuple(loader.problems),
        captions_file=os.fspath(captions) if captions is not None else None,
        keypoints_file=os.fspath(keypoints) if keypoints is not None else None,
        keypoint_names=keypoint_names,
    )

"""Image folders: ``ROOT/<class name>/<image>`` -> one ``tf.train.Example`` per image.

The layout Keras ``image_dataset_from_directory`` reads: one subfolder per class, the
class names sorted to give the label ids (or given as ``class_names``), the images under
each class folder at any depth. Files directly under ``ROOT`` and hidden files or
folders (names starting with ``.``) are not items, as in Keras. Every other file is one:
a file that is not a JPEG, PNG, GIF, BMP or WebP image is an
:class:`~recordforge.ItemError` naming it (``on_error`` decides), unless ``extensions``
limits the files taken.

Images are stored byte-identical, with keys following the TensorFlow Object Detection
API: ``image/encoded``, ``image/format`` (from the file's first bytes, not its name),
``image/height``, ``image/width`` (from the header, via Pillow, without decoding the
pixels), ``image/filename`` (the path relative to ``ROOT``), ``image/class/label`` and
``image/class/text``. ``resize=N`` shrinks images whose longer side exceeds N pixels to
that size (bicubic) and re-encodes them in their own format; smaller images stay as they
are. A JPEG is decoded at 1/2, 1/4 or 1/8 scale where that is still at least the target
(libjpeg's DCT scaling) before it is resized.

>>> import io, tempfile, pathlib, recordforge as rf
>>> from PIL import Image
>>> from recordforge.sources.images import ImageFolderSource
>>> with tempfile.TemporaryDirectory() as d:
...     for name in ("dog", "cat"):
...         (pathlib.Path(d) / name).mkdir()
...         Image.new("RGB", (4, 3)).save(pathlib.Path(d) / name / "a.png")
...     src = ImageFolderSource(d)
...     records = [r for item in src.items() for r in src.to_records(item)]
>>> src.schema()["image/class/label"].meaning
ClassLabel(names=('cat', 'dog'), ids=None)
>>> ex = rf.decode_example(records[1])
>>> ex["image/filename"], ex["image/class/label"], ex["image/class/text"], ex["image/format"]
([b'dog/a.png'], array([1]), [b'dog'], [b'png'])
>>> ex["image/height"], ex["image/width"]
(array([3]), array([4]))

With ``rf.write_dataset``::

    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from recordforge import _fs
from recordforge.errors import EncodeError, ItemError
from recordforge.example import encode_example
from recordforge.imageformat import image_format, resized_size
from recordforge.schema import ClassLabel, FeatureSpec, Image, Schema, Text
from recordforge.sources._read import (
    DEFAULT_MAX_FILE_BYTES,
    Refused,
    inside,
    read_inside,
    size_limit,
)
from recordforge.sources._resize import decode_for_resize, kept_metadata

__all__ = ["ImageFile", "ImageFolderSource", "image_format"]

# Pillow's format names for the formats we detect, to re-encode in the same one.
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}
_SUFFIX_FORMAT = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".gif": "gif",
    ".bmp": "bmp",
    ".webp": "webp",
}


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One item: ``path`` relative to the root (``/``-separated) and its class id;
    ``problem`` says why the walk refused it (a folder link leaving the root, or one
    that loops), which makes it an item error."""

    path: str
    label: int
    problem: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Encoded:
    data: bytes
    format: str
    width: int
    height: int


class _Root:
    """The root folder, local or an fsspec URL (gs://, s3://, ...)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __str__(self) -> str:
        return self.root

    def is_dir(self) -> bool:
        return _fs.isdir(self.root)

    def subfolders(self) -> list[str]:
        return [name for name, is_dir in _fs.listdir(self.root) if is_dir]

    def has_folder(self, name: str) -> bool:
        return _fs.isdir(_fs.join(self.root, name))

    def link_problem(self, path: str, seen: set[str]) -> str | None:
        """Why the folder ``root/path`` is not to be walked, or None: it resolves (links
        followed) outside the root, or to a folder already walked (``seen``, the
        resolved folders so far, which a walkable folder joins). URLs have no links."""
        if _fs.is_url(self.root):
            return None
        real = os.path.realpath(os.path.join(self.root, path))
        if not inside(os.path.realpath(self.root), real):
            return f"a link to {real}, outside the image folder"
        if real in seen:
            return f"a link to a folder already read ({real}): not read twice"
        seen.add(real)
        return None

    def walk(
        self, name: str, unlisted: list[tuple[str, str | None]]
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """``os.walk`` under ``root/name`` (following links) with folders relative to the
        root, as POSIX paths; pruning the folder list in place prunes the walk. A folder
        that cannot be listed (no permission, gone) is added to ``unlisted`` with why: an
        item refused by name, never a folder of images left out in silence."""
        top = _fs.join(self.root, name)
        if _fs.is_url(self.root):
            fs, base = _fs.filesystem(self.root)
            yield from _walk_remote(
                fs, _fs.filesystem(top)[1].rstrip("/"), base.rstrip("/"), unlisted
            )
            return

        def refused(e: OSError) -> None:
            where = Path(e.filename or top)
            if where.is_relative_to(self.root):
                where = where.relative_to(self.root)
            unlisted.append((where.as_posix(), f"cannot list this folder: {e.strerror or e}"))

        for dirpath, dirnames, filenames in os.walk(top, onerror=refused, followlinks=True):
            yield Path(dirpath).relative_to(self.root).as_posix(), dirnames, filenames


def _walk_remote(
    fs: Any, path: str, base: str, unlisted: list[tuple[str, str | None]]
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` of the fsspec folder ``path`` (top down, pruned as the folder list is),
    folders relative to ``base``; a folder that cannot be listed added to ``unlisted``
    (fsspec's own ``walk`` passes its ``on_error`` to the top folder only)."""
    where = path[len(base) + 1 :]
    try:
        listing = fs.ls(path, detail=True)
    except OSError as e:
        unlisted.append((where, f"cannot list this folder: {e.strerror or e}"))
        return
    dirs: list[str] = []
    files: list[str] = []
    for info in listing:
        name = info["name"].rstrip("/")
        if name != path:
            (dirs if info["type"] == "directory" else files).append(name.rsplit("/", 1)[-1])
    yield where, dirs, files
    for d in dirs:
        yield from _walk_remote(fs, f"{path}/{d}", base, unlisted)


@dataclasses.dataclass(frozen=True)
class ImageFolderSource:
    """A folder of class folders of images (see the module docstring).

    ``class_names`` fixes the classes and their order (folders not named are not read);
    by default every non-hidden subfolder is a class, sorted by name. ``extensions``
    (e.g. ``(".jpg", ".png")``, case-insensitive) limits the files taken; by default
    every non-hidden file is an item. ``resize`` bounds the longer side in pixels.
    ``verify=True`` decodes every image fully (slower) so that a corrupt body is an
    ItemError too; by default only the header is read.

    Files are untrusted input: only regular files inside the root are read (links
    resolved; a FIFO or device is refused without blocking), each of at most
    ``max_image_bytes`` (default 256 MiB; an int or a size such as ``"64MB"``); folder
    links are followed only while they stay inside the root and reach no folder twice.
    Anything else is an ItemError naming the path.
    """

    root: str | os.PathLike[str]
    class_names: Sequence[str] | None = dataclasses.field(default=None, kw_only=True)
    extensions: Sequence[str] | None = dataclasses.field(default=None, kw_only=True)
    resize: int | None = dataclasses.field(default=None, kw_only=True)
    verify: bool = dataclasses.field(default=False, kw_only=True)
    max_image_bytes: int | str = dataclasses.field(default=DEFAULT_MAX_FILE_BYTES, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", _fs.fspath(self.root))  # (file://: the local path)
        root = _Root(str(self.root))
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: image folder root is not a directory")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < 1):
            raise ValueError(
                f"resize must be a positive int (max side in pixels), not {self.resize}"
            )
        object.__setattr__(self, "max_image_bytes", size_limit(self.max_image_bytes))
        if self.extensions is not None:
            exts = tuple(
                e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions
            )
            object.__setattr__(self, "extensions", exts)
        if self.class_names is None:
            names = tuple(n for n in root.subfolders() if not n.startswith("."))
            if not names:
                raise ValueError(f"{root}: no class folders (expected ROOT/<class>/<image>)")
        else:
            names = tuple(self.class_names)
            missing = [n for n in names if not root.has_folder(n)]
            if missing:
                raise ValueError(f"{root}: class folders not found: {missing}")
            if len(set(names)) != len(names):
                raise ValueError(f"class_names has duplicates: {list(names)}")
        object.__setattr__(self, "class_names", names)

    @property
    def names(self) -> tuple[str, ...]:
        """The class names, in label order."""
        return tuple(self.class_names or ())

    def describe(self) -> dict[str, Any]:
        """What goes into ``dataset.json``'s ``source``: the folder, its classes, how its
        images are taken, and its files (how many, and a digest of their paths, sizes and
        modification times: a rerun over changed files starts over, not resumes)."""
        return {
            "type": "images",
            "root": str(self.root),
            "classes": list(self.names),
            "extensions": None if self.extensions is None else list(self.extensions),
            "resize": self.resize,
            "verify": self.verify,
            "max_image_bytes": self.max_image_bytes,
            "files": self._listing,
        }

    @functools.cached_property
    def _listing(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        local = not _fs.is_url(str(self.root))
        for item in self.items():
            digest.update(item.path.encode("utf-8", "surrogateescape") + b"\0")
            if local and item.problem is None:
                with contextlib.suppress(OSError):
                    info = os.stat(os.path.join(str(self.root), item.path))
                    digest.update(b"%d %d" % (info.st_size, info.st_mtime_ns))
            digest.update(b"\n")
        return {"count": len(self.items()), "sha256": digest.hexdigest()}

    def items(self) -> tuple[ImageFile, ...]:
        """Every image file, by class then by path (sorted, so the order is stable);
        the folder is walked once per source (its description names these files)."""
        return self._walked

    @functools.cached_property
    def _walked(self) -> tuple[ImageFile, ...]:
        out: list[ImageFile] = []
        root = _Root(str(self.root))
        for label, name in enumerate(self.names):
            # Folder links are followed (as Keras does) while they stay inside the root
            # and reach no folder twice; those that do not are items refused by name.
            seen: set[str] = set()
            problem = root.link_problem(name, seen)
            if problem is not None:
                out.append(ImageFile(name, label, problem))
                continue
            found: list[tuple[str, str | None]] = []
            for dirpath, dirnames, filenames in root.walk(name, found):
                walked = []
                for d in dirnames:
                    if d.startswith("."):
                        continue
                    problem = root.link_problem(f"{dirpath}/{d}", seen)
                    if problem is None:
                        walked.append(d)
                    else:
                        found.append((f"{dirpath}/{d}", problem))
                dirnames[:] = walked
                for filename in filenames:
                    if filename.startswith("."):
                        continue
                    if self.extensions is not None and not filename.lower().endswith(
                        tuple(self.extensions)
                    ):
                        continue
                    found.append((f"{dirpath}/{filename}", None))
            out.extend(ImageFile(path, label, problem) for path, problem in sorted(found))
        return tuple(out)

    @functools.cached_property
    def _declared_format(self) -> str | None:
        """The format the schema names: that of every file's extension (or of every one
        of ``extensions``) when they all name one, else None. A file whose bytes are of
        another format is an ItemError, so the schema never says ``jpeg`` over a PNG."""
        suffixes = (
            set(self.extensions)
            if self.extensions is not None
            else {PurePosixPath(i.path).suffix.lower() for i in self.items() if not i.problem}
        )
        formats = {_SUFFIX_FORMAT.get(s) for s in suffixes}
        return formats.pop() if len(formats) == 1 else None

    def schema(self) -> Schema:
        """The schema of the records; ``image/encoded``'s format is named when the file
        extensions (or ``extensions``) say all images are one format."""
        fmt = self._declared_format
        return Schema(
            {
                "image/encoded": FeatureSpec(dtype="bytes", meaning=Image(format=fmt)),
                "image/format": FeatureSpec(dtype="string"),
                "image/height": FeatureSpec(dtype="int64"),
                "image/width": FeatureSpec(dtype="int64"),
                "image/filename": FeatureSpec(dtype="string"),
                "image/class/label": FeatureSpec(
                    dtype="int64", meaning=ClassLabel(names=self.names)
                ),
                "image/class/text": FeatureSpec(dtype="string", meaning=Text()),
            }
        )

    def to_records(self, item: ImageFile) -> tuple[bytes]:
        """One image file -> its serialized Example; ItemError for a file that is not a
        readable image."""
        path = _fs.join(self.root, item.path)
        if item.problem is not None:
            raise ItemError(str(path), item.problem)
        try:
            data = read_inside(
                str(self.root),
                item.path,
                limit=int(self.max_image_bytes),
                where="the image folder",
            )
        except Refused as e:
            raise ItemError(str(path), str(e)) from None
        except OSError as e:
            raise ItemError(str(path), f"cannot read: {e.strerror or e}") from None
        image = self._encoded(path, data)
        features = {
            "image/encoded": image.data,
            "image/format": image.format,
            "image/height": image.height,
            "image/width": image.width,
            "image/filename": item.path,
            "image/class/label": item.label,
            "image/class/text": self.names[item.label],
        }
        try:
            return (encode_example(features),)
        except EncodeError as e:  # a file or folder name that is not UTF-8, say
            raise ItemError(str(path), str(e)) from None

    def _encoded(self, path: str, data: bytes) -> _Encoded:
        fmt = image_format(data[:32])
        if fmt is None:
            raise ItemError(
                str(path), "not a JPEG, PNG, GIF, BMP or WebP image (unknown header bytes)"
            )
        declared = self._declared_format
        if declared is not None and fmt != declared:
            raise ItemError(
                str(path),
                f"holds {fmt.upper()} bytes, but the schema says {declared} (from the file "
                "names): rename it, or limit the files taken with extensions",
            )
        if self.verify:
            from recordforge.errors import DecodeError
            from recordforge.images import check

            try:
                check(data)  # libjpeg-turbo's warnings count: a corrupt middle is found
            except DecodeError as e:
                raise ItemError(str(path), str(e)) from None
        from PIL import Image as PILImage

        try:
            with PILImage.open(io.BytesIO(data)) as im:
                width, height = im.size
                size = resized_size(im.size, self.resize)
                if size is not None:
                    return self._resized(im, fmt, size, data)
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as e:
            raise ItemError(str(path), f"cannot decode {fmt} image: {e}") from None
        return _Encoded(data=data, format=fmt, width=width, height=height)

    def _resized(self, im: Any, fmt: str, size: tuple[int, int], data: bytes) -> _Encoded:
        # A JPEG: libjpeg-turbo, strict (a damaged one is refused, not stored re-encoded
        # as a clean image), at the DCT scale Pillow's draft picks (the resize's cost
        # follows the decoded pixels).
        im = decode_for_resize(data, im, size)
        # Bicubic; "P" and "1" images use nearest.
        small = im.resize(size, resample=3) if im.size != size else im.copy()
        buffer = io.BytesIO()
        options: dict[str, Any] = {}
        if fmt in ("jpeg", "webp"):
            options["quality"] = 95
        if fmt == "jpeg" and small.mode not in ("L", "RGB", "CMYK"):
            small = small.convert("RGB")
        options.update(kept_metadata(im, small.mode))
        small.save(buffer, format=_PIL_FORMAT[fmt], **options)
        return _Encoded(data=buffer.getvalue(), format=fmt, width=size[0], height=size[1])

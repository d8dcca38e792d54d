"""Reading one input file of a source (an image of a COCO directory or an image folder)
as untrusted input: only a regular file, only inside its directory (links resolved),
only up to a size limit, and never blocking.

The name is checked first (no NUL, not absolute, no ``..``); the path is then resolved
(every link followed) and must stay under the resolved directory; the resolved path is
opened with ``O_NOFOLLOW | O_NONBLOCK`` and the open descriptor is checked before a byte
is read: a FIFO, a device, a socket or a directory is refused (opening a FIFO without
``O_NONBLOCK`` waits for a writer), and so is a file over the limit. A file that grows
while it is read is cut at the limit and refused, so memory stays bounded by the limit.
A plain name (one component) is first opened as it is, with ``O_NOFOLLOW``: what that
opens is an entry of the directory and not a link, so it is inside, with no path to
resolve (resolving stats every component of two paths, per file); a link, or any error,
takes the resolving way.

Each refusal is a :class:`Refused` whose message names the path and says what was
wrong; sources turn it into an :class:`~recordforge.ItemError` naming their item.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> with open(os.path.join(d, "a.jpg"), "wb") as f:
...     _ = f.write(b"12345")
>>> read_inside(d, "a.jpg", limit=10, where="the image directory")
b'12345'
>>> read_inside(d, "../a.jpg", limit=10, where="the image directory")
Traceback (most recent call last):
...
recordforge.sources._read.Refused: file name '../a.jpg' escapes the image directory
>>> os.symlink("/dev/zero", os.path.join(d, "zero.jpg"))
>>> read_inside(d, "zero.jpg", limit=10, where="the image directory")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
recordforge.sources._read.Refused: .../zero.jpg resolves to /dev/zero, outside the image directory
"""

from __future__ import annotations

import os
import stat
from pathlib import PurePosixPath, PureWindowsPath

from recordforge import _fs
from recordforge.sharding import parse_size

__all__ = ["DEFAULT_MAX_FILE_BYTES", "Refused", "check_name", "inside", "read_inside", "size_limit"]

#: The default per-file size limit: 256 MiB, far above any real photo (a 100-megapixel
#: JPEG is some 30 MB), far below what would exhaust a worker's memory.
DEFAULT_MAX_FILE_BYTES = 256 << 20

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class Refused(ValueError):
    """A file that is not read: outside its directory, not a regular file, too big."""


def check_name(name: str, where: str) -> None:
    """Refuses a relative name that could leave its directory or cannot be a file name."""
    if "\x00" in name:
        raise Refused(f"file name {name!r} contains a NUL character")
    if not name:
        raise Refused("the file name is empty")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        raise Refused(f"file name {name!r} escapes {where}")


def inside(root: str, path: str) -> bool:
    """Whether the resolved ``path`` is ``root`` or under it (both resolved)."""
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:  # Windows: another drive
        return False


def size_limit(value: int | str) -> int:
    """A ``max_image_bytes`` given as an int or a size such as ``"64MB"``, checked."""
    try:
        limit = parse_size(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"max_image_bytes: {e}") from None
    if isinstance(limit, bool) or limit < 1:
        raise ValueError(f"max_image_bytes must be >= 1 byte, not {value!r}")
    return limit


def read_inside(root: str, name: str, *, limit: int, where: str) -> bytes:
    """The bytes of the regular file ``root/name``; :class:`Refused` for a name or path
    that leaves ``root`` (``where`` names it in messages), for anything but a regular
    file, and for a file of more than ``limit`` bytes. ``OSError`` (a missing file, no
    permission) passes through. ``root`` may be an fsspec URL (no links there)."""
    check_name(name, where)
    path = _fs.join(root, name)
    if _fs.is_url(root):
        return _read_url(path, limit)
    fd = _open_plain(path, name)
    if fd is None:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if not inside(real_root, real):
            raise Refused(f"{path} resolves to {real}, outside {where}")
        fd = os.open(real, _FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _fs.file_kind(info.st_mode)
            raise Refused(f"{path} is not a regular file ({kind})")
        _check_size(path, info.st_size, limit)
        with open(fd, "rb", closefd=False) as f:
            data = f.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew: read on, to the limit at most
                data += f.read(limit + 1 - len(data))
    finally:
        os.close(fd)
    _check_size(path, len(data), limit)
    return data


def _open_plain(path: str, name: str) -> int | None:
    """``path`` (``root/name``) opened when ``name`` is one component that is not a link
    (then inside ``root`` whatever ``root``'s links), without resolving anything; else
    None, also on any error (the resolving way raises it, naming the resolved path)."""
    if not _NOFOLLOW or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        return None
    try:
        return os.open(path, _FLAGS)
    except OSError:
        return None


def _check_size(path: str, size: int, limit: int) -> None:
    if size > limit:
        raise Refused(f"{path} is {size} bytes, over the limit of {limit} bytes (max_image_bytes)")


def _read_url(path: str, limit: int) -> bytes:
    fs, key = _fs.filesystem(path)
    info = fs.info(key)
    if info.get("type") not in (None, "file"):
        raise Refused(f"{path} is not a file ({info.get('type')})")
    if info.get("size") is not None:
        _check_size(path, int(info["size"]), limit)
    with fs.open(key, "rb") as f:
        data: bytes = f.read(limit + 1)
    _check_size(path, len(data), limit)
    return data

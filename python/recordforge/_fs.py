"""Paths that may be fsspec URLs (``gs://``, ``s3://``, ...) beside local paths.

Local paths keep the fast paths (mmap, ``os.replace``); a URL goes through fsspec,
imported only when one is seen (``pip install 'recordforge[cloud]'``). Writes to an
object store are committed: the object is uploaded under a temporary key beside its
final one (a name starting with ``.``), then moved (copied and deleted) to the final key,
so a reader never sees a partial object under a final name.

>>> from recordforge import _fs
>>> _fs.is_url("s3://bucket/out"), _fs.is_url("/data/out"), _fs.is_url("C:/data")
(True, False, False)
>>> _fs.is_url("simplecache::gs://bucket/ds"), _fs.is_url("odd::name")
(True, False)
>>> _fs.join("gs://bucket/out/", "dataset.json"), _fs.name("s3://b/out/train.tfrecord")
('gs://bucket/out/dataset.json', 'train.tfrecord')
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "exists",
    "file_kind",
    "file_sizes",
    "fspath",
    "glob",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "move_key",
    "name",
    "open_file",
    "parent",
    "part_size",
    "read_bytes",
    "read_fully",
    "remove",
    "size",
    "staged",
    "temp_name",
    "upload",
    "write_bytes",
]

# A scheme and ``://``, after fsspec's chained file systems where there are some
# (``simplecache::gs://bucket/ds``, ``filecache::s3://...``).
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*::)*[A-Za-z][A-Za-z0-9+.\-]+://")


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL that fsspec opens. A ``file:`` URL is not: it names a
    local path (see :func:`fspath`), read by the local readers (mmap, Rust)."""
    return isinstance(path, str) and bool(_URL.match(path)) and not path.startswith("file:")


# fsspec's caching file systems: a chain of them before a store reads through a local
# cache, and writes past it.
_CACHES = frozenset({"simplecache", "filecache", "blockcache", "cached"})


def unchained(url: str) -> str:
    """``url`` less the caches chained before its store: where a dataset is written
    (its control objects, the lock and the manifest, must be read as the store holds
    them, not as a cache kept them).

    >>> unchained("simplecache::gs://b/ds"), unchained("zip://a::s3://b/x.zip")
    ('gs://b/ds', 'zip://a::s3://b/x.zip')
    """
    *chain, last = url.split("::")
    return last if chain and all(c in _CACHES for c in chain) else url


def fspath(path: str | os.PathLike[str]) -> str:
    """``os.fspath(path)``, with a ``file:`` URL as the local path it names
    (``file:///data/ds``, ``file://localhost/data/ds`` and ``file:/data/ds``, the form
    Java and Hadoop write, are ``/data/ds``; ``%20`` is a space); other URLs as they are.
    A ``file:`` URL naming another host is refused.

    >>> fspath("file:///data/ds"), fspath("file:/data/my%20ds"), fspath("s3://bucket/ds")
    ('/data/ds', '/data/my ds', 's3://bucket/ds')
    """
    text = os.fspath(path)
    if not text.startswith("file:/"):
        return text
    url = urllib.parse.urlsplit(text)
    if url.netloc not in ("", "localhost"):
        raise ValueError(f"{text}: a file: URL naming another host ({url.netloc})")
    return urllib.parse.unquote(url.path)


@functools.cache
def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            "paths such as gs:// and s3:// need fsspec and its filesystem package: "
            "pip install 'recordforge[cloud]'"
        ) from None
    return fsspec


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    fs, path = _fsspec().core.url_to_fs(url)
    return fs, path


def join(root: str | os.PathLike[str], *names: str) -> str:
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *names])
    return os.path.join(fspath(root), *names)


def name(path: str | os.PathLike[str]) -> str:
    """The last part of a path or URL."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else Path(path).name


def parent(path: str | os.PathLike[str]) -> str:
    if is_url(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return str(Path(fspath(path)).parent)


def part_size() -> int:
    """The part size of uploads to a URL: ``RECORDFORGE_PART_SIZE`` bytes (default
    16 MiB; at least 5 MiB, S3's smallest part, and a multiple of 256 KiB, as GCS's
    resumable uploads need). An upload holds one part in memory."""
    text = os.environ.get("RECORDFORGE_PART_SIZE", "")
    try:
        wanted = int(text) if text else 16 << 20
    except ValueError:
        raise ValueError(f"RECORDFORGE_PART_SIZE={text!r}: not a number of bytes") from None
    return max(5 << 20, wanted) // (256 << 10) * (256 << 10)


def read_fully(f: Any, n: int) -> bytes:
    """``n`` bytes of ``f`` from where it is, fewer only at its end: a file object may
    give fewer a call than asked for (a socket's, an fsspec file's) before its end.

    >>> import io
    >>> class Short(io.BytesIO):
    ...     def read(self, n=-1):
    ...         return super().read(min(n, 3))
    >>> read_fully(Short(b"abcdefgh"), 7), read_fully(Short(b"ab"), 7)
    (b'abcdefg', b'ab')
    """
    data = f.read(n)
    if len(data) >= n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n and (more := f.read(n - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def open_file(path: str | os.PathLike[str], mode: str = "rb") -> IO[Any]:
    """An open file: the local file, or an fsspec file object for a URL (written in
    parts of :func:`part_size`, committed by the store when it is closed)."""
    if is_url(path):
        fs, p = filesystem(str(path))
        f: IO[Any] = fs.open(p, mode, block_size=part_size()) if "w" in mode else fs.open(p, mode)
        return f
    return open(fspath(path), mode)


def exists(path: str | os.PathLike[str]) -> bool:
    if is_url(path):
        fs, p = filesystem(str(path))
        return bool(fs.exists(p))
    return os.path.exists(fspath(path))


def isfile(path: str | os.PathLike[str]) -> bool:
    if is_url(path):
        fs, p = filesystem(str(path))
        return bool(fs.isfile(p))
    return os.path.isfile(fspath(path))


def size(path: str | os.PathLike[str]) -> int:
    """The size of a file in bytes."""
    if is_url(path):
        fs, p = filesystem(str(path))
        return int(fs.size(p))
    return os.stat(fspath(path)).st_size


def isdir(path: str | os.PathLike[str]) -> bool:
    if is_url(path):
        fs, p = filesystem(str(path))
        return bool(fs.isdir(p))
    return os.path.isdir(fspath(path))


def listdir(path: str | os.PathLike[str]) -> list[tuple[str, bool]]:
    """The entries of a directory: (name, is a directory), sorted by name."""
    if is_url(path):
        fs, p = filesystem(str(path))
        fs.invalidate_cache(p)
        entries = fs.ls(p, detail=True)
        out = [
            (e["name"].rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
            for e in entries
        ]
        return sorted((n, d) for n, d in out if n)
    return sorted((e.name, e.is_dir()) for e in os.scandir(fspath(path)))


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` that is not a regular one is, for messages."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a file")


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def file_sizes(url: str) -> dict[str, int]:
    """The files of a remote directory and their sizes, from one listing."""
    fs, p = filesystem(url)
    fs.invalidate_cache(p)
    return {
        e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"])
        for e in fs.ls(p, detail=True)
        if e.get("type") != "directory"
    }


def glob(pattern: str) -> list[str]:
    """The files matching a glob, as URLs (or local paths), sorted."""
    if is_url(pattern):
        # A chained URL (``simplecache::gs://...``): the last file system globs, and
        # every match keeps the chain before it (read through the cache, as asked).
        chain, _, last = pattern.rpartition("::")
        fs, p = filesystem(last)
        prefix = chain + "::" if chain else ""
        return sorted(prefix + fs.unstrip_protocol(m) for m in fs.glob(p) if fs.isfile(m))
    import glob as _glob

    return sorted(m for m in _glob.glob(fspath(pattern)) if os.path.isfile(m))


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open_file(path, "rb") as f:
        data: bytes = f.read()
    return data


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of the remote file ``url`` (fewer at its end), by one ranged
    read: an fsspec file object would read a whole block of several MB."""
    fs, where = filesystem(url)
    data: bytes = fs.cat_file(where, start=start, end=end)
    return data


def temp_name(final_name: str) -> str:
    """A hidden name beside ``final_name``, unique to this attempt."""
    return f".{final_name}.{uuid.uuid4().hex[:12]}.partial"


#: fsspec protocols of object stores, which commit an object written by one request (a
#: PUT, or a multipart upload's completion) whole or not at all; and memory's.
WHOLE_WRITES = frozenset(("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes a whole file atomically: locally a temporary name, then a rename; in an
    object store (:data:`WHOLE_WRITES`) one write, which the store commits whole or not
    at all, so a reader sees the old object or the new one (a temporary key's move would
    cost three more requests and a copy); elsewhere (``sftp://``...) a temporary key,
    then a move."""
    tmp = join(parent(path), temp_name(name(path)))
    if is_url(path):
        fs, final = filesystem(str(path))
        if _protocols(fs) & WHOLE_WRITES:
            fs.pipe_file(final, data)
            return
        _, tmp_key = filesystem(tmp)
        try:
            fs.pipe_file(tmp_key, data)
            move_key(fs, tmp_key, final)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(tmp_key)
            raise
        return
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fspath(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_COPY_LIMIT = 5 << 30  # S3's largest CopyObject; a bigger object is copied in parts


def move_key(fs: Any, key: str, final: str, size: int | None = None) -> None:
    """Moves one object by its exact key (the store copies it, then it is deleted):
    ``fs.mv`` would expand ``?``, ``*`` and ``[`` in the keys as glob patterns (a prefix
    such as ``q?x=1``). On S3 an object of up to 5 GiB is copied by one CopyObject with
    ``ChecksumAlgorithm=CRC32C``, so the store keeps a CRC32C of the whole object
    (``verify --fast`` compares it with ``dataset.json``); not by s3fs's ``cp_file``,
    which copies objects over 150 MiB in parts (a checksum of the parts, or none). A
    bigger object is copied in parts, without one. GCS keeps one of every object.
    ``size``: the object's, where the caller knows it (a listing); else it is asked of
    the store (a request, unless s3fs has it from a listing that a move's end has not
    dropped yet)."""
    if (
        _protocols(fs) & {"s3", "s3a"}
        and int(fs.size(key) if size is None else size) <= _COPY_LIMIT
    ):
        source_bucket, source_key, _ = fs.split_path(key)
        bucket, target_key, _ = fs.split_path(final)
        fs.call_s3(
            "copy_object",
            Bucket=bucket,
            Key=target_key,
            CopySource={"Bucket": source_bucket, "Key": source_key},
            ChecksumAlgorithm="CRC32C",
        )
        fs.invalidate_cache(final)
    else:
        fs.cp_file(key, final)
    fs.rm_file(key)


def upload(local: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Puts a local file at ``path`` (a URL or a local path) atomically: an object store
    gets it under a temporary key, then moves it to the final key."""
    if not is_url(path):
        shutil.move(os.fspath(local), fspath(path))
        return
    fs, final = filesystem(str(path))
    _, tmp_key = filesystem(join(parent(path), temp_name(name(path))))
    try:
        fs.put_file(os.fspath(local), tmp_key)
        move_key(fs, tmp_key, final)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm_file(tmp_key)
        raise


def remove(path: str | os.PathLike[str]) -> None:
    """Removes a file, or a directory with everything under it."""
    if is_url(path):
        fs, p = filesystem(str(path))
        if fs.isfile(p):
            fs.rm_file(p)  # by its exact key (``rm`` expands glob characters)
        else:
            fs.rm(p, recursive=True)
    elif os.path.isdir(fspath(path)):
        shutil.rmtree(fspath(path))
    else:
        Path(fspath(path)).unlink(missing_ok=True)


_STAGE_ROOT: list[str] = []


def _stage_root() -> str:
    if not _STAGE_ROOT:
        root = tempfile.mkdtemp(prefix="recordforge-staged-")
        atexit.register(shutil.rmtree, root, True)
        _STAGE_ROOT.append(root)
    return _STAGE_ROOT[0]


# URL -> (the remote object's version when it was downloaded, its local copy).
_STAGED: dict[str, tuple[tuple[Any, ...], str]] = {}


def _version(info: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when a remote object is replaced: size, and the store's version tag
    (S3 ETag, GCS generation or hash, or a modification time)."""
    tags = ("ETag", "etag", "generation", "md5Hash", "crc32c", "LastModified", "mtime", "updated")
    return (info.get("size"), *(str(info.get(t)) for t in tags if info.get(t) is not None))


def staged(path: str) -> str:
    """A local copy of a remote file (for readers that need a local file: memory maps,
    random access), downloaded again only when the remote object has changed (its size
    or version tag, asked of the store at every call). Local paths are returned as they
    are."""
    if not is_url(path):
        return fspath(path)
    fs, p = filesystem(path)
    fs.invalidate_cache(p)
    version = _version(fs.info(p))
    known = _STAGED.get(path)
    if known is not None and known[0] == version and os.path.exists(known[1]):
        return known[1]
    local = os.path.join(_stage_root(), re.sub(r"[^A-Za-z0-9._-]", "_", path.split("://")[0]), p)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    tmp = f"{local}.{uuid.uuid4().hex[:8]}.partial"
    fs.get_file(p, tmp)
    os.replace(tmp, local)  # a reader still holding the old copy keeps its inode
    _STAGED[path] = (version, local)
    return local


@contextlib.contextmanager
def local_dir() -> Iterator[Path]:
    """A temporary local directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="recordforge-") as d:
        yield Path(d)

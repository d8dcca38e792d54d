"""Reading and writing TFRecord files: framing, CRC32C and GZIP/ZLIB, in Rust.

A record on disk is ``u64 length | u32 masked crc32c(length) | data | u32 masked
crc32c(data)``, byte for byte what TensorFlow writes. GZIP and ZLIB files are the same
streams TensorFlow writes and reads.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import stat
import warnings
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any, BinaryIO, Literal, cast

from recordforge import _core, _fs
from recordforge._ranged import ReadAhead
from recordforge._sticky import Sticky
from recordforge.errors import CorruptRecordError, RecordforgeError

__all__ = [
    "COMPRESSION_SUFFIXES",
    "DEFAULT_MAX_RECORD_BYTES",
    "RECORD_SUFFIXES",
    "RecordIterator",
    "RecordStats",
    "TFRecordWriter",
    "compression_of",
    "detect_compression",
    "read_records",
    "scan_records",
]

#: The largest record a reader accepts unless told otherwise (``max_record_bytes``,
#: ``--max-record-bytes``): 1 GiB. A record whose length field claims more is a
#: :class:`~recordforge.CorruptRecordError` ("record claims N bytes, more than the limit
#: of M"), raised before anything is allocated for it — a damaged or hostile length
#: (a GZIP bomb that claims 2**40 bytes) costs nothing. Every reader takes the keyword:
#: ``read_records``, ``scan_records``, ``open_dataset`` and the ``inspect`` functions.
DEFAULT_MAX_RECORD_BYTES: int = _core.DEFAULT_MAX_RECORD_BYTES

Compression = Literal["gzip", "zlib"] | None
RecordIterator = _core.RecordIterator

#: The compressions a TFRecord file can have, by the name the API takes and
#: ``dataset.json`` stores, each with the suffix of a shard written in it. The Rust core
#: reads, writes and detects them (``Compression`` in ``recordforge-core``): a new one is
#: a change there and an entry here.
COMPRESSION_SUFFIXES: dict[Compression, str] = {None: "", "gzip": ".gz", "zlib": ".zlib"}

#: The endings of names taken as TFRecord files when a directory is listed.
RECORD_SUFFIXES: tuple[str, ...] = (
    ".tfrecord",
    ".tfrec",
    ".tfrecords",
    *(suffix for suffix in COMPRESSION_SUFFIXES.values() if suffix),
)


def detect_compression(path: str | os.PathLike[str]) -> Compression:
    """``"gzip"``, ``"zlib"`` or ``None`` from a file's first bytes (a URL too: 12 bytes
    are read); a valid TFRecord header wins over a compression magic number, as in
    :func:`read_records`.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path, compression="gzip") as w:
    ...     _ = w.write(b"x")
    >>> rf.records.detect_compression(path)
    'gzip'
    """
    if _fs.is_url(path):
        return compression_of(_fs.read_range(str(path), 0, 12))
    with _fs.open_file(path) as f:
        head = f.read(12)
    return compression_of(head)


def compression_of(head: bytes) -> Compression:
    """What :func:`detect_compression` says of a file starting with ``head`` (its first
    12 bytes): the Rust core's rule (``Compression::detect``), named as in
    :data:`COMPRESSION_SUFFIXES`.

    >>> compression_of(b"\x1f\x8b\x08\x00"), compression_of(b"\x78\x9c"), compression_of(b"")
    ('gzip', 'zlib', None)
    """
    return cast(Compression, _core.detect_compression(bytes(head)))


def _let_go(remote: Any) -> None:
    """Drops a forked child's copy of its parent's upload: marked closed, so that its own
    ``__del__`` commits nothing, and not discarded (which would abort the parent's)."""
    with contextlib.suppress(AttributeError):
        remote.closed = True


class TFRecordWriter(_core.TFRecordWriter):
    """Writes records to a TFRecord file (a path or a binary file object).

    ``compression`` is ``None``, ``"gzip"`` or ``"zlib"``. Use it as a context manager;
    ``write`` returns each record's byte offset in the uncompressed record stream (what
    an index file stores), ``write_many`` a list of them. A file object passed in is
    flushed on close, not closed. Writing happens with the GIL released.

    ``checksum="crc32c"`` (what ``dataset.json`` stores by default: the CRC32C of the
    whole file, ~70 GB/s, the value Google Cloud Storage keeps for every object) or
    ``"sha256"`` hashes the file's bytes as they are written; after ``close``,
    ``.checksum`` is ``"crc32c:<8 hex digits>"`` or ``"sha256:<64 hex digits>"``.

    >>> import io, recordforge as rf
    >>> buf = io.BytesIO()
    >>> with rf.TFRecordWriter(buf) as w:
    ...     w.write(b"foo"), w.write_many([b"bar", b"bazz"])
    (0, [19, 38])
    >>> buf.getvalue()[:12].hex()
    '0300000000000000b099490e'
    >>> list(rf.read_records(io.BytesIO(buf.getvalue())))
    [b'foo', b'bar', b'bazz']

    A URL (``s3://``, ``gs://``...; needs the ``cloud`` extra) is written through an
    fsspec file object, which object stores commit only when it is closed (multipart
    completion): a writer left by an exception commits nothing.

    ``flush()`` makes every record written so far readable from the file, as
    TensorFlow's does (and with its bytes: a compressed stream gets zlib's
    ``Z_PARTIAL_FLUSH``). A compressed file read before ``close`` gives the flushed
    records and then :class:`recordforge.CorruptRecordError`: its stream has no end yet.

    A writer that is never closed (``del``, garbage collection, the end of the
    program) is closed when it goes away, and at the latest when the interpreter exits,
    with a ``ResourceWarning``, as Python's files are: its records are not lost. At exit,
    a call still running in another thread (a daemon thread's ``write_many``) is waited
    for, up to 30 seconds.

    A writer may be shared by threads: their calls happen one at a time (``close`` waits
    for the call in flight; ``close(timeout=...)`` at most that many seconds, then
    ``TimeoutError``). A call made from within a call of the same thread (a signal
    handler, the file object written to) raises ``RuntimeError``. A copy in a forked
    child is its parent's: ``write`` and ``flush`` raise ``RuntimeError``, and ``close``
    (or leaving a ``with`` block) drops the parent's buffered records unwritten.

    >>> import warnings
    >>> buf = io.BytesIO()
    >>> w = rf.TFRecordWriter(buf, compression="gzip")
    >>> _ = w.write(b"kept")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     del w
    >>> str(caught[0].message).startswith("unclosed TFRecordWriter")
    True
    >>> list(rf.read_records(io.BytesIO(buf.getvalue())))
    [b'kept']
    """

    # Class defaults: a writer whose __new__ was interrupted (by an exception from a
    # signal handler) still has what __del__ and close need. ``_owner``, the process that
    # made the writer (a forked child's copy is left alone), is set by _core with it.
    _remote: Any = None
    _closed_at_exit = False  # by _close_at_exit: it warns when deleted

    def __new__(
        cls,
        path_or_file: str | os.PathLike[str] | BinaryIO,
        compression: str | None = None,
        *,
        checksum: str | None = None,
    ) -> TFRecordWriter:
        remote = None
        if _fs.is_url(path_or_file):
            remote = path_or_file = _named(_fs.open_file(str(path_or_file), "wb"), path_or_file)
        elif isinstance(path_or_file, str | os.PathLike):
            path_or_file = _fs.fspath(path_or_file)  # (a file: URL: the path it names)
        try:
            self = super().__new__(cls, path_or_file, compression, checksum=checksum)
            self._remote = remote
        except BaseException:
            if remote is not None:
                _discard(remote)  # nothing was written: commit nothing
            raise
        _open_writers.add(self)
        return self

    def close(self, *, timeout: float | None = None) -> None:
        _open_writers.discard(self)
        if self._owner != os.getpid():
            super().close()  # a forked child's copy: drops the parent's buffered records
            remote, self._remote = self._remote, None
            if remote is not None:
                _let_go(remote)  # the parent's upload: neither committed nor discarded
            return
        try:
            super().close(timeout=timeout)
        except TimeoutError:
            _open_writers.add(self)  # another thread's call is still in flight: still open
            raise
        if self._remote is not None:
            remote, self._remote = self._remote, None
            try:
                remote.close()  # the store commits the upload
            except BaseException:
                _discard(remote)  # not committed: aborted, never retried at collection
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        if exc_type is not None and self._remote is not None and self._owner == os.getpid():
            remote, self._remote = self._remote, None
            _open_writers.discard(self)
            # The upload is dropped first: the records still buffered are not uploaded
            # (a part upload here could fail, or take its retries, for nothing).
            _discard(remote)
            with contextlib.suppress(Exception):
                super().close()  # into the dropped upload: "closed file" is expected
            return False
        if exc_type is not None and self._failed is not None:
            # The block's error is the failed write's (or came after it): closed
            # quietly, that error is the one to see.
            with contextlib.suppress(OSError):
                self.close()
            return False
        self.close()
        return False

    def _left_open(self) -> bool:
        return not self.closed or getattr(self, "_remote", None) is not None

    def _complete(self, timeout: float | None = None) -> None:
        """Closes the writer; a URL whose stream could not be completed is discarded."""
        try:
            self.close(timeout=timeout)
        except TimeoutError:
            raise  # still open: still being written by another thread
        except BaseException:
            remote, self._remote = getattr(self, "_remote", None), None
            if remote is not None:
                _discard(remote)
            raise

    # The defaults keep what this needs reachable at interpreter exit, when module
    # globals may already be gone (as in ``subprocess.Popen.__del__``).
    def __del__(
        self,
        _warn: Any = warnings.warn,
        _category: Any = ResourceWarning,
        _getpid: Any = os.getpid,
        _forsake: Any = _let_go,
    ) -> None:
        if self._owner != _getpid():
            # A forked child's copy: the file is its parent's, and so is an upload.
            if self._remote is not None:
                _forsake(self._remote)
            return
        left_open = self._left_open()
        if not (left_open or self._closed_at_exit):
            return
        try:
            if left_open:
                try:
                    self._complete()
                except OSError:
                    if self._failed is None:
                        raise  # (a writer whose write raised already closes quietly)
        finally:
            _warn(f"unclosed TFRecordWriter {self.name}", _category, stacklevel=2, source=self)


_open_writers: weakref.WeakSet[TFRecordWriter] = weakref.WeakSet()
"""Writers not yet closed, for :func:`_close_at_exit`."""

_EXIT_WAIT = 30.0
"""Seconds :func:`_close_at_exit` waits for a writer's call in flight in another thread."""


@atexit.register
def _close_at_exit() -> None:
    """Closes the writers still open when the interpreter exits, while other threads
    still run (fsspec's event loop, which a URL's file needs). Each one's
    ``ResourceWarning`` comes when it is deleted, as for Python's files. A call in
    flight in another thread (a daemon's) is waited for, at most ``_EXIT_WAIT`` seconds
    for each writer (then that writer's ``TimeoutError`` is reported). Writers a forked
    child inherited are its parent's to complete."""
    failed: BaseException | None = None
    for writer in list(_open_writers):
        if writer._owner == os.getpid() and writer._left_open():
            writer._closed_at_exit = True
            try:
                writer._complete(_EXIT_WAIT)
            except BaseException as e:  # every writer is completed, whatever one raised
                failed = failed or e
    if failed is not None:
        raise failed


def _discard(remote: Any) -> None:
    """Drops an fsspec upload without committing it: its ``discard`` (S3: the multipart
    upload aborted; an abort that fails leaves it for a rerun to abort), and the file
    marked closed, so that nothing flushes or commits it later (its ``__del__``)."""
    try:
        discard = getattr(remote, "discard", None)
        if discard is not None:
            discard()  # an unfinished upload is not committed
    finally:
        with contextlib.suppress(AttributeError):
            remote.closed = True  # nothing left to flush


def _named(f: Any, url: Any) -> Any:
    """``f`` with ``name`` set to the URL, so errors name the URL."""
    with contextlib.suppress(AttributeError):
        f.name = str(url)
    return f


def _remote_records(
    url: str,
    compression: Literal["auto", "gzip", "zlib"] | None,
    verify: bool,
    max_record_bytes: int,
) -> Iterator[bytes]:
    with ReadAhead(url) as f:
        try:
            yield from _core.read_records(
                _named(f, url), compression, verify, max_record_bytes=max_record_bytes
            )
        except CorruptRecordError as e:
            if e.path == url:
                raise
            raise CorruptRecordError(url, e.offset, e.reason) from None


def read_records(
    path_or_file: str | os.PathLike[str] | BinaryIO,
    compression: Literal["auto", "gzip", "zlib"] | None = "auto",
    verify: bool = True,
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[bytes]:
    """Iterates over the records of one TFRecord file.

    ``compression="auto"`` detects GZIP/ZLIB by their magic bytes (a valid TFRecord header
    wins); ``None`` forces plain. Both CRCs of every record are checked; with
    ``verify=False`` the data's is not (its length's always is, as TensorFlow's reader
    checks it: a length that fails its CRC is never followed). A file that ends exactly
    at a record boundary ends the iteration; anything else raises
    :class:`recordforge.CorruptRecordError` with the file, the record's byte offset and
    the reason. The returned iterator's ``.offset`` is the byte offset of the record it
    returned last.

    >>> import io, recordforge as rf
    >>> buf = io.BytesIO()
    >>> with rf.TFRecordWriter(buf, compression="gzip") as w:
    ...     _ = w.write(b"hello")
    >>> list(rf.read_records(io.BytesIO(buf.getvalue())))
    [b'hello']
    >>> cut = io.BytesIO(buf.getvalue()[:-3])  # the GZIP trailer is damaged
    >>> records = rf.read_records(cut)
    >>> next(records)
    b'hello'
    >>> try:
    ...     next(records)
    ... except rf.CorruptRecordError as e:
    ...     print(e.offset, e.reason.split(":")[0])
    21 compressed stream error

    After an error, every later ``next()`` raises it again (a retry loop does not take
    a damaged file for a finished one). A record that claims more than
    ``max_record_bytes`` (:data:`DEFAULT_MAX_RECORD_BYTES`, 1 GiB) is refused before
    anything is read or allocated for it.

    ``path_or_file`` may be a URL (``s3://``, ``gs://``...; the ``cloud`` extra): the
    file is streamed through fsspec, and errors name the URL.
    """
    if _fs.is_url(path_or_file):
        return Sticky(_remote_records(str(path_or_file), compression, verify, max_record_bytes))
    path_or_file = _local(path_or_file)
    return _core.read_records(path_or_file, compression, verify, max_record_bytes=max_record_bytes)


def _local(path_or_file: str | os.PathLike[str] | BinaryIO) -> str | BinaryIO:
    """A local path (a ``file:`` URL as the path it names), checked by :func:`_regular`,
    or the file object as it is."""
    if isinstance(path_or_file, str | os.PathLike):
        path_or_file = _fs.fspath(path_or_file)
    _regular(path_or_file)
    return path_or_file


def _regular(path_or_file: str | os.PathLike[str] | BinaryIO) -> None:
    """Refuses a path that names a FIFO, a device or a socket: read by path (mapped, or
    opened twice to sniff its compression) it gave no record and no error, or hung.
    Such a stream is read when opened by the caller and passed as a file object."""
    if not isinstance(path_or_file, str | os.PathLike):
        return
    try:
        mode = os.stat(path_or_file).st_mode
    except OSError:
        return  # (the reader names what is wrong)
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise RecordforgeError(
            f"{os.fspath(path_or_file)}: not a regular file ({_fs.file_kind(mode)}); to "
            "read a stream, "
            "open it and pass the file object"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordStats:
    """What :func:`scan_records` found in one file."""

    records: int
    payload_bytes: int
    stream_bytes: int


def scan_records(
    path_or_file: str | os.PathLike[str] | BinaryIO,
    compression: Literal["auto", "gzip", "zlib"] | None = "auto",
    verify: bool = True,
    threads: int = 0,
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> RecordStats:
    """Walks a whole file's framing without returning records: counts them and, with
    ``verify``, checks every data CRC too (every length's CRC is checked either way).
    Uncompressed files are memory-mapped and their data CRCs checked on ``threads``
    threads (0: one per core); the error raised is always the one
    at the lowest offset, as :func:`read_records` would raise it (records over
    ``max_record_bytes`` refused as there).

    >>> import io, recordforge as rf
    >>> buf = io.BytesIO()
    >>> with rf.TFRecordWriter(buf) as w:
    ...     _ = w.write_many([b"a" * 10, b"b" * 20])
    >>> rf.scan_records(io.BytesIO(buf.getvalue()))
    RecordStats(records=2, payload_bytes=30, stream_bytes=62)
    """
    if _fs.is_url(path_or_file):
        url = str(path_or_file)
        with ReadAhead(url) as f:
            try:
                records, payload, stream = _core.scan_records(
                    _named(f, url), compression, verify, threads, max_record_bytes=max_record_bytes
                )
            except CorruptRecordError as e:
                if e.path == url:
                    raise
                raise CorruptRecordError(url, e.offset, e.reason) from None
        return RecordStats(records=records, payload_bytes=payload, stream_bytes=stream)
    path_or_file = _local(path_or_file)
    records, payload, stream = _core.scan_records(
        path_or_file, compression, verify, threads, max_record_bytes=max_record_bytes
    )
    return RecordStats(records=records, payload_bytes=payload, stream_bytes=stream)

"""One input file read front to back, local or remote: its records (:class:`Records`)
or its walk (:class:`Walk`: records and damaged regions). A remote file (``gs://``,
``s3://``, ...) is streamed through :class:`~recordforge._ranged.ReadAhead` (ranged
reads on a background thread, memory bounded by the read-ahead): nothing is written to
local disk, and errors name the URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from recordforge import _core, _fs
from recordforge._ranged import ReadAhead
from recordforge.errors import CorruptRecordError
from recordforge.records import DEFAULT_MAX_RECORD_BYTES, compression_of

__all__ = ["Records", "Walk"]

# Bytes handed to the walker's pipe at a time.
_CHUNK = 1 << 20


class Records:
    """The records of the file ``name`` (a path or a URL), CRCs checked unless not
    ``verify``; ``offset`` is that of the record returned last. A remote file's blocks
    go to ``on_block`` too (see :class:`~recordforge._ranged.ReadAhead`). A context
    manager: closing stops the read-ahead."""

    def __init__(
        self,
        name: str,
        *,
        verify: bool = True,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        on_block: Callable[[bytes], None] | None = None,
    ) -> None:
        self.name = name
        self._source: ReadAhead | None = None
        if _fs.is_url(name):
            self._source = ReadAhead(name, on_block=on_block)
            self._it = _core.read_records(
                self._source, "auto", verify, max_record_bytes=max_record_bytes
            )
        else:
            self._it = _core.read_records(name, "auto", verify, max_record_bytes=max_record_bytes)

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._it)
        except CorruptRecordError as e:
            if e.path == self.name:
                raise
            raise CorruptRecordError(self.name, e.offset, e.reason) from None

    @property
    def offset(self) -> int | None:
        return self._it.offset

    def close(self) -> None:
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Walk:
    """The walk of the file ``name`` (a path or a URL; see
    :func:`recordforge.inspect._walker.walk`): intact records and damaged regions, in
    order, in one pass. The Rust walker reads a local path; a remote file is streamed
    to it through a pipe (``/dev/fd``) by a thread reading it ahead, so that the bytes
    are walked as they arrive and never land on disk. A remote read that fails (after
    its retries) raises its ``OSError``: it is not taken for a truncated file. A
    context manager: closing stops the stream."""

    def __init__(
        self,
        name: str,
        verify: bool = True,
        *,
        payloads: bool = False,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        on_block: Callable[[bytes], None] | None = None,
    ) -> None:
        self.name = name
        self._source: ReadAhead | None = None
        self._feeder: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._stop = threading.Event()
        if not _fs.is_url(name):
            self._walker: Any = _core.RecordWalker(
                name, "auto", verify, payloads=payloads, max_record_bytes=max_record_bytes
            )
            return
        if not os.path.isdir("/dev/fd"):
            raise OSError(f"{name}: walking a remote file needs /dev/fd (Linux, macOS)")
        self._source = source = ReadAhead(name, on_block=on_block)
        try:
            head = source.read(12)
            read_end, write_end = os.pipe()
        except BaseException:
            source.close()
            raise
        try:
            # Compression named, so the walker reads the pipe once, from its start.
            self._walker = _core.RecordWalker(
                f"/dev/fd/{read_end}",
                compression_of(head),
                verify,
                payloads=payloads,
                max_record_bytes=max_record_bytes,
            )
        except BaseException:
            os.close(write_end)
            source.close()
            raise
        finally:
            os.close(read_end)  # the walker has its own
        self._feeder = threading.Thread(
            target=self._feed,
            args=(source, write_end, head),
            name="recordforge-walk-feed",
            daemon=True,
        )
        self._feeder.start()

    def _feed(self, source: ReadAhead, fd: int, head: bytes) -> None:
        try:
            data = head
            while data and not self._stop.is_set():
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                data = source.read(_CHUNK)
        except BrokenPipeError:
            pass  # the walker was closed
        except BaseException as e:
            self._failed = e  # before the close: the walker sees the end after it
        finally:
            os.close(fd)

    @property
    def compression(self) -> str | None:
        return self._walker.compression  # type: ignore[no-any-return]

    @property
    def bytes_read(self) -> int:
        return self._walker.bytes_read  # type: ignore[no-any-return]

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> _core.WalkSpan:
        try:
            span: _core.WalkSpan = next(self._walker)
        except StopIteration:
            self._finish()
            raise
        except OSError as e:
            self._finish()
            if self._source is None:
                raise
            raise OSError(e.errno, f"{self.name}: {e.strerror or e}") from e
        if span.kind != "record" and self._failed is not None:
            raise self._failed  # the stream broke off: not damage
        return span

    def _finish(self) -> None:
        """Waits for the stream's end, raising the error that ended it, if one did."""
        if self._feeder is not None:
            self._feeder.join()
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        self._stop.set()
        self._walker = None  # closes the pipe's read end: a blocked write fails
        if self._feeder is not None:
            self._feeder.join()
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

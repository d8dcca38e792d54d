"""Exceptions raised by recordforge.

Every error names what it is about: the file, the record (by byte offset) or the
feature, and what was expected. The Rust core maps its single error enum onto these
classes in one place (``crates/recordforge-py/src/errors.rs``).

>>> import recordforge as rf
>>> issubclass(rf.CorruptRecordError, ValueError)
True
>>> err = rf.CorruptRecordError("data.tfrecord", 24, "data CRC mismatch")
>>> (err.path, err.offset, err.reason)
('data.tfrecord', 24, 'data CRC mismatch')
>>> str(err)
'data.tfrecord: corrupt record at byte offset 24: data CRC mismatch'
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CorruptRecordError",
    "DecodeError",
    "DirectoryLockedError",
    "EncodeError",
    "ItemError",
    "OnError",
    "RecordforgeError",
    "RecordforgeWarning",
    "SchemaError",
    "UnfinishedConversionError",
    "on_error_policy",
]

#: What a bad item (writing: ``on_error``) or a damaged record (reading: ``on_corrupt``)
#: does: ``"raise"`` stops with an error that names it; ``"skip"`` goes on and lists it
#: (the report's ``skipped``, ``Dataset.skipped``). ``"fail"``, the command line's first
#: word for it, is accepted as ``"raise"``.
OnError = Literal["raise", "skip"]


def on_error_policy(value: object, name: str = "on_error") -> OnError:
    """``value`` as an :data:`OnError` (``"fail"`` is ``"raise"``), else ``ValueError``.

    >>> on_error_policy("fail"), on_error_policy("skip")
    ('raise', 'skip')
    """
    if value in ("raise", "fail"):
        return "raise"
    if value == "skip":
        return "skip"
    raise ValueError(f"{name} must be 'raise' or 'skip' ('fail' is 'raise'), not {value!r}")


class RecordforgeError(Exception):
    """Base class of every error recordforge raises on purpose (I/O errors stay ``OSError``)."""


class CorruptRecordError(RecordforgeError, ValueError):
    """A TFRecord file failed its framing checks (CRC mismatch, truncation, bad stream).

    Attributes:
        path: the file (or a description of the file object) being read.
        offset: byte offset of the bad record's length field; for compressed files, the
            offset in the decompressed record stream.
        reason: what was wrong, e.g. ``"data CRC mismatch"`` or
            ``"truncated record: expected 40 bytes, file ends after 17"``.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: corrupt record at byte offset {self.offset}: {self.reason}"


class DecodeError(RecordforgeError, ValueError):
    """Bytes that are not a valid serialized ``tf.train.Example`` / ``SequenceExample``."""


class EncodeError(RecordforgeError, TypeError):
    """A value that cannot be encoded as a feature; the message names the feature."""


class SchemaError(RecordforgeError, ValueError):
    """A schema that is invalid, or data that does not match its schema."""


class ItemError(RecordforgeError):
    """An input item that cannot be converted; ``item`` names it, ``reason`` says why.
    With ``on_error="skip"`` it is listed in the report; otherwise the conversion stops."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(item, reason)
        self.item = item
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


class UnfinishedConversionError(RecordforgeError):
    """A directory whose conversion did not finish (killed, failed, or still running):
    it is not a dataset yet. Rerunning the same conversion command resumes it."""


class DirectoryLockedError(RecordforgeError):
    """Another conversion holds the output directory's lock; the message names its
    process id and host."""


class RecordforgeWarning(UserWarning):
    """Something recordforge did on its own that a user should know about (a stale lock
    taken over, ...)."""

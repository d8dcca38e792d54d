"""Iterators that stay failed: after an error, every later ``next()`` raises it again.

A Python generator that raised is finished, and the next ``next()`` says
``StopIteration``: a loop that retries after a :class:`~recordforge.CorruptRecordError`
would take a damaged file for a finished one. Readers made of generators are wrapped in
:class:`Sticky`; the Rust iterators (``read_records``, the batch reader) do the same
themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


class Sticky(Iterator[T]):
    """``inner``, except that once it raised, every later ``next()`` raises the same
    exception again (``StopIteration`` and ``GeneratorExit`` pass through as they are).

    >>> def records():
    ...     yield b"a"
    ...     raise ValueError("damaged")
    >>> it = Sticky(records())
    >>> next(it)
    b'a'
    >>> for _ in range(2):
    ...     try:
    ...         next(it)
    ...     except ValueError as e:
    ...         print(e)
    damaged
    damaged
    """

    __slots__ = ("_failed", "_inner")

    def __init__(self, inner: Iterator[T]) -> None:
        self._inner = inner
        self._failed: BaseException | None = None

    def __iter__(self) -> Sticky[T]:
        return self

    def __next__(self) -> T:
        if self._failed is not None:
            raise self._failed.with_traceback(None)
        try:
            return next(self._inner)
        except StopIteration:
            raise
        except Exception as e:
            self._failed = e
            raise

    def close(self) -> None:
        """Closes the inner generator (its ``finally`` blocks run)."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

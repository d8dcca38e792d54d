"""The buffers record batches are made in, reused for as long as one conversion runs.

``encode_record_batch(pool=)`` makes a batch's records in a buffer given back by a batch
freed earlier, so that a writer making batch after batch touches no fresh memory for
them (the kernel zeroes a fresh page on first touch, which costs as much as the copy).
The pool is the conversion's, not a source's: :func:`batch_buffers` scopes one to a
``with`` block (a split being written, a worker's life), and its buffers are freed with
the last batch made in them once the block ends. Outside of one, :func:`batch_pool` is
None and every batch gets a buffer of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from recordforge._core import BlockPool

_POOL: contextvars.ContextVar[BlockPool | None] = contextvars.ContextVar(
    "recordforge_batch_pool", default=None
)


@contextlib.contextmanager
def batch_buffers() -> Iterator[BlockPool]:
    """A pool for the record batches made in this block (in this thread)."""
    pool = BlockPool()
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)


def batch_pool() -> BlockPool | None:
    """The pool of the enclosing :func:`batch_buffers` block, if any."""
    return _POOL.get()

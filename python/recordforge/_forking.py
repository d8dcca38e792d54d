"""Whether worker processes may fork: :func:`start_method` (see
:mod:`recordforge._workers`)."""

from __future__ import annotations

import os
import sys
import threading
import warnings

from recordforge.errors import RecordforgeWarning

__all__ = ["start_method"]


def _other_threads() -> list[threading.Thread]:
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and _running(t)]


def _running(thread: threading.Thread) -> bool:
    """False for a thread that has ended but is still listed: a thread Python did not
    start (recordforge's Rust read-ahead threads, which call into Python to read a
    remote file) is listed as a ``_DummyThread`` from its first call into Python, and
    stays listed after it ends; on Linux, ``/proc`` says whether it still runs."""
    native = thread.native_id
    if not isinstance(thread, threading._DummyThread) or native is None:
        return True
    return os.path.exists(f"/proc/self/task/{native}")


def _store_threads() -> set[threading.Thread]:
    """fsspec's I/O threads: the one running the event loop of every ``s3://`` or
    ``gs://`` access, and the threads of that loop's default executor. fsspec makes a
    forked child start its own (it registers ``reset_after_fork`` with
    ``os.register_at_fork``); this thread, which forks, has no store call in flight (it
    would be waiting for it), so they hold nothing a worker needs. Empty where fsspec is
    not loaded, or does not reset its loop in a forked child."""
    asyn = sys.modules.get("fsspec.asyn")
    if asyn is None or not hasattr(asyn, "reset_after_fork"):
        return set()
    found: set[threading.Thread] = set()
    thread = getattr(asyn, "iothread", [None])[0]
    if isinstance(thread, threading.Thread):
        found.add(thread)
    loop = getattr(asyn, "loop", [None])[0]
    executor = getattr(loop, "_default_executor", None)
    found.update(t for t in getattr(executor, "_threads", ()) if isinstance(t, threading.Thread))
    return found


def start_method() -> str:
    """How worker processes start: ``fork`` where it is safe and cheap (Linux, and no
    other thread in this process that could hold a lock at the fork), so that a worker
    costs no Python start-up and shares the parent's source (an annotation index, say)
    copy-on-write instead of unpickling its own; ``spawn`` otherwise, with a
    :class:`~recordforge.RecordforgeWarning` naming the other threads where they are
    the reason (a notebook's kernel threads, say).
    ``RECORDFORGE_START_METHOD`` overrides it (the tests run both)."""
    forced = os.environ.get("RECORDFORGE_START_METHOD")
    if forced in ("fork", "spawn"):
        return forced
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return "spawn"
    others = _other_threads()
    images = sys.modules.get("recordforge.images")
    pools = images.pool_threads() if images is not None else set()
    store = _store_threads()
    if others and set(others) <= pools | store:
        # Only recordforge's own image-decode threads (the threads themselves, not
        # names: a user's thread may be called anything): idle, since no other thread
        # runs to give them work; ended, and made again by the next decode. And fsspec's
        # I/O threads, which fsspec replaces in a forked child.
        if images is not None and set(others) & pools:
            images.close_pools()
        others = [t for t in _other_threads() if t not in store]
    if not others:
        return "fork"
    names = [t.name for t in others]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    warnings.warn(
        f"worker processes are spawned, not forked: other threads run in this process "
        f"({shown}). A spawned worker starts a Python interpreter and is sent the "
        "conversion and its items pickled: slower to start, and more memory than a forked "
        "one, which shares the source with this process. The recordforge command has no "
        "such threads; RECORDFORGE_START_METHOD=fork forks anyway (safe only where those "
        "threads hold no lock a worker needs)",
        RecordforgeWarning,
        stacklevel=3,
    )
    return "spawn"

"""The worker processes of :mod:`recordforge._parallel` and the tasks they run.

:class:`Workers` starts ``n`` processes (by ``fork`` where that is safe, see
:func:`start_method`: a worker then costs no Python start-up and shares the parent's
source, an annotation index say, copy-on-write). Each worker is fed through its own
queue (a feeder thread: the parent never blocks on a full pipe), runs its tasks in
order and answers each through its own pipe; the parent hands the answers to each
task's callback in its own thread (:meth:`Workers.pump`).

The tasks: ``convert`` a chunk of items (its frames held in the worker's memory, or
spilled to a file), ``place`` a held chunk's bytes at given offsets of shard files
(``pwritev``), ``finish`` a shard with a sha256 checksum (``fsync``, read back; a
crc32c shard is finished by the parent itself, :meth:`Workers.run_here`), ``write`` a
shard from spilled pieces through :class:`~recordforge.TFRecordWriter` (compressed
shards).

Worker processes die with the parent (``PR_SET_PDEATHSIG`` on Linux) and leave Ctrl-C
to it. The crash tests kill the worker that converts item ``n`` with
``RECORDFORGE_KILL_WORKER_AT=<n>``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import itertools
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _cli_startup
from recordforge._atomic import named
from recordforge._buffers import batch_buffers
from recordforge._core import frame_records, frames_crc32c
from recordforge._forking import start_method
from recordforge.errors import ItemError, RecordforgeError
from recordforge.example import RecordBatch
from recordforge.pipeline import (
    ToRecords,
    attempt_in_worker,
    bytes_only,
    init_worker,
    observed,
    outcome,
)
from recordforge.records import TFRecordWriter
from recordforge.sharding import FRAME_OVERHEAD, frame_sizes

__all__ = [
    "FORKED",
    "FORKED_ROWS",
    "LOAD_FAILED",
    "READ_BLOCK",
    "ItemResult",
    "Workers",
    "finish_shard",
    "start_method",
]

# The task id of the answer of a worker that cannot load the conversion.
LOAD_FAILED = -1

# Bytes of a chunk file read at once while a compressed shard is written (or one frame).
READ_BLOCK = 8 << 20
# Buffers per pwritev call (Linux's IOV_MAX is 1024).
_IOV = 512
# Bytes per write call at most. The page cache takes folios as large as a write: from
# 2 MB on, on this project's VM (its free memory handed back to the host), such a folio
# is memory the host backs anew: writing 390 MB in 8.7 MB calls took 0.66-0.80 s of
# system time, in 1 MB calls 0.07 (each after 4 s idle; 2 and 4 MB calls 0.5-1.06 s).
WRITE_BYTES = 1 << 20
# Per item of a chunk: its records' payload sizes, the input items it stood for, its
# errors and the counters it adds to the report.
ItemResult = tuple[np.ndarray, int, list[ItemError], dict[str, int]]
# A worker's converted chunks, by number: their records' frames, until placed.
Held = dict[int, list[bytes | memoryview]]


# -- in the workers ----------------------------------------------------------------------

# The conversion, for workers forked while :func:`write_split` runs.
FORKED: list[ToRecords] = []
# The split's items, where they are a sequence: forked workers take a chunk's items from
# it by position, instead of unpickling them from the parent.
FORKED_ROWS: list[Sequence[Any]] = []


def _init(conversion: str | None, parent: int) -> None:
    """A worker's start: dies with the parent, never reaches the crash tests' kill
    points (they count the parent's stages), loads the conversion: a forked worker has
    it already (:data:`FORKED`); a spawned one reads it from the file ``conversion``,
    pickled there once by the parent."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the kernel kills us if the parent dies
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before the line above
        os._exit(1)
    # Ctrl-C is the parent's to handle (it stops its workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.pop("RECORDFORGE_KILL_AT", None)
    os.environ.pop("RECORDFORGE_STAGE_LOG", None)
    init_worker(FORKED[0] if conversion is None else pickle.loads(Path(conversion).read_bytes()))


def serve(
    tasks: multiprocessing.queues.Queue[Any],
    answers: multiprocessing.connection.Connection,
    conversion: str | None,
    parent: int,
) -> None:
    """A worker's loop: runs the tasks of its queue (pickled by the parent) in order,
    answering each with ``(task id, ok, result or exception)``; ``None`` ends it. A
    conversion that cannot be loaded is answered as task :data:`LOAD_FAILED`."""
    _cli_startup.settle()  # (the collector on, whatever the start of this process did)
    try:
        _init(conversion, parent)
    except BaseException as e:
        answers.send((LOAD_FAILED, False, _portable(e)))
        return
    held: Held = {}
    with batch_buffers():  # the worker's record batches reuse their buffers
        while (payload := tasks.get()) is not None:
            number, name, args = pickle.loads(payload)
            try:
                answer = (number, True, _TASKS[name](held, *args))
            except BaseException as e:
                answer = (number, False, _portable(e))
            answers.send(answer)


def _portable(error: BaseException) -> BaseException:
    """``error``, or an error of its words where it does not survive pickling (an
    :class:`ItemError` subclass that does not: a plain ItemError of its item and reason)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        if isinstance(error, ItemError):
            return ItemError(error.item, error.reason)
        return RecordforgeError(f"{type(error).__name__}: {error}")
    return error


def _noted(error: BaseException, note: str) -> BaseException:
    if hasattr(error, "add_note"):  # Python 3.11
        error.add_note(note)
    return error


def _convert(
    held: Held,
    number: int,
    first: int,
    items: list[Any] | int,
    spill: str | None,
    limit: int,
) -> tuple[list[ItemResult], BaseException | None]:
    """Converts the chunk ``number`` (its ``items``, from position ``first``): its
    frames are held in memory for :func:`_place`, or written to the file ``spill``.
    Past ``limit`` bytes of frames it stops, the items left to the parent. ``items`` as a
    number: that many from :data:`FORKED_ROWS`, from ``first``.
    An exception (not an :class:`ItemError`) ends the chunk at its item: it is returned
    with the results of the items before it, which the parent writes before raising it,
    as one worker would."""
    if isinstance(items, int):
        items = list(FORKED_ROWS[0][first : first + items])
    results: list[ItemResult] = []
    frames: list[bytes | memoryview] = []
    failure: BaseException | None = None
    # The crash tests' hook: the worker given this item dies (RECORDFORGE_KILL_WORKER_AT).
    doomed = int(os.environ.get("RECORDFORGE_KILL_WORKER_AT", -1)) - first
    for i, item in enumerate(items):
        if i == doomed:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            result = attempt_in_worker(item)
            records, n, errors = outcome(result)
            data: bytes | memoryview
            if isinstance(records, RecordBatch):
                # Its own buffer, not a copy: the batch (and its pooled buffer) is held
                # until the frames are placed, then reused by a later batch.
                data = records.framed_view()
            else:
                bytes_only(records, first + i)
                data = frame_records(records) if len(records) else b""
            sizes = frame_sizes(records) - FRAME_OVERHEAD
        except BaseException as e:
            where = "".join(traceback.format_exception(e)).rstrip()
            note = f"(converting item {first + i}, in a worker process:\n{where})"
            failure = _portable(_noted(e, note))
            break
        if data:
            frames.append(data)
            limit -= len(data)
        portable = [_portable(error) for error in errors]
        results.append((sizes, n, portable, observed(result)))  # type: ignore[arg-type]
        if limit <= 0:
            break
    if spill is None:
        held[number] = frames
    else:
        fd = os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            _pwrite_all(fd, [memoryview(data) for data in frames], 0)
        finally:
            os.close(fd)
    return results, failure


def _place(
    held: Held, number: int, pieces: list[tuple[str, int, int, int]], crcs: bool = False
) -> list[int] | None:
    """Writes the held chunk ``number``'s bytes ``start:stop`` at byte ``at`` of shard
    file ``path``, for each piece ``(path, at, start, stop)``; then lets the chunk go.
    With ``crcs``, returns each piece's CRC32C, computed from the frames written (their
    records' own CRCs carried in, the records not read again; the parent combines the
    pieces' into the shard's: no shard is read back)."""
    frames = held.pop(number)
    ends = np.cumsum([len(f) for f in frames]) if frames else np.zeros(0, np.int64)
    checksums: list[int] = []
    for path, at, start, stop in pieces:
        views: list[memoryview] = []
        k = int(np.searchsorted(ends, start, side="right"))
        while start < stop:
            begin = int(ends[k]) - len(frames[k])
            end = min(stop, int(ends[k]))
            views.append(memoryview(frames[k])[start - begin : end - begin])
            start, k = end, k + 1
        if crcs:
            crc = 0
            for view in views:  # whole frames, made here: their records' data not read
                crc = frames_crc32c(np.frombuffer(view, np.uint8), crc)
            checksums.append(crc)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                _pwrite_all(fd, views, at)
            finally:
                os.close(fd)
        except OSError as e:
            raise named(e, Path(path)) from None
    return checksums if crcs else None


def _pwrite_all(fd: int, views: list[memoryview], at: int) -> None:
    """Writes ``views`` at byte ``at`` of ``fd``, :data:`WRITE_BYTES` a call at most."""
    views = [view for view in views if len(view)]
    while views:
        batch, room = [], WRITE_BYTES
        for view in views[:_IOV]:
            batch.append(view[:room])
            room -= len(batch[-1])
            if not room:
                break
        done = os.pwritev(fd, batch, at)
        if not done:  # (a full disk raises ENOSPC instead)
            raise OSError(errno.EIO, f"pwritev wrote nothing at byte {at}")
        at += done
        while done:  # drop what was written (a short write leaves part of a view)
            if done >= len(views[0]):
                done -= len(views.pop(0))
            else:
                views[0], done = views[0][done:], 0


def _finish(held: Held, path: str, checksum: str, size: int) -> str | None:
    return finish_shard(path, checksum, size)


def finish_shard(path: str, checksum: str, size: int) -> str | None:
    """The written shard ``path``, made durable (``fsync``) once it is checked to hold
    the ``size`` bytes planned. Its checksum with ``sha256``, read back (every piece is in
    it now); with ``crc32c``, None: the parent combines the pieces' CRCs."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            found = os.fstat(fd).st_size
            if found != size:
                raise RecordforgeError(
                    f"{path}: the shard file holds {found:,} bytes where {size:,} were "
                    "written into it (changed by another program?)"
                )
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise named(e, Path(path)) from None
    if checksum == "crc32c":
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _write_shard(
    held: Held,
    path: str,
    compression: str | None,
    checksum: str,
    pieces: list[tuple[str, int, np.ndarray]],
) -> tuple[str, np.ndarray]:
    """Writes a shard from spilled ``pieces`` (chunk file, byte offset, payload sizes
    of the frames there): its checksum and its records' offsets. One call a block of
    :data:`READ_BLOCK` bytes of whole frames (``write_framed`` checks that they are)."""
    offsets: list[np.ndarray] = []
    writer = TFRecordWriter(path, compression, checksum=checksum)
    try:
        for chunk, start, lengths in pieces:
            ends = np.cumsum(lengths + FRAME_OVERHEAD)
            with open(chunk, "rb") as f:
                f.seek(start)
                i, base = 0, 0
                while i < len(lengths):
                    j = max(i + 1, int(np.searchsorted(ends, base + READ_BLOCK, side="right")))
                    size = int(ends[j - 1]) - base
                    data = f.read(size)
                    if len(data) != size:
                        raise RecordforgeError(f"{chunk}: cut short at byte {start + base}")
                    offsets.append(writer.write_framed(data))
                    i, base = j, int(ends[j - 1])
        writer.close()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        writer.close()
        Path(path).unlink(missing_ok=True)
        raise
    found = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
    return writer.checksum or "", found


_TASKS: dict[str, Callable[..., Any]] = {
    "convert": _convert,
    "place": _place,
    "finish": _finish,
    "write": _write_shard,
}


# -- in the parent -----------------------------------------------------------------------


class _Queue(multiprocessing.queues.Queue):  # type: ignore[type-arg]  # not generic at run time
    """A task queue whose feeder thread says nothing when its worker has died (the
    parent names the death itself)."""

    @staticmethod
    def _on_queue_feeder_error(e: Exception, obj: object) -> None:
        pass


@dataclasses.dataclass
class _Task:
    worker: int  # HERE: run on the parent's own thread
    what: str
    done: Callable[[Any], None]


#: The worker number of a task run in the parent (:meth:`Workers.run_here`).
HERE = -1


class Workers:
    """``n`` worker processes, each running :func:`serve`; results are handed to each
    task's ``done`` by :meth:`pump`, in the parent's thread."""

    def __init__(self, n: int, method: str, conversion: str | None) -> None:
        context: Any = multiprocessing.get_context(method)
        self.queues: list[_Queue] = []
        self.answers: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        self.tasks: dict[int, _Task] = {}
        self.load = [0] * n
        self.numbers = itertools.count()
        # Tasks run on a thread of the parent (run_here), answered through a pipe made
        # once the workers are started (a forked worker would hold its ends open).
        self.here: concurrent.futures.ThreadPoolExecutor | None = None
        self.here_pipe: tuple[Any, Any] | None = None
        # A terminal's Ctrl-C reaches the whole process group: a worker still starting
        # (a spawned one imports Python first) must not take it, so workers start with
        # SIGINT ignored (a Ctrl-C in those milliseconds is lost for the parent too).
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for k in range(n):
                queue = _Queue(ctx=context)
                theirs_r, theirs_w = context.Pipe(duplex=False)
                proc = context.Process(
                    target=serve,
                    args=(queue, theirs_w, conversion, os.getpid()),
                    name=f"recordforge-worker-{k}",
                    daemon=True,
                )
                self.queues.append(queue)
                self.answers.append(theirs_r)
                proc.start()
                self.procs.append(proc)
                theirs_w.close()
            self.here_pipe = multiprocessing.Pipe(duplex=False)
        except BaseException:  # those started do not outlive a failed start
            self.procs = [p for p in self.procs if p.pid is not None]
            self.close(graceful=False)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def send(
        self,
        worker: int | None,
        name: str,
        args: tuple[Any, ...],
        what: str,
        done: Callable[[Any], None],
    ) -> None:
        """Task ``name(*args)`` for ``worker`` (None: the least busy one), pickled here:
        something that does not pickle is an error now, not a task lost in the queue's
        thread."""
        if worker is None:
            worker = min(range(len(self.load)), key=self.load.__getitem__)
        number = next(self.numbers)
        try:
            payload = pickle.dumps((number, name, args), pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            raise RecordforgeError(
                f"{what}: cannot be sent to a worker process ({type(e).__name__}: {e}); "
                "with workers > 1, items must be picklable (or use workers=1)"
            ) from e
        self.tasks[number] = _Task(worker, what, done)
        self.load[worker] += 1
        self.queues[worker].put(payload)

    def run_here(
        self, fn: Callable[..., Any], args: tuple[Any, ...], what: str, done: Callable[[Any], None]
    ) -> None:
        """Task ``fn(*args)`` on a thread of this process, answered (``done``, or its
        error raised) by :meth:`pump` as a worker's are: for a wait that would hold up a
        worker (a shard's ``fsync``), not for CPU work."""
        assert self.here_pipe is not None  # (made by __init__)
        here_w = self.here_pipe[1]
        number = next(self.numbers)
        self.tasks[number] = _Task(HERE, what, done)
        if self.here is None:
            self.here = concurrent.futures.ThreadPoolExecutor(1, "recordforge-sync")

        def call() -> None:
            try:
                answer = (number, True, fn(*args))
            except BaseException as e:
                answer = (number, False, e)
            here_w.send(answer)

        self.here.submit(call)

    def pump(self, died: Callable[[int], RecordforgeError]) -> None:
        """Waits for answers; runs each ``done``, raises a task's error, or ``died(k)``
        when worker ``k`` is gone."""
        sentinels = {p.sentinel: k for k, p in enumerate(self.procs)}
        assert self.here_pipe is not None  # (made by __init__)
        here = self.here_pipe[0]
        ready = multiprocessing.connection.wait([*self.answers, *sentinels, here])
        while here in ready and here.poll():
            self._answer(here.recv())
        dead: list[int] = []
        for k, conn in enumerate(self.answers):
            if conn in ready or self.procs[k].sentinel in ready:
                while True:
                    try:  # only the pipe's errors here: a task's own are raised below
                        if not conn.poll():
                            break
                        answer = conn.recv()
                    except (EOFError, OSError):
                        dead.append(k)
                        break
                    self._answer(answer)
                if self.procs[k].sentinel in ready:
                    dead.append(k)
        if dead:
            raise died(dead[0])

    def _answer(self, answer: tuple[int, bool, Any]) -> None:
        number, ok, value = answer
        if number == LOAD_FAILED:
            raise RecordforgeError(
                "a worker process cannot load the conversion (to_records) that the parent "
                f"pickled: {type(value).__name__}: {value}. With workers > 1 it must be "
                "importable by name (defined in a module, not in an interactive __main__); "
                "or use workers=1"
            )
        task = self.tasks.pop(number)
        if task.worker != HERE:
            self.load[task.worker] -= 1
        if not ok:
            raise value
        task.done(value)

    def busy(self, worker: int) -> list[str]:
        return [t.what for t in self.tasks.values() if t.worker == worker]

    def close(self, graceful: bool) -> None:
        """Ends the workers: after their tasks, or (``graceful`` False) at once."""
        for proc, queue in zip(self.procs, self.queues, strict=False):
            if graceful and proc.is_alive():
                queue.put(None)
            else:
                proc.kill()
        for proc in self.procs:
            proc.join(None if graceful else 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        # Every worker ended after its tasks: the queues are drained, and their feeder
        # threads are waited for, or one still running would make the next split spawn.
        drained = graceful and all(proc.exitcode == 0 for proc in self.procs)
        for queue in self.queues:
            if not drained:
                queue.cancel_join_thread()
            queue.close()
            if drained:
                queue.join_thread()
        for conn in self.answers:
            conn.close()
        if self.here is not None:  # its thread ended: a later split's workers may fork
            self.here.shutdown(wait=True)
            self.here = None
        for end in self.here_pipe or ():
            end.close()

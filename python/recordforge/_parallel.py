"""The local writer on worker processes (``workers`` > 1): workers convert items and
write shards; no record crosses a process boundary.

A split is written in two levels, the same for any number of workers:

1. **Chunks.** The parent reads the items (metadata only: COCO image entries, image
   paths, table parts) and hands chunks of consecutive items to the workers. A worker
   runs ``to_records`` on each item of its chunk and appends the records, framed (an
   uncompressed TFRecord stream, one call per item), to a spill file in ``out``
   (``.<split>-c<n>-<run>.chunk.partial``, a working file); it returns per item only
   the payloads' sizes, how many input items it stood for and its
   :class:`~recordforge.ItemError`s.
2. **Shards.** The parent takes the chunks' results in item order and plans shards with
   the one :class:`~recordforge.sharding.ShardPlanner`, reporting skipped items and
   counting items exactly as the in-process writer does; so it knows each shard's
   extent as pieces of chunk files, and the report of the items before it. A worker
   then writes the shard (``.<split>-<k>.<run>.shard.partial``) from those pieces
   through the same :class:`~recordforge.TFRecordWriter` (compression, checksum, the
   offsets of an index), a block of whole frames a call (``write_framed``), so its
   bytes are those of one worker. The parent commits the
   shards strictly in order, as the in-process writer does (index, rename, journal:
   the same states and stages).

A chunk file is removed once every shard that can use it is committed; chunk files are
never journaled: a rerun after a kill converts again from the journal's position. Extra
disk is about the shards in flight (a few chunks converted ahead, the open shard's
chunks, the shards being written); memory per worker is one item's records and a block
of :data:`READ_BLOCK` bytes while writing a shard. Chunks start at 4 items and double up
to :data:`CHUNK_ITEMS` items and about :data:`CHUNK_BYTES` of payloads (sized from the
items seen so far); the files written do not depend on it.

The price of writing the same bytes for any number of workers: each record is written
twice (spill, shard) and read back once, and each worker starts a Python of its own
(~0.5 s). A conversion that is mostly file reads and copies (COCO) is no faster on 2
cores than one worker, which stays the default; a ``to_records`` that is CPU work
(decoding images) runs up to N times as fast. Workers writing shards straight from
their chunks would save the copy, but a shard's first record is known only once every
item before it is converted; a first pass that only sizes the records would convert
everything twice.

Worker processes die with the parent (``PR_SET_PDEATHSIG`` on Linux) and never write
under a name a rerun uses (the ``<run>`` token). A worker that dies (killed, out of
memory) fails the conversion with :class:`~recordforge.RecordforgeError` naming the
chunks' items and the shards in flight; completed shards stay for the rerun. The crash
tests kill the worker that converts item ``n`` with ``RECORDFORGE_KILL_WORKER_AT=<n>``
(the parent's stages, ``RECORDFORGE_KILL_AT``, are the parent's only).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import secrets
import signal
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recordforge._core import frame_records
from recordforge.errors import ItemError, OnError, RecordforgeError
from recordforge.example import RecordBatch
from recordforge.pipeline import (
    ConversionReport,
    ToRecords,
    attempt_in_worker,
    init_worker,
    outcome,
)
from recordforge.records import TFRecordWriter
from recordforge.sharding import FRAME_OVERHEAD, ShardPlanner, WriteOptions, frame_sizes

__all__ = ["CHUNK_BYTES", "CHUNK_ITEMS", "READ_BLOCK", "worker_count", "write_split"]

# Items per chunk at most, and the payload bytes a chunk aims at.
CHUNK_ITEMS = 32
CHUNK_BYTES = 32 << 20
# Bytes of a chunk file read at once while a shard is written (or one frame, if larger).
READ_BLOCK = 8 << 20

Progress = Callable[[int, int], None]


class Committer(Protocol):
    """The writer's side of a split (``writer._ShardWriter``): where shards go, and the
    commit of a closed shard file (index, rename, journal)."""

    out: Path
    split: str
    options: WriteOptions
    state: dict[str, Any]

    def commit(
        self,
        partial: Path,
        position: tuple[int, int],
        records: int,
        checksum: str,
        offsets: np.ndarray,
        sizes: np.ndarray,
        report: dict[str, Any],
    ) -> None: ...


def worker_count(workers: int | str) -> int:
    """``workers`` as a number of processes: ``"auto"`` is the CPUs this process may
    run on; a number must be >= 1."""
    if workers == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a number >= 1 or 'auto', not {workers!r}")
    return workers


# -- in the workers ----------------------------------------------------------------------


def _init(conversion: str, parent: int) -> None:
    """A worker's initializer: dies with the parent, never reaches the crash tests' kill
    points (they count the parent's stages), loads the conversion (pickled once by the
    parent into the file ``conversion``: through the pipe that starts a worker, a big
    one, a source with its annotation index, would make the parent wait for each worker
    to start before the next)."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the kernel kills us if the parent dies
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before the line above
        os._exit(1)
    # Ctrl-C is the parent's to handle: it stops giving work and waits for the tasks in
    # flight (at most a chunk or a shard each), rather than finding its workers dead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.pop("RECORDFORGE_KILL_AT", None)
    os.environ.pop("RECORDFORGE_STAGE_LOG", None)
    init_worker(pickle.loads(Path(conversion).read_bytes()))


def _convert_chunk(
    path: str, first: int, items: list[Any]
) -> list[tuple[np.ndarray, int, list[ItemError]]]:
    """Converts ``items`` (from position ``first``), appending their records to
    ``path`` framed (as a shard holds them, uncompressed): per item, the payloads'
    sizes, the input items it stood for and its errors."""
    results = []
    # The crash tests' hook: the worker given this item dies (RECORDFORGE_KILL_WORKER_AT).
    doomed = int(os.environ.get("RECORDFORGE_KILL_WORKER_AT", -1)) - first
    with open(path, "wb") as f:
        for i, item in enumerate(items):
            if i == doomed:
                os.kill(os.getpid(), signal.SIGKILL)
            records, n, errors = outcome(attempt_in_worker(item))
            if isinstance(records, RecordBatch):
                f.write(records.framed())
            elif len(records):
                f.write(frame_records(records))
            results.append((frame_sizes(records) - FRAME_OVERHEAD, n, list(errors)))
    return results


def _write_shard(
    path: str,
    compression: str | None,
    checksum: str,
    pieces: list[tuple[str, int, np.ndarray]],
) -> tuple[str, np.ndarray]:
    """Writes a shard from ``pieces`` (chunk file, byte offset, payload sizes of the
    frames there): its checksum and its records' offsets. One call a block of
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


# -- in the parent -----------------------------------------------------------------------


@dataclasses.dataclass
class _Chunk:
    path: Path
    first: int  # position of its first item
    count: int
    future: concurrent.futures.Future[list[tuple[np.ndarray, int, list[ItemError]]]]

    def describe(self, split: str) -> str:
        last = self.first + self.count - 1
        return f"items {self.first}..{last} of split {split!r} (chunk {self.path.name})"


@dataclasses.dataclass
class _ShardJob:
    index: int
    partial: Path
    position: tuple[int, int]
    records: int
    sizes: np.ndarray
    report: dict[str, Any]
    future: concurrent.futures.Future[tuple[str, np.ndarray]]

    def describe(self, split: str) -> str:
        return f"shard {self.index} of split {split!r}"


class _SplitRun:
    """The parent's side of one split written by workers (see the module docstring)."""

    def __init__(
        self,
        pool: concurrent.futures.ProcessPoolExecutor,
        shards: Committer,
        planner: ShardPlanner,
        report: ConversionReport,
        workers: int,
        run: str,
    ) -> None:
        self.pool, self.shards, self.planner, self.report = pool, shards, planner, report
        self.workers = workers
        self.run = run
        self.chunks: collections.deque[_Chunk] = collections.deque()
        self.jobs: collections.deque[_ShardJob] = collections.deque()
        # The open shard: its pieces and the frame sizes of its records.
        self.pieces: list[tuple[str, int, np.ndarray]] = []
        self.sizes: list[np.ndarray] = []
        self.next_shard = len(shards.state["shards"])
        # Chunk files consumed, with the last shard that may use each.
        self.retired: collections.deque[tuple[int, Path]] = collections.deque()
        self.chunk_items = 4
        self.seen = (0, 0)  # items and payload bytes taken from chunks, to size chunks
        self.numbered = itertools.count()

    # Work given to the pool.

    def feed(self, items: Iterator[tuple[int, Any]]) -> bool:
        """Submits chunks until a few are ahead of the parent; False once items end."""
        while len(self.chunks) <= self.workers:
            taken = list(itertools.islice(items, self.chunk_items))
            if not taken:
                return False
            name = f".{self.shards.split}-c{next(self.numbered):06d}-{self.run}.chunk.partial"
            path = self.shards.out / name
            future = self.pool.submit(
                _convert_chunk, str(path), taken[0][0], [item for _, item in taken]
            )
            self.chunks.append(_Chunk(path, taken[0][0], len(taken), future))
        return True

    def cut(self, position: tuple[int, int]) -> None:
        """The open shard is complete: a worker writes it."""
        index, self.next_shard = self.next_shard, self.next_shard + 1
        options = self.shards.options
        partial = self.shards.out / f".{self.shards.split}-{index:05d}.{self.run}.shard.partial"
        future = self.pool.submit(
            _write_shard, str(partial), options.compression, options.checksum, self.pieces
        )
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
        job = _ShardJob(index, partial, position, len(sizes), sizes, self.report.to_json(), future)
        self.jobs.append(job)
        self.pieces, self.sizes = [], []
        while len(self.jobs) > self.workers:
            self.commit_one()

    def take(self, path: Path, start: int, lengths: np.ndarray) -> None:
        """Records of payload sizes ``lengths``, framed from byte ``start`` of chunk
        ``path``, go to the open shard."""
        if len(lengths):
            self.pieces.append((str(path), start, lengths))
            self.sizes.append(lengths + FRAME_OVERHEAD)

    # Results, in order.

    def result(self, future: concurrent.futures.Future[Any], what: str) -> Any:
        try:
            return future.result()
        except BrokenProcessPool:
            raise self.died(what) from None

    def died(self, what: str | None = None) -> RecordforgeError:
        """The error of a worker that died (the pool is broken): which one is not
        known, so every task in flight is named, the items being converted first."""
        split = self.shards.split
        busy = [what] if what else []
        busy += [c.describe(split) for c in self.chunks]
        busy += [j.describe(split) for j in self.jobs]
        busy = sorted(dict.fromkeys(busy), key=lambda b: not b.startswith("items"))
        shown = "; ".join(busy[:4]) + (f"; and {len(busy) - 4} more" if len(busy) > 4 else "")
        return RecordforgeError(
            f"{self.shards.out}: a worker process died (killed, or out of memory) "
            f"converting or writing one of: {shown or 'the first chunk'}. Shards completed "
            "so far are kept: rerun the same command to resume"
        )

    def commit_one(self) -> None:
        job = self.jobs.popleft()
        checksum, offsets = self.result(job.future, job.describe(self.shards.split))
        self.shards.commit(
            job.partial, job.position, job.records, checksum, offsets, job.sizes, job.report
        )
        while self.retired and self.retired[0][0] <= job.index:
            self.retired.popleft()[1].unlink(missing_ok=True)

    def commit_ready(self) -> None:
        while self.jobs and self.jobs[0].future.done():
            self.commit_one()

    def next_chunk(self) -> tuple[_Chunk, list[tuple[np.ndarray, int, list[ItemError]]]]:
        chunk = self.chunks.popleft()
        while not chunk.future.done():
            # Commit shards as they are written while the chunk is converted.
            waiting: list[concurrent.futures.Future[Any]] = [chunk.future]
            waiting += [j.future for j in itertools.islice(self.jobs, 1)]
            concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
            self.commit_ready()
        return chunk, self.result(chunk.future, chunk.describe(self.shards.split))

    def finish(self) -> None:
        while self.jobs:
            self.commit_one()
        while self.retired:
            self.retired.popleft()[1].unlink(missing_ok=True)

    def resize(self, items: int, payload: int) -> None:
        """Chunks of about CHUNK_BYTES, from the payload bytes per item seen so far."""
        seen_items, seen_bytes = self.seen[0] + items, self.seen[1] + payload
        self.seen = (seen_items, seen_bytes)
        per_item = max(1, seen_bytes // max(1, seen_items))
        # Small chunks first, so that every worker starts at once and the first shards
        # come soon; then twice as many items a chunk, up to the caps.
        cap = max(1, min(CHUNK_ITEMS, CHUNK_BYTES // per_item))
        self.chunk_items = min(cap, 2 * self.chunk_items)


def write_split(
    remaining: Iterator[Any],
    shards: Committer,
    planner: ShardPlanner,
    to_records: ToRecords,
    on_error: OnError,
    report: ConversionReport,
    progress: Progress | None,
    workers: int,
) -> None:
    """Converts and writes a split's ``remaining`` items (from the journal's position)
    on ``workers`` processes, committing its shards through ``shards``; returns when
    every shard is committed (the caller marks the split done)."""
    start_item, start_record = shards.state["position"]
    token = secrets.token_hex(4)
    conversion = shards.out / f".{shards.split}-{token}.convert.partial"
    conversion.write_bytes(pickle.dumps(to_records))
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(str(conversion), os.getpid()),
    )
    run = _SplitRun(pool, shards, planner, report, workers, token)
    items = enumerate(remaining, start_item)
    consumed = start_item
    try:
        more = run.feed(items)
        while run.chunks:
            chunk, results = run.next_chunk()
            if more:
                more = run.feed(items)
            byte = 0
            for position, (lengths, n_items, errors) in enumerate(results, chunk.first):
                first = start_record if position == start_item else 0
                frames = lengths + FRAME_OVERHEAD
                ends = byte + np.concatenate(([0], np.cumsum(frames)))
                starts = planner.add(position, frames, first)
                s = 0
                # Before this item's errors are reported, as in the in-process writer.
                while s < len(starts) and starts[s][1] == first:
                    run.cut(starts[s])
                    s += 1
                for error in errors if first == 0 or not len(lengths) else ():
                    if on_error == "raise":
                        run.finish()  # the shards before the item, as in-process
                        raise error
                    report.skip(error.item, error.reason)
                k = first
                for start in starts[s:]:
                    run.take(chunk.path, int(ends[k]), lengths[k : start[1]])
                    run.cut(start)
                    k = start[1]
                run.take(chunk.path, int(ends[k]), lengths[k:])
                byte = int(ends[-1])
                consumed = position + 1
                report.items += n_items
                if progress is not None:
                    progress(len(lengths) - first, int(lengths[first:].sum()))
            run.resize(len(results), byte)
            run.retired.append((run.next_shard, chunk.path))
            run.commit_ready()
        for _ in range(planner.finish()):
            run.cut((consumed, 0))
        run.finish()
    except BrokenProcessPool:
        # From a submit: a worker died before its task's result was asked for.
        raise run.died() from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        conversion.unlink(missing_ok=True)

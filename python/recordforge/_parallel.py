"""The local writer on worker processes (``workers`` > 1): workers convert items and
write shards; no record crosses a process boundary.

A split is written in two levels, the same for any number of workers:

1. **Chunks.** The parent reads the items (metadata only: COCO image entries, image
   paths, table parts) and hands chunks of consecutive items to the workers, each a few
   chunks ahead. A worker runs ``to_records`` on each item of its chunk and keeps the
   records framed (as a shard holds them) in its memory; it returns per item only the
   payloads' sizes, how many input items it stood for and its
   :class:`~recordforge.ItemError`\\ s.
2. **Shards.** The parent takes the chunks' results in item order and plans shards with
   the one :class:`~recordforge.sharding.ShardPlanner`, reporting skipped items and
   counting items exactly as the in-process writer does; so it knows the byte offset of
   every record in its shard file. The worker that holds a chunk writes its frames at
   those offsets (``pwritev``) into the shard files
   (``.<split>-<k>.<run>.shard.partial``), several workers into one file. Once every
   piece of a complete shard is written, a worker ``fsync``\\ s it (and reads it back
   for a ``sha256`` checksum; a CRC32C is combined from the pieces'), and the parent
   commits the shards strictly in order, as the in-process writer does (index, rename,
   journal: the same states and stages).

A compressed shard is one stream, so it is written by one writer: with ``compression``
the workers spill their chunks' frames to files in ``out``
(``.<split>-c<n>-<run>.chunk.partial``) and a worker writes each shard from those pieces
through the same :class:`~recordforge.TFRecordWriter`, a block of whole frames a call
(``write_framed``). A chunk file is removed once every shard that can use it is
committed. Nothing but shards is journaled: a rerun after a kill converts again from the
journal's position.

Memory per worker: the chunks it holds, at most :data:`HELD_CHUNKS` x
:data:`CHUNK_BYTES` of records (a chunk not converted yet counted as a full one, so
that a worker with small chunks runs ahead of a slow one before them instead of waiting
for it) and :data:`MOST_HELD` chunks; a chunk is at most :data:`CHUNK_ITEMS` items and
about :data:`CHUNK_BYTES` of records (chunks start at one item and grow from the record
sizes seen so far, and where the number of items is known shrink towards the end, so
that the workers finish together; the files written do not depend on it). A worker's
held chunks are memory it touches for the first time (the kernel zeroes each page; on a
VM, the host may back it anew), so they are kept small: CSV parts of ~8 MB of records
are one a chunk. Extra disk: the shards in flight (and, compressed, the chunks spilled
ahead).

Shard checksums: with ``crc32c`` (the default), a worker returns the CRC32C of each
piece it writes, computed from its memory, and the parent combines them in file order
(checking that the pieces tile the shard); no shard is read back. With ``sha256``, a
worker reads the shard back.

The processes and their tasks are :mod:`recordforge._workers`'s. Workers never write
under a name a rerun uses (the ``<run>`` token). A worker that dies (killed, out of
memory) fails the conversion with :class:`~recordforge.RecordforgeError` naming the
chunks' items and the shards it was working on; completed shards stay for the rerun.
The crash tests kill the worker that converts item ``n`` with
``RECORDFORGE_KILL_WORKER_AT=<n>`` (the parent's stages, ``RECORDFORGE_KILL_AT``, are
the parent's only).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import os
import pickle
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recordforge._core import crc32c_combine
from recordforge._workers import (
    FORKED,
    FORKED_ROWS,
    READ_BLOCK,
    ItemResult,
    Workers,
    finish_shard,
    start_method,
)
from recordforge.errors import OnError, RecordforgeError
from recordforge.pipeline import ConversionReport, ToRecords
from recordforge.sharding import FRAME_OVERHEAD, ShardPlanner, WriteOptions

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_ITEMS",
    "HELD_CHUNKS",
    "READ_BLOCK",
    "start_method",
    "worker_count",
    "write_split",
]

CHUNK_ITEMS = 32
CHUNK_BYTES = 8 << 20
# The records a worker holds, converted and not yet written, or being converted: at
# most HELD_CHUNKS x CHUNK_BYTES, a chunk being converted counted as CHUNK_BYTES and a
# converted one as its records' bytes; and at most MOST_HELD chunks. A worker whose
# chunks are small runs ahead of one converting the chunk before them (chunks are
# written in item order) instead of waiting for it with three small chunks held.
HELD_CHUNKS = 3
MOST_HELD = 16

Progress = Callable[[int, int], None]


class Committer(Protocol):
    """The writer's side of a split (``_shardwriter.ShardWriter``): where shards go, and the
    commit of a closed shard file (index, rename, journal)."""

    @property
    def out(self) -> Path: ...

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


@dataclasses.dataclass
class _Chunk:
    number: int
    first: int  # position of its first item
    count: int
    worker: int
    spill: Path | None
    items: list[Any]
    results: list[ItemResult] | None = None
    # An exception that ended the chunk at the item after its results (raised in order).
    failure: BaseException | None = None
    bytes: int = 0  # its records' frames, held by its worker once converted

    def describe(self, split: str) -> str:
        last = self.first + self.count - 1
        return f"items {self.first}..{last} of split {split!r} (chunk {self.number})"


@dataclasses.dataclass
class _Shard:
    index: int
    partial: Path
    size: int = 0  # bytes planned into it so far
    sizes: list[np.ndarray] = dataclasses.field(default_factory=list)
    pieces: list[tuple[str, int, np.ndarray]] = dataclasses.field(default_factory=list)
    pending: int = 0  # place tasks writing into it, not done
    # With crc32c checksums: (byte offset, length, CRC32C) of each piece written.
    crcs: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    # Once complete: where the input stands after it, and the report of the items before.
    position: tuple[int, int] | None = None
    report: dict[str, Any] | None = None
    finishing: bool = False
    checksum: str | None = None
    offsets: np.ndarray | None = None

    def describe(self, split: str) -> str:
        return f"shard {self.index} of split {split!r}"


class _SplitRun:
    """The parent's side of one split written by workers (see the module docstring)."""

    def __init__(
        self,
        pool: Workers,
        shards: Committer,
        planner: ShardPlanner,
        report: ConversionReport,
        run: str,
        items: Iterator[tuple[int, Any]],
        rows: bool = False,
        count: int | None = None,
    ) -> None:
        self.pool, self.shards, self.planner, self.report = pool, shards, planner, report
        self.run, self.items = run, items
        self.rows = rows  # workers take the items from FORKED_ROWS, by position
        self.split = shards.split
        self.spill = shards.options.compression is not None
        self.workers = len(pool.procs)
        self.held = [0] * self.workers  # chunks given to a worker and not let go
        self.weight = [0] * self.workers  # their bytes (see HELD_CHUNKS)
        self.converting = [0] * self.workers  # of them, those not converted yet
        self.placing = [0] * self.workers  # of them, those planned and being written
        self.chunks: collections.deque[_Chunk] = collections.deque()  # not yet planned
        self.exhausted = False
        self.numbered = itertools.count()
        self.chunk_items = 1
        # Items not yet given to a worker, where the split's length is known.
        self.unassigned = count
        self.seen = (0, 0)  # items and payload bytes taken from chunks, to size chunks
        self.flight: collections.deque[_Shard] = collections.deque()  # complete
        self.open = self._new_shard(len(shards.state["shards"]))
        # The pieces taken from the chunk being planned, and the shards they go to.
        self.places: list[tuple[str, int, int, int]] = []
        self.touched: list[_Shard] = []
        # Spilled chunk files, with the last shard that may use each.
        self.retired: collections.deque[tuple[int, Path]] = collections.deque()

    def _new_shard(self, index: int) -> _Shard:
        name = f".{self.split}-{index:05d}.{self.run}.shard.partial"
        return _Shard(index, self.shards.out / name)

    def pump(self) -> None:
        self.pool.pump(self.died)

    def died(self, worker: int) -> RecordforgeError:
        """The error of worker ``worker`` found dead, naming what it was doing, the
        items it was converting first."""
        busy = sorted(dict.fromkeys(self.pool.busy(worker)), key=lambda b: "items" not in b)
        shown = "; ".join(busy[:4]) + (f"; and {len(busy) - 4} more" if len(busy) > 4 else "")
        return RecordforgeError(
            f"{self.shards.out}: a worker process died (killed, or out of memory) "
            f"while {shown or 'starting'}. Shards completed so far "
            "are kept: rerun the same command to resume"
        )

    # -- chunks

    def feed(self) -> None:
        """Gives chunks to the workers while one has room (see :data:`HELD_CHUNKS`), to
        the one with the fewest left to convert: first the rests waiting (see
        :meth:`_converted`), in item order, then new chunks of items. A rest next in line
        to be planned waits for the writes in flight (they make room); with none, it goes
        to the worker holding least whatever the workers hold, as nothing held can be
        let go before it: the shards wait for it (any other rest waits for room, made as
        the chunks before it are written)."""
        for k, chunk in enumerate(self.chunks):
            if chunk.worker < 0:
                worker = self._free_worker()
                if worker is None and k == 0 and not any(self.placing):
                    worker = min(range(self.workers), key=self.weight.__getitem__)
                if worker is None:
                    return  # (new items come after it)
                self._send(chunk, worker)
        # Spilled chunks hold no memory but disk: as many ahead as before their bytes counted.
        ahead = (HELD_CHUNKS if self.spill else MOST_HELD) * self.workers
        while not self.exhausted and len(self.chunks) < ahead:
            worker = self._free_worker()
            if worker is None:
                return
            taken = list(itertools.islice(self.items, self.chunk_size()))
            if not taken:
                self.exhausted = True
                return
            if self.unassigned is not None:
                self.unassigned -= len(taken)
            chunk = self._chunk(taken[0][0], [item for _, item in taken])
            self.chunks.append(chunk)
            self._send(chunk, worker)

    def _free_worker(self) -> int | None:
        """The worker with room for a chunk and the fewest left to convert, if any."""
        room = HELD_CHUNKS * CHUNK_BYTES - CHUNK_BYTES
        free = [
            k for k in range(self.workers) if self.weight[k] <= room and self.held[k] < MOST_HELD
        ]
        return min(free, key=self.converting.__getitem__) if free else None

    def chunk_size(self) -> int:
        """Items in the next chunk: :attr:`chunk_items`, and where the items left are
        known, at most a share of them, so that the last chunks are small and the workers
        finish together (guided self-scheduling). Each worker holds up to
        :data:`HELD_CHUNKS` chunks, given before the chunks ahead of them are converted:
        with 32-item chunks at the end, one worker could convert a whole chunk while the
        others sat idle."""
        if self.unassigned is None:
            return self.chunk_items
        share = -(-self.unassigned // (2 * self.workers * HELD_CHUNKS))
        return max(1, min(self.chunk_items, share))

    def _chunk(self, first: int, items: list[Any]) -> _Chunk:
        """Chunk ``items`` (from position ``first``), not given to a worker yet."""
        number = next(self.numbered)
        spill = None
        if self.spill:
            spill = self.shards.out / f".{self.split}-c{number:06d}-{self.run}.chunk.partial"
        return _Chunk(number, first, len(items), -1, spill, items)

    def _send(self, chunk: _Chunk, worker: int) -> None:
        """``chunk`` sent to ``worker`` to convert."""
        chunk.worker = worker
        self.held[worker] += 1
        self.weight[worker] += CHUNK_BYTES
        self.converting[worker] += 1
        # Forked workers have the items, where they are a sequence: a count is enough.
        given = chunk.count if self.rows else chunk.items
        spill = chunk.spill and str(chunk.spill)
        args = (chunk.number, chunk.first, given, spill, CHUNK_BYTES)
        self.pool.send(
            worker, "convert", args, f"converting {chunk.describe(self.split)}",
            functools.partial(self._converted, chunk),
        )  # fmt: skip

    def _converted(
        self, chunk: _Chunk, results: tuple[list[ItemResult], BaseException | None]
    ) -> None:
        """A chunk's results; one that stopped at :data:`CHUNK_BYTES` of records, its
        items larger than the earlier ones, leaves the rest to a chunk of their own,
        next in line (given by :meth:`feed`)."""
        chunk.results, chunk.failure = results
        done = len(chunk.results)
        worker = chunk.worker
        self.converting[worker] -= 1
        self.weight[worker] -= CHUNK_BYTES
        if self.spill:  # nothing held in memory
            self.held[worker] -= 1
        else:
            chunk.bytes = sum(len(r[0]) for r in chunk.results) * FRAME_OVERHEAD + sum(
                int(r[0].sum()) for r in chunk.results
            )
            self.weight[worker] += chunk.bytes
        if chunk.failure is None and done < chunk.count:
            # Next in line: given by feed, once a worker has room or it is the first in
            # line not converted.
            rest = self._chunk(chunk.first + done, chunk.items[done:])
            self.chunks.insert(self.chunks.index(chunk) + 1, rest)
            chunk.count = done
        chunk.items = []
        self.feed()

    def next_chunk(self) -> tuple[_Chunk, list[ItemResult]] | None:
        """The next chunk in item order, converted (None once the items end); first,
        the shards in flight are brought down to one per worker (they hold disk, and
        spilled chunks). Waiting, it may be that every worker holds all it may: their
        chunks' writes end, and more are given."""
        while True:
            self.feed()
            if not self.chunks and self.exhausted:
                return None
            if self.chunks and len(self.flight) <= self.workers:
                chunk = self.chunks[0]
                if chunk.results is not None:
                    self.chunks.popleft()
                    self.feed()
                    return chunk, chunk.results
            self.pump()

    def take(self, chunk: _Chunk, start: int, lengths: np.ndarray) -> None:
        """Records of payload sizes ``lengths``, framed from byte ``start`` of
        ``chunk``'s bytes, go to the open shard."""
        if not len(lengths):
            return
        frames = lengths + FRAME_OVERHEAD
        size = int(frames.sum())
        shard = self.open
        if chunk.spill is not None:
            shard.pieces.append((str(chunk.spill), start, lengths))
        else:
            self.places.append((str(shard.partial), shard.size, start, start + size))
            if not any(s is shard for s in self.touched):
                self.touched.append(shard)
        shard.sizes.append(frames)
        shard.size += size

    def release(self, chunk: _Chunk) -> None:
        """The chunk is planned: its holder writes its pieces (or, spilled, its file is
        removed once the shards that may use it are committed)."""
        if chunk.spill is not None:
            self.retired.append((self.open.index, chunk.spill))
            return
        touched, self.touched = self.touched, []
        for shard in touched:
            shard.pending += 1

        places = self.places
        crcs = self.shards.options.checksum == "crc32c"

        def placed(checksums: list[int] | None) -> None:
            self.held[chunk.worker] -= 1
            self.placing[chunk.worker] -= 1
            self.weight[chunk.worker] -= chunk.bytes
            if checksums is not None:
                by_path = {str(shard.partial): shard for shard in touched}
                for (path, at, start, stop), crc in zip(places, checksums, strict=True):
                    by_path[path].crcs.append((at, stop - start, crc))
            for shard in touched:
                shard.pending -= 1
                self._finish(shard)
            self.feed()

        what = f"writing {chunk.describe(self.split)} into " + ", ".join(
            s.describe(self.split) for s in touched
        )
        self.placing[chunk.worker] += 1
        self.pool.send(chunk.worker, "place", (chunk.number, places, crcs), what, placed)
        self.places = []
        for shard in touched:
            self._finish(shard)

    # -- shards

    def cut(self, position: tuple[int, int]) -> None:
        """The open shard is complete."""
        shard, self.open = self.open, self._new_shard(self.open.index + 1)
        shard.position, shard.report = position, self.report.to_json()
        self.flight.append(shard)
        if self.spill:
            options = self.shards.options
            args = (str(shard.partial), options.compression, options.checksum, shard.pieces)

            def written(result: tuple[str, np.ndarray]) -> None:
                shard.checksum, shard.offsets = result
                self.commit_ready()

            self.pool.send(None, "write", args, f"writing {shard.describe(self.split)}", written)
        else:
            self._finish(shard)

    def _finish(self, shard: _Shard) -> None:
        """A complete shard whose pieces are all written is synced (and read back for a
        sha256 checksum)."""
        if (
            shard.position is None
            or shard.pending
            or shard.finishing
            or any(s is shard for s in self.touched)
        ):
            return
        shard.finishing = True

        def finished(checksum: str | None) -> None:
            sizes = np.concatenate(shard.sizes) if shard.sizes else np.zeros(0, np.int64)
            shard.offsets = (np.cumsum(sizes) - sizes).astype(np.uint64)
            shard.checksum = checksum or self._combined(shard)
            self.commit_ready()

        checksum = self.shards.options.checksum
        what = f"finishing {shard.describe(self.split)}"
        if checksum == "crc32c":  # a size check and an fsync: here, not holding up a worker
            args = (str(shard.partial), checksum, shard.size)
            self.pool.run_here(finish_shard, args, what, finished)
        else:  # sha256: the shard read back, on a worker
            self.pool.send(
                None, "finish", (str(shard.partial), checksum, shard.size), what, finished
            )

    def _combined(self, shard: _Shard) -> str:
        """The shard's CRC32C, combined from its pieces' in file order; they must tile
        it from byte 0 to its planned size, each byte written once."""
        crc = end = 0
        for at, length, piece in sorted(shard.crcs):
            if at != end:
                raise RecordforgeError(
                    f"{shard.partial}: internal error: the pieces written into "
                    f"{shard.describe(self.split)} leave bytes {end}..{at} unwritten or "
                    "written twice"
                )
            crc, end = crc32c_combine(crc, piece, length), end + length
        if end != shard.size:
            raise RecordforgeError(
                f"{shard.partial}: internal error: {end:,} bytes written into "
                f"{shard.describe(self.split)}, {shard.size:,} planned"
            )
        return f"crc32c:{crc:08x}"

    def commit_ready(self) -> None:
        """Commits the complete shards at the head of the line, in order."""
        while self.flight and self.flight[0].checksum is not None:
            shard = self.flight.popleft()
            sizes = np.concatenate(shard.sizes) if shard.sizes else np.zeros(0, np.int64)
            position, report, offsets = shard.position, shard.report, shard.offsets
            checksum = shard.checksum
            assert position is not None and report is not None and offsets is not None
            assert checksum is not None
            self.shards.commit(
                shard.partial, position, len(sizes), checksum, offsets, sizes, report
            )
            while self.retired and self.retired[0][0] <= shard.index:
                self.retired.popleft()[1].unlink(missing_ok=True)

    def drain(self) -> None:
        """Waits until every complete shard is committed."""
        while self.flight:
            self.pump()
        while self.retired:
            self.retired.popleft()[1].unlink(missing_ok=True)

    def resize(self, items: int, payload: int, largest: int) -> None:
        """Chunks of about CHUNK_BYTES, from the payload bytes per item seen so far and
        the largest item of the last chunk (so that items growing are not taken by the
        dozen at the size of the earlier, small ones)."""
        seen_items, seen_bytes = self.seen[0] + items, self.seen[1] + payload
        self.seen = (seen_items, seen_bytes)
        per_item = max(1, seen_bytes // max(1, seen_items), largest)
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
    rows: Sequence[Any] | None = None,
    total: int | None = None,
) -> None:
    """Converts and writes a split's ``remaining`` items (from the journal's position)
    on ``workers`` processes, committing its shards through ``shards``; returns when
    every shard is committed (the caller marks the split done). ``rows``: the split's
    items as a sequence (``remaining`` is its tail), which forked workers read from;
    ``total``: the split's number of items, where known (the chunks shrink towards the
    end)."""
    start_item, start_record = shards.state["position"]
    token = secrets.token_hex(4)
    method = start_method()
    conversion: Path | None = None
    if method == "fork":
        FORKED[:] = [to_records]
        FORKED_ROWS[:] = [rows] if rows is not None else []
    else:
        conversion = shards.out / f".{shards.split}-{token}.convert.partial"
        conversion.write_bytes(pickle.dumps(to_records))
    graceful = False
    try:
        pool = Workers(workers, method, None if conversion is None else str(conversion))
    finally:
        FORKED.clear()
        FORKED_ROWS.clear()
    try:
        items = enumerate(remaining, start_item)
        by_position = method == "fork" and rows is not None
        count = None if total is None else max(0, total - start_item)
        run = _SplitRun(pool, shards, planner, report, token, items, by_position, count)
        consumed = start_item
        while (converted := run.next_chunk()) is not None:
            chunk, results = converted
            byte = 0
            for position, (lengths, n_items, errors, counters) in enumerate(results, chunk.first):
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
                        run.release(chunk)
                        run.drain()  # the shards before the item, as in-process
                        raise error
                    report.skip(error.item, error.reason)
                k = first
                for start in starts[s:]:
                    run.take(chunk, int(ends[k]), lengths[k : start[1]])
                    run.cut(start)
                    k = start[1]
                run.take(chunk, int(ends[k]), lengths[k:])
                byte = int(ends[-1])
                consumed = position + 1
                report.items += n_items
                for name, n in counters.items():
                    report.count(name, n)
                if progress is not None:
                    progress(len(lengths) - first, int(lengths[first:].sum()))
            run.resize(len(results), byte, max((int(r[0].sum()) for r in results), default=0))
            run.release(chunk)
            if chunk.failure is not None:  # after the items before it, as one worker
                run.drain()
                raise chunk.failure
        for _ in range(planner.finish()):
            run.cut((consumed, 0))
        run.drain()
        graceful = True
    finally:
        pool.close(graceful)
        if conversion is not None:
            conversion.unlink(missing_ok=True)

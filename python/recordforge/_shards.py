"""A dataset's shard files: each file's records read and counted (local paths in Rust,
URLs through fsspec), and :class:`ShardFiles`, what a dataset knows of its files (records
per file, the counts ``dataset.json`` claims checked against them, compressions, memory
maps and record offsets for random access), each found once."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core, _fs, _index
from recordforge._jsonfields import Field
from recordforge._ranged import ReadAhead, frame_spans
from recordforge._stream import Walk
from recordforge.errors import CorruptRecordError, SchemaError
from recordforge.manifest import MANIFEST_NAME, Manifest, inside
from recordforge.records import DEFAULT_MAX_RECORD_BYTES

#: Bytes of files a dataset keeps mapped across epochs (:meth:`ShardFiles.kept_maps`).
KEEP_MAPPED_BYTES = 64 << 30

__all__ = [
    "Claim",
    "ShardFiles",
    "count_records",
    "first_records",
    "intact_records",
    "is_plain",
    "manifest_shards",
    "read_records",
    "shuffled",
]

#: Records read to infer a schema's feature names and kinds.
SCHEMA_SCAN = 1000


def _detect_compression(path: str) -> str | None:
    from recordforge.records import detect_compression

    return detect_compression(path)


def is_plain(path: str) -> bool:
    """Whether the file is not compressed (from its first bytes)."""
    return _detect_compression(path) is None


def count_records(
    path: str,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    skip: bool = False,
    *,
    use_index: bool = True,
) -> int:
    """The records of a file: its ``.idx`` lines when the index covers the file exactly
    (and ``use_index``), else a framing walk. With ``skip``, a damaged local file counts
    the intact records that ``on_corrupt="skip"`` reads give (those of the
    resynchronising walk)."""
    index = _index.read(path) if use_index else None
    if index is not None:
        return len(index[0])
    limit = max_record_bytes
    if not _fs.is_url(path):
        try:
            count: int = _core.scan_records(path, "auto", False, max_record_bytes=limit)[0]
        except CorruptRecordError:
            if not skip:
                raise
            walk = _core.RecordWalker(path, payloads=False, max_record_bytes=limit)
            count = sum(1 for span in walk if span.kind == "record")
        return count
    with ReadAhead(path) as f:  # streamed by range, read ahead on a thread
        count = _core.scan_records(f, "auto", False, max_record_bytes=limit)[0]
    return count


def read_records(path: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[bytes]:
    """A file's records, CRCs checked; a URL (gs://, s3://, ...) is streamed through
    fsspec."""
    if not _fs.is_url(path):
        yield from _core.read_records(path, "auto", True, max_record_bytes=max_record_bytes)
        return
    with ReadAhead(path) as f:  # streamed by range, read ahead on a thread
        yield from _core.read_records(f, "auto", True, max_record_bytes=max_record_bytes)


def intact_records(path: str, max_record_bytes: int) -> Iterator[bytes]:
    """A file's records whose both CRCs check, past any damage: for a plain file, those
    of the framing walk that resynchronises after damage; for a compressed one, those
    before the first damaged one (a broken stream cannot be resynchronised)."""
    if is_plain(path):
        if _fs.is_url(path):
            yield from _walked(path, max_record_bytes, [])
            return
        f = _core.RecordFile(_fs.fspath(path), max_record_bytes=max_record_bytes)
        good, _ = f.intact()
        for start in range(0, len(good), 1024):
            yield from f.read_many(good[start : start + 1024].tolist())
        return
    try:
        yield from read_records(path, max_record_bytes)
    except CorruptRecordError:
        return


def _close_opened(future: concurrent.futures.Future[ReadAhead]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _walked(path: str, max_record_bytes: int, skipped: list[dict[str, Any]]) -> Iterator[bytes]:
    """The intact records of the plain remote file ``path``, streamed by range through
    the framing walk that resynchronises after damage (the records and regions of a
    local file's ``RecordFile.intact``); its damaged regions added to ``skipped``."""
    with Walk(path, payloads=True, max_record_bytes=max_record_bytes) as walk:
        for span in walk:
            if span.kind == "record":
                yield span.payload  # type: ignore[misc]  # payloads=True: the bytes
            else:
                reason = f"corrupt record at offset {span.start}: {span.reason}"
                skipped.append(
                    {"file": path, "start": span.start, "end": span.end, "reason": reason}
                )


def first_records(
    files: Sequence[str], skip: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[bytes]:
    """The first records of ``files`` (for a schema); with ``skip``, damaged records are
    passed over as ``on_corrupt="skip"`` reads do."""
    n = 0
    limit = max_record_bytes
    for f in files:
        for record in intact_records(f, limit) if skip else read_records(f, limit):
            yield record
            n += 1
            if n == SCHEMA_SCAN:
                return


def shuffled(records: Iterator[bytes], buffer_size: int, seed: int) -> Iterator[bytes]:
    """``records`` through the Rust reader's shuffle buffer (``_core.Shuffler``), in the
    order that ``_core.BatchReader`` gives them with ``shuffle=(buffer_size, seed)``."""
    buffer = _core.Shuffler(buffer_size, seed)
    for record in records:
        out = buffer.push(record)
        if out is not None:
            yield out
    while (out := buffer.drain()) is not None:
        yield out


@dataclasses.dataclass
class Claim:
    """A shard's record count as ``dataset.json`` gives it, not believed before it is
    checked: ``checked`` is 1 once its file's size (and ``.idx``, when there is one)
    agree, 2 once the records were counted (the ``.idx`` lines, or a framing walk)."""

    field: Field
    records: int
    bytes: int
    checked: int = 0


def manifest_shards(
    root: Path | str, manifest: Manifest, names: Sequence[str]
) -> tuple[list[str], list[Claim]]:
    """The shard files of the splits ``names`` of a dataset directory, and the count
    ``dataset.json`` claims for each."""
    source = _fs.join(root, MANIFEST_NAME)
    files, claims = [], []
    for name in names:
        for k, shard in enumerate(manifest.splits[name]):
            field = Field(source)["splits"][name]["shards"][k]
            files.append(_shard_path(root, shard.file, field))
            claims.append(Claim(field=field, records=shard.records, bytes=shard.bytes))
    return files, claims


def _shard_path(root: Path | str, name: str, field: Field) -> str:
    """The path of a shard listed in ``dataset.json``: inside the dataset directory
    (links resolved) and a regular file; a missing one is a ``FileNotFoundError``."""
    if _fs.is_url(root):
        return _fs.join(root, name)  # a plain name (Manifest.from_json checked it)
    path = inside(root, name, field["file"])
    if not path.exists():
        raise FileNotFoundError(f"{field['file']}: {path}: no such file")
    return str(path)


class ShardFiles:
    """What a dataset knows of its files, each found once: records per file (counts
    that ``dataset.json`` claims checked first), compressions (from the first bytes),
    and, for random access, memory maps and record offsets."""

    def __init__(
        self,
        files: Sequence[str],
        *,
        counts: Sequence[int] | None,
        claims: Sequence[Claim | None] | None,
        manifest: Manifest | None,
        source: str,
        max_record_bytes: int,
        skip: bool,
        compressions: list[str | None] | None = None,
    ) -> None:
        self.files = list(files)
        self.counts = list(counts) if counts is not None else None
        self.claims = list(claims) if claims is not None else None
        self.known_compressions = compressions
        self._manifest = manifest
        self._source = source  # the dataset.json named in messages
        self._max_record_bytes = max_record_bytes
        self._skip = skip
        self._offsets: dict[str, np.ndarray] = {}
        self._spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._no_index: set[str] = set()  # remote files whose .idx was read and not believed
        self._open: dict[str, Any] = {}
        self._mapped_bytes = 0  # of the files in _open
        self._looked_at: set[str] = set()  # remote files whose compression was read

    # -- compression -------------------------------------------------------------------

    def compressions(self) -> list[str | None]:
        """Each file's compression from its first bytes (local files each looked at; of
        remote ones, the first). A manifest that disagrees is a :class:`SchemaError`."""
        if self.known_compressions is None:
            found: list[str | None]
            if not any(_fs.is_url(f) for f in self.files):
                found = [_detect_compression(f) for f in self.files]
            else:
                found = [_detect_compression(self.files[0])] * len(self.files)
            if self._manifest is not None:
                claim = self._manifest.compression
                for path, kind in zip(self.files, found, strict=True):
                    if kind != claim:
                        what = f"{kind}-compressed" if kind else "not compressed"
                        raise SchemaError(
                            f"{self._source}: compression: {json.dumps(claim)}, but {path} "
                            f"is {what} (from its first bytes)"
                        )
            self.known_compressions = found
        return self.known_compressions

    def check_uncompressed(self, paths: Sequence[str] = ()) -> None:
        """Random access reads records in place: a compressed shard is a ``TypeError``
        naming it (before anything is counted). Bare remote files (no ``dataset.json``
        whose claim covers them all) are assumed to be as the first one is, until
        ``paths`` are about to be read by range: each of those is looked at (12 bytes,
        once)."""
        known = self.compressions()
        for path in paths if self._manifest is None else ():
            if _fs.is_url(path) and path not in self._looked_at:
                known[self.files.index(path)] = _detect_compression(path)
                self._looked_at.add(path)
        found = dict(zip(self.files, known, strict=True))
        if any(c is not None for c in found.values()):
            path, compression = next((p, c) for p, c in found.items() if c is not None)
            raise TypeError(
                f"{path}: random access (ds[i], take) needs uncompressed shards; "
                f"this one is {compression}-compressed"
            )

    # -- counts ------------------------------------------------------------------------

    def record_counts(self, mine: Sequence[int], exact: bool = False) -> list[int]:
        """Records per file. Counts from ``dataset.json`` are checked before use (those
        of the files ``mine``), cheaply for ``len`` (each file's size, and its ``.idx``
        when there is one), and ``exact``-ly for random access (the records counted:
        ``.idx`` lines or a framing walk) where a wrong count would silently give one
        record for another."""
        if self.counts is None:
            limit = self._max_record_bytes
            self.counts = [count_records(f, limit, self._skip) for f in self.files]
        elif self.claims is not None:
            for i in mine:
                self._check_claim(i, exact)
        return self.counts

    def _check_claim(self, i: int, exact: bool) -> None:
        claim = self.claims[i] if self.claims is not None else None
        if claim is None or claim.checked >= (2 if exact else 1):
            return
        path = self.files[i]
        local = not _fs.is_url(path)
        if local and os.stat(path).st_size != claim.bytes:
            exact = True  # the file changed since dataset.json was written: count it
        if exact and not local:  # the offsets for reads by range, found once
            found: int | None = len(self._located(path)[0])
        elif exact:
            # .idx lines when it covers the file, else a walk
            found = count_records(path, self._max_record_bytes)
        elif local:
            found = _index.count(path, claim.bytes)  # None: no usable .idx, the size agrees
        else:
            return  # a remote shard: counted at the first random access
        if found is not None and found != claim.records:
            raise SchemaError(
                f"{claim.field['records']}: {claim.records}, but {path} holds {found} records"
            )
        claim.checked = 2 if exact else 1

    def counted_cheaply(self) -> bool:
        """Whether the counts are at hand without a walk (claims, or ``.idx`` lines)."""
        return self.counts is not None or all(
            not _fs.is_url(f) and os.path.isfile(f"{f}.idx") for f in self.files
        )

    def name_wrong_count(self, mine: Sequence[int]) -> None:
        """Raises a :class:`SchemaError` naming the first of the files ``mine`` whose
        given count (in ``dataset.json`` or its ``.idx``) is not what its framing holds;
        returns when they all agree."""
        counts = self.record_counts(mine)
        for i in mine:
            path = self.files[i]
            found = count_records(path, self._max_record_bytes, use_index=False)
            claim = self.claims[i] if self.claims is not None else None
            if claim is not None and claim.records != found:
                raise SchemaError(
                    f"{claim.field['records']}: {claim.records}, but {path} holds {found} records"
                )
            if counts[i] != found and _fs.exists(f"{path}.idx"):
                raise SchemaError(
                    f"{path}.idx lists {counts[i]} records, but {path} holds {found}"
                    " (a stale index: rebuild it with `recordforge index`, or remove it)"
                )
            if counts[i] != found:
                raise SchemaError(
                    f"{path} held {counts[i]} records when this dataset counted them, and "
                    f"holds {found} now (changed while open: open it again)"
                )

    # -- reading -----------------------------------------------------------------------

    def records(self, path: str, skipped: list[dict[str, Any]]) -> Iterator[bytes]:
        """One file's records, one at a time; with ``skip``, the intact ones of a plain
        file, its damaged regions added to ``skipped``."""
        compression = self.compressions()[self.files.index(path)]
        if not self._skip or compression is not None:
            yield from read_records(path, self._max_record_bytes)
            return
        if _fs.is_url(path):  # streamed, never staged on local disk
            yield from _walked(path, self._max_record_bytes, skipped)
            return
        f = _core.RecordFile(_fs.fspath(path), max_record_bytes=self._max_record_bytes)
        good, bad = f.intact()
        skipped.extend({"file": path, "start": s, "end": e, "reason": why} for s, e, why in bad)
        for start in range(0, len(good), 1024):
            yield from f.read_many(good[start : start + 1024].tolist())

    def records_of(self, paths: Sequence[str], skipped: list[dict[str, Any]]) -> Iterator[bytes]:
        """The records of ``paths`` in order, as :meth:`records` gives them. A streamed
        remote file is opened (its size asked, its first blocks fetched) on a thread of
        its own while the reader is still on the file before it, from when that one is
        fetched whole: at most two files' read-ahead in memory, the one read and the
        next, and no round trip between files. An opening that fails (after its
        retries) raises its error when the reader gets to that file."""
        compression = dict(zip(self.files, self.compressions(), strict=True))
        streamed = [_fs.is_url(p) and (not self._skip or compression[p] is not None) for p in paths]
        lock = threading.Lock()
        opening: dict[int, concurrent.futures.Future[ReadAhead]] = {}  # ahead of the reader
        fetched: set[int] = set()  # files whose last block is fetched
        reading, done = -1, False

        def open_ahead(k: int) -> None:  # returns at once: the opening runs on a thread
            if k >= len(paths) or not streamed[k]:
                return
            future: concurrent.futures.Future[ReadAhead] = concurrent.futures.Future()
            with lock:
                if done or k in opening:
                    return
                opening[k] = future

            def open_it() -> None:
                try:
                    future.set_result(ReadAhead(paths[k], then=functools.partial(fetched_whole, k)))
                except BaseException as e:  # the reader raises it in its turn
                    future.set_exception(e)

            threading.Thread(target=open_it, name="recordforge-open-ahead", daemon=True).start()

        def fetched_whole(k: int) -> None:  # on file k's fetching thread
            with lock:
                fetched.add(k)
                now = reading == k  # else the reader opens k + 1 when it gets to k
            if now:
                open_ahead(k + 1)

        try:
            for k, path in enumerate(paths):
                if not streamed[k]:
                    yield from self.records(path, skipped)
                    continue
                with lock:
                    ahead = opening.pop(k, None)
                if ahead is not None:
                    f = ahead.result()
                else:
                    f = ReadAhead(path, then=functools.partial(fetched_whole, k))
                with f:
                    with lock:
                        reading = k
                        now = k in fetched  # else its fetching thread opens k + 1
                    if now:
                        open_ahead(k + 1)
                    yield from _core.read_records(
                        f, "auto", True, max_record_bytes=self._max_record_bytes
                    )
        finally:
            with lock:
                done = True
                left = list(opening.values())
            for future in left:  # closed once opened, if it is not yet
                future.add_done_callback(_close_opened)

    def record_file(self, path: str) -> Any:
        """The memory-mapped file, opened once (a remote one downloaded once), and again
        where its map met the file cut short and the file is whole again (the map reads
        zeros from the cut on for its life)."""
        self._forget_restored(path)
        if path not in self._open:
            self.check_uncompressed()
            self._open[path] = f = _core.RecordFile(
                _fs.staged(path), max_record_bytes=self._max_record_bytes
            )
            self._mapped_bytes += len(f)
        return self._open[path]

    def _forget_restored(self, path: str) -> None:
        """Lets go of the map of ``path`` where it met the file cut short and the file is
        whole again (``RecordFile.is_restored``)."""
        kept = self._open.get(path)
        if kept is not None and kept.is_restored():
            del self._open[path]
            self._mapped_bytes -= len(kept)

    def kept_maps(self, paths: Sequence[str]) -> list[Any]:
        """The maps a batch reader reads ``paths`` from (None: it maps the file itself),
        kept for the dataset's life so that an epoch after the first pays no page faults
        or unmapping: local uncompressed files, while the bytes kept mapped stay within
        :data:`KEEP_MAPPED_BYTES` (a map keeps its page tables, ~2 MB a GB touched). A
        kept map that is no longer the file at its path, as it was (replaced, cut or
        rewritten since), is not read: the reader maps the file as it is now."""
        compression = dict(zip(self.files, self.compressions(), strict=True))
        out: list[Any] = []
        for path in paths:
            self._forget_restored(path)
            f = self._open.get(path)
            if f is None and compression[path] is None and not _fs.is_url(path):
                try:
                    size = os.path.getsize(path)
                    if self._mapped_bytes + size <= KEEP_MAPPED_BYTES:
                        f = _core.RecordFile(path, max_record_bytes=self._max_record_bytes)
                        self._open[path] = f
                        self._mapped_bytes += len(f)
                except OSError:  # the reader meets it in its turn, after the files before
                    f = None
            out.append(f if f is not None and f.is_current() else None)
        return out

    def offsets(self, path: str, mine: Sequence[int]) -> np.ndarray:
        """Each record's offset in the local file ``path``, from one framing walk over
        its map (each frame's length field, as a read does); as many as the file's
        checked count. Not from its ``.idx`` while the framing holds: an index that
        covers the file exactly can still lie (a record's line cut where its value holds
        a whole valid frame, a later one's lines merged to keep the ends), and a read at
        its offsets would return that frame as a record; only the walk of every length
        field tells, and it costs what checking the index would. Where the framing is
        damaged, the ``.idx`` (if any) gives them, as before: the records before and
        after the damage are read, each checked, and the damaged one is the error."""
        if path not in self._offsets:
            try:
                offsets = self.record_file(path).offsets(False)
            except CorruptRecordError:
                index = _index.read(path)
                if index is None:
                    raise
                offsets = index[0].astype(np.uint64)
            counts = self.record_counts(mine, exact=True)
            expected = counts[self.files.index(path)]
            if len(offsets) != expected:  # the file changed since it was counted
                raise CorruptRecordError(
                    path, 0, f"{len(offsets)} records, {expected} when it was counted"
                )
            self._offsets[path] = offsets
        return self._offsets[path]

    def spans(self, path: str, mine: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each record's offset and framed size (int64s) in the remote file ``path``,
        for reads by range; as many as the file's checked count."""
        offsets, sizes = self._located(path)
        counts = self.record_counts(mine, exact=True)
        expected = counts[self.files.index(path)]
        if len(offsets) != expected:  # the file changed since it was counted
            raise CorruptRecordError(
                path, 0, f"{len(offsets)} records, {expected} when it was counted"
            )
        return offsets, sizes

    def locate_remote(self, mine: Sequence[int]) -> None:
        """Reads the ``.idx`` of every remote file of ``mine`` at once (one listing
        per directory, the indexes fetched side by side), where a file at a time would
        take a few requests each, one after the other."""
        todo = [self.files[i] for i in mine if _fs.is_url(self.files[i])]
        todo = [p for p in todo if p not in self._spans]
        if len(todo) > 1:
            for path, (offsets, sizes) in _index.read_remote(todo).items():
                self._spans[path] = (offsets.astype(np.int64), sizes.astype(np.int64))
            self._no_index.update(p for p in todo if p not in self._spans)

    def _located(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """A remote file's record offsets and framed sizes: from its ``.idx`` when that
        covers the file exactly, else from one streamed walk (no download); once."""
        if path not in self._spans:
            index = None if path in self._no_index else _index.read(path)
            if index is not None:
                offsets, sizes = index
            else:
                offsets, sizes = frame_spans(path, self._max_record_bytes)
            self._spans[path] = (offsets.astype(np.int64), sizes.astype(np.int64))
        return self._spans[path]

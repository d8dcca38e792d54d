"""The output directory of a conversion in an object store (``gs://``, ``s3://``, ...).

:class:`RemoteOutputDir` is :class:`~recordforge._outdir.OutputDir` for a URL, with the
same states and the same rerun rules, so a remote conversion resumes as a local one
does. Nothing is staged on local disk: the writer streams each shard into the store
while it writes it (:class:`~recordforge.TFRecordWriter` on a URL: a multipart upload
of :data:`PART_SIZE` parts on S3, a resumable upload on GCS), which the store commits
under the shard's intermediate key (``.<split>-<k>.shard``) only when the shard is
complete; an error aborts it. Then its ``.idx``, then its journal entry. At the end the
shards are moved (copied by the store, then deleted) to their final keys,
``dataset.json`` is written, and the journal goes.

The differences from a local directory, and why:

- **The journal** (:class:`RemoteJournal`) cannot be appended to: its snapshot is the
  object ``.recordforge-progress.json`` and each completed shard adds one small object
  ``.recordforge-progress.<n>.json`` (what a local journal appends as a line), so a save
  costs the same at shard 10 as at shard 10,000. A rerun reads the snapshot, lists the
  entries and applies them in order up to the first one missing or torn.
- **No flock.** A rerun takes the directory over: it writes its own token in
  ``.recordforge.lock``, and a conversion still running there finds the token changed
  at its next journal save (one small read a shard) and stops with an error instead of
  interleaving its shards with the new run's. A run that stops so touches nothing
  more there: it aborts no upload and removes no working object (they are the new
  run's).
- **Abandoned uploads.** A conversion killed in the middle of a shard leaves the
  store's unfinished upload (invisible, but billed on S3). A rerun aborts every
  unfinished S3 multipart upload under the output prefix before it writes. GCS keeps
  no list of resumable uploads; an unfinished one expires after a week.
- **DONE.** ``done`` marks the snapshot finished before it removes the entries and then
  the snapshot itself, so a kill in between is recognised by a rerun of the same
  command (the dataset is returned), as the stale lock's ``finished`` is locally.

With ``workers`` > 1, workers write shards at planned offsets (``pwrite``), which an
object store cannot take: the shards being written are local files in a temporary
directory (:attr:`RemoteOutputDir.staging`), each uploaded (and removed) when it is
complete; local disk then holds the shards in flight, not the dataset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge._atomic import stage
from recordforge._outdir import (
    JOURNAL_NAME,
    LOCK_NAME,
    Journal,
    is_working,
    manifest_files,
    refuse_foreign,
)
from recordforge.errors import RecordforgeError
from recordforge.manifest import MANIFEST_NAME

__all__ = [
    "RemoteJournal",
    "RemoteOutputDir",
    "abort_upload",
    "abort_uploads",
    "move",
    "move_all",
    "named_url",
    "prepare_out",
    "put_shard",
]

_ENTRY = ".recordforge-progress.{:08d}.json"
# Objects moved (copied by the store) at once when a conversion finishes.
MOVE_THREADS = 16


def _entry_number(name: str) -> int | None:
    head, _, rest = name.partition(".recordforge-progress.")
    if head or not rest.endswith(".json") or not rest[:-5].isdigit():
        return None
    return int(rest[:-5])


def _put(url: str, data: bytes) -> None:
    """One object written by one request (a store commits a single PUT whole or not at
    all)."""
    fs, key = _fs.filesystem(url)
    fs.pipe_file(key, data)


def _get(url: str) -> bytes | None:
    """A small object's bytes (None: there is none), by one request: a read from byte
    0 (a plain read is two on S3: s3fs asks for the size first). An empty object has no
    byte 0 (S3 refuses the range, GCS's client raises its own error): it is read again
    whole, as is one whose ranged read failed otherwise (the plain read raises what is
    wrong)."""
    fs, key = _fs.filesystem(url)
    try:
        data: bytes = fs.cat_file(key, start=0)
    except FileNotFoundError:
        return None
    except Exception:
        try:
            data = fs.cat_file(key)
        except FileNotFoundError:
            return None
    return data


class RemoteJournal(Journal):
    """The journal of a remote conversion: a snapshot object and one entry object a
    completed shard (see the module docstring). ``run`` is the token of the conversion
    that owns the directory, checked in ``.recordforge.lock`` before each entry."""

    def __init__(self, out: Any, fingerprint: dict[str, Any]) -> None:
        super().__init__(Path("."), fingerprint)
        self.url = str(out)
        self.entries = 0  # entry objects folded into the snapshot or written after it
        self.finished = False
        self.run = ""

    @classmethod
    def load_remote(
        cls, url: str, fingerprint: dict[str, Any], names: set[str]
    ) -> RemoteJournal | None:
        """The journal under ``url`` (whose listing is ``names``) when it is this
        command's, None when it is another's."""
        head = _get(_fs.join(url, JOURNAL_NAME)) or b""
        try:  # a snapshot whose fields are not of their types is not this command's
            parsed = cls.parse(url, fingerprint, [head.split(b"\n", 1)[0]])
        except (ValueError, TypeError, AttributeError):
            return None
        if not isinstance(parsed, RemoteJournal) or not _sane(parsed):
            return None
        present = {n for n in map(_entry_number, names) if n is not None}
        number = parsed.entries + 1
        while number in present:
            data = _get(_fs.join(url, _ENTRY.format(number)))
            try:
                entry = json.loads(data or b"")
            except ValueError:
                break  # torn, or removed since the listing
            if not _entry_ok(entry):
                break  # checked whole first: an entry is applied whole or not at all
            parsed._apply(entry)
            parsed.entries = number
            number += 1
        return parsed

    def _read_head(self, head: dict[str, Any]) -> None:
        super()._read_head(head)
        self.entries = int(head.get("entries", 0))
        self.finished = bool(head.get("finished", False))

    def _snapshot(self) -> dict[str, Any]:
        return {**super()._snapshot(), "entries": self.entries, "finished": self.finished}

    def _write_snapshot(self, line: bytes) -> None:
        _put(_fs.join(self.url, JOURNAL_NAME), line + b"\n")  # one PUT: whole or not

    def _append(self, line: bytes) -> None:
        self.check_held()
        self.entries += 1
        _put(_fs.join(self.url, _ENTRY.format(self.entries)), line)

    def check_held(self) -> None:
        """Raises the takeover's error when ``.recordforge.lock`` names another run."""
        try:
            lock = _get(_fs.join(self.url, LOCK_NAME))
        except OSError as e:
            raise named_url(e, self.url, LOCK_NAME, "reading") from e
        try:  # a lock that is not a run's token (garbled) is not this run's either
            holder = json.loads(lock).get("run") if lock is not None else self.run
        except (ValueError, AttributeError):
            holder = None
        if holder != self.run:
            raise RecordforgeError(
                f"{self.url}: another conversion took this output over (its "
                f"{LOCK_NAME} names another run): this one stops; the other writes it"
            )


def _sane(journal: RemoteJournal) -> bool:
    """Whether a loaded journal's fields have their types (a lying snapshot is refused
    as another command's, not failed on later)."""
    splits, report = journal.splits, journal.report
    return (
        journal.entries >= 0
        and (report is None or isinstance(report, dict))
        and all(
            isinstance(s, dict)
            and isinstance(s.get("shards"), list)
            and all(isinstance(d, dict) for d in s["shards"])
            and isinstance(s.get("position"), list)
            for s in splits.values()
        )
    )


def _entry_ok(entry: Any) -> bool:
    """Whether ``entry`` has the fields (and types) :meth:`Journal._apply` uses."""
    if not isinstance(entry, dict) or not isinstance(entry.get("split"), str):
        return False
    report, shard = entry.get("report"), entry.get("shard", {})
    return (
        isinstance(entry.get("position"), list)
        and "done" in entry
        and isinstance(shard, dict)
        and isinstance(report, dict)
        and all(k in report for k in ("items", "records", "counters"))
        and all(isinstance(report.get(k), list) for k in ("skipped", "notes"))
    )


def named_url(
    error: BaseException, url: str | None, name: str, doing: str = "writing"
) -> BaseException:
    """``error`` naming the object ``name`` of the directory ``url`` (a store's errors,
    such as s3fs's ``OSError(EBUSY, 'slow')`` for a 503, name none): an ``OSError``
    with the object's URL as its filename. A store client's own exceptions (botocore's
    ``HTTPClientError`` after its retries, aiohttp's, ...) become such an ``OSError``
    too; the message says what was being done (``doing``). Local errors (no ``url``),
    recordforge's own, Python's built-in ones (a ``MemoryError`` is not the store's)
    and interrupts as they are."""
    stores = isinstance(error, OSError) or (
        isinstance(error, Exception)
        and type(error).__module__ != "builtins"
        and not isinstance(error, RecordforgeError)
    )
    if url is None or not stores:
        return error
    where = _fs.join(url, name)
    if not isinstance(error, OSError):
        return OSError(errno.EIO, f"{type(error).__name__}: {error}: {doing} {where}", where)
    if error.filename is not None:
        return error
    if error.errno is not None:
        return type(error)(error.errno, f"{error.strerror}: {doing} {where}", where)
    return OSError(f"{where}: {error}")


def put_shard(url: str, partial: Path | None, name: str, index: bytes | None) -> int:
    """A shard under its intermediate key ``name`` in the directory ``url``: uploaded
    from the local file ``partial`` (then removed), or (None) streamed there already;
    then its ``index``. The shard's size."""
    fs, key = _fs.filesystem(_fs.join(url, name))
    if partial is not None:
        size = partial.stat().st_size
        fs.put_file(os.fspath(partial), key)  # one (multipart) upload: whole or nothing
        partial.unlink()
    else:
        fs.invalidate_cache(key)
        size = int(fs.size(key))
    stage("shard uploaded to its intermediate key")
    if index is not None:
        fs.pipe_file(f"{key}.idx", index)
        stage("shard index written")
    return size


def move(url: str, name: str, final: str, size: int | None = None) -> None:
    """Moves the object ``name`` of the directory ``url`` to ``final`` (the store copies
    it, then it is deleted); ``size``: its size, where known (else asked of the store)."""
    fs, key = _fs.filesystem(_fs.join(url, name))
    _fs.move_key(fs, key, _fs.filesystem(_fs.join(url, final))[1], size)


def move_all(url: str, moves: Sequence[tuple[str, str, int | None]]) -> None:
    """Moves objects of the directory ``url`` (``(name, final, size)``: see
    :func:`move`), up to :data:`MOVE_THREADS` at once: each is a copy made by the store,
    seconds for a shard of hundreds of MB, so thousands of shards moved one by one would
    take hours. The first error is raised (in the pairs' order) after the moves in
    flight end; the ones not started are not made (a rerun makes them)."""
    _at_once("recordforge-move", [functools.partial(_moved, url, *move) for move in moves])


def _at_once(name: str, calls: Sequence[Callable[[], None]]) -> None:
    """``calls``, up to :data:`MOVE_THREADS` at once on threads called ``name`` (one on
    the calling thread); the first error, in the calls' order, raised once those in
    flight end; those not started are not made."""
    if len(calls) < 2:
        for call in calls:
            call()
        return
    with concurrent.futures.ThreadPoolExecutor(min(MOVE_THREADS, len(calls)), name) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _moved(url: str, name: str, final: str, size: int | None) -> None:
    move(url, name, final, size)
    stage("renamed to a final name")


def _remove(url: str, name: str, directory: bool | None = None) -> None:
    """Removes the object ``name`` of the directory ``url`` (or every object under it,
    a nested "directory"), its key taken literally (``fs.rm`` would glob it).
    ``directory``: what a listing said it is (None: asked of the store, one request
    more)."""
    fs, key = _fs.filesystem(_fs.join(url, name))
    fs.invalidate_cache(key)
    if directory is None:
        directory = not fs.isfile(key)
    keys = fs.find(key) if directory else [key]
    for k in keys:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(k)


def _remove_all(url: str, objects: Sequence[tuple[str, bool]]) -> None:
    """:func:`_remove` of each ``(name, is a directory)`` of the directory ``url``, up
    to :data:`MOVE_THREADS` at once (the journal's entries of thousands of shards, one
    request each). The first error is raised (in the objects' order) once those in
    flight end."""
    _at_once(
        "recordforge-remove",
        [functools.partial(_remove, url, name, directory) for name, directory in objects],
    )


def abort_uploads(url: str) -> int:
    """Aborts the unfinished S3 multipart uploads under the prefix ``url`` (what a killed
    writer leaves); the number aborted. Other stores: 0 (GCS lists no resumable
    uploads; they expire)."""
    _, path = _fs.filesystem(url)
    bucket, _, prefix = path.strip("/").partition("/")
    prefix = f"{prefix}/" if prefix else ""  # the bucket's root: every key
    # Under a nested key: not one recordforge writes.
    return _abort(url, bucket, prefix, lambda key: "/" not in key[len(prefix) :])


def abort_upload(url: str) -> int:
    """Aborts the unfinished S3 multipart uploads of the one object ``url`` (a killed
    writer's); the number aborted."""
    _, path = _fs.filesystem(url)
    bucket, _, key = path.strip("/").partition("/")
    return _abort(url, bucket, key, lambda k: k == key)


def _abort(url: str, bucket: str, prefix: str, ours: Callable[[str], bool]) -> int:
    call = getattr(_fs.filesystem(url)[0], "call_s3", None)
    if call is None:
        return 0
    aborted = 0
    marker: dict[str, str] = {}
    while True:
        listing = call("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
        for upload in listing.get("Uploads", []):
            if not ours(upload["Key"]):
                continue
            call(
                "abort_multipart_upload",
                Bucket=bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
            aborted += 1
        if not listing.get("IsTruncated"):
            return aborted
        marker = {
            "KeyMarker": listing["NextKeyMarker"],
            "UploadIdMarker": listing["NextUploadIdMarker"],
        }


def _dataset_files(url: str) -> set[str] | None:
    return manifest_files(lambda: _get(_fs.join(url, MANIFEST_NAME)))


@dataclasses.dataclass
class RemoteOutputDir:
    """A remote output directory held by one conversion (the counterpart of
    :class:`~recordforge._outdir.OutputDir`). ``staging`` is a local directory for
    the shards that workers write (removed at the end)."""

    url: str
    journal: RemoteJournal
    complete: bool = False
    resumed: bool = False
    staging_dir: Path | None = None

    @property
    def staging(self) -> Path:
        if self.staging_dir is None:
            self.staging_dir = Path(tempfile.mkdtemp(prefix="recordforge-upload-"))
        return self.staging_dir

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, url: str, fingerprint: dict[str, Any], overwrite: bool, report: dict[str, Any]
    ) -> Iterator[RemoteOutputDir]:
        url = url.rstrip("/")
        if _fs.isfile(url):
            raise FileExistsError(f"{url}: exists and is not a directory")
        journal = RemoteJournal(url, fingerprint)
        journal.report = report
        journal.run = secrets.token_hex(8)
        target = cls(url, journal)
        try:
            try:
                target._prepare(overwrite)
            except OSError as e:  # a store's errors ("The specified bucket does not exist")
                if e.filename is not None or url in str(e):  # name no object: the URL
                    raise
                raise type(e)(f"{url}: {e}") from e
            try:
                yield target
            except BaseException:
                target._abandon()
                raise
        finally:
            if target.staging_dir is not None:
                shutil.rmtree(target.staging_dir, ignore_errors=True)

    def _listing(self) -> dict[str, bool]:
        """The directory's entries (name: is a directory); none where it does not
        exist. One listing, not a check that it exists first."""
        try:
            return dict(_fs.listdir(self.url))
        except FileNotFoundError:
            return {}

    def _take_over(self) -> None:
        """Writes this run's token: a conversion still running here stops at its next
        journal save."""
        lock = {"run": self.journal.run, "host": os.uname().nodename, "pid": os.getpid()}
        _put(_fs.join(self.url, LOCK_NAME), json.dumps(lock).encode())

    def _prepare(self, overwrite: bool) -> None:
        url = self.url
        listing = self._listing()
        names = set(listing)
        ours = {n for n in names if is_working(n) and not listing[n]}
        has_journal = JOURNAL_NAME in names
        if not has_journal and names - ours:
            refuse_foreign(url, names - ours, _dataset_files(url))
        journal = (
            RemoteJournal.load_remote(url, self.journal.fingerprint, names) if has_journal else None
        )
        if has_journal and journal is None and not overwrite:
            raise FileExistsError(
                f"{url}: holds an unfinished conversion started with other options or "
                "input (or the input files changed since: their sizes and modification "
                "times are part of the command); rerun that command on that input to "
                "finish it, or use --overwrite (overwrite=True) to start over"
            )
        if journal is None and MANIFEST_NAME in names and not overwrite:
            raise FileExistsError(
                f"{url}: already holds a complete dataset; use --overwrite (overwrite=True) "
                "to replace it"
            )
        # Refused before anything is written; from here on the directory is this run's.
        self._take_over()
        abort_uploads(url)
        if overwrite and (names - ours or has_journal):
            self.journal.clearing = True
            self.journal.save()
            self._clear(listing)
            self.journal.clearing = False
            self.journal.save()
            return
        if journal is not None:
            initial = self.journal.report
            journal.run = self.journal.run
            self.journal = journal
            if journal.report is None:
                journal.report = initial
            if journal.finished and MANIFEST_NAME in names:
                # Killed while removing the journal of a finished conversion.
                self.complete = True
                self._remove_working()
                return
            if journal.clearing:
                self._clear(listing)
                journal.clearing = False
                journal.splits = {}
                journal.entries = 0
                journal.report = initial
                journal.save()
                return
            self.resumed = True
            self._remove_temporary(listing)
            return
        _remove_all(url, [(name, False) for name in sorted(ours - {LOCK_NAME})])
        self.journal.save()

    def _clear(self, listing: dict[str, bool]) -> None:
        for name in sorted(set(listing) - {LOCK_NAME, JOURNAL_NAME}):
            _remove(self.url, name, listing[name])
            stage("cleared one old file")

    def _remove_temporary(self, listing: dict[str, bool]) -> None:
        """Temporary objects of a killed run (never a shard the journal lists)."""
        _remove_all(
            self.url,
            [
                (name, directory)
                for name, directory in sorted(listing.items())
                if is_working(name) and name.endswith((".partial", ".tmp"))
            ],
        )

    def _remove_working(self) -> None:
        """Every working object but the snapshot and the lock (several at once), then
        the snapshot, then the lock."""
        listing = self._listing()
        _remove_all(
            self.url,
            [
                (name, directory)
                for name, directory in sorted(listing.items())
                if is_working(name) and name not in (JOURNAL_NAME, LOCK_NAME)
            ],
        )
        for name in (JOURNAL_NAME, LOCK_NAME):
            with contextlib.suppress(FileNotFoundError):
                _remove(self.url, name, listing.get(name, False))

    def _abandon(self) -> None:
        """After an error: with nothing worth resuming, the working objects go again;
        otherwise the journal stays for a rerun."""
        if self.complete or self._taken_over():
            return  # another run's now: its uploads and working objects are not ours
        with contextlib.suppress(Exception):
            abort_uploads(self.url)
        if any(s["shards"] for s in self.journal.splits.values()) or self.journal.clearing:
            return
        with contextlib.suppress(Exception):
            if MANIFEST_NAME in self._listing():
                return
            self._remove_working()

    def _taken_over(self) -> bool:
        """Whether ``.recordforge.lock`` names another run (or cannot be read: then it
        is not known to be this run's, and nothing is removed)."""
        try:
            self.journal.check_held()
        except Exception:  # taken over, or unreadable: not known to be ours
            return True
        return False

    def done(self) -> None:
        """After ``dataset.json``: the snapshot is marked finished, then the working
        objects go, the snapshot and the lock last."""
        self.journal.finished = True
        self.journal.save()
        stage("journal marked finished")
        self._remove_working()
        stage("journal removed")


def prepare_out(out: str, overwrite: bool) -> None:
    """The checks of the local writer on a remote directory, for the Beam writer:
    refuses one that holds a complete dataset (unless ``overwrite``) or files that are
    not a recordforge dataset's; ``overwrite`` removes what is there."""
    if _fs.isfile(out):
        raise FileExistsError(f"{out}: exists and is not a directory")
    try:
        entries = _fs.listdir(out)
    except FileNotFoundError:
        entries = []
    if entries:
        _refuse_or_clear(out, entries, overwrite)
    # A killed run's workers leave their shards' unfinished uploads (each streams its
    # shard to the store): invisible, but billed.
    abort_uploads(out)


def _refuse_or_clear(out: str, entries: list[tuple[str, bool]], overwrite: bool) -> None:
    names = {n for n, _ in entries}
    if MANIFEST_NAME not in names and JOURNAL_NAME not in names:
        raise FileExistsError(
            f"{out}: directory is not empty and is not a recordforge dataset; refusing to write"
        )
    if overwrite or JOURNAL_NAME in names:
        # With the marker there, an earlier run did not finish (the Beam writer does not
        # resume remotely): it starts over, leftovers of the killed run included.
        for name, directory in entries:
            _remove(out, name, directory)
    elif MANIFEST_NAME in names:
        raise FileExistsError(
            f"{out}: already holds a complete dataset; use --overwrite (overwrite=True) "
            "to replace it"
        )

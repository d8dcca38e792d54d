"""The output directory of a conversion: its states, its lock, its journal, its commit.

A conversion moves its directory through these states. Each line says what is on disk
and what a rerun of the same command does from there; a kill at any moment leaves one of
them, and the rerun ends with the bytes an uninterrupted run writes (shards, ``.idx``
files and ``dataset.json``, its report included):

``EMPTY``
    ``out`` is absent or empty, or holds only recordforge's working files (a kill
    before the journal's first save). A run removes the working files and starts.
``STARTED``
    ``.recordforge.lock`` (pid, host, fingerprint of the command) and
    ``.recordforge-progress.json``, the journal: the command's fingerprint, the report so
    far, and per split the completed shards and the input position reached. Shard k is
    being written as ``.<split>-<k>.shard.partial``. A rerun removes the partial file and
    goes on from the last journalled shard; the report continues from the journal's.
``SHARD DONE``
    shard k is closed, its ``.idx`` written, renamed to ``.<split>-<k>.shard`` and only
    then added to the journal. A kill before the journal save: the rerun writes shard k
    again over it (the journal does not know it).
``WRITTEN``
    the journal marks every split done. A rerun goes to the commit.
``COMMITTING``
    shards (and indexes) are being renamed to their final names; a rerun renames those
    not renamed yet (a name already in place counts as renamed).
``MANIFESTED``
    ``dataset.json`` is written (atomically: a temporary name, then a rename); the
    journal is still there, so the directory is still unfinished. A rerun writes the same
    ``dataset.json`` again and goes on.
``DONE``
    the journal, then the lock, are removed. A rerun is refused (the dataset is complete)
    unless ``--overwrite``; a kill between the two removals leaves a stale lock whose
    fingerprint is the command's: the rerun removes it and returns the dataset.

``--overwrite`` of a complete dataset first saves a journal marked ``clearing``, then
removes the old files: a kill in between leaves a directory the rerun clears again.
Readers (``open_dataset``, ``verify``, ``count``, ``info``...) refuse every state but
``DONE``: :func:`check_finished`.

One conversion at a time: the lock is an ``flock`` on ``.recordforge.lock``, which the
kernel releases when its holder dies, so a lock file whose flock is free is stale and is
taken over (with a :class:`~recordforge.RecordforgeWarning`). A lock file naming another
host is not taken over: recordforge cannot tell whether that process runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge._atomic import append_line, stage, write_bytes_atomic
from recordforge._lock import LOCK_NAME, Lock, live_holder
from recordforge.errors import (
    UnfinishedConversionError,
)

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "Journal",
    "OutputDir",
    "check_finished",
    "command_fingerprint",
    "is_working",
    "locked",
    "manifest_files",
    "prepare_out",
    "refuse_foreign",
    "working_files",
]

MANIFEST_NAME = "dataset.json"
JOURNAL_NAME = ".recordforge-progress.json"
# recordforge's own working files: journal, lock, temporary JSON, shards and indexes
# under their intermediate names, partial files (of this writer and of the Beam one).
_WORKING = re.compile(
    r"^\.+(recordforge[-.].*|.+\.\d+-[0-9a-f]{8}\.tmp|.+\.shard(\.idx)?(\.partial)?|.+\.partial)$"
)


def is_working(name: str) -> bool:
    """Whether ``name`` is one of recordforge's working files."""
    return bool(_WORKING.match(name))


def working_files(directory: Path) -> list[str]:
    """Names of recordforge's working files in ``directory`` (sorted)."""
    return sorted(e.name for e in os.scandir(directory) if _WORKING.match(e.name))


def unfinished_reason(directory: str | os.PathLike[str]) -> str | None:
    """Why ``directory`` is not a finished dataset (its conversion is unfinished or
    running), or None when nothing of a conversion is left in it."""
    if _fs.is_url(directory):
        found = _fs.exists(_fs.join(str(directory), JOURNAL_NAME))
        return f"{JOURNAL_NAME} is there" if found else None
    path = Path(directory)
    if not path.is_dir():
        return None
    names = working_files(path)
    if not names:
        return None
    if LOCK_NAME in names:
        holder = live_holder(path / LOCK_NAME)
        if holder is not None:
            return f"a conversion is writing into it ({holder})"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"it holds {shown}"


def check_finished(directory: str | os.PathLike[str]) -> None:
    """Raises :class:`~recordforge.UnfinishedConversionError` unless ``directory`` is
    free of an unfinished or running conversion."""
    reason = unfinished_reason(directory)
    if reason is not None:
        raise UnfinishedConversionError(
            f"{directory}: unfinished conversion ({reason}): rerun the same command to "
            "resume, or convert again with --overwrite (overwrite=True) to start over"
        )


class Journal:
    """``.recordforge-progress.json``: what a rerun needs to resume (the command's
    fingerprint, per split the completed shards and the input position, the report).

    Its first line is a snapshot (one JSON object); each completed shard then appends one
    line (the shard, the position, what the report gained), fsynced, so a save costs the
    same at shard 10 as at shard 10,000. A torn last line (a kill inside the append) is
    ignored: that shard is written again. A loaded journal is rewritten whole at its
    first save."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.path = out / JOURNAL_NAME
        self.fingerprint = fingerprint
        self.splits: dict[str, dict[str, Any]] = {}
        self.report: dict[str, Any] | None = None
        self.clearing = False
        self._whole = True  # the next save rewrites the file
        self._saved = (0, 0)  # skipped and notes entries the file holds

    @classmethod
    def load(cls, out: Path, fingerprint: dict[str, Any]) -> Journal | None:
        """The journal in ``out`` when it is this command's, None when it is another's."""
        return cls.parse(out, fingerprint, (out / JOURNAL_NAME).read_bytes().split(b"\n"))

    @classmethod
    def parse(cls, out: Any, fingerprint: dict[str, Any], lines: list[bytes]) -> Journal | None:
        """The journal of ``lines`` (its snapshot, then one entry a line) when it is this
        command's, None when it is another's."""
        try:
            head = json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(head, dict) or head.get("fingerprint") != fingerprint:
            return None
        journal = cls(out, fingerprint)
        journal._read_head(head)
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break  # torn by a kill inside the append
            journal._apply(entry)
        return journal

    def _read_head(self, head: dict[str, Any]) -> None:
        self.splits = dict(head.get("splits") or {})
        self.report = head.get("report")
        self.clearing = bool(head.get("clearing", False))

    def _snapshot(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "clearing": self.clearing,
            "splits": self.splits,
            "report": self.report,
        }

    def _apply(self, entry: dict[str, Any]) -> None:
        state = self.split(entry["split"])
        if "shard" in entry:
            state["shards"].append(entry["shard"])
        state["position"], state["done"] = entry["position"], entry["done"]
        gained = entry["report"]
        report = dict(self.report or {})
        for name in ("items", "records", "counters"):
            report[name] = gained[name]
        for name in ("skipped", "notes"):
            report[name] = [*report.get(name, []), *gained[name]]
        self.report = report

    def split(self, name: str) -> dict[str, Any]:
        return self.splits.setdefault(name, {"shards": [], "position": [0, 0], "done": False})

    def save(self) -> None:
        """Rewrites the whole journal (atomically)."""
        # One line: the lines after it are appended.
        self._write_snapshot(json.dumps(self._snapshot(), separators=(",", ":")).encode("utf-8"))
        self._whole = False
        report = self.report or {}
        self._saved = (len(report.get("skipped", [])), len(report.get("notes", [])))
        stage("journal saved")

    def _write_snapshot(self, line: bytes) -> None:
        write_bytes_atomic(self.path, line + b"\n")

    def _append(self, line: bytes) -> None:
        append_line(self.path, line)

    def record(
        self,
        split: str,
        report: dict[str, Any],
        *,
        shard: dict[str, Any] | None = None,
        position: list[int] | None = None,
        done: bool = False,
    ) -> None:
        """A completed shard (with the input position after it), or a split done, and
        the report at that moment."""
        state = self.split(split)
        if shard is not None:
            state["shards"].append(shard)
        if position is not None:
            state["position"] = position
        state["done"] = done
        self.report = report
        if self._whole:
            self.save()
            return
        skipped, notes = self._saved
        entry: dict[str, Any] = {
            "split": split,
            "position": state["position"],
            "done": done,
            "report": {
                "items": report["items"],
                "records": report["records"],
                "counters": report["counters"],
                "skipped": report["skipped"][skipped:],
                "notes": report["notes"][notes:],
            },
        }
        if shard is not None:
            entry["shard"] = shard
        self._append(json.dumps(entry, separators=(",", ":")).encode())
        self._saved = (len(report["skipped"]), len(report["notes"]))
        stage("journal saved")


def manifest_files(read: Callable[[], bytes | None]) -> set[str] | None:
    """``dataset.json`` and the files it lists when ``read()`` gives a recordforge
    manifest (None otherwise: unreadable, absent, another tool's)."""
    try:
        data = json.loads(read() or b"")
        if data["tool"]["name"] != "recordforge":
            return None
        files = {shard["file"] for split in data["splits"].values() for shard in split["shards"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all(isinstance(f, str) for f in files):
        return None
    return {MANIFEST_NAME, *files, *(f"{f}.idx" for f in files)}


def refuse_foreign(where: object, others: set[str], listed: set[str] | None) -> None:
    """Refuses to write into ``where``, whose entries ``others`` are not recordforge's
    working files, unless they are the recordforge dataset ``listed`` (its manifest and
    the files it lists: None when there is none)."""
    foreign = sorted(others - (listed or set()))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        what = "is not a recordforge dataset" if listed is None else "holds files"
        raise FileExistsError(
            f"{where}: directory is not empty and {what} ({shown}); refusing to write"
        )


def _dataset_files(out: Path) -> set[str] | None:
    return manifest_files((out / MANIFEST_NAME).read_bytes)


def _missing_dirs(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist (yet), deepest first."""
    missing = []
    for path in (out, *out.absolute().parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_dirs(paths: list[Path]) -> None:
    """Removes directories this run made, deepest first, while they are empty."""
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            return


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prepare_out(out: Path, overwrite: bool) -> None:
    """The checks of a conversion on its output directory, without the lock and the
    journal (the Beam writer's): creates it, refuses a foreign non-empty directory and
    a complete dataset (unless ``overwrite``, which empties it)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    names = {e.name for e in os.scandir(out)}
    ours = set(working_files(out))
    if names - ours and MANIFEST_NAME not in names and JOURNAL_NAME not in names:
        raise FileExistsError(
            f"{out}: directory is not empty and is not a recordforge dataset; refusing to write"
        )
    if overwrite:
        for name in names - {LOCK_NAME}:
            _remove(out / name)
    elif MANIFEST_NAME in names and JOURNAL_NAME not in names:
        raise FileExistsError(
            f"{out}: already holds a complete dataset; use --overwrite (overwrite=True) "
            "to replace it"
        )


@contextlib.contextmanager
def locked(out: Path, fingerprint: dict[str, Any]) -> Any:
    """Holds the lock of ``out`` (created if needed) for a conversion that keeps its own
    journal (the Beam writer's driver)."""
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    lock = Lock(out, digest)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclasses.dataclass
class OutputDir:
    """An output directory held by one conversion: locked, its state read, its journal
    loaded or started. Use :meth:`open` as a context manager; :meth:`done` after
    ``dataset.json`` is written."""

    out: Path
    journal: Journal
    lock: Lock
    # The directories this run made (``out`` first, then its parents), removed again when
    # a run fails before anything worth resuming.
    created: list[Path]
    # A complete dataset this same command wrote (a kill came after its journal was
    # removed): nothing to do.
    complete: bool = False
    resumed: bool = False

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, out: Path, fingerprint: dict[str, Any], overwrite: bool, report: dict[str, Any]
    ) -> Any:
        """Creates (if needed), locks and reads ``out``; ``report`` is the report a new
        conversion starts from (a resumed one continues the journal's)."""
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a directory")
        created = _missing_dirs(out)
        out.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        lock = Lock(out, digest)
        try:
            lock.acquire()
        except BaseException:
            _remove_dirs(created)
            raise
        journal = Journal(out, fingerprint)
        journal.report = report
        target = cls(out, journal, lock, created)
        try:
            try:
                target._prepare(overwrite)
            except BaseException:
                # Refused (or failed) before changing anything: a directory this run
                # made goes again.
                if created and set(working_files(out)) <= {LOCK_NAME}:
                    lock.release()
                    _remove_dirs(created)
                raise
            try:
                yield target
            except BaseException:
                target._abandon()
                raise
        finally:
            lock.release()

    def _prepare(self, overwrite: bool) -> None:
        out = self.out
        names = {e.name for e in os.scandir(out)} - {LOCK_NAME}
        ours = set(working_files(out))
        has_journal = JOURNAL_NAME in names
        journal = Journal.load(out, self.journal.fingerprint) if has_journal else None
        if not has_journal and names - ours:
            # Only a recordforge dataset (its manifest and the files it lists) is ours to
            # replace: a folder that merely has a dataset.json is someone else's.
            refuse_foreign(out, names - ours, _dataset_files(out))
        if overwrite and (names - ours or has_journal):
            # Marked first, so that a kill while clearing leaves a directory that is
            # recognisably ours and unfinished.
            self.journal.clearing = True
            self.journal.save()
            self._clear()
            self.journal.clearing = False
            self.journal.save()
            return
        if has_journal:
            if journal is None:
                raise FileExistsError(
                    f"{out}: holds an unfinished conversion started with other options or "
                    "input (or the input files changed since: their sizes and modification "
                    "times are part of the command); rerun that command on that input to "
                    "finish it, or use --overwrite (overwrite=True) to start over"
                )
            initial, self.journal = self.journal.report, journal
            if journal.report is None:
                journal.report = initial
            if journal.clearing:
                self._clear()
                journal.clearing = False
                journal.splits = {}
                journal.report = initial
                journal.save()
                return
            self.resumed = True
            self._remove_temporary()
            return
        if MANIFEST_NAME in names:
            stale = self.lock.stale
            if (
                stale is not None
                and stale.get("finished") is True
                and stale.get("fingerprint") == self.lock.digest
            ):
                self.complete = True
                self._remove_temporary()
                return
            raise FileExistsError(
                f"{out}: already holds a complete dataset; use --overwrite (overwrite=True) "
                "to replace it"
            )
        # Empty, or only working files left by a kill before the first journal save.
        for name in ours - {LOCK_NAME}:
            _remove(out / name)
        self.journal.save()

    def _clear(self) -> None:
        keep = {LOCK_NAME, JOURNAL_NAME}
        for entry in os.scandir(self.out):
            if entry.name not in keep:
                _remove(self.out / entry.name)
                stage("cleared one old file")

    def _remove_temporary(self) -> None:
        """Partial files and temporary JSON of a killed run (never a shard the journal
        lists: those are kept under their intermediate or final names)."""
        for name in working_files(self.out):
            if name.endswith((".partial", ".tmp")):
                (self.out / name).unlink(missing_ok=True)

    def _abandon(self) -> None:
        """After an error: a directory with nothing worth resuming is left as found
        (removed if this run created it); otherwise the journal stays for a rerun."""
        if self.complete:
            return
        self._remove_temporary()
        if any(s["shards"] for s in self.journal.splits.values()) or self.journal.clearing:
            return
        if (self.out / MANIFEST_NAME).exists():
            return
        self.journal.path.unlink(missing_ok=True)
        if self.created:
            names = set(working_files(self.out)) - {LOCK_NAME}
            for name in names:
                _remove(self.out / name)
            self.lock.release()
            _remove_dirs(self.created)

    def done(self) -> None:
        """After ``dataset.json``: the journal goes, then any working file left."""
        self.lock.write(finished=True)
        stage("lock marked finished")
        self.journal.path.unlink(missing_ok=True)
        stage("journal removed")
        for name in set(working_files(self.out)) - {LOCK_NAME}:
            _remove(self.out / name)


#: Keys of a source description whose values are names, never paths (a class folder's
#: name is not a path from the current directory).
_NAMES = frozenset(("classes",))


def _local_paths(value: Any) -> Iterable[str]:
    """The strings of a source description that name existing local files or folders."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # (a file: URL naming another host: as it is)
            value = _fs.fspath(value)
        if value and not _fs.is_url(value) and "\0" not in value and os.path.exists(value):
            yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k not in _NAMES:
                yield from _local_paths(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _local_paths(v)


def _resolved(value: Any) -> Any:
    """A source description with its local paths made absolute (links resolved), so a
    rerun that spells a path differently is the same conversion."""
    if isinstance(value, str):
        local = list(_local_paths(value))
        return os.path.realpath(local[0]) if local else value
    if isinstance(value, Mapping):
        return {k: v if k in _NAMES else _resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    return value


def _input_identity(source: Mapping[str, Any]) -> dict[str, list[int]]:
    """Size and modification time of every local input a source names: a rerun over
    changed input starts over instead of resuming with a mix of old and new records."""
    identity = {}
    for path in sorted(set(_local_paths(source))):
        info = os.stat(path)
        identity[os.path.realpath(path)] = [info.st_size, info.st_mtime_ns]
    return identity


def changed_inputs(fingerprint: Mapping[str, Any], source: Mapping[str, Any]) -> list[str]:
    """The local input files of ``source`` whose size or modification time is no longer
    the one ``fingerprint`` (:func:`command_fingerprint`) took (or that are gone). Not
    directories: theirs changes with an entry added (the output directory made inside
    an image folder), not with a file's contents."""
    taken = fingerprint.get("inputs", {})
    try:
        now = _input_identity(source)
    except OSError as e:  # one is gone
        return [str(e.filename or e)]
    return [
        path
        for path in sorted(set(taken) | set(now))
        if taken.get(path) != now.get(path) and not os.path.isdir(path)
    ]


def command_fingerprint(
    options: Mapping[str, Any], splits: Sequence[str], source: Mapping[str, Any]
) -> dict[str, Any]:
    """What makes a rerun the same conversion (journal and lock carry it): the write
    options, the split names, the source description with its local paths resolved, and
    the size and modification time of every local input it names."""
    return {
        "options": dict(options),
        "splits": list(splits),
        "source": _resolved(json.loads(json.dumps(source, default=str))),
        "inputs": _input_identity(source),
    }

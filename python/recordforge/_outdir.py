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
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge._atomic import stage, write_json_atomic
from recordforge.errors import (
    DirectoryLockedError,
    RecordforgeWarning,
    UnfinishedConversionError,
)

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "Journal",
    "OutputDir",
    "check_finished",
    "locked",
    "prepare_out",
    "working_files",
]

MANIFEST_NAME = "dataset.json"
JOURNAL_NAME = ".recordforge-progress.json"
LOCK_NAME = ".recordforge.lock"
# recordforge's own working files: journal, lock, temporary JSON, shards and indexes
# under their intermediate names, partial files (of this writer and of the Beam one).
_WORKING = re.compile(
    r"^\.+(recordforge[-.].*|dataset\.json\..*\.tmp|.+\.shard(\.idx)?(\.partial)?|.+\.partial)$"
)


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
        holder = _live_holder(path / LOCK_NAME)
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


def _holder_text(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')}"


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    if not data.strip():
        return None
    try:
        holder = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


def _live_holder(path: Path) -> str | None:
    """``"pid N on host H"`` when a process holds the flock of the lock file ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            return _holder_text(holder) if holder else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class _Lock:
    """The flock on ``.recordforge.lock``, with the holder's pid, host and fingerprint."""

    def __init__(self, directory: Path, digest: str) -> None:
        self.path = directory / LOCK_NAME
        self.digest = digest
        self.fd: int | None = None
        # What the lock file said when it was taken over from a dead process.
        self.stale: dict[str, Any] | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise DirectoryLockedError(
                    f"{self.path.parent}: another conversion is writing into it "
                    f"({_holder_text(holder) if holder else 'another process'}); wait for it "
                    "to finish or stop it"
                ) from None
            # The previous holder may have removed the file between our open and flock.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (
                mine.st_dev,
                mine.st_ino,
            ):
                break
            os.close(fd)
        previous = _read_holder(fd)
        host = socket.gethostname()
        if previous is not None and previous.get("host") not in (host, "?"):
            os.close(fd)
            raise DirectoryLockedError(
                f"{self.path.parent}: locked by {_holder_text(previous)}, another machine; "
                f"recordforge cannot tell whether it still runs. If it does not, remove "
                f"{self.path} and rerun"
            )
        if previous is not None:
            self.stale = previous
            warnings.warn(
                f"{self.path.parent}: took over the lock left by {_holder_text(previous)}, "
                "which is no longer running",
                RecordforgeWarning,
                stacklevel=4,
            )
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": host, "fingerprint": self.digest}
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        self.fd = fd
        stage("lock taken")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


class Journal:
    """``.recordforge-progress.json``: what a rerun needs to resume (the command's
    fingerprint, per split the completed shards and the input position, the report)."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.path = out / JOURNAL_NAME
        self.fingerprint = fingerprint
        self.splits: dict[str, dict[str, Any]] = {}
        self.report: dict[str, Any] | None = None
        self.clearing = False

    @classmethod
    def load(cls, out: Path, fingerprint: dict[str, Any]) -> Journal | None:
        """The journal in ``out`` when it is this command's, None when it is another's."""
        try:
            data = json.loads((out / JOURNAL_NAME).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # written whole by rename: not ours
        if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
            return None
        journal = cls(out, fingerprint)
        journal.splits = dict(data.get("splits") or {})
        journal.report = data.get("report")
        journal.clearing = bool(data.get("clearing", False))
        return journal

    def split(self, name: str) -> dict[str, Any]:
        return self.splits.setdefault(name, {"shards": [], "position": [0, 0], "done": False})

    def save(self, report: dict[str, Any] | None = None) -> None:
        if report is not None:
            self.report = report
        write_json_atomic(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "clearing": self.clearing,
                "splits": self.splits,
                "report": self.report,
            },
        )
        stage("journal saved")


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
    lock = _Lock(out, digest)
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
    lock: _Lock
    created: bool
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
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        lock = _Lock(out, digest)
        try:
            lock.acquire()
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
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
                    with contextlib.suppress(OSError):
                        out.rmdir()
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
        foreign = names - ours - {MANIFEST_NAME}
        if not has_journal and MANIFEST_NAME not in names and foreign:
            raise FileExistsError(
                f"{out}: directory is not empty and is not a recordforge dataset; refusing to write"
            )
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
                    "input; rerun that command to finish it, or use --overwrite "
                    "(overwrite=True) to start over"
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
            if stale is not None and stale.get("fingerprint") == self.lock.digest:
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
            with contextlib.suppress(OSError):
                self.out.rmdir()

    def done(self) -> None:
        """After ``dataset.json``: the journal goes, then any working file left."""
        self.journal.path.unlink(missing_ok=True)
        stage("journal removed")
        for name in set(working_files(self.out)) - {LOCK_NAME}:
            _remove(self.out / name)

"""Hostile tests of the local writer on worker processes (``recordforge/_parallel.py``,
``recordforge/_workers.py``): a worker killed while it writes its pieces into a shard
(``pwritev``) or while it finishes one (``fsync``, checksum), Ctrl-C, the parent killed;
exceptions of ``to_records`` that are not item errors, or that do not pickle; odd
inputs (no items, every item refused, thousands of tiny items, records larger than a
chunk); several splits, each with its own start method; short writes.

Workers are made to misbehave from inside: the conversion, run in a worker process,
replaces ``os.pwritev`` / ``os.fsync`` there (never in the test process) or signals its
parent. Kills run in a subprocess.

Eleven of these found bugs, since fixed: a task's OSError taken for a worker's death, a
hang on items that do not pickle, ItemError subclasses that did not unpickle, errors
raised out of item order, no item named in a worker's exception, a conversion that
spawned workers cannot load called a death, workers leaked or printing tracebacks when
interrupted while starting, chunk memory sized by the average item, shard modes that
ignored the umask, and a full disk naming no file.
"""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.context
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

import recordforge as rf
from recordforge import _parallel, _workers
from recordforge.sharding import FRAME_OVERHEAD

# -- helpers -----------------------------------------------------------------------------


def listing(out: Path) -> dict[str, bytes]:
    """Every file of ``out`` (hidden ones too) but the lock, which names a process."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != ".recordforge.lock"}


def partials(out: Path) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.endswith(".partial")) if out.exists() else []


def in_worker() -> bool:
    """Whether this runs in a worker process (never patch the test process itself)."""
    return multiprocessing.current_process().name.startswith("recordforge-worker")


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "pad": b"x" * (i % 13)} for i in range(start, start + n)]


def varied(item: dict[str, Any]) -> list[bytes]:
    """0 to 3 records an item; ids 3 mod 7 are item errors."""
    i = item["id"]
    if i % 7 == 3:
        raise rf.ItemError(f"row {i}", "ids 3 mod 7 are refused")
    return [rf.encode_example({**item, "copy": k}) for k in range(i % 4)]


def one_to_three(item: dict[str, Any]) -> list[bytes]:
    return [rf.encode_example({**item, "copy": k}) for k in range(1 + item["id"] % 3)]


def environ(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDFORGE_", "HOSTILE_"))}
    return {**clean, **extra}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return fields.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The processes of ``pids`` still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- no items, every item refused, many tiny items, large records -------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "gzip", "index": True}, {"num_shards": 3, "checksum": "sha256"}],
    ids=["plain", "gzip-index", "num_shards-sha256"],
)
def test_splits_without_items_write_the_files_of_one_worker(
    options: dict[str, Any], tmp_path: Path
) -> None:
    splits = {"empty": [], "some": rows(9), "none": []}
    for workers in (1, 2):
        rf.write_dataset(
            splits=splits, out=tmp_path / f"w{workers}", to_records=varied, on_error="skip",
            workers=workers, **options,
        )  # fmt: skip
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


def refuse_all(item: dict[str, Any]) -> list[bytes]:
    raise rf.ItemError(f"row {item['id']}", "refused")


def test_a_split_with_every_item_refused(tmp_path: Path) -> None:
    for workers in (1, 3):
        manifest = rf.write_dataset(
            splits={"train": rows(40), "test": rows(5, 100)}, out=tmp_path / f"w{workers}",
            to_records=refuse_all, on_error="skip", workers=workers, max_records=2,
            compression="gzip",
        )  # fmt: skip
        assert len(manifest.report["skipped"]) == 45
        assert manifest.report["items"] == 45
    assert listing(tmp_path / "w3") == listing(tmp_path / "w1")
    with pytest.raises(rf.ItemError, match="row 0: refused"):
        rf.write_dataset(rows(40), tmp_path / "raise", to_records=refuse_all, workers=2)
    assert not (tmp_path / "raise").exists()


def test_thousands_of_tiny_items_some_empty(tmp_path: Path) -> None:
    progress: dict[int, list[int]] = {}
    for workers in (1, 3):
        seen = progress.setdefault(workers, [0, 0])

        def count(records: int, payload: int, seen: list[int] = seen) -> None:
            seen[0] += records
            seen[1] += payload

        manifest = rf.write_dataset(
            rows(3000), tmp_path / f"w{workers}", to_records=varied, on_error="skip",
            workers=workers, max_records=97, index=True, progress=count,
        )  # fmt: skip
        assert manifest.report["items"] == 3000
    assert listing(tmp_path / "w3") == listing(tmp_path / "w1")
    assert progress[3] == progress[1] and progress[1][0] > 3000


def large(item: dict[str, Any]) -> list[bytes]:
    """Every third item: two records of about 1.5 MB (compressible); else a small one."""
    i = item["id"]
    if i % 3 == 0:
        return [rf.encode_example({"id": i, "blob": bytes([65 + k]) * (3 << 19)}) for k in (0, 1)]
    return [rf.encode_example({"id": i, "blob": b"s" * (100 + i)})]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_records_larger_than_a_chunk_and_a_read_block(
    compression: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items of 3 MB where a chunk is about 1 MB, compressed shards read from the
    spilled chunks 100 kB a block (a frame larger than a block is read whole)."""
    options: dict[str, Any] = {"max_bytes": "4MB", "index": True, "compression": compression}
    rf.write_dataset(rows(14), tmp_path / "w1", to_records=large, **options)
    monkeypatch.setenv("RECORDFORGE_START_METHOD", "fork")  # workers see the patches
    monkeypatch.setattr(_parallel, "CHUNK_BYTES", 1 << 20)
    monkeypatch.setattr(_workers, "READ_BLOCK", 100_000)
    rf.write_dataset(rows(14), tmp_path / "w2", to_records=large, workers=2, **options)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


# -- short writes --------------------------------------------------------------------------

_REAL_PWRITEV = os.pwritev


def _short_pwritev(fd: int, buffers: Any, offset: int) -> int:
    """``pwritev`` that writes 1 to 61 bytes a call (as a signal or a full pipe may)."""
    budget = 1 + (offset * 7919) % 61
    views = []
    for buffer in buffers:
        view = memoryview(buffer)[:budget]
        views.append(view)
        budget -= len(view)
        if not budget:
            break
    return _REAL_PWRITEV(fd, views, offset)


def short_writes(item: dict[str, Any]) -> list[bytes]:
    if in_worker():
        setattr(os, "pwritev", _short_pwritev)  # noqa: B010  (in this worker only)
    return one_to_three(item)


def test_short_pwritev_writes_are_completed(tmp_path: Path) -> None:
    options: dict[str, Any] = {"max_records": 7, "index": True, "checksum": "sha256"}
    rf.write_dataset(rows(60), tmp_path / "w1", to_records=short_writes, **options)
    rf.write_dataset(rows(60), tmp_path / "w2", to_records=short_writes, workers=2, **options)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


def full_disk(item: dict[str, Any]) -> list[bytes]:
    if in_worker() and item["id"] == 12:
        setattr(os, "pwritev", _no_space)  # noqa: B010  (in this worker only)
    return one_to_three(item)


def _no_space(fd: int, buffers: Any, offset: int) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_in_a_worker_names_the_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OSError) as caught:
        rf.write_dataset(rows(40), out, to_records=full_disk, workers=2, max_records=3)
    assert caught.value.errno == errno.ENOSPC
    assert partials(out) == []
    assert str(out) in str(caught.value), str(caught.value)


def missing_file(item: dict[str, Any]) -> list[bytes]:
    if item["id"] == 7:
        with open(f"/nonexistent/recordforge-test/img{item['id']}.jpg", "rb"):
            pass
    return one_to_three(item)


def test_an_os_error_of_to_records_is_not_called_a_worker_death(tmp_path: Path) -> None:
    messages = []
    for workers in (1, 2):
        with pytest.raises(FileNotFoundError) as caught:
            rf.write_dataset(rows(20), tmp_path / f"w{workers}", to_records=missing_file,
                             workers=workers)  # fmt: skip
        messages.append(str(caught.value))
    assert messages[1] == messages[0]
    assert "img7.jpg" in messages[0]


def test_shard_files_have_the_modes_of_one_worker(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        modes = []
        for workers in (1, 2):
            out = tmp_path / f"w{workers}"
            rf.write_dataset(rows(20), out, to_records=one_to_three, workers=workers,
                             max_records=5, index=True)  # fmt: skip
            modes.append({p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()})
    finally:
        os.umask(old)
    assert modes[1] == modes[0]


# -- Ctrl-C while the workers start ----------------------------------------------------------


def test_an_interrupt_while_workers_start_leaves_none_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDFORGE_START_METHOD", "fork")
    real = multiprocessing.context.ForkProcess._Popen
    started: list[Any] = []

    def popen(process: Any) -> Any:
        if started:
            raise KeyboardInterrupt  # Ctrl-C as the second worker starts
        started.append(process)
        return real(process)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "_Popen", staticmethod(popen))
    with pytest.raises(KeyboardInterrupt):
        rf.write_dataset(rows(20), tmp_path / "out", to_records=one_to_three, workers=3)
    left = [p for p in started if p.is_alive()]
    for p in left:  # not to leave them to the rest of the test run
        p.kill()
        p.join()
    assert left == []
    assert partials(tmp_path / "out") == []


GROUP_CTRL_C = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    MARKS = Path(os.environ["HOSTILE_MARKS"])
    if __name__ == "__mp_main__":
        # A spawned worker, starting (it imports the parent's main module): say so, and
        # take a moment, as importing numpy and recordforge does on a busy machine.
        (MARKS / str(os.getpid())).touch()
        time.sleep(2)

    import recordforge as rf
    from recordforge import _parallel

    def to_records(item):
        return [rf.encode_example({"id": item["id"]})]

    if __name__ == "__main__":
        real = _parallel._SplitRun.__init__

        def started(self, *args):
            real(self, *args)
            deadline = time.monotonic() + 30
            while len(os.listdir(MARKS)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            # Ctrl-C in a terminal: the whole foreground group. The parent takes it
            # half a second later, as when it is busy in native code (its handler runs
            # between bytecodes), so its kill of the workers does not win the race.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            os.killpg(0, signal.SIGINT)
            time.sleep(0.5)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

        _parallel._SplitRun.__init__ = started
        try:
            rf.write_dataset([{"id": i} for i in range(20)], sys.argv[1],
                             to_records=to_records, workers=2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    """
)


def test_ctrl_c_to_the_process_group_while_workers_start_prints_no_traceback(
    tmp_path: Path,
) -> None:
    script, marks = tmp_path / "group.py", tmp_path / "marks"
    script.write_text(GROUP_CTRL_C)
    marks.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        env=environ(RECORDFORGE_START_METHOD="spawn", HOSTILE_MARKS=str(marks)),
        capture_output=True, text=True, timeout=60, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert len(os.listdir(marks)) == 2
    assert wait_gone([int(p) for p in os.listdir(marks)]) == []
    assert "Traceback" not in done.stderr, done.stderr


# -- several splits, the start method chosen for each --------------------------------------


def test_splits_after_a_thread_starts_are_written_by_spawned_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits = {"a": rows(30), "b": rows(20, 100), "c": rows(7, 200)}
    options: dict[str, Any] = {"max_records": 4, "index": True, "checksum": "sha256"}
    rf.write_dataset(splits=splits, out=tmp_path / "w1", to_records=varied, on_error="skip",
                     **options)  # fmt: skip
    methods: list[str] = []
    real = _parallel.start_method

    def spy() -> str:
        methods.append(real())
        return methods[-1]

    monkeypatch.setattr(_parallel, "start_method", spy)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)

    def progress(records: int, payload: int) -> None:
        if not thread.is_alive() and not stop.is_set():
            thread.start()  # a thread of the caller's, alive from the first split on

    try:
        # (The warning names 3 of the threads: in a whole test run, maybe not this one.)
        with pytest.warns(rf.RecordforgeWarning, match="spawned, not forked: other threads"):
            rf.write_dataset(
                splits=splits, out=tmp_path / "w2", to_records=varied, on_error="skip",
                workers=2, progress=progress, **options,
            )  # fmt: skip
    finally:
        stop.set()
        thread.join()
    # The first split forks where nothing else runs (a whole test run may hold threads).
    assert len(methods) == 3 and methods[1:] == ["spawn", "spawn"], methods
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


# -- on_error="raise" in the middle of a chunk ---------------------------------------------


def refuse_10(item: dict[str, Any]) -> list[bytes]:
    if item["id"] == 10:
        raise rf.ItemError("row 10", "refused")
    return one_to_three(item)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_an_item_error_raised_mid_chunk_keeps_the_shards_of_one_worker(
    compression: str | None, tmp_path: Path
) -> None:
    """Items 8..11 are one chunk (chunks start at 4 items); shards are cut inside item 8,
    then item 10 fails: the shards committed (and the journal) are one worker's."""
    for workers in (1, 2):
        with pytest.raises(rf.ItemError, match="row 10: refused"):
            rf.write_dataset(
                rows(40), tmp_path / f"w{workers}", to_records=refuse_10, workers=workers,
                max_records=2, index=True, compression=compression,
            )  # fmt: skip
        assert partials(tmp_path / f"w{workers}") == []
    kept = listing(tmp_path / "w1")
    assert sum(n.endswith(".shard") for n in kept) >= 6
    assert listing(tmp_path / "w2") == kept


# -- exceptions of to_records that are not item errors -------------------------------------


def broken(item: dict[str, Any]) -> Any:
    i = item["id"]
    if i == 9:
        kind = os.environ["HOSTILE_KIND"]
        if kind == "value":
            raise ValueError("row 9 is broken")
        if kind == "none":
            return None
        if kind == "str":
            return "not a list of records"
        if kind == "generator":
            return (rf.encode_example({"k": k}) for k in range(2))
    return one_to_three(item)


@pytest.mark.parametrize("kind", ["value", "none", "str", "generator"])
def test_to_records_failing_surfaces_the_error_of_one_worker(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_KIND", kind)
    errors = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            rf.write_dataset(rows(30), out, to_records=broken, workers=workers, max_records=3)
        assert time.monotonic() - started < 30
        errors.append((type(caught.value), str(caught.value)))
        assert partials(out) == []
    # The same exception (its words may differ where the worker calls len() first).
    assert errors[1][0] is errors[0][0] and errors[1][1], errors
    if kind in ("value", "str"):
        assert errors[1] == errors[0]


class TwoArguments(Exception):
    """An exception whose pickle does not load (its constructor takes two arguments)."""

    def __init__(self, row: int, why: str) -> None:
        super().__init__(f"row {row}: {why}")


class Carrying(Exception):
    """An exception that does not pickle (it holds a lambda)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.hook = lambda: message


def unpicklable_errors(item: dict[str, Any]) -> list[bytes]:
    if item["id"] == 6:
        if os.environ["HOSTILE_KIND"] == "two":
            raise TwoArguments(6, "two arguments")
        raise Carrying("row 6 carries a lambda")
    return one_to_three(item)


@pytest.mark.parametrize(
    ("kind", "words"),
    [("two", "TwoArguments: row 6: two arguments"), ("lambda", "Carrying: row 6 carries a lambda")],
)
def test_an_exception_that_does_not_pickle_surfaces_by_its_words(
    kind: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_KIND", kind)
    with pytest.raises(rf.RecordforgeError) as caught:
        rf.write_dataset(rows(20), tmp_path / "out", to_records=unpicklable_errors, workers=2)
    assert words in str(caught.value)
    assert partials(tmp_path / "out") == []


class MissingImage(rf.ItemError):
    """An item error of a user's, with its own constructor (a common way to subclass)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "image file missing")


def missing_images(item: dict[str, Any]) -> list[bytes]:
    if item["id"] % 4 == 1:
        raise MissingImage(f"img{item['id']}.jpg")
    return one_to_three(item)


def test_an_item_error_subclass_is_skipped_as_by_one_worker(tmp_path: Path) -> None:
    for workers in (1, 2):
        manifest = rf.write_dataset(
            rows(20), tmp_path / f"w{workers}", to_records=missing_images, on_error="skip",
            workers=workers, max_records=4,
        )  # fmt: skip
        assert manifest.report["skipped"][0] == {"item": "img1.jpg", "reason": "image file missing"}
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


def late_error_first(item: dict[str, Any]) -> list[bytes]:
    """Item 3 (chunk 0, worker 0) is refused, but only once item 5 (chunk 1, worker 1)
    has raised a ValueError; in one process, item 3 comes first."""
    i, mark = item["id"], Path(os.environ["HOSTILE_MARK"])
    if i == 3:
        deadline = time.monotonic() + 5
        while in_worker() and not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if in_worker():
            time.sleep(0.5)  # the ValueError's answer reaches the parent first
        raise rf.ItemError("row 3", "refused")
    if i == 5:
        if in_worker():
            mark.touch()
        raise ValueError("row 5 is broken")
    return one_to_three(item)


def test_the_first_error_in_item_order_is_raised_with_the_shards_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_MARK", str(tmp_path / "mark"))
    kept = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        with pytest.raises(Exception) as caught:
            rf.write_dataset(rows(40), out, to_records=late_error_first, workers=workers,
                             max_records=1)  # fmt: skip
        assert isinstance(caught.value, rf.ItemError), repr(caught.value)
        assert str(caught.value) == "row 3: refused"
        kept.append(listing(out) if out.exists() else {})
    assert any(n.endswith(".shard") for n in kept[0])
    assert kept[1] == kept[0]


def lookup_label(item: dict[str, Any]) -> int:
    labels = {"cat": 1}
    return labels[item.get("label", "dog")]


def labelled(item: dict[str, Any]) -> list[bytes]:
    if item["id"] == 6:
        lookup_label(item)
    return one_to_three(item)


def test_an_exception_in_a_worker_says_where_it_happened(tmp_path: Path) -> None:
    shown = []
    for workers in (1, 2):
        with pytest.raises(KeyError) as caught:
            rf.write_dataset(rows(20), tmp_path / f"w{workers}", to_records=labelled,
                             workers=workers)  # fmt: skip
        shown.append("".join(traceback.format_exception(caught.value)))
    assert "lookup_label" in shown[0]
    assert "lookup_label" in shown[1] or "items 4..7" in shown[1], shown[1]


# -- memory held by a worker ---------------------------------------------------------------


def skewed(item: dict[str, Any]) -> list[bytes]:
    """100 tiny items, then items of 64 kB."""
    size = 100 if item["id"] < 100 else 64 << 10
    return [rf.encode_example({"id": item["id"], "blob": b"z" * size})]


def test_a_chunk_holds_about_chunk_bytes_when_item_sizes_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel, "CHUNK_BYTES", 256 << 10)
    held: list[int] = []
    real = _parallel._SplitRun._converted

    def converted(self: Any, chunk: Any, results: tuple[list[Any], Any]) -> None:
        held.append(sum(int(r[0].sum()) + FRAME_OVERHEAD * len(r[0]) for r in results[0]))
        real(self, chunk, results)

    monkeypatch.setattr(_parallel._SplitRun, "_converted", converted)
    rf.write_dataset(rows(200), tmp_path / "out", to_records=skewed, workers=2)
    assert held and max(held) <= 2 * (256 << 10), [h >> 10 for h in held]


# -- kills, Ctrl-C: in a subprocess ----------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import recordforge as rf

    MODE = os.environ.get("HOSTILE_MODE", "")
    AT = int(os.environ.get("HOSTILE_AT", "-1"))
    PIDS = os.environ.get("HOSTILE_PIDS")
    REAL_FSYNC = os.fsync
    told = []

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    def fsync_or_die(fd):
        # The worker that finishes shard AT of "train" dies there.
        if f".train-{AT:05d}." in os.readlink(f"/proc/self/fd/{fd}"):
            die()
        REAL_FSYNC(fd)

    def to_records(item):
        i = item["id"]
        if PIDS and not told:
            told.append(os.getpid())
            with open(PIDS, "a") as f:
                f.write(f"{os.getpid()}\\n")
        if MODE == "place" and i == AT:
            os.pwritev = die  # this worker's next write into a shard
        if MODE == "finish":
            os.fsync = fsync_or_die
        if MODE == "sigint" and i == AT:
            os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C, to the parent
        if i % 7 == 3:
            raise rf.ItemError(f"row {i}", "ids 3 mod 7 are refused")
        return [rf.encode_example({**item, "copy": k}) for k in range(1 + i % 3)]

    def parent_fsync(fd):
        # The parent syncs a crc32c shard itself: shard AT of "train" fails, or kills it.
        if f".train-{AT:05d}." in os.readlink(f"/proc/self/fd/{fd}"):
            if MODE == "parent-fsync-kill":
                die()
            raise OSError(5, "Input/output error")
        REAL_FSYNC(fd)

    if __name__ == "__main__":
        if MODE.startswith("parent-fsync"):
            os.fsync = parent_fsync  # (forked workers inherit it: they sync no crc32c shard)
        try:
            rf.write_dataset(
                splits={
                    "train": [{"id": i, "pad": b"x" * (i % 13)} for i in range(70)],
                    "test": [{"id": i, "pad": b"y"} for i in range(100, 112)],
                },
                out=sys.argv[1],
                workers=int(sys.argv[2]),
                to_records=to_records,
                on_error="skip",
                max_records=5,
                index=True,
                compression=os.environ.get("HOSTILE_COMPRESSION"),
                checksum=os.environ.get("HOSTILE_CHECKSUM", "crc32c"),
            )
        except (rf.RecordforgeError, OSError) as e:
            print(f"failed: {e}", file=sys.stderr)
            sys.exit(3)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    """
)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "convert.py"
    path.write_text(SCRIPT)
    return path


def run(script: Path, out: Path, workers: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(out), str(workers)],
        env=environ(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run(script, out, 1)
    assert done.returncode == 0, done.stderr
    return listing(out)


def one_worker(script: Path, out: Path, **env: str) -> dict[str, bytes]:
    """The files of the conversion into ``out`` by one worker."""
    done = run(script, out, 1, **env)
    assert done.returncode == 0, done.stderr
    return listing(out)


@pytest.fixture(scope="module")
def gzip_reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return one_worker(
        script, tmp_path_factory.mktemp("reference") / "gzip", HOSTILE_COMPRESSION="gzip"
    )


@pytest.fixture(scope="module")
def sha256_reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return one_worker(
        script, tmp_path_factory.mktemp("reference") / "sha256", HOSTILE_CHECKSUM="sha256"
    )


def pids_of(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize(
    ("mode", "at", "named", "env"),
    [
        ("place", "22", "writing items", {}),
        ("place", "22", "writing items", {"RECORDFORGE_START_METHOD": "spawn"}),
        # A sha256 shard is read back by a worker (a crc32c one is synced by the parent).
        ("finish", "3", "shard 3 of split 'train'", {"HOSTILE_CHECKSUM": "sha256"}),
        # Compressed: the worker writing shard 3 from the spilled chunks dies at its fsync.
        ("finish", "3", "shard 3 of split 'train'", {"HOSTILE_COMPRESSION": "gzip"}),
    ],
    ids=["place", "place-spawned", "finish", "write-gzip"],
)
def test_a_worker_killed_writing_or_finishing_a_shard(
    mode: str,
    at: str,
    named: str,
    env: dict[str, str],
    script: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    fixture = "reference"
    if env.get("HOSTILE_COMPRESSION") == "gzip":
        fixture = "gzip_reference"
    elif env.get("HOSTILE_CHECKSUM") == "sha256":
        fixture = "sha256_reference"
    expected = request.getfixturevalue(fixture)
    out, pids = tmp_path / "out", tmp_path / "pids"
    killed = run(script, out, 2, HOSTILE_MODE=mode, HOSTILE_AT=at, HOSTILE_PIDS=str(pids), **env)
    assert killed.returncode == 3, killed.stderr
    assert "a worker process died" in killed.stderr and "Traceback" not in killed.stderr
    assert named in killed.stderr, killed.stderr
    assert partials(out) == []  # shard, chunk and conversion files of the run
    assert len(pids_of(pids)) == 2 and wait_gone(pids_of(pids)) == []
    again = run(script, out, 2, **{k: v for k, v in env.items() if k.startswith("HOSTILE_")})
    assert again.returncode == 0, again.stderr
    assert listing(out) == expected


def test_the_parents_fsync_of_a_shard_failing_or_killed(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """A crc32c shard is synced by the parent, on a thread of its own, while the workers
    go on: its failure is the conversion's error, naming the shard file, and nothing of
    the run is left; killed there, the run leaves its journal. Either way a rerun with
    another worker count writes the same bytes as one worker."""
    out, pids = tmp_path / "out", tmp_path / "pids"
    failed = run(
        script, out, 2, HOSTILE_MODE="parent-fsync", HOSTILE_AT="3", HOSTILE_PIDS=str(pids)
    )
    assert failed.returncode == 3, failed.stderr
    assert "Traceback" not in failed.stderr
    assert ".train-00003." in failed.stderr and "Input/output error" in failed.stderr
    assert partials(out) == []
    assert len(pids_of(pids)) == 2 and wait_gone(pids_of(pids)) == []
    assert run(script, out, 3).returncode == 0
    assert listing(out) == reference

    out = tmp_path / "killed"
    killed = run(script, out, 2, HOSTILE_MODE="parent-fsync-kill", HOSTILE_AT="3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "dataset.json").exists()
    again = run(script, out, 1)
    assert again.returncode == 0, again.stderr
    assert listing(out) == reference
    assert partials(out) == []


def test_ctrl_c_ends_the_conversion_and_its_workers_at_once(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    out, pids = tmp_path / "out", tmp_path / "pids"
    started = time.monotonic()
    stopped = run(script, out, 2, HOSTILE_MODE="sigint", HOSTILE_AT="30", HOSTILE_PIDS=str(pids))
    assert time.monotonic() - started < 30
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (out / "dataset.json").exists()
    assert partials(out) == []
    assert len(pids_of(pids)) == 2 and wait_gone(pids_of(pids)) == []
    again = run(script, out, 3)
    assert again.returncode == 0, again.stderr
    assert listing(out) == reference


def test_workers_die_with_a_killed_parent(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    out, pids = tmp_path / "out", tmp_path / "pids"
    killed = run(script, out, 2, RECORDFORGE_KILL_AT="9", HOSTILE_PIDS=str(pids))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(pids_of(pids)) == 2 and wait_gone(pids_of(pids)) == []
    again = run(script, out, 2)
    assert again.returncode == 0, again.stderr
    assert listing(out) == reference


def cli_processes(out: Path) -> list[int]:
    """Running processes whose command line names ``out`` (forked workers share their
    parent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(out).encode() in words and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_cli_ctrl_c_with_workers_leaves_no_worker_and_resumes(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    args = [
        sys.executable, "-m", "recordforge", "convert", "coco", "--annotations",
        str(tiny["annotations"]), "--images", str(tiny["images"]), "--max-records", "4",
        "--index",
    ]  # fmt: skip

    def cli(out: Path, workers: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, "--workers", workers, "--out", str(out)],
            env=environ(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli(tmp_path / "ref", "1").returncode == 0
    out = tmp_path / "out"
    # Ctrl-C at the parent's 6th stage: in the commit of the first shard, workers busy.
    stopped = cli(out, "2", RECORDFORGE_KILL_AT="6", RECORDFORGE_SIGNAL="INT")
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    assert partials(out) == []
    assert wait_gone(cli_processes(out)) == []
    again = cli(out, "2")
    assert again.returncode == 0, again.stderr
    assert listing(out) == listing(tmp_path / "ref")


# -- conversions that cannot reach a worker --------------------------------------------------

UNPICKLABLE_ITEMS = textwrap.dedent(
    """
    import sys, threading
    import recordforge as rf

    def to_records(item):
        return [rf.encode_example({"id": item["id"]})]

    if __name__ == "__main__":
        items = [{"id": i, "lock": threading.Lock()} for i in range(10)]
        try:
            rf.write_dataset(items, sys.argv[1], to_records=to_records, workers=2)
        except Exception as e:
            print(f"MESSAGE: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(3)
    """
)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_items_that_do_not_pickle_fail_instead_of_hanging(method: str, tmp_path: Path) -> None:
    """Spawned workers are sent their items: ones that do not pickle are an error naming
    them (not a hang). Forked workers take a list's items from their own copy of it, by
    position: nothing is pickled, and the conversion completes as with one worker."""
    script = tmp_path / "items.py"
    script.write_text(UNPICKLABLE_ITEMS)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "out")],
            env={**environ(), "RECORDFORGE_START_METHOD": method},
            capture_output=True, text=True, timeout=8,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the conversion hung on items that do not pickle")
    if method == "fork":
        assert done.returncode == 0, done.stderr
        manifest = rf.Manifest.load(tmp_path / "out")
        assert sum(s.records for s in manifest.splits["train"]) == 10
        return
    assert done.returncode == 3, done.stderr
    assert "pickle" in done.stderr.lower()
    assert partials(tmp_path / "out") == []


UNLOADABLE = textwrap.dedent(
    """
    import sys
    import recordforge as rf

    def to_records(item):  # in __main__ of "python -c": a spawned worker cannot load it
        return [rf.encode_example({"id": item["id"]})]

    try:
        rf.write_dataset([{"id": i} for i in range(10)], sys.argv[1], to_records=to_records,
                         workers=2)
    except Exception as e:
        print(f"MESSAGE: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)
    """
)


def test_a_conversion_spawned_workers_cannot_load_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", UNLOADABLE, str(tmp_path / "out")],
        env=environ(RECORDFORGE_START_METHOD="spawn"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    message = next(line for line in done.stderr.splitlines() if line.startswith("MESSAGE: "))
    assert "out of memory" not in message and "to_records" in message, message

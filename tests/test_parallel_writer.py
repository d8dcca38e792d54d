"""The local writer on worker processes (``recordforge/_parallel.py``): any number of
workers writes the files of one, byte for byte (``dataset.json`` included); a kill of
the conversion at its stages, or of one of its workers, then a rerun with another number
of workers, ends with those files too."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import record_chunk_sizes, run_script

import recordforge as rf
from recordforge import _parallel
from recordforge._parallel import worker_count
from recordforge.sources.coco import CocoSource
from recordforge.sources.images import ImageFolderSource
from recordforge.writer import write_source


def test_this_process_forks_its_workers() -> None:
    """The tests here run the default start method: fork, which needs no other thread
    in the process. Something earlier in the run that left threads (a framework's pool,
    a server) would make every test below test spawned workers instead (the
    integrations run last for that: conftest.py)."""
    environ = {k: v for k, v in os.environ.items() if k == "RECORDFORGE_START_METHOD"}
    assert environ == {} and _parallel.start_method() == "fork", [
        t.name for t in threading.enumerate()
    ]


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def refuse_some(item: dict[str, Any]) -> list[bytes]:
    """Rows whose id ends in 3 or 8 are item errors; the others give 1 to 3 records."""
    if item["id"] % 5 == 3:
        raise rf.ItemError(f"row {item['id']}", "ids ending in 3 or 8 are refused")
    return [rf.encode_example({**item, "copy": k}) for k in range(item["id"] % 3 + 1)]


ROWS = [{"id": i, "pad": b"x" * (i % 11)} for i in range(40)]


def coco(tiny: dict[str, Path], per: str) -> CocoSource:
    return CocoSource.from_files(tiny["annotations"], tiny["images"], per=per)


def folder(tiny: dict[str, Path], root: Path) -> ImageFolderSource:
    if not root.exists():
        for i, path in enumerate(sorted(tiny["images"].iterdir())[:15]):
            (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / "ab"[i % 2] / path.name)
    return ImageFolderSource(str(root))


# (name, source or rows, options, worker counts compared with 1)
CASES: list[tuple[str, str, dict[str, Any], tuple[int, ...]]] = [
    ("coco per image, max_records", "image", {"max_records": 7}, (2, 3)),
    ("coco per image, shuffle", "image", {"max_bytes": "600kB", "shuffle": True}, (2,)),
    ("coco per annotation, num_shards", "annotation", {"num_shards": 3, "index": True}, (2, 3)),
    ("coco per annotation, gzip", "annotation", {"max_bytes": "2MB", "compression": "gzip"}, (2,)),
    ("image folder", "folder", {"max_records": 4, "shuffle": True, "seed": 3}, (2, 3)),
    (
        "rows skipped, gzip",
        "rows",
        {"max_records": 5, "compression": "gzip", "index": True},
        (2, 3),
    ),
    ("rows skipped, num_shards", "rows", {"num_shards": 7, "shuffle": True}, (2,)),
    ("rows skipped, max_bytes", "rows", {"max_bytes": 200}, (3,)),
    ("rows skipped, sha256", "rows", {"max_records": 6, "checksum": "sha256"}, (2,)),
]


def _convert(
    kind: str, tiny: dict[str, Path], root: Path, out: Path, workers: int, **options: Any
) -> rf.Manifest:
    if kind == "rows":
        return rf.write_dataset(
            ROWS, out, to_records=refuse_some, on_error="skip", workers=workers, **options
        )
    source = folder(tiny, root / "tree") if kind == "folder" else coco(tiny, kind)
    return write_source(source, out, workers=workers, **options)


@pytest.mark.parametrize(
    ("kind", "options", "counts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_any_number_of_workers_writes_the_same_bytes(
    kind: str,
    options: dict[str, Any],
    counts: tuple[int, ...],
    tiny: dict[str, Path],
    tmp_path: Path,
) -> None:
    one = _convert(kind, tiny, tmp_path, tmp_path / "w1", 1, **options)
    assert sum(s.records for s in one.splits["train"]) > 0
    if kind == "rows":
        assert len(one.report["skipped"]) == 8
    expected = listing(tmp_path / "w1")
    for workers in counts:
        _convert(kind, tiny, tmp_path, tmp_path / f"w{workers}", workers, **options)
        assert listing(tmp_path / f"w{workers}") == expected, workers


@pytest.mark.parametrize("held", [1, 3])
def test_spawned_workers_and_workers_that_may_hold_one_chunk_write_the_same_bytes(
    held: int, tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawned workers (no fork: a thread is alive, or not Linux) load the conversion
    from a file; with one chunk held per worker, the parent waits for a chunk's writes
    before it gives the next (every worker full is a state it leaves, not the end)."""
    options: dict[str, Any] = {"max_bytes": "700kB", "index": True}
    _convert("image", tiny, tmp_path, tmp_path / "w1", 1, **options)
    monkeypatch.setenv("RECORDFORGE_START_METHOD", "spawn" if held == 3 else "fork")
    monkeypatch.setattr(_parallel, "HELD_CHUNKS", held)
    _convert("image", tiny, tmp_path, tmp_path / "w2", 2, **options)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")
    _convert("rows", tiny, tmp_path, tmp_path / "r1", 1, max_records=3)
    _convert("rows", tiny, tmp_path, tmp_path / "r3", 3, max_records=3)
    assert listing(tmp_path / "r3") == listing(tmp_path / "r1")


def test_chunks_shrink_towards_the_end_of_an_input_of_known_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the items' number known, no chunk is larger than a 1/(2 x workers x
    HELD_CHUNKS) share of the items not yet given out, so that the last chunks are
    single items and the workers finish together; a generator's chunks grow to
    CHUNK_ITEMS and stay there. The files are the same for 1 and 2 workers either way."""
    sizes = record_chunk_sizes(monkeypatch)
    rows = [{"id": i, "pad": b"x" * (i % 13)} for i in range(600)]
    rf.write_dataset(rows, tmp_path / "w1", max_records=64)
    rf.write_dataset(rows, tmp_path / "w2", max_records=64, workers=2)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")
    share = 2 * 2 * _parallel.HELD_CHUNKS
    given = [(left, size) for left, size in sizes if left]
    assert given[0] == (600, 1)
    assert all(size <= -(-left // share) for left, size in given)
    assert max(size for _, size in given) == _parallel.CHUNK_ITEMS
    assert [size for _, size in given[-3:]] == [1, 1, 1]
    assert sum(min(size, left) for left, size in given) == 600
    sizes.clear()
    rf.write_dataset(iter(rows), tmp_path / "g2", max_records=64, workers=2)
    assert listing(tmp_path / "g2") == listing(tmp_path / "w1")
    assert {left for left, _ in sizes} == {None}
    grown = [size for _, size in sizes]
    assert grown == sorted(grown) and grown[0] == 1 and grown[-1] == _parallel.CHUNK_ITEMS


def test_crc32c_shard_checksums_are_combined_from_the_pieces_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With crc32c, no shard is read back: each worker returns the CRC32C of the pieces
    it wrote (from its memory) and the parent combines them in file order, for every
    shard, into the checksum one worker computes (chunks cut across shards: many pieces a
    shard, pieces of one chunk in two shards). The guards: a shard file whose size is not
    what was written fails naming it; pieces that leave a gap or overlap are an error."""
    combined: list[str] = []
    real = _parallel._SplitRun._combined

    def spy(self: Any, shard: Any) -> str:
        combined.append(real(self, shard))
        return combined[-1]

    monkeypatch.setattr(_parallel._SplitRun, "_combined", spy)
    rows = [{"id": i, "pad": os.urandom(i % 97)} for i in range(3000)]
    one = rf.write_dataset(rows, tmp_path / "w1", max_bytes="9kB")
    assert not combined
    two = rf.write_dataset(rows, tmp_path / "w2", max_bytes="9kB", workers=2)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")
    shards = two.splits["train"]
    checksums = [s.checksum for s in shards]  # the shards finish in any order
    assert len(shards) > 20 and sorted(combined) == sorted(checksums)
    assert checksums == [
        f"crc32c:{rf.crc32c((tmp_path / 'w2' / s.file).read_bytes()):08x}" for s in shards
    ]
    assert [s.checksum for s in one.splits["train"]] == checksums

    from recordforge import _workers

    short = tmp_path / ".train-00000.abcd.shard.partial"
    short.write_bytes(b"12345")
    with pytest.raises(rf.RecordforgeError, match=r"shard\.partial: the shard file holds 5 "):
        _workers._finish({}, str(short), "crc32c", 10)
    assert _workers._finish({}, str(short), "crc32c", 5) is None
    digest = _workers._finish({}, str(short), "sha256", 5)
    assert digest == "sha256:" + hashlib.sha256(b"12345").hexdigest()

    run = types.SimpleNamespace(split="train")
    data = b"0123456789"
    pieces = [(0, 4, rf.crc32c(data[:4])), (4, 6, rf.crc32c(data[4:]))]
    shard = _parallel._Shard(0, short, size=10, crcs=list(reversed(pieces)))
    assert real(run, shard) == f"crc32c:{rf.crc32c(data):08x}"  # type: ignore[arg-type]
    for crcs, size, words in [
        (pieces[:1], 10, "4 bytes written into shard 0 of split 'train', 10 planned"),
        ([pieces[0], (5, 5, 0)], 10, "leave bytes 4..5 unwritten"),
        ([pieces[0], (3, 7, 0)], 10, "leave bytes 4..3 unwritten or written twice"),
        (pieces, 12, "10 bytes written"),
    ]:
        shard = _parallel._Shard(0, short, size=size, crcs=crcs)
        with pytest.raises(rf.RecordforgeError, match=re.escape(words)):
            real(run, shard)  # type: ignore[arg-type]


def test_pieces_are_written_a_megabyte_a_call_at_most_short_writes_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece is written in calls of at most WRITE_BYTES (a page-cache folio as large as
    a write of MBs was memory the VM's host backed anew), whatever its views, and a
    short write goes on from where it stopped."""
    from recordforge import _workers

    calls: list[int] = []
    real = os.pwritev

    def short(fd: int, buffers: list[memoryview], at: int) -> int:
        size = sum(len(b) for b in buffers)
        calls.append(size)
        if size > 1000:  # a short write: the first 1000 bytes and a third of the rest
            joined = b"".join(buffers)
            return real(fd, [joined[: 1000 + (size - 1000) // 3]], at)
        return real(fd, buffers, at)

    monkeypatch.setattr(os, "pwritev", short)
    views = [os.urandom(n) for n in (5, 3 << 20, 0, 1 << 20, 77, (1 << 20) + 1, 9)]
    path = tmp_path / "piece"
    path.write_bytes(b"-" * 11)
    fd = os.open(path, os.O_WRONLY)
    try:
        _workers._pwrite_all(fd, [memoryview(v) for v in views], 11)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"-" * 11 + b"".join(views)
    assert max(calls) == _workers.WRITE_BYTES and len(calls) > 10


def test_workers_fork_only_where_no_other_thread_runs() -> None:
    """Fork where this is the only thread; else spawn, with a warning that names the
    other threads (nothing silent: spawned workers are slower); none when forced."""
    code = textwrap.dedent(
        """
        import threading, warnings
        from recordforge._parallel import start_method
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            alone = start_method()
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait, name="notebook-heartbeat")
            thread.start()
            crowded = start_method()
            stop.set()
        print(alone, crowded, len(seen))
        for w in seen:
            print(w.category.__name__, w.message)
        """
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    for env, expected, warned in (
        ({}, "fork spawn", 1),
        ({"RECORDFORGE_START_METHOD": "spawn"}, "spawn spawn", 0),
        ({"RECORDFORGE_START_METHOD": "fork"}, "fork fork", 0),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True
        )
        first, *warnings = done.stdout.splitlines()
        assert first.split() == [*expected.split(), str(warned)], done.stderr
        for line in warnings:
            assert line.startswith("RecordforgeWarning worker processes are spawned, not forked")
            assert "(notebook-heartbeat)" in line and "RECORDFORGE_START_METHOD=fork" in line


def test_recordforge_decode_threads_alone_do_not_stop_a_fork(tmp_path: Path) -> None:
    """After ``images.decode_batch(threads=2)`` the process holds recordforge's idle decode
    threads: ``write_dataset(workers=2)`` ends them and forks (no warning), its output
    equals one worker's, and the next decode makes its threads again and decodes the
    same. A thread of the user's beside them still means spawn, and leaves them be."""
    code = textwrap.dedent(
        """
        import io, sys, threading, warnings
        import numpy as np
        from PIL import Image
        import recordforge as rf
        import recordforge.images
        from recordforge._parallel import start_method

        def jpeg(k):
            out = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), k * 20, np.uint8)).save(out, "JPEG")
            return out.getvalue()

        def names():
            return sorted(t.name.rsplit("_", 1)[0] for t in threading.enumerate())

        images = [jpeg(k) for k in range(8)]
        first = rf.images.decode_batch(images, threads=2)
        print("after decode", names())
        rows = [{"id": i, "image": images[i % 8]} for i in range(200)]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            rf.write_dataset(rows, sys.argv[1] + "/w2", workers=2, max_records=50)
            print("after fork", names(), len(seen))
            again = rf.images.decode_batch(images, threads=2)
            print("decoded again", all((a == b).all() for a, b in zip(first, again)), names())
            stop = threading.Event()
            user = threading.Thread(target=stop.wait, name="user-thread")
            user.start()
            print("with a user thread", start_method(), names())
            stop.set()
            user.join()
            for w in seen:
                print(w.category.__name__, w.message)
        rf.write_dataset(rows, sys.argv[1] + "/w1", workers=1, max_records=50)
        """
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "after decode ['MainThread', 'rf-decode', 'rf-decode']"
    assert lines[1] == "after fork ['MainThread'] 0"
    assert lines[2] == "decoded again True ['MainThread', 'rf-decode', 'rf-decode']"
    assert lines[3] == (
        "with a user thread spawn ['MainThread', 'rf-decode', 'rf-decode', 'user-thread']"
    )
    assert len(lines) == 5 and "(rf-decode_0, rf-decode_1, user-thread)" in lines[4]
    for name in ("dataset.json", "train-00000-of-00004.tfrecord", "train-00003-of-00004.tfrecord"):
        assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w1" / name).read_bytes()


def test_threads_python_did_not_start_count_while_they_run_not_after() -> None:
    """A thread started outside ``threading`` that calls into Python (as recordforge's
    Rust read-ahead threads do to read a remote file) is listed as a ``_DummyThread``
    from then on, also after it ends: while it runs workers spawn, once it has ended
    they fork."""
    code = textwrap.dedent(
        """
        import _thread, threading, time, warnings
        from recordforge._parallel import start_method

        started, release, ended = threading.Event(), threading.Event(), threading.Event()

        def foreign():
            threading.current_thread()  # listed from here on, as a _DummyThread
            started.set()
            release.wait()
            ended.set()

        _thread.start_new_thread(foreign, ())
        started.wait()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            running = start_method()
            release.set()
            ended.wait()
            time.sleep(0.5)  # the OS thread ends after its last Python line
            names = [t.name for t in threading.enumerate()]
            print(running, start_method(), len(seen), len(names))
        """
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Spawn while it runs (one warning), fork once it has ended, though still listed.
    assert done.stdout.split() == ["spawn", "fork", "1", "2"], done.stdout


def test_an_item_error_raised_is_the_one_of_a_single_worker(tmp_path: Path) -> None:
    messages = []
    for workers in (1, 2):
        with pytest.raises(rf.ItemError) as caught:
            rf.write_dataset(
                ROWS, tmp_path / f"w{workers}", to_records=refuse_some, workers=workers
            )
        messages.append(str(caught.value))
    assert messages == ["row 3: ids ending in 3 or 8 are refused"] * 2
    # Nothing worth resuming before the first shard: the directories are gone again.
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


def test_workers_auto_and_bad_counts() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count(3) == 3
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ValueError, match="workers must be"):
            worker_count(bad)  # type: ignore[arg-type]


class Parts:
    """A counted source: its items are parts of many rows (as a table's are)."""

    def __init__(self, parts: Sequence[int]) -> None:
        self.parts = list(parts)

    def items(self) -> Iterable[Any]:
        return [(sum(self.parts[:i]), n) for i, n in enumerate(self.parts)]

    def to_records(self, item: tuple[int, int]) -> list[bytes]:
        start, n = item
        return [rf.encode_example({"row": start + k}) for k in range(n)]

    def schema(self) -> rf.Schema | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"type": "parts", "parts": self.parts}

    def num_records(self) -> int:
        return sum(self.parts)


@pytest.mark.parametrize("workers", [1, 2])
def test_num_shards_of_a_counted_source_cut_at_record_counts(workers: int, tmp_path: Path) -> None:
    source = Parts([10, 0, 3, 25, 2])  # 40 rows in 5 parts
    manifest = write_source(source, tmp_path / "out", num_shards=3, workers=workers)
    counts = [s.records for s in manifest.splits["train"]]
    assert counts == [13, 13, 14]  # shard_bounds(40, 3) == [13, 26, 40]
    rows = [
        rf.decode_example(r)["row"][0]
        for s in manifest.splits["train"]
        for r in rf.read_records(tmp_path / "out" / s.file)
    ]
    assert rows == list(range(40))
    # Fewer rows than shards: empty shards.
    few = write_source(Parts([1, 1]), tmp_path / "few", num_shards=4, workers=workers)
    assert [s.records for s in few.splits["train"]] == [0, 1, 0, 1]


# -- kills: the conversion at its stages, one of its workers ---------------------------

SCRIPT = textwrap.dedent(
    """
    import sys
    import recordforge as rf

    def to_records(item):
        if item["id"] % 5 == 3:
            raise rf.ItemError(f"row {item['id']}", "ids ending in 3 or 8 are refused")
        return [rf.encode_example({**item, "copy": k}) for k in range(item["id"] % 3 + 1)]

    if __name__ == "__main__":
        report = rf.ConversionReport()
        report.skip("row -1", "refused before the conversion")
        rf.write_dataset(
            splits={
                "train": [{"id": i, "pad": b"x" * (i % 11)} for i in range(45)],
                "test": [{"id": i, "pad": b"y"} for i in range(100, 109)],
            },
            out=sys.argv[1],
            workers=int(sys.argv[2]),
            to_records=to_records,
            on_error="skip",
            max_records=5,
            index=True,
            compression="gzip",
            source={"type": "test"},
            report=report,
        )
    """
)


run = run_script


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("script") / "convert.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run(script, out, 1)
    assert done.returncode == 0, done.stderr
    return listing(out)


def test_killed_at_stages_then_rerun_with_other_workers(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    log = tmp_path / "stages"
    done = run(script, tmp_path / "logged", 2, RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    assert listing(tmp_path / "logged") == reference
    names = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert "shard closed" in names and "shard renamed to its intermediate name" in names
    count = len(names)
    points = sorted({2, count // 4, count // 2, 3 * count // 4, count - 2})
    for n in points:
        out = tmp_path / f"kill-{n}"
        killed = run(script, out, 2, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        again = run(script, out, 3 if n % 2 else 1)
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == reference, n


def test_a_worker_killed_fails_naming_its_items_then_the_rerun_completes(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    killed = run(script, out, 2, RECORDFORGE_KILL_WORKER_AT="30")
    assert killed.returncode == 1, killed.stderr
    assert "a worker process died" in killed.stderr
    assert "items " in killed.stderr and "of split 'train'" in killed.stderr
    # Completed shards are kept for the rerun, working files are not (a failure before
    # the first shard leaves nothing).
    assert not out.exists() or not any(n.endswith(".partial") for n in os.listdir(out))
    again = run(script, out, 3)
    assert again.returncode == 0, again.stderr
    assert listing(out) == reference


def test_cli_worker_killed_exits_1_without_traceback(tiny: dict[str, Path], tmp_path: Path) -> None:
    args = [
        sys.executable, "-m", "recordforge", "convert", "coco", "--annotations",
        str(tiny["annotations"]), "--images", str(tiny["images"]), "--max-records", "6",
        "--index",
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}

    def cli(out: Path, workers: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, "--workers", workers, "--out", str(out)],
            env={**environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli(tmp_path / "ref", "1").returncode == 0
    killed = cli(tmp_path / "out", "2", RECORDFORGE_KILL_WORKER_AT="20")
    assert killed.returncode == 1
    assert "a worker process died" in killed.stderr and "Traceback" not in killed.stderr
    again = cli(tmp_path / "out", "auto")
    assert again.returncode == 0, again.stderr
    assert listing(tmp_path / "out") == listing(tmp_path / "ref")
    report = json.loads((tmp_path / "out" / "dataset.json").read_text())["report"]
    assert report["items"] == 50


FORKED_SPLITS = textwrap.dedent(
    """
    import os, sys
    import recordforge as rf
    from recordforge.cli._output import conversion_progress

    def to_records(item):
        with open(os.path.join(sys.argv[2], f"{os.getpid()}"), "w") as f:
            f.write(open("/proc/self/cmdline").read())
        return [rf.encode_example(item)]

    if __name__ == "__main__":
        splits = {"train": [{"id": i} for i in range(40)], "test": [{"id": i} for i in range(9)]}
        with conversion_progress(49, "convert") as progress:  # the CLI's progress bar
            rf.write_dataset(splits=splits, out=sys.argv[1], to_records=to_records,
                             workers=2, max_records=5, progress=progress)
    """
)


def test_every_split_forks_its_workers_under_the_clis_progress_bar(tmp_path: Path) -> None:
    """The progress bar draws without a thread of its own: a thread running at the next
    split's start would make its workers spawn (a Python start each, the source pickled)
    instead of fork."""
    script = tmp_path / "splits.py"
    script.write_text(FORKED_SPLITS)
    seen = tmp_path / "seen"
    seen.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), str(seen)],
        env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    workers = [p.read_text() for p in seen.iterdir()]
    assert len(workers) == 4  # two per split
    assert not any("spawn_main" in cmdline for cmdline in workers), workers


def test_no_more_workers_than_items_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A split of known length starts at most one worker per item left: none for one
    item (it is written in-process), two for two items asked for three; the files are
    one worker's."""
    started: list[int] = []
    real = _parallel.write_split

    def spy(*args: Any, **kwargs: Any) -> None:
        started.append(args[7])  # the number of workers
        real(*args, **kwargs)

    monkeypatch.setattr(_parallel, "write_split", spy)
    rows = [{"id": i} for i in range(2)]
    rf.write_dataset(rows[:1], tmp_path / "one-w1")
    rf.write_dataset(rows[:1], tmp_path / "one-w3", workers=3)
    assert started == []
    assert listing(tmp_path / "one-w3") == listing(tmp_path / "one-w1")
    rf.write_dataset(rows, tmp_path / "two-w1")
    rf.write_dataset(rows, tmp_path / "two-w3", workers=3)
    assert started == [2]
    assert listing(tmp_path / "two-w3") == listing(tmp_path / "two-w1")
    rf.write_dataset(iter(rows), tmp_path / "gen-w3", workers=3)  # length unknown: 3
    assert started == [2, 3]
    assert listing(tmp_path / "gen-w3") == listing(tmp_path / "two-w1")


def _slow_at_40(row: dict[str, Any]) -> list[bytes]:
    if row["id"] == 40:
        import time

        time.sleep(0.5)
    return [rf.encode_example(row)]


def test_a_worker_with_small_chunks_runs_ahead_of_a_slow_chunk_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are written in item order, so a worker's converted chunks wait for the
    chunks before them. While one item takes long, the other worker goes on converting
    small chunks past HELD_CHUNKS (it held three and sat idle before): what bounds it is
    the records' bytes held, HELD_CHUNKS x CHUNK_BYTES (a chunk being converted counted
    as a full one), and MOST_HELD chunks. The files are one worker's."""
    given: list[tuple[int, int, int]] = []  # (chunks held, bytes counted, chunks converting)
    real = _parallel._SplitRun._send

    def send(self: Any, chunk: Any, worker: int) -> None:
        given.append((self.held[worker], self.weight[worker], self.converting[worker]))
        real(self, chunk, worker)

    rows = [{"id": i, "pad": b"x" * (i % 7)} for i in range(400)]
    rf.write_dataset(rows, tmp_path / "w1", to_records=_slow_at_40, max_records=50)
    monkeypatch.setattr(_parallel._SplitRun, "_send", send)
    rf.write_dataset(rows, tmp_path / "w2", to_records=_slow_at_40, max_records=50, workers=2)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")
    room = (_parallel.HELD_CHUNKS - 1) * _parallel.CHUNK_BYTES
    assert all(weight <= room and held < _parallel.MOST_HELD for held, weight, _ in given)
    assert max(held for held, _, _ in given) > _parallel.HELD_CHUNKS
    # Given to the worker with the fewest chunks left to convert: never one with three.
    assert max(converting for _, _, converting in given) < _parallel.HELD_CHUNKS

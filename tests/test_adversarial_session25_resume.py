"""Adversarial tests of parallel conversion (``--workers N``) killed from the outside.

The existing crash tests kill through the library's own hooks (``RECORDFORGE_KILL_AT``,
``RECORDFORGE_KILL_WORKER_AT``). These send real signals from another process, at
points found by polling the output directory (after N intermediate shards, while a
shard is only partial, while spilled chunks exist), to the parent or to one worker
found through ``/proc``; they also freeze workers (``SIGSTOP``/``SIGCONT``), kill twice
with other worker counts, change the input between the kill and the rerun, and ask
``recordforge verify`` about every killed directory. The guarantee checked each time:
the rerun's files (every shard, ``.idx`` and ``dataset.json``) are byte-identical to
an uninterrupted single-worker run, and no record is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CSV = DATA / "tfx_chicago_taxi" / "data.csv"
COCO = DATA / "tiny_coco"
ROWS = 15_000

pytestmark = pytest.mark.skipif(
    not CSV.exists() or not sys.platform.startswith("linux"),
    reason="needs ../shared/data and Linux /proc",
)

Names = Callable[[list[str]], bool]


def _env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return {**environ, **extra}


def table(src: Path, out: Path, workers: int, *extra: str) -> list[str]:
    # Small parts: many items (chunks), 22 shards of 700 records, .idx files.
    return [
        sys.executable, "-m", "recordforge", "convert", "table", str(src),
        "--out", str(out), "--max-records", "700", "--index", "--part-bytes", "65536",
        "--workers", str(workers), *extra,
    ]  # fmt: skip


def coco(out: Path, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "recordforge", "convert", "coco",
        "--annotations", str(COCO / "annotations" / "instances_val2017.json"),
        "--images", str(COCO / "val2017"), "--per", "annotation",
        "--out", str(out), "--max-records", "40", "--index", "--workers", str(workers),
    ]  # fmt: skip


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=120)


def ok(args: list[str]) -> None:
    done = run(args)
    assert done.returncode == 0, done.stderr


def listing(out: Path) -> dict[str, str]:
    """sha256 of every file in ``out`` (hidden working files included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def names(out: Path) -> list[str]:
    try:
        return os.listdir(out)
    except FileNotFoundError:
        return []


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def shards_at_least(n: int) -> Names:
    """Once ``n`` shards are committed under their intermediate names."""
    return lambda found: sum(name.endswith(".shard") for name in found) >= n


def partial_exists(found: list[str]) -> bool:
    return any(name.endswith(".shard.partial") for name in found)


def kill_parent_when(args: list[str], out: Path, when: Names) -> list[str]:
    """Runs ``args``, SIGKILLs it as soon as ``when`` holds for ``out``'s listing;
    returns that listing. Fails if the run ended before."""
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:
        while proc.poll() is None:
            seen = names(out)
            if when(seen):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
    return seen


def assert_unfinished(out: Path, fast: bool = False) -> None:
    """``recordforge verify`` (and with ``fast``, ``verify --fast`` too) never calls a
    killed directory OK, and says why."""
    for extra in ([], ["--fast"]) if fast else ([],):
        checked = run([sys.executable, "-m", "recordforge", "verify", *extra, str(out)])
        assert checked.returncode == 1, (extra, checked.stdout[-2000:], checked.stderr[-2000:])
        assert "unfinished conversion" in checked.stderr, checked.stderr[-2000:]
        assert "Traceback" not in checked.stderr


def records(out: Path) -> int:
    """The records dataset.json lists, checked against its per-split and report totals."""
    manifest = json.loads((out / "dataset.json").read_text())
    total = 0
    for split in manifest["splits"].values():
        in_shards = sum(int(s["records"]) for s in split["shards"])
        assert in_shards == split["records"]
        total += in_shards
    assert manifest["report"]["records"] == total
    return total


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(work: Path) -> dict[str, str]:
    """One worker, uninterrupted: the bytes every other run must give."""
    out = work / "ref"
    ok(table(CSV, out, 1))
    return listing(out)


@pytest.fixture(scope="module")
def shuffled(work: Path) -> dict[str, str]:
    out = work / "ref-shuffled"
    ok(table(CSV, out, 1, "--shuffle", "--seed", "3"))
    return listing(out)


@pytest.fixture
def lines(tmp_path: Path) -> Iterator[Path]:
    """The CSV as JSON Lines, written with pyarrow."""
    pa_csv = pytest.importorskip("pyarrow.csv")
    rows = pa_csv.read_csv(CSV).to_pylist()
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    yield path


def test_workers_1_2_3_write_identical_bytes_and_every_row(
    reference: dict[str, str], work: Path
) -> None:
    for workers in (2, 3):
        out = work / f"full-{workers}"
        ok(table(CSV, out, workers))
        assert listing(out) == reference, workers
    assert records(work / "ref") == ROWS
    shards = [n for n in reference if n.endswith(".tfrecord")]
    assert len(shards) == 22
    assert sorted(n for n in reference if n.endswith(".idx")) == sorted(f"{s}.idx" for s in shards)
    # No working file left, nothing run-specific (pid, token, worker count) in dataset.json.
    assert sorted(n for n in reference if n.startswith(".")) == []
    text = (work / "full-3" / "dataset.json").read_text()
    assert "workers" not in text


@pytest.mark.parametrize(
    ("workers", "when", "rerun"),
    [
        (2, shards_at_least(1), 3),  # right after the first commit
        (3, shards_at_least(10), 1),  # mid-way
        (3, partial_exists, 2),  # workers writing the first shards, none committed yet
    ],
    ids=["first-shard", "mid-way", "first-partial"],
)
def test_parent_sigkilled_at_polled_points_resumes_with_another_worker_count(
    workers: int,
    when: Names,
    rerun: int,
    reference: dict[str, str],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    kill_parent_when(table(CSV, out, workers), out, when)
    assert not (out / "dataset.json").exists()
    assert_unfinished(out)
    ok(table(CSV, out, rerun))
    assert listing(out) == reference
    assert records(out) == ROWS


def test_parent_killed_while_finalizing_is_never_verified_ok(
    reference: dict[str, str], tmp_path: Path
) -> None:
    """Killed half-way through the final-name renames, after dataset.json's temporary
    file, and right after dataset.json is in place (lock and journal still
    there): verify says unfinished each time; a rerun with other workers finishes it."""
    log = tmp_path / "stages"
    ok_run = run(table(CSV, tmp_path / "logged", 2), RECORDFORGE_STAGE_LOG=str(log))
    assert ok_run.returncode == 0, ok_run.stderr
    stages = [line.split(" ", 1) for line in log.read_text().splitlines()]
    renames = [int(n) for n, name in stages if name == "renamed to a final name"]
    assert len(renames) == 44  # 22 shards and 22 indexes
    written = next(int(n) for n, name in stages if name == "dataset.json written")
    for at in (renames[len(renames) // 2], written - 1, written):
        out = tmp_path / f"kill-{at}"
        killed = run(table(CSV, out, 2), RECORDFORGE_KILL_AT=str(at))
        assert killed.returncode == -signal.SIGKILL, (at, killed.stderr)
        assert_unfinished(out, fast=True)
        ok(table(CSV, out, 3))
        assert listing(out) == reference, at


def test_worker_sigkilled_from_outside_fails_by_name_without_traceback_then_resumes(
    reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        table(CSV, out, 3), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = others = None
    try:
        while proc.poll() is None:
            kids = children(proc.pid)
            found = names(out)
            # A shard committed (a failure before any removes the directory it made).
            if len(kids) >= 3 and partial_exists(found) and shards_at_least(1)(found):
                victim, others = kids[1], [k for k in kids if k != kids[1]]
                os.kill(victim, signal.SIGSTOP)  # it stops mid-task, holding chunks
                time.sleep(0.3)
                os.kill(victim, signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        _, err = proc.communicate(timeout=120)
    assert victim is not None and others is not None, "the run ended before a worker was seen"
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert "a worker process died" in err
    assert re.search(r"(items \d+\.\.\d+|shard \d+) of split 'train'", err), err
    assert "rerun the same command to resume" in err
    time.sleep(0.2)
    assert not any(alive(k) for k in others), "workers left running after the failure"
    assert not (out / "dataset.json").exists()
    assert_unfinished(out)
    ok(table(CSV, out, 1))
    assert listing(out) == reference


def test_worker_stopped_and_continued_changes_nothing(
    reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        table(CSV, out, 3), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stopped = None
    try:
        while proc.poll() is None:
            kids = children(proc.pid)
            if len(kids) >= 3:
                stopped = kids[0]
                os.kill(stopped, signal.SIGSTOP)
                time.sleep(1.0)
                still = proc.poll()
                os.kill(stopped, signal.SIGCONT)
                assert still is None, "the conversion ended while one worker was stopped"
                assert not (out / "dataset.json").exists()
                break
            time.sleep(0.0005)
    finally:
        _, err = proc.communicate(timeout=120)
    assert stopped is not None
    assert proc.returncode == 0, err[-2000:]
    assert listing(out) == reference


def test_stopped_worker_dies_with_a_killed_parent_and_frees_the_directory(
    reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        table(CSV, out, 3), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    kids: list[int] = []
    try:
        while proc.poll() is None:
            kids = children(proc.pid)
            if len(kids) >= 3 and shards_at_least(1)(names(out)):
                os.kill(kids[0], signal.SIGSTOP)
                time.sleep(0.2)
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [k for k in kids if alive(k)]
    for k in left:  # do not leave a stopped process behind, whatever the outcome
        os.kill(k, signal.SIGKILL)
    assert not left, "a stopped worker outlived its killed parent"
    ok(table(CSV, out, 2))  # at once: no lock held by an orphan
    assert listing(out) == reference


def test_shuffled_run_killed_twice_with_other_worker_counts(
    shuffled: dict[str, str], reference: dict[str, str], tmp_path: Path
) -> None:
    assert shuffled != reference  # the order really changed
    full = tmp_path / "full"
    ok(table(CSV, full, 3, "--shuffle", "--seed", "3"))
    assert listing(full) == shuffled
    out = tmp_path / "out"
    first = kill_parent_when(
        table(CSV, out, 3, "--shuffle", "--seed", "3"), out, shards_at_least(3)
    )
    second = kill_parent_when(
        table(CSV, out, 2, "--shuffle", "--seed", "3"), out, shards_at_least(12)
    )
    assert shards_at_least(3)(first) and shards_at_least(12)(second)
    assert_unfinished(out)
    # Another seed is another command: refused, the directory untouched.
    other = run(table(CSV, out, 2, "--shuffle", "--seed", "4"))
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "unfinished conversion" in other.stderr
    ok(table(CSV, out, 1, "--shuffle", "--seed", "3"))
    assert listing(out) == shuffled
    assert records(out) == ROWS


def test_compressed_run_killed_with_spilled_chunks_resumes_without_leftovers(
    tmp_path: Path,
) -> None:
    ref = tmp_path / "ref"
    ok(table(CSV, ref, 1, "--compression", "gzip", "--checksum", "sha256"))
    expected = listing(ref)
    out = tmp_path / "out"
    seen = kill_parent_when(
        table(CSV, out, 3, "--compression", "gzip", "--checksum", "sha256"),
        out,
        lambda found: shards_at_least(3)(found) and any(".chunk.partial" in n for n in found),
    )
    assert any(".chunk.partial" in n for n in seen)
    assert_unfinished(out)
    ok(table(CSV, out, 2, "--compression", "gzip", "--checksum", "sha256"))
    assert listing(out) == expected  # no chunk or shard .partial left either
    assert records(out) == ROWS


def test_changed_input_after_a_kill_is_refused_never_mixed(lines: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kill_parent_when(table(lines, out, 3), out, shards_at_least(4))
    before = listing(out)
    with lines.open("a") as f:  # one row more: another size
        f.write(lines.read_text().splitlines()[0] + "\n")
    refused = run(table(lines, out, 2))
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "input files changed" in refused.stderr
    # Nothing written, nothing removed but the stale lock of the killed run (the refusing
    # run took it over and released it).
    after = listing(out)
    before.pop(".recordforge.lock", None)
    after.pop(".recordforge.lock", None)
    assert after == before
    assert_unfinished(out)
    ok([*table(lines, out, 2), "--overwrite"])
    assert records(out) == ROWS + 1
    fresh = tmp_path / "fresh"
    ok(table(lines, fresh, 1))
    assert listing(out) == listing(fresh)


def test_parquet_killed_and_resumed(tmp_path: Path) -> None:
    pa_csv = pytest.importorskip("pyarrow.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "data.parquet"
    pq.write_table(pa_csv.read_csv(CSV), src, row_group_size=500)
    ref = tmp_path / "ref"
    ok(table(src, ref, 1))
    out = tmp_path / "out"
    kill_parent_when(table(src, out, 3), out, shards_at_least(4))
    assert_unfinished(out)
    ok(table(src, out, 2))
    assert listing(out) == listing(ref)
    assert records(out) == ROWS


@pytest.mark.skipif(not COCO.exists(), reason="needs ../shared/data/tiny_coco")
def test_coco_per_annotation_killed_and_resumed(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ok(coco(ref, 1))
    expected = listing(ref)
    full = tmp_path / "full"
    ok(coco(full, 3))
    assert listing(full) == expected
    out = tmp_path / "out"
    kill_parent_when(coco(out, 3), out, shards_at_least(2))
    assert_unfinished(out)
    ok(coco(out, 2))
    assert listing(out) == expected
    assert records(out) == records(ref) > 0

"""The states of a conversion in progress (``recordforge/_outdir.py``): a kill at every
stage then a rerun gives an uninterrupted run's bytes; the lock; leftovers; refusals;
unfinished directories never read as datasets; file modes; disk full."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main as cli

# One conversion with everything a report and a commit can hold: two splits, items
# skipped (with on_error="skip"), items whose records straddle shards, index files,
# GZIP, a source description and a starting report. Stopped at stage KILL_AT if set.
SCRIPT = textwrap.dedent(
    """
    import sys
    import recordforge as rf

    def to_records(item):
        if item["id"] % 5 == 3:
            raise rf.ItemError(f"row {item['id']}", "ids ending in 3 or 8 are refused")
        return [rf.encode_example({**item, "copy": k}) for k in range(item["id"] % 3 + 1)]

    report = rf.ConversionReport()
    report.count("rows/seen-before", 7)
    report.skip("row -1", "refused before the conversion")
    rf.write_dataset(
        splits={
            "train": [{"id": i, "pad": b"x" * (i % 11)} for i in range(23)],
            "test": [{"id": i, "pad": b"y"} for i in range(100, 109)],
        },
        out=sys.argv[1],
        to_records=to_records,
        on_error="skip",
        max_records=5,
        index=True,
        compression="gzip",
        source={"type": "test", "rows": 32},
        report=report,
        overwrite=len(sys.argv) > 2,
    )
    """
)


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def run(script: Path, out: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return subprocess.run(
        [sys.executable, str(script), str(out), *extra],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("script") / "convert.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run(script, out)
    assert done.returncode == 0, done.stderr
    return listing(out)


def stages(script: Path, out: Path, *extra: str) -> list[str]:
    log = out.parent / f"{out.name}.stages"
    done = run(script, out, *extra, RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def assert_unfinished(out: Path) -> None:
    """Every reader refuses a directory whose conversion did not finish."""
    if not out.exists() or not any(out.iterdir()):
        return
    with pytest.raises(rf.UnfinishedConversionError, match="rerun the same command"):
        rf.open_dataset(out)
    with pytest.raises(rf.UnfinishedConversionError):
        rf.inspect.count(out)
    with pytest.raises(rf.UnfinishedConversionError):
        rf.inspect.verify(out)
    for shard in out.glob("train-*.tfrecord.gz"):
        with pytest.raises(rf.UnfinishedConversionError):
            rf.open_dataset(shard)


def test_reference_is_complete_and_honest(reference: dict[str, bytes]) -> None:
    """What every killed-then-resumed run is compared with."""
    assert not [n for n in reference if n.startswith(".")]
    manifest = json.loads(reference["dataset.json"])
    report = manifest["report"]
    refused = [f"row {i}" for i in range(23) if i % 5 == 3]
    refused += [f"row {i}" for i in range(100, 109) if i % 5 == 3]
    assert [s["item"] for s in report["skipped"]] == ["row -1", *refused]
    assert report["items"] == 23 + 9
    assert report["counters"] == {"rows/seen-before": 7}
    written = sum(i % 3 + 1 for i in range(23) if i % 5 != 3)
    written += sum(i % 3 + 1 for i in range(100, 109) if i % 5 != 3)
    assert report["records"] == written
    assert sum(s["records"] for sp in manifest["splits"].values() for s in sp["shards"]) == written


@pytest.mark.slow
def test_kill_at_every_stage_then_rerun_gives_identical_bytes(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    names = stages(script, tmp_path / "probe")
    # Every kind of state the writer goes through is among them.
    for kind in (
        "lock taken",
        ".recordforge-progress.json written under a temporary name",
        "journal saved",
        "shard closed",
        "shard index written",
        "shard renamed to its intermediate name",
        "renamed to a final name",
        "dataset.json written under a temporary name",
        "dataset.json written",
        "journal removed",
    ):
        assert kind in names, kind
    assert len(names) >= 60
    for n in range(1, len(names) + 1):
        out = tmp_path / f"kill-{n}"
        killed = run(script, out, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, names[n - 1], killed.stderr)
        assert_unfinished(out)
        resumed = run(script, out)
        assert resumed.returncode == 0, (n, names[n - 1], resumed.stderr)
        assert listing(out) == reference, (n, names[n - 1])


def test_killed_twice_then_rerun(script: Path, reference: dict[str, bytes], tmp_path: Path) -> None:
    """A resumed run killed again resumes again (the journal's report carries on)."""
    names = stages(script, tmp_path / "probe")
    for first, second in [(9, 5), (20, 20), (33, 3), (len(names) - 3, 1)]:
        out = tmp_path / f"kill-{first}-{second}"
        assert run(script, out, RECORDFORGE_KILL_AT=str(first)).returncode == -signal.SIGKILL
        assert run(script, out, RECORDFORGE_KILL_AT=str(second)).returncode == -signal.SIGKILL
        assert run(script, out).returncode == 0
        assert listing(out) == reference, (first, second)


@pytest.mark.slow
def test_kill_while_overwriting_a_complete_dataset(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    assert run(script, probe).returncode == 0
    names = stages(script, probe, "--overwrite")
    clearing = [i + 1 for i, name in enumerate(names) if name == "cleared one old file"]
    assert len(clearing) >= 8
    for n in [1, 2, clearing[0], clearing[3], clearing[-1], clearing[-1] + 1, len(names) - 1]:
        for again in (["--overwrite"], []):
            target = tmp_path / f"over-{n}-{len(again)}"
            assert run(script, target).returncode == 0
            manifest = target / "dataset.json"  # an old dataset, unlike the new one
            manifest.write_text(manifest.read_text().replace('"rows": 32', '"rows": 0'))
            killed = run(script, target, "--overwrite", RECORDFORGE_KILL_AT=str(n))
            assert killed.returncode == -signal.SIGKILL
            done = run(script, target, *again)
            if not again and n < clearing[0]:
                # Not cleared yet: the old dataset is whole, and only --overwrite replaces it.
                assert done.returncode == 1
                assert "already holds a complete dataset" in done.stderr
                continue
            # The same command finishes it; once clearing began, so does one without
            # --overwrite (the journal says what to do).
            assert done.returncode == 0, (n, again, done.stderr)
            assert listing(target) == reference, (n, again)


def test_only_working_files_left_is_a_fresh_start(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """A kill before the journal's first save leaves only dot-files: with or without
    --overwrite, the rerun starts afresh (it used to refuse the directory)."""
    for extra in ([], ["--overwrite"]):
        out = tmp_path / f"out{len(extra)}"
        out.mkdir()
        (out / ".recordforge-progress.json.123-abcd1234.tmp").write_text('{"fingerp')
        (out / ".train-00000.shard.partial").write_bytes(b"\x1f\x8b")
        (out / ".recordforge.lock").write_text("")
        done = run(script, out, *extra)
        assert done.returncode == 0, done.stderr
        assert listing(out) == reference


def test_foreign_directories_are_still_refused(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        done = run(script, out, *extra)
        assert done.returncode == 1
        assert "is not a recordforge dataset" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_complete_dataset_is_refused_and_the_cli_names_the_flag(tmp_path: Path) -> None:
    rf.write_dataset([{"id": 1}], tmp_path / "out")
    before = listing(tmp_path / "out")
    with pytest.raises(FileExistsError, match="--overwrite"):
        rf.write_dataset([{"id": 2}], tmp_path / "out")
    assert listing(tmp_path / "out") == before


def test_other_options_into_an_unfinished_directory(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(script, out, RECORDFORGE_KILL_AT="20").returncode == -signal.SIGKILL
    before = listing(out)
    del before[".recordforge.lock"]  # stale: taken over, then given back
    with (
        pytest.warns(rf.RecordforgeWarning, match="no longer running"),
        pytest.raises(FileExistsError, match="other options"),
    ):
        rf.write_dataset([{"id": 1}], out, max_records=7)
    assert listing(out) == before


# -- name templates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["data.tfrec", "{split}.tfrecord", "file-{records}.tfrec", "part-{count}.tfrec"],
)
def test_templates_that_give_two_shards_one_name_are_refused(template: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index"):
        rf.WriteOptions(name_template=template)
    with pytest.raises(ValueError, match="index"):
        rf.write_dataset([{"id": i} for i in range(10)], tmp_path / "o", name_template=template)
    assert not (tmp_path / "o").exists()


def test_template_without_split_is_refused_for_several_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        rf.write_dataset(
            splits={"train": [{"id": 1}], "test": [{"id": 2}]},
            out=tmp_path / "o",
            name_template="part-{index}.tfrec",
        )
    assert not (tmp_path / "o").exists()
    rf.write_dataset([{"id": 1}], tmp_path / "one", name_template="part-{index}.tfrec")
    assert (tmp_path / "one" / "part-0.tfrec").exists()


@pytest.mark.parametrize("template", ["x-{index}.idx", "x-{index}.tmp", "dataset.json"])
def test_templates_for_recordforge_names_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="name_template"):
        rf.WriteOptions(name_template=template)


def test_cli_template_without_index_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(382)))
    out = tmp_path / "out"
    code = cli(
        ["convert", "table", str(csv), "--out", str(out), "--max-records", "100",
         "--name-template", "data.tfrec"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "{index}" in err and "Traceback" not in err
    assert not out.exists()


# -- the lock ---------------------------------------------------------------------------

SLOW = textwrap.dedent(
    """
    import sys, time
    import recordforge as rf

    def slow(item):
        time.sleep(0.02)
        return [rf.encode_example(item)]

    rf.write_dataset([{"id": i} for i in range(150)], sys.argv[1], max_records=10,
                     to_records=slow)
    """
)


def test_second_conversion_into_a_locked_directory_fails_at_once(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, str(script), str(out)])
    lock = out / ".recordforge.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    second = run(script, out)
    assert time.monotonic() - started < 10
    assert second.returncode == 1
    assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert "another conversion is writing into it" in second.stderr
    # A reader is told the same, and changes nothing.
    with pytest.raises(rf.UnfinishedConversionError, match=f"pid {first.pid}"):
        rf.open_dataset(out)
    assert first.wait(timeout=120) == 0
    reference = tmp_path / "ref"
    assert run(script, reference).returncode == 0
    assert listing(out) == listing(reference)


def test_two_conversions_started_together(tmp_path: Path) -> None:
    """One wins, the other fails cleanly; the result is an uninterrupted run's."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(code for code, _ in results) == [0, 1], results
    assert any("another conversion is writing into it" in err for _, err in results)
    reference = tmp_path / "ref"
    assert run(script, reference).returncode == 0
    assert listing(out) == listing(reference)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    holder = {"pid": dead.pid, "host": socket.gethostname(), "fingerprint": "x"}
    (out / ".recordforge.lock").write_text(json.dumps(holder))
    with pytest.warns(rf.RecordforgeWarning, match=f"pid {dead.pid}.*no longer running"):
        rf.write_dataset([{"id": 1}], out)
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "train-00000-of-00001.tfrecord",
    ]


def test_lock_of_another_host_is_not_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = {"pid": 1, "host": "elsewhere.example", "fingerprint": "x"}
    (out / ".recordforge.lock").write_text(json.dumps(holder))
    with pytest.raises(rf.DirectoryLockedError, match=r"elsewhere\.example"):
        rf.write_dataset([{"id": 1}], out)


# -- leftovers, failures, modes ----------------------------------------------------------


def test_failure_before_any_shard_leaves_nothing(tmp_path: Path) -> None:
    def bad(item: Any) -> list[bytes]:
        raise rf.ItemError("row 0", "bad")

    with pytest.raises(rf.ItemError):
        rf.write_dataset([{"id": 1}], tmp_path / "new", to_records=bad)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(rf.ItemError):
        rf.write_dataset([{"id": 1}], tmp_path / "empty", to_records=bad)
    assert list((tmp_path / "empty").iterdir()) == []


def test_failure_after_shards_keeps_them_for_a_rerun(tmp_path: Path) -> None:
    def bad_at_25(item: Any) -> list[bytes]:
        if item["id"] == 25:
            raise rf.ItemError("row 25", "bad")
        return [rf.encode_example(item)]

    data = [{"id": i} for i in range(40)]
    with pytest.raises(rf.ItemError, match="row 25"):
        rf.write_dataset(data, tmp_path / "out", max_records=10, to_records=bad_at_25)
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == [
        ".recordforge-progress.json",
        ".train-00000.shard",
        ".train-00001.shard",
    ]

    # The same command with the bad row fixed goes on from row 20.
    def good(item: Any) -> list[bytes]:
        return [rf.encode_example(item)]

    rf.write_dataset(data, tmp_path / "out", max_records=10, to_records=good)
    rf.write_dataset(data, tmp_path / "ref", max_records=10, to_records=good)
    assert listing(tmp_path / "out") == listing(tmp_path / "ref")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        rf.write_dataset(
            [{"id": i} for i in range(10)], tmp_path / "out", max_records=4, index=True
        )
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    import recordforge as rf

    limit = int(sys.argv[2])
    if limit:
        # Writes past `limit` bytes of one file fail with EFBIG, as on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    rows = [{"id": i, "pad": bytes(range(256)) * (1 + i % 7)} for i in range(60)]
    rf.write_dataset(rows, sys.argv[1], max_records=10, index=True)
    """
)


def test_disk_full_names_the_file_removes_temporaries_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "full.py"
    script.write_text(DISK_FULL)
    reference = tmp_path / "ref"
    assert run(script, reference, "0").returncode == 0
    sizes = sorted(p.stat().st_size for p in reference.glob("*.tfrecord"))
    out = tmp_path / "out"
    # Room for the first shards (each under the limit) but not for the biggest one.
    failed = run(script, out, str(sizes[-1] - 1))
    assert failed.returncode == 1
    assert "File too large" in failed.stderr and ".shard.partial" in failed.stderr
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.endswith((".partial", ".tmp"))], left
    assert ".recordforge-progress.json" in left
    assert run(script, out, "0").returncode == 0
    assert listing(out) == listing(reference)


def test_completed_run_leaves_no_working_file(tmp_path: Path) -> None:
    rf.write_dataset([{"id": i} for i in range(30)], tmp_path / "out", max_records=4, index=True)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


# -- the CLI, COCO with worker processes ------------------------------------------------


@pytest.fixture(scope="module")
def coco_args(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """tiny COCO with two images missing (skipped items) and a box out of its image."""
    coco = shared_data / "tiny_coco"
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    data["images"][3]["file_name"] = "missing-1.jpg"
    data["images"][17]["file_name"] = "missing-2.jpg"
    data["annotations"][5]["bbox"][2] = 10_000.0
    annotations = tmp_path_factory.mktemp("coco") / "instances.json"
    annotations.write_text(json.dumps(data))
    return [
        "convert", "coco", "--annotations", str(annotations), "--images",
        str(coco / "val2017"), "--per", "annotation", "--max-records", "40",
        "--workers", "2", "--on-error", "skip", "--index", "--bad-boxes", "skip",
    ]  # fmt: skip


def run_cli(args: list[str], out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return subprocess.run(
        [sys.executable, "-m", "recordforge", *args, "--out", str(out)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_coco_with_workers_killed_at_stages(coco_args: list[str], tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    log = tmp_path / "stages"
    done = run_cli(coco_args, reference, RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    report = json.loads((reference / "dataset.json").read_text())["report"]
    assert sum("missing" in s["item"] for s in report["skipped"]) == 2
    assert report["counters"]["coco/bad_boxes/skip"] >= 1
    expected = listing(reference)
    count = len(log.read_text().splitlines())
    assert count >= 20
    points = sorted({*range(1, count + 1, 5), count - 2, count - 1, count})
    for n in points:
        out = tmp_path / f"kill-{n}"
        killed = run_cli(coco_args, out, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        again = run_cli(coco_args, out)
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == expected, n


def test_a_held_lock_refuses_local_and_beam_conversions(tmp_path: Path) -> None:
    import recordforge.beam as rfbeam
    from recordforge._outdir import locked
    from recordforge.sources.table import TableSource

    out = tmp_path / "out"
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with locked(out, {}):
        before = listing(out)
        with pytest.raises(rf.DirectoryLockedError, match=f"pid {os.getpid()}"):
            rf.write_dataset([{"id": 1}], out)
        assert listing(out) == before
        code = cli(["convert", "table", str(tmp_path / "x.csv"), "--out", str(out)])
        assert code == 1
        with pytest.raises(rf.DirectoryLockedError):
            rfbeam.convert(TableSource(tmp_path / "x.csv"), out)
        assert listing(out) == before
    rf.write_dataset([{"id": 1}], out)
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "train-00000-of-00001.tfrecord",
    ]


# -- found by an adversarial review ----------------------------------------------------


def test_lock_file_that_is_a_link_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".recordforge.lock").symlink_to(victim)
    with pytest.raises(rf.DirectoryLockedError, match="not a link"):
        rf.write_dataset([{"id": 1}], out)
    assert victim.read_text() == "precious\n"


def test_index_link_left_in_an_unfinished_directory_is_replaced_not_followed(
    script: Path, reference: dict[str, bytes], tmp_path: Path
) -> None:
    names = stages(script, tmp_path / "probe")
    n = names.index("shard renamed to its intermediate name") + 2  # shard 0 journalled
    out = tmp_path / "out"
    assert run(script, out, RECORDFORGE_KILL_AT=str(n)).returncode == -signal.SIGKILL
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / ".train-00001.shard.idx").symlink_to(victim)
    assert run(script, out).returncode == 0
    assert victim.read_text() == "precious\n"
    assert listing(out) == reference


def table_args(csv: Path) -> list[str]:
    return ["convert", "table", str(csv), "--max-records", "8192", "--on-error", "skip",
            "--part-bytes", str(_part_bytes(csv))]  # fmt: skip


def _part_bytes(csv: Path) -> int:
    """A part size that makes rows 0..8191 the file's first part (a part ends at the
    first row end at or past its size), so the second part begins the second shard."""
    from recordforge.sources.table import TableSource

    text = csv.read_text().splitlines(keepends=True)
    end = len("".join(text[: 1 + 8192]))  # the header and rows 0..8191
    for size in range(end - 16, end + 1):
        parts = TableSource(csv, part_bytes=size).parts()
        if len(parts) > 1 and parts[0].rows == 8192:
            return size
    raise AssertionError(f"no part size of {csv} ends a part at row 8192")


@pytest.fixture
def bad_rows_csv(tmp_path: Path) -> Path:
    """16,384 rows in two parts of 8,192 (items): two bad ones (skipped rows) in the second
    part, which begins the second shard."""
    lines = ["id,value"]
    for i in range(16_384):
        lines.append(f"{i},{'oops' if i in (10_000, 12_000) else i * 0.5}")
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.mark.slow
def test_table_killed_at_every_stage_reports_each_skipped_row_once(
    bad_rows_csv: Path, tmp_path: Path
) -> None:
    """Errors of an item (a table part) that begins a new shard used to reach the journal
    with the shard before it, then again on resume (4 skipped rows listed instead of 2)."""
    schema = tmp_path / "schema.json"
    features = {"id": {"dtype": "int64", "shape": []}, "value": {"dtype": "float32", "shape": []}}
    schema.write_text(json.dumps({"format_version": 1, "features": features}))
    args = [*table_args(bad_rows_csv), "--schema", str(schema)]
    reference = tmp_path / "ref"
    log = tmp_path / "stages"
    done = run_cli(args, reference, RECORDFORGE_STAGE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    skipped = json.loads((reference / "dataset.json").read_text())["report"]["skipped"]
    assert len(skipped) == 2, skipped
    expected = listing(reference)
    count = len(log.read_text().splitlines())
    for n in range(1, count + 1):
        out = tmp_path / f"kill-{n}"
        assert run_cli(args, out, RECORDFORGE_KILL_AT=str(n)).returncode == -signal.SIGKILL
        again = run_cli(args, out)
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == expected, n


def test_changed_input_is_not_resumed_but_another_spelling_is(
    bad_rows_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    args = table_args(bad_rows_csv)
    assert run_cli(args, out, RECORDFORGE_KILL_AT="6").returncode == -signal.SIGKILL
    # The same file named another way resumes.
    monkeypatch.chdir(tmp_path)
    relative = table_args(Path(os.path.relpath(bad_rows_csv, tmp_path)))
    stamp = bad_rows_csv.stat()
    bad_rows_csv.write_text(bad_rows_csv.read_text().replace("0.5,", "0.25,"))
    os.utime(bad_rows_csv, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    changed = run_cli(relative, out)
    assert changed.returncode == 1
    assert "input files changed" in changed.stderr
    done = run_cli([*relative, "--overwrite"], out)
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "again"
    assert run_cli(args, killed, RECORDFORGE_KILL_AT="6").returncode == -signal.SIGKILL
    resumed = run_cli(relative, killed)
    assert resumed.returncode == 0, resumed.stderr
    assert listing(killed) == listing(out)


def test_stale_lock_of_an_unfinished_run_is_not_taken_for_a_complete_one(
    script: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    rf.write_dataset([{"id": i} for i in range(10)], out, max_records=3)
    other = textwrap.dedent(
        """
        import sys, recordforge as rf
        rf.write_dataset([{"id": i} for i in range(10)], sys.argv[1], max_records=5,
                         overwrite=len(sys.argv) > 2)
        """
    )
    path = tmp_path / "other.py"
    path.write_text(other)
    # Killed right after taking the lock: its fingerprint is in the lock file.
    assert run(path, out, "--overwrite", RECORDFORGE_KILL_AT="1").returncode == -signal.SIGKILL
    again = run(path, out)
    assert again.returncode == 1
    assert "already holds a complete dataset" in again.stderr


def test_folder_with_someone_elses_dataset_json_is_never_cleared(tmp_path: Path) -> None:
    out = tmp_path / "nnunet"
    (out / "imagesTr").mkdir(parents=True)
    (out / "imagesTr" / "case_000.nii.gz").write_bytes(b"scan")
    (out / "dataset.json").write_text('{"name": "Task01", "labels": {}}')
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a recordforge dataset"):
            rf.write_dataset([{"id": 1}], out, overwrite=overwrite)
    assert (out / "imagesTr" / "case_000.nii.gz").read_bytes() == b"scan"


def test_extra_files_beside_a_dataset_are_never_cleared(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rf.write_dataset([{"id": 1}], out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        rf.write_dataset([{"id": 1}], out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_with_bad_arguments_keeps_the_old_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rf.write_dataset([{"id": 1}], out)
    before = listing(out)
    with pytest.raises(ValueError, match="--num-shards"):
        rf.write_dataset(iter([{"id": 2}]), out, num_shards=3, overwrite=True)
    assert listing(out) == before


@pytest.mark.parametrize("split", ["a/b", "..", "/tmp/x", ".hidden", "", "a\0b"])
def test_split_names_must_be_plain(split: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain name"):
        rf.write_dataset([{"id": 1}], tmp_path / "out", split=split)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("template", ["s{index:c}", "{index:c}x", "x{index}/y"])
def test_templates_giving_odd_names_for_some_index_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="name_template"):
        rf.WriteOptions(name_template=template)


def test_failed_run_removes_the_parents_it_created(tmp_path: Path) -> None:
    def bad(item: Any) -> list[bytes]:
        raise rf.ItemError("row 0", "bad")

    with pytest.raises(rf.ItemError):
        rf.write_dataset([{"id": 1}], tmp_path / "n1" / "n2" / "n3", to_records=bad)
    assert list(tmp_path.iterdir()) == []


def test_journal_grows_by_one_line_per_shard(tmp_path: Path) -> None:
    """Each shard appends a line instead of rewriting the journal (which made 2,000
    shards take 51 s, 93% of it saving the journal)."""
    sizes: list[int] = []

    def watch(item: Any) -> list[bytes]:
        journal = tmp_path / "out" / ".recordforge-progress.json"
        sizes.append(journal.stat().st_size)
        return [rf.encode_example(item)]

    rf.write_dataset([{"id": i} for i in range(400)], tmp_path / "out", max_records=1,
                     to_records=watch)  # fmt: skip
    steps = {b - a for a, b in itertools.pairwise(sizes[1:]) if b != a}
    assert steps and max(steps) < 300, steps


def test_interrupted_cli_says_so_without_a_traceback(bad_rows_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*table_args(bad_rows_csv), "--max-records", "100"]
    # Ctrl-C (SIGINT) sent by the conversion itself at its 5th stage (after its first
    # shard is renamed): no race with a conversion that may finish first.
    proc = run_cli(args, out, RECORDFORGE_KILL_AT="5", RECORDFORGE_SIGNAL="INT")
    assert proc.returncode == 130, proc.stderr
    assert "interrupted (rerun the same command to resume)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "dataset.json").exists()
    again = run_cli(args, out)
    assert again.returncode == 0, again.stderr
    assert rf.Manifest.load(out).records() == 16_384  # "value" inferred as a string: none skipped

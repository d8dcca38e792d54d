"""Hostile stores and prefixes for remote writes (``recordforge/_remote.py``): journals
that are garbage or lie, shards gone from under the journal, nested keys, odd URLs,
reruns with other options, interrupted clearing and splits, the takeover lock removed or
garbled, errors and interrupts in the middle of a multipart shard, the CLI's messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_remote_write
from test_remote_write import _files, _objects, _uploads

import recordforge as rf
from recordforge.cli.__main__ import main

# The moto server (behind the fault proxy), its s3fs and a prefix per test, as there.
served, s3, prefix = test_remote_write.served, test_remote_write.s3, test_remote_write.prefix

ROWS = [{"id": i} for i in range(200)]
SNAPSHOT = ".recordforge-progress.json"


class Stop(Exception):
    pass


def _key(url: str) -> str:
    return url.split("://", 1)[1]


def _interrupted(url: str, after: int, rows: list[dict[str, Any]] = ROWS, **options: Any) -> None:
    """A conversion of ``rows`` into ``url`` (shards of 40) stopped by an error after
    ``after`` items: its journal stays (3 shards with after=130)."""
    seen = [0]

    def progress(records: int, payload: int) -> None:
        seen[0] += 1
        if seen[0] == after:
            raise Stop("stopped")

    with pytest.raises(Stop):
        rf.write_dataset(rows, url, max_records=40, progress=progress, **options)


def _local(tmp_path: Path, name: str = "local", rows: list[dict[str, Any]] = ROWS, **o: Any) -> Any:
    return rf.write_dataset(rows, tmp_path / name, max_records=40, **o)


@pytest.mark.parametrize("snapshot", [b"\x00garbage", b"[1, 2, 3]\n", b'{"fingerprint": {}}\n'])
def test_a_foreign_or_garbage_snapshot_is_refused_and_nothing_is_deleted(
    s3: Any, prefix: str, tmp_path: Path, snapshot: bytes
) -> None:
    url = f"{prefix}/out"
    _interrupted(url, 130)
    s3.pipe_file(f"{_key(url)}/{SNAPSHOT}", snapshot)
    before = _objects(s3, url)
    with pytest.raises(FileExistsError, match="unfinished conversion started with other options"):
        rf.write_dataset(ROWS, url, max_records=40)
    assert _objects(s3, url) == before
    rf.write_dataset(ROWS, url, max_records=40, overwrite=True)
    _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


@pytest.mark.parametrize(
    "field, value",
    [("entries", "many"), ("report", ["abc"]), ("splits", [1, 2]), ("splits", {"train": 3})],
)
def test_a_snapshot_of_this_command_with_lying_fields_gives_a_clear_error(
    s3: Any, prefix: str, tmp_path: Path, field: str, value: Any
) -> None:
    """The snapshot names this command's fingerprint but a field is of the wrong type:
    the rerun is refused like another command's journal (no raw ValueError/TypeError
    from deep inside), and --overwrite starts over."""
    url = f"{prefix}/out"
    _interrupted(url, 130)
    head = json.loads(s3.cat_file(f"{_key(url)}/{SNAPSHOT}"))
    head[field] = value
    s3.pipe_file(f"{_key(url)}/{SNAPSHOT}", json.dumps(head).encode() + b"\n")
    before = _objects(s3, url)
    with pytest.raises(FileExistsError, match="unfinished conversion"):
        rf.write_dataset(ROWS, url, max_records=40)
    assert _objects(s3, url) == before
    rf.write_dataset(ROWS, url, max_records=40, overwrite=True)
    _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


@pytest.mark.parametrize(
    "entry",
    [
        b"{torn",
        b"[1, 2]",
        b'{"split": ["a"]}',
        b"\xff\xfe",
        b'{"split": "train", "report": 1}',
        # A shard without the rest: not half applied (the shard list grown alone).
        b'{"split": "train", "shard": {"tmp": ".x.shard", "records": 1, "bytes": 1}}',
    ],
)
def test_a_garbage_entry_in_the_middle_is_where_the_journal_ends(
    s3: Any, prefix: str, tmp_path: Path, entry: bytes
) -> None:
    """Entry 2 of 3 is garbage: the rerun resumes after entry 1 (entry 3, beyond the
    gap, is not applied), and the dataset equals an uninterrupted run's."""
    url = f"{prefix}/out"
    _interrupted(url, 130)
    names = sorted(_objects(s3, url))
    assert ".recordforge-progress.00000003.json" in names, names
    s3.pipe_file(f"{_key(url)}/.recordforge-progress.00000002.json", entry)
    manifest = rf.write_dataset(ROWS, url, max_records=40)
    local = _local(tmp_path)
    assert manifest == local
    assert _objects(s3, url) == _files(tmp_path / "local")
    assert _uploads(s3, url) == []


def test_entry_numbers_with_a_gap(s3: Any, prefix: str, tmp_path: Path) -> None:
    url = f"{prefix}/out"
    _interrupted(url, 130)
    s3.rm(f"{_key(url)}/.recordforge-progress.00000002.json")
    assert rf.write_dataset(ROWS, url, max_records=40) == _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_a_lying_entry_beyond_the_journal_is_not_applied_after_a_gap(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    """An entry numbered far beyond the others names a shard that is not in the store:
    ignored (it is past the first missing number)."""
    url = f"{prefix}/out"
    _interrupted(url, 130)
    entry = json.loads(s3.cat_file(f"{_key(url)}/.recordforge-progress.00000003.json"))
    entry["shard"] = {**entry["shard"], "tmp": ".train-00099.shard"}
    s3.pipe_file(f"{_key(url)}/.recordforge-progress.00000009.json", json.dumps(entry).encode())
    assert rf.write_dataset(ROWS, url, max_records=40) == _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


@pytest.mark.parametrize("gone", [".train-00000.shard", ".train-00002.shard"])
def test_a_journalled_shard_gone_from_the_store_is_named_not_listed(
    s3: Any, prefix: str, tmp_path: Path, gone: str
) -> None:
    """The journal lists a shard whose intermediate object was deleted: the rerun must
    not write a dataset.json listing a missing file; it fails naming the shard (or
    writes it again)."""
    url = f"{prefix}/out"
    _interrupted(url, 130)
    s3.rm(f"{_key(url)}/{gone}")
    try:
        manifest = rf.write_dataset(ROWS, url, max_records=40)
    except FileNotFoundError as e:
        assert gone in str(e)
        assert "dataset.json" not in _objects(s3, url)
        with pytest.raises(rf.UnfinishedConversionError):
            rf.open_dataset(url)
    else:
        assert manifest == _local(tmp_path)
        assert _objects(s3, url) == _files(tmp_path / "local")
    assert _uploads(s3, url) == []


def test_a_rerun_with_other_options_is_refused_and_touches_nothing(s3: Any, prefix: str) -> None:
    url = f"{prefix}/out"
    _interrupted(url, 130)
    before = _objects(s3, url)
    for options in ({"max_records": 41}, {"max_records": 40, "compression": "gzip"}):
        with pytest.raises(FileExistsError, match="other options") as raised:
            rf.write_dataset(ROWS, url, **options)
        assert url in str(raised.value)
    assert _objects(s3, url) == before


def test_overwrite_while_another_commands_journal_is_there(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    url = f"{prefix}/out"
    _interrupted(url, 130, compression="gzip")
    manifest = rf.write_dataset(ROWS, url, max_records=40, overwrite=True)
    assert manifest == _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")
    assert _uploads(s3, url) == []


def test_killed_while_overwrite_clears_then_rerun_without_overwrite(
    s3: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite of a complete dataset (and of another command's entries) is stopped
    after it removed one old object: a rerun of the new command, without --overwrite,
    clears the rest and writes the new dataset; the old entries are not applied."""
    from recordforge import _remote

    url = f"{prefix}/out"
    _interrupted(url, 130, compression="gzip")  # entries of another command
    s3.pipe_file(f"{_key(url)}/dataset.json", b"{}")  # and something to clear
    cleared = [0]

    def stage(name: str) -> None:
        if name == "cleared one old file":
            cleared[0] += 1
            if cleared[0] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(_remote, "stage", stage)
    with pytest.raises(KeyboardInterrupt):
        rf.write_dataset(ROWS[:100], url, max_records=40, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(rf.UnfinishedConversionError):
        rf.open_dataset(url)
    manifest = rf.write_dataset(ROWS[:100], url, max_records=40)
    assert manifest == _local(tmp_path, rows=ROWS[:100])
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_two_splits_the_second_fails_midway_then_rerun(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    url = f"{prefix}/out"

    def to_records(row: dict[str, Any]) -> list[bytes]:
        if row["id"] == 1070 and fail:
            raise ValueError("boom")
        return [rf.encode_example(row)]

    splits = {"train": ROWS[:90], "test": [{"id": 1000 + i} for i in range(100)]}
    fail = True
    with pytest.raises(ValueError, match="boom"):
        rf.write_dataset(
            splits=splits, out=url, to_records=to_records, on_error="raise", max_records=30
        )
    names = _objects(s3, url)
    assert ".train-00002.shard" in names and ".test-00001.shard" in names, sorted(names)
    assert ".test-00002.shard" not in names
    assert _uploads(s3, url) == []
    fail = False
    manifest = rf.write_dataset(
        splits=splits, out=url, to_records=to_records, on_error="raise", max_records=30
    )
    local = rf.write_dataset(
        splits=splits,
        out=tmp_path / "local",
        to_records=to_records,
        on_error="raise",
        max_records=30,
    )
    assert manifest == local
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_the_lock_object_deleted_mid_run(s3: Any, prefix: str, tmp_path: Path) -> None:
    url = f"{prefix}/out"
    seen = [0]

    def progress(records: int, payload: int) -> None:
        seen[0] += 1
        if seen[0] == 50:
            s3.rm(f"{_key(url)}/.recordforge.lock")

    manifest = rf.write_dataset(ROWS, url, max_records=40, progress=progress)
    assert manifest == _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


@pytest.mark.parametrize("lock", [b"garbage", b"[1]", b"\xff"])
def test_a_garbled_lock_mid_run_stops_it_as_a_takeover(
    s3: Any, prefix: str, tmp_path: Path, lock: bytes
) -> None:
    """Someone wrote something else in .recordforge.lock: the run stops with the
    takeover's error (not a raw JSON/attribute error); a rerun completes."""
    url = f"{prefix}/out"
    seen = [0]

    def progress(records: int, payload: int) -> None:
        seen[0] += 1
        if seen[0] == 50:
            s3.pipe_file(f"{_key(url)}/.recordforge.lock", lock)

    with pytest.raises(rf.RecordforgeError, match="took this output over"):
        rf.write_dataset(ROWS, url, max_records=40, progress=progress)
    assert rf.write_dataset(ROWS, url, max_records=40) == _local(tmp_path)
    assert _objects(s3, url) == _files(tmp_path / "local")


def _open_uploads(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    listing = s3.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in listing.get("Uploads", [])]


def _start_upload(s3: Any, bucket: str, key: str) -> None:
    """An unfinished multipart upload of ``key`` (what a killed writer leaves)."""
    s3.call_s3("create_multipart_upload", Bucket=bucket, Key=key)


def test_a_bucket_root_output_aborts_the_killed_runs_uploads(s3: Any, tmp_path: Path) -> None:
    """``out`` = ``s3://bucket`` (no key prefix): the rerun aborts the unfinished
    upload a killed writer left there, as it does under a prefix."""
    bucket = "recordforge-root"
    s3.mkdir(bucket)
    _start_upload(s3, bucket, ".train-00000.shard")
    assert _open_uploads(s3, bucket) == [".train-00000.shard"]
    manifest = rf.write_dataset(ROWS, f"s3://{bucket}", max_records=40)
    assert manifest == _local(tmp_path)
    assert _objects(s3, f"s3://{bucket}") == _files(tmp_path / "local")
    assert _open_uploads(s3, bucket) == []


def test_a_rerun_leaves_uploads_under_nested_keys_alone(s3: Any, prefix: str) -> None:
    """The uploads aborted by a rerun are its own kind: directly under the prefix. An
    upload in progress under a nested key (``out/sub/...``: not a key recordforge
    writes; another writer's) is not aborted."""
    url = f"{prefix}/out"
    _interrupted(url, 130)
    bucket, key = _key(url).split("/", 1)
    _start_upload(s3, bucket, f"{key}/.train-00003.shard")  # the killed writer's
    _start_upload(s3, bucket, f"{key}/sub/big.bin")  # someone else's
    rf.write_dataset(ROWS, url, max_records=40)
    assert _open_uploads(s3, bucket, f"{key}/") == [f"{key}/sub/big.bin"]


def test_the_beam_writer_aborts_a_killed_runs_shard_uploads(s3: Any, prefix: str) -> None:
    """Beam's workers stream their shards to the store: a killed run leaves their
    unfinished uploads (beside its journal marker), which the next run's preparation
    aborts, as it removes the killed run's objects; a complete dataset is refused
    before anything is aborted."""
    from recordforge import _remote

    url = f"{prefix}/beam"
    bucket, key = _key(url).split("/", 1)
    s3.pipe_file(f"{bucket}/{key}/.recordforge-progress.json", b"{}")  # a run's marker
    _start_upload(s3, bucket, f"{key}/.beam-train-00002.0123456789ab.partial")
    _remote.prepare_out(url, overwrite=False)
    assert _open_uploads(s3, bucket, f"{key}/") == []
    s3.invalidate_cache()
    assert not s3.exists(f"{bucket}/{key}/.recordforge-progress.json")
    # A prefix holding a complete dataset: refused, its uploads left to its owner.
    done = f"{prefix}/done"
    rf.write_dataset(ROWS, done, max_records=40)
    bucket, key = _key(done).split("/", 1)
    _start_upload(s3, bucket, f"{key}/.beam-train-00000.0123456789ab.partial")
    with pytest.raises(FileExistsError, match="complete dataset"):
        _remote.prepare_out(done, overwrite=False)
    assert len(_open_uploads(s3, bucket, f"{key}/")) == 1


@pytest.mark.parametrize(
    "name",
    [
        "sp ace",
        "hash#tag",
        "ünï-çødé",
        "pct%20enc",
        "a+b",
        "dbl//slash",
        "trail/",
        "q?x=1",
    ],
)
def test_odd_prefixes_round_trip(s3: Any, prefix: str, tmp_path: Path, name: str) -> None:
    """Keys that need URL-encoding, a double slash, a trailing slash: the objects equal
    a local run's, a rerun sees the complete dataset, readers read it, and a killed
    writer's upload under it is aborted by a resume."""
    url = f"{prefix}/{name}"
    bare = url.rstrip("/")
    _interrupted(url, 130)
    bucket, key = _key(bare).split("/", 1)
    _start_upload(s3, bucket, f"{key}/.train-00003.shard")
    manifest = rf.write_dataset(ROWS, url, max_records=40)
    assert manifest == _local(tmp_path)
    assert _objects(s3, bare) == _files(tmp_path / "local")
    assert _open_uploads(s3, bucket, f"{key}/") == []
    with pytest.raises(FileExistsError, match="complete dataset"):
        rf.write_dataset(ROWS, url, max_records=40)
    assert len(rf.open_dataset(url)) == len(ROWS)


def test_a_prefix_that_is_an_object(s3: Any, prefix: str) -> None:
    s3.pipe_file(f"{_key(prefix)}/file", b"data")
    with pytest.raises(FileExistsError, match="not a directory"):
        rf.write_dataset(ROWS, f"{prefix}/file", max_records=40)
    assert s3.cat_file(f"{_key(prefix)}/file") == b"data"


def test_nested_keys_in_the_prefix_are_foreign(s3: Any, prefix: str) -> None:
    url = f"{prefix}/out"
    s3.pipe_file(f"{_key(url)}/sub/notes.txt", b"mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="sub"):
            rf.write_dataset(ROWS, url, max_records=40, overwrite=overwrite)
    assert _objects(s3, url) == {"sub/notes.txt": b"mine"}


BIG = [{"id": i, "blob": bytes([i % 251]) * 60_000} for i in range(200)]


@pytest.mark.parametrize("how", ["item error", "interrupt"])
def test_stopped_in_the_middle_of_a_multipart_shard(
    s3: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """An item error (on_error='raise') or a KeyboardInterrupt from the progress
    callback while the second shard (~6 MB, parts of 5 MiB: a multipart upload is
    open) is being written: its upload is aborted, nothing is committed under its key,
    the first shard and the journal stay; a rerun completes to a local run's bytes."""
    monkeypatch.setenv("RECORDFORGE_PART_SIZE", str(5 << 20))
    url = f"{prefix}/out"
    options = {"max_records": 100, "on_error": "raise"}
    count = [0]

    def to_records(row: dict[str, Any]) -> list[bytes]:
        if row["id"] == 190 and how == "item error" and stop:
            raise rf.ItemError(row["id"], "bad")
        return [rf.encode_example(row)]

    def progress(records: int, payload: int) -> None:
        count[0] += 1
        if count[0] == 190 and how == "interrupt" and stop:
            raise KeyboardInterrupt

    stop = True
    with pytest.raises((rf.ItemError, KeyboardInterrupt)):
        rf.write_dataset(BIG, url, to_records=to_records, progress=progress, **options)
    names = set(_objects(s3, url))
    assert ".train-00000.shard" in names and ".train-00001.shard" not in names, names
    assert not [n for n in names if not n.startswith(".")], names
    assert _uploads(s3, url) == []
    stop = False
    manifest = rf.write_dataset(BIG, url, to_records=to_records, **options)
    local = rf.write_dataset(BIG, tmp_path / "local", to_records=to_records, **options)
    assert manifest == local
    assert _objects(s3, url) == _files(tmp_path / "local")


def test_cli_errors_into_s3_are_one_line(
    s3: Any, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI converting into s3://: a missing bucket and a refused rerun (the dataset
    is complete) each give one `recordforge convert: error: ...` line naming the
    bucket, exit 1, no traceback."""
    csv = tmp_path / "rows.csv"
    csv.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(300)))
    url = f"{prefix}/out"
    base = ["convert", "table", str(csv), "--max-records", "40"]
    for out, then in (
        ("s3://recordforge-no-such-bucket/out", None),
        (url, "ok"),
        (url, "complete"),
    ):
        code = main([*base, "--out", out])
        err = capsys.readouterr().err
        if then == "ok":
            assert code == 0, err
            continue
        assert code == 1, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("recordforge convert: error:"), err
        assert "Traceback" not in err
        assert out.split("://")[1].split("/")[0] in lines[0], err

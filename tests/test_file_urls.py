"""``file://`` URLs as inputs and outputs of a conversion: the local path they name.

Before, ``write_dataset(..., "file:///data/ds")`` and ``convert ... --out file:///data/ds``
wrote the dataset into a directory called ``file:`` under the current directory (exit
0, nothing at /data/ds), and a table file or an image folder given as ``file://`` was
not found ("Failed to open local file 'file:/...'")."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import clean_env, cli

import recordforge as rf
from recordforge.sources.images import ImageFolderSource
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny_coco"


def _files(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.iterdir())
        if p.is_file()
    }


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory: a fresh one, checked to stay empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_write_dataset_to_a_file_url_writes_the_path_it_names(
    tmp_path: Path, elsewhere: Path
) -> None:
    rows = [{"a": i} for i in range(5)]
    rf.write_dataset(rows, tmp_path / "plain")
    rf.write_dataset(rows, f"file://{tmp_path}/url")
    assert _files(tmp_path / "url") == _files(tmp_path / "plain")
    assert list(elsewhere.iterdir()) == []
    assert len(rf.open_dataset(f"file://{tmp_path}/url")) == 5


def test_sources_given_as_file_urls_read_the_paths_they_name(
    tmp_path: Path, elsewhere: Path
) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,x\n2,y\n")
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    jpeg = next((SHARED / "val2017").iterdir())
    (folder / jpeg.name).write_bytes(jpeg.read_bytes())
    for name, plain, url in [
        ("table", TableSource(table), TableSource(f"file://{table}")),
        (
            "images",
            ImageFolderSource(tmp_path / "images"),
            ImageFolderSource(f"file://{tmp_path}/images"),
        ),
    ]:
        write_source(plain, tmp_path / f"{name}-plain")
        write_source(url, tmp_path / f"{name}-url")
        assert _files(tmp_path / f"{name}-url") == _files(tmp_path / f"{name}-plain"), name
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_the_command_converts_file_urls_to_the_paths_they_name(
    tmp_path: Path, elsewhere: Path, runner: str
) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(50)))
    done = cli("convert", "table", str(table), "--out", str(tmp_path / "plain"))
    assert done.returncode == 0, done.stderr
    args = ["convert", "table", f"file://{table}", "--out", f"file://{tmp_path}/url"]
    done = cli(*args, "--runner", runner) if runner == "beam" else cli(*args)
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "url") == _files(tmp_path / "plain")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("form", ["file://{}", "file://localhost{}", "file:{}"])
def test_every_form_of_a_file_url_names_the_path(
    tmp_path: Path, elsewhere: Path, form: str
) -> None:
    """``file:/p`` (what Java and Hadoop write) and ``file://localhost/p`` too; ``%20`` is
    a space; a URL naming another host is refused. Before, the two other forms wrote
    under the current directory ('./localhost/...', './file:/...')."""
    spaced = tmp_path / "my ds"
    rf.write_dataset([{"a": 1}], form.format(str(spaced).replace(" ", "%20")))
    assert (spaced / "dataset.json").exists()
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ValueError, match="another host"):
        rf.write_dataset([{"a": 1}], "file://example.com/tmp/x")


def test_readers_and_commands_take_file_urls(tmp_path: Path, elsewhere: Path) -> None:
    """read_records, scan_records, TFRecordWriter, the inspect commands, salvage and
    preview --out: the path a file: URL names (before: 'no such file', or a write under
    './file:/...')."""
    out = tmp_path / "ds"
    rf.write_dataset([{"a": i} for i in range(4)], out)
    [shard] = sorted(out.glob("*.tfrecord"))
    url = f"file://{shard}"
    assert len(list(rf.read_records(url))) == rf.scan_records(url).records == 4
    with rf.TFRecordWriter(f"file://{tmp_path}/w.tfrecord") as w:
        w.write(b"x")
    assert list(rf.read_records(tmp_path / "w.tfrecord")) == [b"x"]
    for command in (["info"], ["verify"], ["count"], ["stats"], ["head", "-n", "1"]):
        done = cli(*command, f"file://{out}")
        assert done.returncode == 0, (command, done.stderr)
    done = cli("salvage", url, f"file://{tmp_path}/salvaged.tfrecord")
    assert done.returncode == 0, done.stderr
    assert len(list(rf.read_records(tmp_path / "salvaged.tfrecord"))) == 4
    assert list(elsewhere.iterdir()) == []


def test_a_coco_conversion_resumed_through_a_file_url_is_refused_when_its_input_changed(
    tmp_path: Path, elsewhere: Path
) -> None:
    """The COCO files given as file: URLs are in the input fingerprint (they were left
    out: a rerun after the annotations changed resumed, mixing old and new records)."""
    annotations = tmp_path / "ann.json"
    annotations.write_bytes((SHARED / "annotations" / "instances_val2017.json").read_bytes())
    args = ["convert", "coco", "--annotations", f"file://{annotations}"]
    args += ["--images", f"file://{SHARED / 'val2017'}", "--max-records", "10"]
    args += ["--out", str(tmp_path / "out")]
    killed = subprocess.run(
        [sys.executable, "-m", "recordforge", *args],
        env=clean_env(RECORDFORGE_KILL_AT="6"),  # killed at its 6th stage
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode != 0
    data = json.loads(annotations.read_text())
    for a in data["annotations"]:
        a["area"] += 1e6
    annotations.write_text(json.dumps(data))
    done = cli(*args)
    assert done.returncode != 0 and "changed" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "dataset.json").exists()

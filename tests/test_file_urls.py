"""``file://`` URLs as inputs and outputs of a conversion: the local path they name.

Before, ``write_dataset(..., "file:///data/ds")`` and ``convert ... --out file:///data/ds``
wrote the dataset into a directory called ``file:`` under the current directory (exit
0, nothing at /data/ds), and a table file or an image folder given as ``file://`` was
not found ("Failed to open local file 'file:/...'")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import cli

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

"""The command line: `recordforge demo` runs end to end and reports what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main
from recordforge.sources.table import TableSource


def test_demo_converts_the_shapes_sample(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "recordforge", "demo", "--images", "30", "--out", str(out)]
    result = subprocess.run(
        [*command, "--no-train"],  # training: tests/integrations/test_train.py
        capture_output=True,
        text=True,
        check=True,
    )
    assert "image/object/class/text" in result.stdout and "first record" in result.stdout
    manifest = rf.Manifest.load(out / "dataset")
    assert manifest.records() == 30
    for shard in manifest.splits["train"]:
        path = out / "dataset" / shard.file
        assert rf.scan_records(path).records == shard.records
        assert (
            len((out / "dataset" / f"{shard.file}.idx").read_text().splitlines()) == shard.records
        )


def test_convert_coco_cli_and_error_exit(tmp_path: Path, shared_data: Path) -> None:
    coco = shared_data / "tiny_coco"
    out = tmp_path / "coco"
    args = ["convert", "coco", "--annotations", str(coco / "annotations/instances_val2017.json")]
    args += ["--images", str(coco / "val2017"), "--out", str(out), "--per", "annotation"]
    args += ["--max-records", "4096", "--name-template", "file_{index:02d}-{records}.tfrec"]
    assert main(args) == 0
    manifest = rf.Manifest.load(out)
    assert [s.file for s in manifest.splits["train"]] == ["file_00-382.tfrec"]
    missing = ["convert", "coco", "--annotations", str(tmp_path / "nope.json")]
    assert main([*missing, "--images", str(tmp_path), "--out", str(tmp_path / "x")]) == 1


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"recordforge {rf.__version__}"
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "demo" in capsys.readouterr().err


def test_convert_table_and_images_cli(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "taxi"
    csv = shared_data / "tfx_chicago_taxi" / "data.csv"
    assert main(["convert", "table", str(csv), "--out", str(out), "--max-records", "6000"]) == 0
    manifest = rf.Manifest.load(out)
    assert [s.records for s in manifest.splits["train"]] == [6000, 6000, 3000]
    # A table counts its rows without reading them: shards are cut at row counts.
    shards = ["convert", "table", str(csv), "--out", str(tmp_path / "n"), "--num-shards", "4"]
    assert main(shards) == 0
    manifest = rf.Manifest.load(tmp_path / "n")
    assert [s.records for s in manifest.splits["train"]] == [3750] * 4  # shard_bounds(15000, 4)


def test_table_shuffle_says_what_it_permutes(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = shared_data / "tfx_chicago_taxi" / "data.csv"
    out = tmp_path / "shuffled"
    assert main(["convert", "table", str(csv), "--out", str(out), "--shuffle", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    parts = len(TableSource(csv).parts())
    assert (
        f"recordforge convert: warning: --shuffle permutes {csv}'s parts (split 'train': "
        f"{parts} run(s) of rows of up to 4 MiB), not its rows" in err
    )
    assert main(["convert", "table", str(csv), "--out", str(tmp_path / "plain")]) == 0
    assert "warning" not in capsys.readouterr().err
    root = tmp_path / "folders"
    for label, name in [("cat", "chelsea.png"), ("cup", "coffee.png")]:
        (root / label).mkdir(parents=True)
        (root / label / name).write_bytes(
            (shared_data / "pypi_bundled/skimage" / name).read_bytes()
        )
    (root / "cup" / "notes.png").write_bytes(b"not an image")
    images = ["convert", "images", str(root), "--out", str(tmp_path / "img")]
    assert main(images) == 1  # fails on the non-image, naming it
    assert main([*images, "--on-error", "skip", "--overwrite"]) == 0
    manifest = rf.Manifest.load(tmp_path / "img")
    assert manifest.records() == 2
    (skipped,) = manifest.report["skipped"]
    assert "notes.png" in skipped["item"]

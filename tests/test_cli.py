"""The command line: `recordforge demo` runs end to end and reports what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main


def test_demo_converts_the_shapes_sample(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "recordforge", "demo", "--images", "30", "--out", str(out)],
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

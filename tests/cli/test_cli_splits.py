"""``recordforge convert`` with several splits: ``--split`` repeated, each with its own
input, into one dataset (the Beam runner's side: tests/test_beam.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main


def _folder(root: Path, images: Path, files: list[Path]) -> Path:
    for i, f in enumerate(files):
        (root / ("cat", "dog")[i % 2]).mkdir(parents=True, exist_ok=True)
        (root / ("cat", "dog")[i % 2] / f.name).write_bytes(f.read_bytes())
    return root


def test_two_image_folders_as_two_splits(tiny: dict[str, Path], tmp_path: Path) -> None:
    files = sorted(tiny["images"].iterdir())
    a = _folder(tmp_path / "a", tiny["images"], files[:6])
    b = _folder(tmp_path / "b", tiny["images"], files[6:10])
    out = tmp_path / "out"
    args = ["convert", "images", str(a), str(b), "--split", "train", "--split", "test"]
    assert main([*args, "--out", str(out), "--max-records", "4"]) == 0
    manifest = rf.Manifest.load(out)
    assert {n: [s.records for s in shards] for n, shards in manifest.splits.items()} == {
        "train": [4, 2],
        "test": [4],
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "a", "--split", "b"], "--annotations is given 1 times for 2 split"),
        (["--split", "a", "--split", "a"], "names a split twice"),
    ],
)
def test_inputs_must_match_the_splits(
    tiny: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["convert", "coco", "--annotations", str(tiny["annotations"])]
    args += ["--images", str(tiny["images"]), *extra, "--out", str(tmp_path / "out")]
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "dataset.json").exists()

"""The command line: `recordforge demo` runs end to end and reports what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recordforge as rf
from recordforge.cli.__main__ import main


def test_demo_writes_reads_back_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "recordforge", "demo", "--records", "50", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "all records read back intact" in result.stdout
    assert "image/object/class/text" in result.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "demo-00000-of-00001.tfrecord",
        "demo-00000-of-00001.tfrecord.gz",
        "demo-00000-of-00001.tfrecord.zlib",
    ]
    for name in files:
        assert rf.scan_records(out / name).records == 50


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"recordforge {rf.__version__}"
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "demo" in capsys.readouterr().err

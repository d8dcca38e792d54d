"""JSON Lines lines longer than pyarrow's 4 MiB block: read again in one block large
enough, as a CSV's long quoted values are. Before, a line over the block could not be
converted at all ("straddling object straddles two block boundaries"): in the middle of
a file its part failed, as the first line the type inference failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli

import recordforge as rf

LONG = 9 << 20  # over two of pyarrow's 4 MiB blocks


def _jsonl(path: Path, long_at: int, rows: int) -> list[dict[str, object]]:
    values = [{"i": i, "s": ("y" * LONG) if i == long_at else f"x{i}"} for i in range(rows)]
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    return values


def _tree(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("long_at", [0, 700])
def test_a_line_over_the_block_is_converted(tmp_path: Path, long_at: int) -> None:
    path = tmp_path / "t.jsonl"
    values = _jsonl(path, long_at, 1500)
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out-{workers}"
        done = cli("convert", "table", str(path), "--out", str(out), "--workers", workers)
        assert done.returncode == 0, done.stderr
        outs.append(_tree(out))
    assert outs[0] == outs[1]
    ds = rf.open_dataset(tmp_path / "out-1")
    assert len(ds) == len(values)
    got = ds[long_at]
    assert int(got["i"]) == long_at
    assert got["s"] == b"y" * LONG
    assert ds[long_at + 1]["s"] == f"x{long_at + 1}".encode()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_compressed_file_with_a_value_over_the_block_is_converted(
    tmp_path: Path, fmt: str
) -> None:
    """A compressed file is read whole from its start (no byte parts): its blocks grow 4x
    at a time until the long line (or quoted CSV value with line ends) fits."""
    import gzip

    plain = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        _jsonl(plain, 700, 1500)
    else:
        rows = [f"{i},x{i}" for i in range(1500)]
        rows[700] = '700,"' + "y\n" * (LONG // 2) + '"'
        plain.write_text("i,s\n" + "\n".join(rows) + "\n")
    packed = tmp_path / f"t.{fmt}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    for path in (plain, packed):
        done = cli("convert", "table", str(path), "--out", str(tmp_path / f"out-{path.name}"))
        assert done.returncode == 0, done.stderr
    shards = [
        {k: v for k, v in _tree(tmp_path / f"out-{p.name}").items() if k != "dataset.json"}
        for p in (packed, plain)
    ]  # (dataset.json names the input)
    assert shards[0] == shards[1]
    assert len(rf.open_dataset(tmp_path / f"out-{packed.name}")) == 1500

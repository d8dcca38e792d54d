"""The cut of a CSV or JSON Lines file into parts, made in Rust as the scan goes
(``_core.CsvPartScanner``, ``_core.PartCutter``), against the rule written out in Python
over the lines :func:`scan_lines` finds: skip the skipped lines and the header, then
close a part after the first line ending at or past ``part_bytes`` from its start; a
part of empty lines only is no part."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recordforge._core import CsvPartScanner, PartCutter
from recordforge.sources._table_parts import csv_parts, jsonl_parts, scan_lines


def _reference(
    data: bytes, *, csv: bool, skip_rows: int, header: bool, part_bytes: int
) -> list[tuple[int, int, int, int]]:
    lines = [
        (int(e), int(m))
        for ends, marks in scan_lines(io.BytesIO(data), csv=csv, skip=skip_rows if csv else 0)
        for e, m in zip(ends, marks, strict=True)
    ]
    skip = min(1, skip_rows) if csv else 0  # (the skipped lines come as one)
    start: int | None = None if skip or header else 0
    rows, first, parts = 0, 1, []
    for end, mark in lines:
        if start is None:
            if skip:
                skip -= 1
            elif mark:
                header = False
            if not skip and not header:
                start = end
            continue
        rows += mark > 0
        if end >= start + part_bytes:
            if rows:
                parts.append((start, end, first, rows))
                first += rows
            start, rows = end, 0
    if start is not None and rows:
        parts.append((start, lines[-1][0], first, rows))
    return parts


def _random_csv(rng: random.Random) -> bytes:
    pieces = [b"\xef\xbb\xbf"] if rng.random() < 0.2 else []
    for _ in range(rng.randrange(0, 40)):
        cells = []
        for _ in range(rng.randrange(1, 4)):
            kind = rng.random()
            if kind < 0.2:
                cells.append(b'"' + rng.choice([b"a\nb", b'x""y', b"\r\n", b"", b"q,r"]) + b'"')
            elif kind < 0.3:
                cells.append(b'5"x')
            else:
                cells.append(str(rng.randrange(1000)).encode())
        pieces.append(b",".join(cells) + rng.choice([b"\n", b"\r\n", b"\r", b"\n\n", b""]))
    return b"".join(pieces)


@pytest.mark.parametrize("seed", range(60))
def test_csv_parts_follow_the_rule_over_the_scanned_lines(seed: int) -> None:
    rng = random.Random(seed)
    data = _random_csv(rng)
    for part_bytes in (1, 5, 17, 64, 1 << 20):
        for skip_rows in (0, 1, 3):
            for header in (True, False):
                got = csv_parts(
                    io.BytesIO(data),
                    "t.csv",
                    skip_rows=skip_rows,
                    header=header,
                    part_bytes=part_bytes,
                )
                want = _reference(
                    data, csv=True, skip_rows=skip_rows, header=header, part_bytes=part_bytes
                )
                assert [(p.start, p.stop, p.first_row, p.rows) for p in got] == want, (
                    data,
                    part_bytes,
                    skip_rows,
                    header,
                )
                assert [p.index for p in got] == list(range(len(got)))


@pytest.mark.parametrize("seed", range(20))
def test_jsonl_parts_follow_the_rule_over_the_scanned_lines(seed: int) -> None:
    rng = random.Random(seed)
    lines = [
        rng.choice([b'{"a": 1}', b"", b"  ", b'{"b": "x"} ']) for _ in range(rng.randrange(30))
    ]
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    for part_bytes in (1, 9, 40, 1 << 20):
        got = jsonl_parts(io.BytesIO(data), "t.jsonl", part_bytes=part_bytes)
        want = _reference(data, csv=False, skip_rows=0, header=False, part_bytes=part_bytes)
        assert [(p.start, p.stop, p.first_row, p.rows) for p in got] == want


def test_the_cutters_refuse_what_is_not_lines() -> None:
    cutter = PartCutter(0, False, 10)
    with pytest.raises(ValueError, match="differ in length"):
        cutter.lines(np.array([1, 2], np.int64), np.array([1], np.int8))
    with pytest.raises(ValueError, match="negative"):
        cutter.lines(np.array([-1], np.int64), np.array([1], np.int8))
    with pytest.raises(TypeError):
        cutter.lines(np.array([1.5]), np.array([1], np.int8))  # type: ignore[arg-type]
    scanner = CsvPartScanner(ord(","), 0, 0, True, 4)
    assert scanner.feed(b"h\n1234\n5\n") == [(2, 7, 1, 1)]
    assert scanner.finish() == [(7, 9, 2, 1)]


def test_a_process_forked_during_a_scan_scans_its_own_copy(tmp_path: Path) -> None:
    """The scan's read buffer is private memory: a process forked in the middle of a scan
    and the parent both finish it right (a shared map mixed their reads: 199,995 lines
    instead of 200,001, no error)."""
    data = b"a,b\n" + b"".join(b"%d,x%d\n" % (i, i) for i in range(200_000))
    lines = scan_lines(io.BytesIO(data), csv=True, chunk=4096)
    first = next(lines)
    out = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # the child: its count, then out at once
        try:
            out.write_text(str(len(first[0]) + sum(len(ends) for ends, _ in lines)))
        finally:
            os._exit(0)
    count = len(first[0]) + sum(len(ends) for ends, _ in lines)
    os.waitpid(pid, 0)
    assert count == int(out.read_text()) == 200_001


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize(
    "option",
    [{"skip_rows": 2}, {"delimiter": ";"}, {"column_names": ["a"]}, {"null_values": ["NA"]}],
)
def test_csv_options_for_another_format_are_refused(
    tmp_path: Path, fmt: str, option: dict[str, Any]
) -> None:
    """CSV-only options given for a JSON Lines or Parquet file were silently left unused
    (``--skip-rows 1`` converted every row)."""
    from recordforge.sources.table import TableSource

    path = tmp_path / f"t.{fmt}"
    path.write_text('{"a": 1}\n')  # (not read: refused before)
    [name] = option
    with pytest.raises(ValueError, match=rf"t\.{fmt}: {name}: for CSV files only"):
        TableSource(path, **option)
    assert TableSource(path, skip_rows=0).format == fmt


def test_skip_rows_of_a_json_lines_file_is_refused_by_the_command(tmp_path: Path) -> None:
    from helpers import cli

    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    done = cli("convert", "table", str(path), "--out", str(tmp_path / "out"), "--skip-rows", "1")
    assert done.returncode == 1 and "skip_rows: for CSV files only" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()

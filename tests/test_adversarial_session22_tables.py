"""Adversarial checks of the table sources (CSV, Parquet, JSON Lines): parts cut at
row ends, types inferred from the first block, a given schema, and the parallel path.

The invariant: every row pyarrow reads is written exactly once, in order, with its
values (or a clear error names the file and the row), whatever the part size, the batch
size or the number of workers; a refused input is an error of recordforge's own (on the
CLI: a non-zero exit and no traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import cli

import recordforge as rf
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")
pj = pytest.importorskip("pyarrow.json")
pq = pytest.importorskip("pyarrow.parquet")

BLOCK = 4 << 20  # pyarrow's block, from which the types are inferred


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def written(out: Path) -> list[dict[str, Any]]:
    """The records of ``out``'s train split, in shard order, decoded to Python values."""
    manifest = json.loads((out / "dataset.json").read_text())
    rows = []
    for shard in manifest["splits"]["train"]["shards"]:
        for record in rf.read_records(out / shard["file"]):
            rows.append(plain(rf.decode_example(record)))
    return rows


def plain(example: dict[str, Any]) -> dict[str, Any]:
    """A decoded Example as lists of ints, floats or str."""
    return {
        k: v.tolist() if isinstance(v, np.ndarray) else [b.decode("utf-8") for b in v]
        for k, v in example.items()
    }


def as_feature(value: Any) -> list[Any]:
    """A pyarrow cell as the feature recordforge writes for it (missing: empty)."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [int(v) if isinstance(v, bool) else v for v in values]


def oracle_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: as_feature(v) for k, v in row.items()} for row in rows]


def by_parts(src: TableSource) -> list[dict[str, Any]]:
    return [
        plain(rf.decode_example(r)) for part in src.items() for r in src.to_records(part).records
    ]


def across_workers(
    path: Path, tmp_path: Path, counts: tuple[int, ...] = (1, 2, 3), **kw: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Converts ``path`` with 1, 2, 3 workers: the same files each time; the records
    and dataset.json of the first."""
    outs = {}
    for w in counts:
        out = tmp_path / f"{path.name}-w{w}"
        write_source(TableSource(path, **kw), out, workers=w, max_records=3)
        outs[w] = listing(out)
    for w in counts[1:]:
        assert outs[w] == outs[counts[0]], w
    out = tmp_path / f"{path.name}-w{counts[0]}"
    return written(out), json.loads((out / "dataset.json").read_text())


# ---------------------------------------------------------------------------------------
# What holds: awkward CSV / JSONL / Parquet, every part size, any workers


AWKWARD_CSV = (
    b"\xef\xbb\xbfid,text\r\n"
    b'1,"lf\nin"\r\n'
    b'2,"crlf\r\nin"\n'
    b'3,"cr\rin"\r'
    b"\n\r\n"  # empty lines: no rows
    b'4,5" screen\n'
    b'5,"q ""x"" q"\n'
    b'6,""\n'
    b'7,"a,b\n\n"\n'
    b"8,plain\r"
    b"9,last"  # no final line end
)


def test_awkward_csv_at_every_part_size_is_what_pyarrow_reads(tmp_path: Path) -> None:
    """A BOM, CRLF / LF / lone CR row ends, empty lines, quoted LF, CRLF and CR (so
    every byte offset, a part boundary at some part size, falls next to one), ``""``,
    a quote inside an unquoted value, no final line end."""
    path = tmp_path / "awkward.csv"
    path.write_bytes(AWKWARD_CSV)
    table = pcsv.read_csv(
        path,
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(strings_can_be_null=True),  # "" is missing
    )
    want = oracle_rows(table.to_pylist())
    assert len(want) == 9 and want[2]["text"] == ["cr\rin"] and want[5]["text"] == []
    for part_bytes in range(1, len(AWKWARD_CSV) + 2):
        src = TableSource(path, part_bytes=part_bytes, batch_size=2)
        assert src.num_records() == 9
        assert by_parts(src) == want, part_bytes
    got, manifest = across_workers(path, tmp_path, part_bytes=5)
    assert got == want
    assert sum(s["records"] for s in manifest["splits"]["train"]["shards"]) == 9


def test_awkward_csv_last_line_only_cr_and_blank_lines_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(b'a,b\n1,"x\r"\n\r\n\r')
    src = TableSource(path, part_bytes=1)
    assert src.num_records() == 1
    assert by_parts(src) == [{"a": [1], "b": ["x\r"]}]


def test_csv_cell_larger_than_a_block_converts_at_any_part_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    big = "y" * (BLOCK + 1000)
    path.write_bytes(b"a,b\n1,x\n2," + big.encode() + b"\n3,z\n")
    for part_bytes in (1, BLOCK):
        rows = by_parts(TableSource(path, part_bytes=part_bytes))
        assert [r["a"] for r in rows] == [[1], [2], [3]]
        assert rows[1]["b"] == [big]


@pytest.mark.parametrize(
    ("late", "words"),
    [
        (b"1.5,,z\n", "'1.5'"),  # a float in an int column
        (b"9223372036854775808,,z\n", "'9223372036854775808'"),  # past int64
        (b"1,hello,z\n", "'hello'"),  # text in a column empty in the first block
        (b"1,,\xff\n", "invalid UTF8"),  # invalid UTF-8 in a text column
    ],
    ids=["float", "int64-overflow", "null-column", "utf8"],
)
def test_a_type_change_after_the_first_block_stops_naming_file_rows_and_value(
    tmp_path: Path, late: bytes, words: str
) -> None:
    path = tmp_path / "late.csv"
    body = "a,b,c\n" + "".join(f"{i},,x\n" for i in range(BLOCK // 9 + 1000))
    path.write_bytes(body.encode() + late + b"7,,y\n")
    assert path.stat().st_size > BLOCK
    for workers in (1, 2):
        with pytest.raises(rf.SchemaError) as e:
            write_source(TableSource(path), tmp_path / f"o{workers}", workers=workers)
        # (its row since session 29: before, the rows of the part that holds it)
        assert f"{path}: row {BLOCK // 9 + 1001}: " in str(e.value)
        assert words in str(e.value) and "pass schema=" in str(e.value)


def test_a_type_change_after_the_first_block_on_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    body = "a\n" + "".join(f"{i}\n" for i in range(BLOCK // 6 + 1000))
    path.write_text(body + "1.5\n")
    assert path.stat().st_size > BLOCK
    done = cli("convert", "table", str(path), "--out", str(tmp_path / "o"), "--workers", "2")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and str(path) in done.stderr and "'1.5'" in done.stderr


def test_jsonl_edge_lines_are_what_pyarrow_reads(tmp_path: Path) -> None:
    """U+2028 / U+2029 in strings, CRLF, blank and white-space lines, keys missing in
    later rows, lists and nulls, no final line end: every part size, any workers."""
    path = tmp_path / "t.jsonl"
    data = (
        '{"a": 1, "s": "x\u2028y", "l": [1, 2]}\r\n'
        "\r\n"
        ' \t {"a": 2, "l": []}  \n'
        '{"s": "\u2029", "l": null}\n'
        "\n"
        '{"a": 4, "s": "end", "l": [3]}'
    ).encode()
    path.write_bytes(data)
    want = oracle_rows(pj.read_json(path).to_pylist())
    assert len(want) == 4
    for part_bytes in range(1, len(data) + 2, 3):
        assert by_parts(TableSource(path, part_bytes=part_bytes)) == want, part_bytes
    got, _ = across_workers(path, tmp_path, part_bytes=10)
    assert got == want


def test_parquet_zero_row_groups_tiny_groups_and_nullable_lists(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "a": pa.array(range(10), pa.int64()),
            "d": pa.array([None, "x", "y", "x", None, "z", "x", "y", "x", "q"]).dictionary_encode(),
            "l": pa.array([[1], None, [], [2, 3], [4], [5], None, [], [6], [7]]),
        }
    )
    with pq.ParquetWriter(path, table.schema) as writer:
        for start, stop in [(0, 0), (0, 1), (1, 1), (1, 4), (4, 4), (4, 10), (10, 10)]:
            writer.write_table(table.slice(start, stop - start))
    assert pq.ParquetFile(path).metadata.num_row_groups == 7
    want = oracle_rows(pq.read_table(path).to_pylist())
    for part_rows in (1, 2, 3, 100):
        assert by_parts(TableSource(path, part_rows=part_rows)) == want
    got, manifest = across_workers(path, tmp_path, part_rows=1)
    assert got == want
    assert manifest["schema"]["features"]["l"]["shape"] == [None]


def test_parquet_with_no_rows_writes_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    got, manifest = across_workers(path, tmp_path, counts=(1, 2))
    assert got == [] and manifest["report"]["records"] == 0


# ---------------------------------------------------------------------------------------
# Bugs


def multiline_rows(path: Path) -> None:
    """4999 rows of 991 bytes, each with a quoted line end at byte 498: pyarrow's 4 MiB
    block ends in a row before its quoted line end."""
    rows = (b'%06d,"' % i + b"y" * 490 + b"\n" + b"z" * 490 + b'"\n' for i in range(1, 5000))
    path.write_bytes(b"id,text\n" + b"".join(rows))


def huge_multiline_cell(path: Path) -> None:
    """One quoted value larger than a block that holds a line end."""
    path.write_bytes(b'a,b\n1,x\n2,"' + b"y" * (BLOCK + 1000) + b'\n"\n3,z\n')


@pytest.mark.parametrize("make", [multiline_rows, huge_multiline_cell], ids=["rows", "cell"])
def test_quoted_line_ends_across_a_block_convert_at_the_default_part_size(
    tmp_path: Path, make: Any
) -> None:
    """A valid CSV that recordforge's own scan counts right and pyarrow reads with
    ``newlines_in_values=True``: refused at the default part size (1 MiB parts work)."""
    path = tmp_path / "multi.csv"
    make(path)
    read = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=4 * BLOCK),  # (a value longer than a block)
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
    )
    src = TableSource(path)
    assert src.num_records() == read.num_rows  # the scan is right
    out = tmp_path / "o"
    write_source(src, out, workers=2)
    rows = written(out)
    assert len(rows) == read.num_rows
    assert rows[-1] == oracle_rows(read.slice(read.num_rows - 1).to_pylist())[0]


@pytest.mark.parametrize("fmt", ["csv-schema", "parquet-uint64"])
def test_a_value_past_int64_is_a_row_error_that_skip_skips(tmp_path: Path, fmt: str) -> None:
    if fmt == "csv-schema":
        path = tmp_path / "t.csv"
        path.write_text("a\n1\n9223372036854775808\n3\n")
        src = TableSource(path, schema=rf.Schema({"a": rf.FeatureSpec(dtype="int64", shape=())}))
    else:
        path = tmp_path / "t.parquet"
        pq.write_table(pa.table({"a": pa.array([1, 2**64 - 1, 3], pa.uint64())}), path)
        src = TableSource(path)
    out = tmp_path / "o"
    write_source(src, out, on_error="skip")
    assert written(out) == [{"a": [1]}, {"a": [3]}]
    skipped = rf.Manifest.load(out).report["skipped"]
    assert [s["item"] for s in skipped] == [f"{path}: row 2"]


def test_a_cell_converts_the_same_whatever_its_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "hex.csv"
    path.write_text("a\n0x10\nabc\n")
    schema = rf.Schema({"a": rf.FeatureSpec(dtype="int64", shape=())})
    results = []
    for part_bytes, batch_size in [(1 << 20, 100), (1, 100), (1 << 20, 1)]:
        out = tmp_path / f"o{part_bytes}-{batch_size}"
        src = TableSource(path, schema=schema, part_bytes=part_bytes, batch_size=batch_size)
        write_source(src, out, on_error="skip")
        skipped = [s["item"] for s in rf.Manifest.load(out).report["skipped"]]
        results.append((written(out), skipped))
    assert results[1] == results[0] and results[2] == results[0], results


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_duplicate_column_names_are_a_clear_error(tmp_path: Path, fmt: str) -> None:
    if fmt == "csv":
        path = tmp_path / "dup.csv"
        path.write_text("a,a,b\n1,2,x\n3,4,y\n")
    else:
        path = tmp_path / "dup.parquet"
        pq.write_table(pa.Table.from_arrays([pa.array([1, 3]), pa.array([2, 4])], ["a", "a"]), path)
    done = cli("convert", "table", str(path), "--out", str(tmp_path / "o"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-300:]
    assert str(path) in done.stderr


@pytest.mark.parametrize(
    "header",
    [b"\xef\xbb\xbfa,b\n", b'"x,y",z\n', b"a,,b\n"],
    ids=["bom", "quoted-delimiter", "empty-name"],
)
def test_header_only_csv_has_the_column_names_pyarrow_reads(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(header)
    names = pcsv.read_csv(path).column_names
    out = tmp_path / "o"
    write_source(TableSource(path), out)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["report"]["records"] == 0
    assert list(manifest["schema"]["features"]) == names


def test_skip_rows_over_a_quoted_line_end_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "pre.csv"
    path.write_bytes(b'"report of\n2024",x\nid,name\n1,ann\n2,bo\n')
    read = pcsv.read_csv(path, read_options=pcsv.ReadOptions(skip_rows=1))
    want = oracle_rows(read.to_pylist())
    src = TableSource(path, skip_rows=1)
    out = tmp_path / "o"
    try:
        write_source(src, out)
    except rf.RecordforgeError:
        return  # refusing it is fine: nothing silent
    assert src.num_records() == read.num_rows
    assert written(out) == want


@pytest.mark.parametrize(
    "names",
    [
        ("a", "b"),  # "b" first seen after the first block: found by a search of the file
        ("a",),  # a field the given schema leaves out is dropped, as a CSV column is
    ],
    ids=["with-late-key", "without"],
)
def test_jsonl_key_first_seen_after_the_first_block_converts_with_a_schema(
    tmp_path: Path, names: tuple[str, ...]
) -> None:
    path = tmp_path / "late.jsonl"
    n = BLOCK // 9 + 5000
    path.write_bytes(b"".join(b'{"a":%d}\n' % i for i in range(n)) + b'{"a":-1,"b":"late"}\n')
    assert pj.read_json(path).num_rows == n + 1  # pyarrow reads it
    specs = {"a": rf.FeatureSpec(dtype="int64", shape=())}
    if "b" in names:
        specs["b"] = rf.FeatureSpec(dtype="string", shape=(None,))
    out = tmp_path / "o"
    write_source(TableSource(path, schema=rf.Schema(specs)), out)
    rows = written(out)
    assert len(rows) == n + 1
    assert rows[-1]["a"] == [-1] and rows[-1].get("b", ["late"]) == ["late"]


def test_invalid_utf8_header_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a\xff,b\n1,2\n")
    done = cli("convert", "table", str(path), "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert str(path) in done.stderr, done.stderr

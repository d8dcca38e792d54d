"""Tables in parts: a CSV / JSONL file cut into byte ranges at row ends (quotes
respected), a Parquet file into runs of row groups. Parts cover every row once, in
order; the records, shards and dataset.json are the same bytes as a one-pass read of the
file (``TableSource.batches()``, the reading path before parts), for any part size and
any number of workers; rows are counted without reading them."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import recordforge as rf
from recordforge.sources._table_parts import csv_parts, parquet_parts, scan_lines
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyarrow.csv")
pytest.importorskip("pyarrow.json")
pq = pytest.importorskip("pyarrow.parquet")

PART_SIZES = (1, 7, 40, 1 << 30)


def _one_pass(src: TableSource) -> list[bytes]:
    """The records of a one-pass read (batches, as items were before parts)."""
    return [r for batch in src.batches() for r in src.to_records(batch).records]


def _by_parts(src: TableSource) -> list[bytes]:
    return [r for part in src.items() for r in src.to_records(part).records]


def _values(src: TableSource) -> list[dict[str, Any]]:
    """Rows as pyarrow reads each part (the reading path the records are made from)."""
    return [
        row
        for part in src.items()
        for batch in src._read_part(part)[0]  # the private reader: values, not records
        for row in batch.to_pylist()
    ]


def _check_parts(src: TableSource) -> None:
    parts = src.items()
    whole = [row.values for row in src.rows()]
    assert [p.index for p in parts] == list(range(len(parts)))
    assert [p.first_row for p in parts] == list(
        np.cumsum([1] + [p.rows for p in parts])[:-1].tolist()
    )
    assert all(a.stop <= b.start for a, b in itertools.pairwise(parts))
    assert src.num_records() == sum(p.rows for p in parts) == len(whole)
    names = list(src.schema())
    assert [{n: row.get(n) for n in names} for row in _values(src)] == whole
    assert _by_parts(src) == _one_pass(src)


CSVS = {
    "plain": b"a,b\n1,x\n2,y\n3,z\n",
    "crlf": b"a,b\r\n1,x\r\n2,y\r\n\r\n3,z\r\n",
    "lone cr": b"a,b\r1,x\r2,y\r3,z\r",
    "no final newline": b"a,b\n1,x\n2,y\n3,z",
    "empty lines": b"\n\na,b\n\n1,x\n\n\n2,y\n3,z\n\n",
    "quoted newlines": b'a,b\n1,"x\ny"\n2,"multi\r\nline\n\n"\n3,"q ""\n"" q"\n4,end\n',
    "quotes inside fields": b'a,b\n1,5" x\n2,"q"z"\n3,"a,b"\n4,x"\n5,"\n"\n',
    "quote at a line start": b'a,b\n"1","x\n"\n"2",y\n',
    "bom": b'\xef\xbb\xbf"a",b\n1,"x\ny"\n2,y\n',
    "header only": b"a,b\n",
    "one row": b"a,b\n1,x",
}


@pytest.mark.parametrize("name", list(CSVS))
@pytest.mark.parametrize("part_bytes", PART_SIZES)
def test_csv_parts_cover_every_row_once(tmp_path: Path, name: str, part_bytes: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(CSVS[name])
    _check_parts(TableSource(path, part_bytes=part_bytes))
    if part_bytes == 1 and name not in ("header only", "one row"):
        assert len(TableSource(path, part_bytes=1).items()) > 1


@pytest.mark.parametrize("part_bytes", PART_SIZES)
def test_skipped_lines_given_names_tsv_and_a_schema(tmp_path: Path, part_bytes: int) -> None:
    path = tmp_path / "iris.tsv"
    path.write_bytes(b"3\t2\tjunk\n\n1\tx\n\n2\t\n3\tz\n")
    src = TableSource(path, skip_rows=2, column_names=["n", "s"], part_bytes=part_bytes)
    _check_parts(src)
    assert [row.values for row in src.rows()][1] == {"n": 2, "s": None}
    schema = rf.Schema({"s": rf.FeatureSpec(dtype="string", shape=(None,))})
    _check_parts(
        TableSource(path, skip_rows=2, column_names=["n", "s"], schema=schema, part_bytes=1)
    )


def test_an_empty_csv_fails_as_before(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    src = TableSource(path)
    assert src.parts() == [] and src.num_records() == 0
    with pytest.raises(rf.ItemError, match=r"empty\.csv.*Empty CSV file"):
        src.items()


def test_scan_is_the_same_for_every_chunk_size() -> None:
    for data in CSVS.values():
        for csv_mode in (True, False):
            expected = [
                (e.tolist(), m.tolist())
                for e, m in scan_lines(io.BytesIO(data), csv=csv_mode, chunk=1 << 20)
            ]
            flat = [[x for e, _ in expected for x in e], [x for _, m in expected for x in m]]
            for chunk in (1, 2, 3, 5, 8):
                got = list(scan_lines(io.BytesIO(data), csv=csv_mode, chunk=chunk))
                ends = [x for e, _ in got for x in e.tolist()]
                marks = [x for _, m in got for x in m.tolist()]
                assert [ends, marks] == flat, (data, chunk)


# Cells with delimiters, quotes, line ends of every kind, and empty strings.
_CELL = st.text(alphabet=st.sampled_from(list('ab,"\n\r x')), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(_CELL, min_size=2, max_size=2), max_size=8),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    terminator=st.sampled_from(["\n", "\r\n"]),
    part_bytes=st.integers(1, 30),
    chunk=st.integers(1, 9),
)
def test_csv_written_by_python_cuts_where_pyarrow_reads_rows(
    rows: list[list[str]], quoting: int, terminator: str, part_bytes: int, chunk: int
) -> None:
    """Any CSV that Python's csv module writes: every part, read by pyarrow alone with
    the column names, gives the rows of the whole file, in order."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator=terminator)
    writer.writerow(["a", "b"])
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8")
    options = pa.csv.ConvertOptions(column_types={"a": pa.string(), "b": pa.string()})
    try:
        whole = pa.csv.read_csv(pa.BufferReader(data), convert_options=options).to_pylist()
    except pa.ArrowInvalid:  # a lone \r left unquoted by QUOTE_MINIMAL ends a row there
        assume(False)
    parts = csv_parts(io.BytesIO(data), part_bytes=part_bytes)
    got = []
    for part in parts:
        table = pa.csv.read_csv(
            pa.BufferReader(data[part.start : part.stop]),
            read_options=pa.csv.ReadOptions(column_names=["a", "b"]),
            convert_options=options,
        )
        assert table.num_rows == part.rows
        got += table.to_pylist()
    assert got == whole
    small = [x for e, _ in scan_lines(io.BytesIO(data), csv=True, chunk=chunk) for x in e]
    assert small == [x for e, _ in scan_lines(io.BytesIO(data), csv=True) for x in e]
    for file in (_Trickle(data), _TrickleRead(data)):
        trickle = [x for e, _ in scan_lines(file, csv=True, chunk=chunk + 2) for x in e]
        assert trickle == small, type(file)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.text(alphabet=st.sampled_from(list('a"\r\n ')), max_size=40),
    part_bytes=st.integers(1, 12),
    chunk=st.integers(1, 7),
)
def test_any_one_column_text_cuts_where_pyarrow_reads_rows(
    body: str, part_bytes: int, chunk: int
) -> None:
    """Arbitrary quotes and line ends (stray quotes, lone \r, quoted line ends, empty
    lines) in a one-column CSV: wherever pyarrow reads the whole file, the parts read
    alone give the same rows, and the scan does not depend on the chunk size."""
    data = ("c\n" + body).encode()
    options = pa.csv.ConvertOptions(column_types={"c": pa.string()})
    try:
        whole = pa.csv.read_csv(pa.BufferReader(data), convert_options=options).to_pylist()
    except pa.ArrowInvalid:  # an unterminated quoted value
        assume(False)
    got = []
    for part in csv_parts(io.BytesIO(data), part_bytes=part_bytes):
        table = pa.csv.read_csv(
            pa.BufferReader(data[part.start : part.stop]),
            read_options=pa.csv.ReadOptions(column_names=["c"]),
            convert_options=options,
        )
        assert table.num_rows == part.rows
        got += table.to_pylist()
    assert got == whole
    small = [x for e, _ in scan_lines(io.BytesIO(data), csv=True, chunk=chunk) for x in e]
    assert small == [x for e, _ in scan_lines(io.BytesIO(data), csv=True) for x in e]


@pytest.mark.parametrize("part_bytes", PART_SIZES)
def test_jsonl_parts(tmp_path: Path, part_bytes: int) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        b'{"a": 1, "b": "x\\ny"}\n\n   \r\n{"a": 2, "b": null}\r\n{"b": "z", "a": 3}\n'
        b'{"a": 4, "b": "w", "l": [1, 2]}'
    )
    _check_parts(TableSource(path, part_bytes=part_bytes))


def test_jsonl_two_objects_on_a_line_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2} {"a": 3}\n{"a": 4}\n')
    src = TableSource(path, part_bytes=1)
    (error,) = src.to_records(src.items()[1]).errors
    assert error.item == f"{path}: rows 2-2"
    assert "counted 1 rows in bytes 9-27, pyarrow read 2" in error.reason


@pytest.mark.parametrize("part_rows", [1, 3, 4, 7, 100])
def test_parquet_parts_are_runs_of_row_groups(tmp_path: Path, part_rows: int) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table({"n": list(range(10)), "s": [None if i % 3 else f"s{i}" for i in range(10)]})
    pq.write_table(table, path, row_group_size=3)  # groups of 3, 3, 3, 1
    src = TableSource(path, part_rows=part_rows, batch_size=2)
    parts = src.items()
    assert parts[0].start == 0 and parts[-1].stop == 4
    assert all(p.kind == "row_groups" for p in parts)
    assert src.num_records() == 10
    _check_parts(src)
    assert [
        (p.start, p.stop, p.first_row, p.rows) for p in parquet_parts("x", [3, 0, 3], part_rows=4)
    ] == [(0, 3, 1, 6)]
    parts = parquet_parts("x", [3, 3, 3, 1], [10, 50, 10, 1], part_bytes=40)
    assert [(p.start, p.stop, p.first_row, p.rows) for p in parts] == [(0, 2, 1, 6), (2, 4, 7, 4)]


def test_parquet_parts_are_bounded_in_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blobs.parquet"
    table = pa.table({"n": list(range(40)), "blob": [bytes([i]) * 10_000 for i in range(40)]})
    pq.write_table(table, path, row_group_size=4, compression="none")
    src = TableSource(path, part_bytes=30_000)  # ~40 kB a row group: one group a part
    assert [p.rows for p in src.items()] == [4] * 10
    _check_parts(src)


def test_compressed_csv_is_one_part(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(CSVS["quoted newlines"]))
    src = TableSource(path, part_bytes=1)
    (part,) = src.items()
    assert part.kind == "whole" and part.rows == 4 == src.num_records()
    _check_parts(src)


def test_parts_and_sources_travel(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(CSVS["quoted newlines"])
    src = TableSource(path, part_bytes=1)
    parts = src.items()
    back = pickle.loads(pickle.dumps(src))
    assert back == src
    assert [list(back.to_records(pickle.loads(pickle.dumps(p))).records) for p in parts] == [
        list(src.to_records(p).records) for p in parts
    ]
    assert len(pickle.dumps(parts[0])) < 300  # a description, not data


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _written(src: TableSource, out: Path, items: Any = None, **options: Any) -> dict[str, bytes]:
    if not {"max_records", "max_bytes", "num_shards"} & set(options):
        options["max_records"] = 7
    write_source(src, out, items=items, **options)
    return _files(out)


def _names(n: int) -> list[str]:
    return [f"c{k}" for k in range(n)]


# Quoted commas in "Stage"; "Date Egg" (a date) has no feature kind.
PENGUINS_RAW = rf.Schema(
    {
        "Stage": rf.FeatureSpec(dtype="string"),
        "Body Mass (g)": rf.FeatureSpec(dtype="float32", shape=(None,)),
        "Comments": rf.FeatureSpec(dtype="string", shape=(None,)),
    }
)
GZ_OPTIONS = {"delimiter": " ", "column_names": _names(10)}
SHARED_TABLES: list[tuple[str, dict[str, Any]]] = [
    ("tfx_chicago_taxi/data.csv", {}),
    ("pypi_bundled/palmerpenguins/penguins.csv", {}),
    ("pypi_bundled/palmerpenguins/penguins-raw.csv", {"schema": PENGUINS_RAW}),
    ("pypi_bundled/sklearn/iris.csv", {"skip_rows": 1, "column_names": _names(5)}),
    ("pypi_bundled/sklearn/breast_cancer.csv", {"skip_rows": 1, "column_names": _names(31)}),
    (
        "pypi_bundled/sklearn/diabetes_data_raw.csv.gz",
        {"delimiter": " ", "column_names": _names(10)},
    ),
]


@pytest.mark.slow
def test_shared_tables_give_the_same_bytes_for_any_part_size(
    shared_data: Path, tmp_path: Path
) -> None:
    """Real files -> the same shards and dataset.json read in one pass, in parts of
    4 MiB (the default), or in parts of ~1 kB."""
    for i, (name, options) in enumerate(SHARED_TABLES):
        path = shared_data / name
        src = TableSource(path, **options)
        expected = _written(src, tmp_path / f"{i}-one-pass", items=src.batches())
        assert _written(src, tmp_path / f"{i}-parts") == expected
        small = TableSource(path, part_bytes=1024, batch_size=100, **options)
        assert len(small.items()) > 1 or name.endswith(".gz")
        assert small.num_records() == rf.Manifest.load(tmp_path / f"{i}-parts").report["items"]
        assert _written(small, tmp_path / f"{i}-small") == expected


def test_bad_rows_are_named_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    lines = [f"{i},s{i}" for i in range(1, 41)]
    lines[16] = "nope,s17"  # row 17
    lines[29] = "30,"  # row 30: a missing value where the schema has shape ()
    path.write_text("n,s\n" + "\n".join(lines) + "\n", encoding="utf-8")
    schema = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})
    outs = []
    for k, part_bytes in enumerate((1 << 20, 1, 50)):
        src = TableSource(path, schema=schema, part_bytes=part_bytes, batch_size=4)
        with pytest.raises(rf.ItemError) as e:
            write_source(src, tmp_path / f"fail{k}")
        assert e.value.item == f"{path}: row 17" and "'nope'" in e.value.reason
        items = src.batches() if k == 0 else None
        outs.append(_written(src, tmp_path / f"skip{k}", items=items, on_error="skip"))
        report = rf.Manifest.load(tmp_path / f"skip{k}").report
        assert [s["item"] for s in report["skipped"]] == [f"{path}: row 17", f"{path}: row 30"]
        assert report["items"] == 40 and report["records"] == 38
    assert outs[0] == outs[1] == outs[2]


def test_a_row_of_the_wrong_number_of_values_is_one_error_naming_its_row(tmp_path: Path) -> None:
    """A row with fewer values than the header, deep in a later part: an error naming
    that row; skipped, it is the only row missing (before 2026-12-07 its whole part of
    ~250,000 rows went, reported as one skipped item)."""
    path = tmp_path / "ragged.csv"
    good = "1,2\n" * 1_250_000  # 5 MB: past the first block, which the schema reads
    path.write_text("a,b\n" + good + "5\n6,7\n", encoding="utf-8")
    schema = rf.Schema({"a": rf.FeatureSpec(dtype="int64")})  # no pass over the rows
    src = TableSource(path, schema=schema, part_bytes=1 << 20)
    last = src.items()[-1]
    assert last.first_row + last.rows - 1 == 1_250_002
    with pytest.raises(rf.ItemError) as e:
        write_source(src, tmp_path / "fail")
    assert e.value.item == f"{path}: row 1250001"
    assert e.value.reason == "1 values where the header names 2 columns: '5'"
    write_source(src, tmp_path / "skip", on_error="skip")
    manifest = rf.Manifest.load(tmp_path / "skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [f"{path}: row 1250001"]
    assert manifest.records() == 1_250_001
    assert rf.open_dataset(tmp_path / "skip")[1_250_000]["a"] == 6


def _ragged_csv(path: Path) -> tuple[list[tuple[int, str]], list[int]]:
    """A CSV (CRLF line ends, empty lines, quoted values holding line ends) of 3,000 rows
    some of which have too few or too many values, and one whose value is not a number:
    the good rows' (n, s), and the bad rows' numbers."""
    rows, good, bad = [], [], []
    for i in range(1, 3001):
        s = f"v{i}" if i % 7 else f'"line\r\nbreak {i}"'
        if i in (3, 1200, 1201, 2999):
            rows.append(f"{i}" if i != 1201 else f"{i},x,extra")  # too few, too many
            bad.append(i)
        elif i == 1500:
            rows.append(f"oops,{s}")  # a value that is no int64
            bad.append(i)
        else:
            rows.append(f"{i},{s}")
            good.append((i, s.strip('"')))
        if i % 500 == 0:
            rows.append("")  # an empty line: no row
    path.write_bytes(("n,s\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    return good, bad


@pytest.mark.parametrize("part_bytes", [1 << 20, 4096, 1])
def test_rows_of_the_wrong_number_of_values_are_skipped_alone(
    tmp_path: Path, part_bytes: int
) -> None:
    """Each row of the wrong number of values, in any part, is skipped on its own and
    named by its row of the file, among rows with quoted line ends, CRLF, empty lines and
    a value of the wrong type; every other row is written with its own values, the same
    bytes for 1 and 2 workers and any part size; with the default policy the first bad
    row stops the conversion, named."""
    path = tmp_path / "t.csv"
    good, bad = _ragged_csv(path)
    schema = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})
    src = TableSource(path, schema=schema, part_bytes=part_bytes)
    with pytest.raises(rf.ItemError) as e:
        write_source(src, tmp_path / "fail")
    assert e.value.item == f"{path}: row 3"
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"skip{workers}"
        outs.append(_written(src, out, on_error="skip", workers=workers))
        report = rf.Manifest.load(out).report
        assert [s["item"] for s in report["skipped"]] == [f"{path}: row {i}" for i in bad]
        assert report["items"] == 3000
        got = [(int(r["n"]), r["s"].decode()) for r in rf.open_dataset(out)]
        assert got == good
    assert outs[0] == outs[1]


def _bad_table(tmp_path: Path, fmt: str) -> TableSource:
    """600 rows in 10+ parts; rows 101 and 450 do not fit the schema."""
    ids: list[Any] = list(range(600))
    ids[100], ids[449] = "x", None
    texts = [f"text {i}\nsecond line" for i in range(600)]
    schema = rf.Schema(
        {"id": rf.FeatureSpec(dtype="int64"), "text": rf.FeatureSpec(dtype="string")}
    )
    if fmt == "parquet":
        path = tmp_path / "t.parquet"
        table = pa.table({"id": [str(i) if i is not None else None for i in ids], "text": texts})
        pq.write_table(table, path, row_group_size=50)
        return TableSource(path, schema=schema, part_rows=50)
    if fmt == "jsonl":
        path = tmp_path / "t.jsonl"
        ids[100] = 1.5  # a JSON column is one type: a float where the schema says int64
        rows = [json.dumps({"id": i, "text": t}) for i, t in zip(ids, texts, strict=True)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return TableSource(path, schema=schema, part_bytes=2000, batch_size=64)
    path = tmp_path / "t.csv"
    lines = [f'{"" if i is None else i},"{t}"' for i, t in zip(ids, texts, strict=True)]
    path.write_text("id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return TableSource(path, schema=schema, part_bytes=1000, batch_size=64)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize(
    "options", [{"max_records": 70}, {"num_shards": 4}, {"max_bytes": "3kB", "compression": "gzip"}]
)
def test_workers_give_the_same_bytes(tmp_path: Path, fmt: str, options: dict[str, Any]) -> None:
    """Parts read by 2 worker processes (which write their own shards) == the one-pass
    read in this process: shards, dataset.json, skipped rows and their names."""
    src = _bad_table(tmp_path, fmt)
    assert len(src.items()) >= 10
    one = _written(src, tmp_path / "w1", items=src.batches(), on_error="skip", **options)
    assert _written(src, tmp_path / "w2", workers=2, on_error="skip", **options) == one
    report = rf.Manifest.load(tmp_path / "w2").report
    assert [s["item"] for s in report["skipped"]] == [
        f"{src.path}: row 101",
        f"{src.path}: row 450",
    ]
    with pytest.raises(rf.ItemError, match="row 101"):
        write_source(src, tmp_path / "fail", workers=2)


def test_num_shards_cuts_at_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [f'{i},"line\n{i}"' for i in range(103)]
    path.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    src = TableSource(path, part_bytes=100)
    assert len(src.items()) > 4 and src.num_records() == 103
    manifest = write_source(src, tmp_path / "out", num_shards=4)
    assert [s.records for s in manifest.splits["train"]] == [25, 26, 26, 26]  # shard_bounds
    written = [
        r for s in manifest.splits["train"] for r in rf.read_records(tmp_path / "out" / s.file)
    ]
    assert written == _one_pass(src)


def test_num_records_reads_no_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(CSVS["quoted newlines"])
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"a": i}) + "\n" for i in range(5)), encoding="utf-8")
    monkeypatch.setattr(TableSource, "_arrow_batches", None)  # any parse would fail
    assert TableSource(path).num_records() == 4
    assert TableSource(jsonl).num_records() == 5


def test_schema_pass_over_parts_names_the_first_bad_part(tmp_path: Path) -> None:
    """Types come from the first block (4 MiB, as in a one-pass read); missing values are
    counted part by part on threads; a value that does not convert names the rows of
    the first part (in file order) that holds one."""
    path = tmp_path / "late.csv"
    rows = [f"{i},{i % 7 or ''}\n" for i in range(1_000_000)]  # 8 MB
    rows[900_000], rows[950_000] = "1.5,1\n", "x,1\n"
    path.write_text("v,w\n" + "".join(rows), encoding="utf-8")
    src = TableSource(path, part_bytes=1 << 18)
    assert len(src.parts()) > 20
    bad = next(p for p in src.parts() if p.first_row <= 900_001 < p.first_row + p.rows)
    where = bad.name.rsplit(": ", 1)[1]
    with pytest.raises(rf.ItemError, match=rf"late\.csv: cannot read csv \({where}\).*'1\.5'"):
        src.schema()
    rows[900_000], rows[950_000] = "900000,1\n", "950000,\n"
    path.write_text("v,w\n" + "".join(rows), encoding="utf-8")
    src = TableSource(path, part_bytes=1 << 18)
    assert src.schema() == rf.Schema(
        {"v": rf.FeatureSpec(dtype="int64"), "w": rf.FeatureSpec(dtype="int64", shape=(None,))}
    )
    assert _by_parts(src) == _one_pass(src)


_HOSTILE = [b"a", b"1", b",", b'"', b"\n", b"\r", b" ", b"\xff"]
_LINE_END = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"])
# A cell: bytes other than the delimiter, or such bytes quoted (with quotes doubled).
_HOSTILE_CELL = st.lists(st.sampled_from([b"a", b"1", b'"', b"\n", b"\r", b" ", b"\xff"])).map(
    b"".join
) | st.lists(st.sampled_from([b"a", b",", b'""', b"\n", b"\r\n"])).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.lists(st.sampled_from(_HOSTILE)).map(b"".join),
        st.lists(st.tuples(_HOSTILE_CELL, _HOSTILE_CELL, _LINE_END)).map(
            lambda rows: b"".join(a + b"," + b + end for a, b, end in rows)
        ),
    ),
    part_bytes=st.integers(1, 16),
)
def test_hostile_csv_fails_or_converts_as_one_pass(body: bytes, part_bytes: int) -> None:
    """Bytes of any kind after a header: in parts, the conversion gives the records of the
    one-pass read, or both fail with a RecordforgeError naming the file."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        path.write_bytes(b"a,b\n" + body)

        def convert(items: str) -> list[bytes] | str:
            src = TableSource(path, part_bytes=part_bytes)
            try:
                if items == "batches":
                    return _one_pass(src)
                records = []
                for part in src.items():
                    converted = src.to_records(part)
                    if converted.errors:
                        raise converted.errors[0]
                    records += list(converted.records)
                return records
            except rf.RecordforgeError as e:
                assert str(path) in str(e)
                return "error"

        got = convert("parts")
        event("error" if got == "error" else f"{min(len(got), 3)}+ records")
        assert got == convert("batches")


def test_jsonl_objects_over_several_lines_are_one_part(tmp_path: Path) -> None:
    """Pretty-printed objects (which pyarrow reads) cannot be cut at lines: the file is
    one part, its rows counted by reading them; one object a line is cut as usual."""
    path = tmp_path / "pretty.json"
    rows = [{"a": i, "b": [i, i + 1]} for i in range(50)]
    path.write_text("".join(json.dumps(r, indent=1) + "\n" for r in rows), encoding="utf-8")
    src = TableSource(path, part_bytes=100)
    (part,) = src.items()
    assert part.kind == "whole" and part.rows == 50 == src.num_records()
    _check_parts(src)
    for data in (b'{"a": 1}\n{"a":\n 2}\n', b'{"a": 1}\n{"a": 2}', b'{"a": 1} \n\n{"a": 2}'):
        path.write_bytes(data)
        src = TableSource(path, part_bytes=1)
        assert src.items()[0].kind == ("whole" if b":\n" in data else "bytes")
        assert src.num_records() == 2
        _check_parts(src)


_JSON_OBJECTS = st.sampled_from([b'{"a": 1}', b' {"a": 2} ', b'{"a":\n 3}', b'{\n"a": 4\n}'])
_JSON_BETWEEN = st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\n \n", b"\n\r\n"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.tuples(_JSON_OBJECTS, _JSON_BETWEEN), min_size=1).map(
        lambda rows: [b"".join(row) for row in rows]
    ),
    cut_end=st.booleans(),
    part_bytes=st.integers(1, 20),
    chunk=st.integers(1, 7),
)
def test_any_jsonl_cuts_where_pyarrow_reads_rows(
    pieces: list[bytes], cut_end: bool, part_bytes: int, chunk: int
) -> None:
    """Objects (one a line, or over several lines), spaces, \\r and \\n in any order:
    the scan does not depend on the chunk size, and wherever pyarrow reads the file, the
    parts (or the one part a file with an object over several lines is) give its rows.
    (Two objects on one line are an error naming the rows: see above.)"""
    data = b"".join(pieces)
    data = data.rstrip(b"\r\n") if cut_end else data

    def scan(**kwargs: Any) -> list[list[int]]:
        got = list(scan_lines(io.BytesIO(data), csv=False, **kwargs))
        return [[x for e, _ in got for x in e.tolist()], [x for _, m in got for x in m.tolist()]]

    assert scan(chunk=chunk) == scan()
    whole = pa.json.read_json(pa.BufferReader(data)).to_pylist()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        path.write_bytes(data)
        src = TableSource(path, part_bytes=part_bytes)
        assert src.num_records() == len(whole)
        rows = [
            row for part in src.items() for b in src._read_part(part)[0] for row in b.to_pylist()
        ]
        assert rows == whole


class _TrickleRead:
    """A file that reads at most 2 bytes a call (a pipe, a socket), without ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.f.read(min(n, 2) if n >= 0 else 2)


class _Trickle(_TrickleRead):
    """The same, with ``readinto``."""

    def readinto(self, b: memoryview) -> int:
        return self.f.readinto(b[:2])


# The row-end scan beside the type inference (TableSource.items)


def _scan_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "recordforge-scan"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_scan_beside_the_inference_gives_the_parts_of_a_serial_scan(
    tmp_path: Path, fmt: str
) -> None:
    """items() scans for row ends on a thread while pyarrow infers the types: the same
    parts and schema as parts() then the plan one after the other, and no thread left."""
    rows = [{"a": i, "b": f"t{i}\nx" if fmt == "csv" else f"t{i}", "c": i / 3} for i in range(3000)]
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["a", "b", "c"])
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    beside = TableSource(str(path), part_bytes=10_000)
    items = beside.items()
    serial = TableSource(str(path), part_bytes=10_000)
    assert items == serial.parts() and len(items) > 5
    assert beside.schema() == serial.schema()
    assert not _scan_threads()


def test_an_inference_that_fails_stops_the_scan_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV whose first block pyarrow refuses fails with the inference's error (named
    file), as when the scan ran after it; the scan is stopped at its next block and
    waited for, not left running (workers would spawn instead of fork)."""
    import time

    from recordforge.sources import _table_parts

    scanner = _table_parts.CsvPartScanner

    class Slow:  # 0.1 s a block: stopped well before its end
        def __init__(self, *args: Any) -> None:
            self.inner = scanner(*args)
            self.line, self.finish = self.inner.line, self.inner.finish

        def feed(self, data: Any) -> Any:
            time.sleep(0.1)
            return self.inner.feed(data)

    monkeypatch.setattr(_table_parts, "CsvPartScanner", Slow)
    path = tmp_path / "bad.csv"
    with open(path, "w") as f:
        # (a row of the wrong number of values no longer fails the inference: it is the
        # conversion's error, naming its row)
        f.write("a,a\n")  # one name twice
        f.write("1,2\n" * 2_000_000)  # 8 MB for the scan
    src = TableSource(str(path))
    with pytest.raises(rf.SchemaError, match=r"bad\.csv") as caught:
        src.items()
    assert "more than once" in str(caught.value)
    assert not _scan_threads()
    assert "parts" not in src._cache  # the scan did not finish


def test_beside_raises_mains_error_first_then_the_others() -> None:
    import threading

    from recordforge.sources._table_read import beside

    seen: list[str] = []

    def waits(stop: threading.Event) -> None:
        assert stop.wait(10)  # set once main failed
        seen.append("stopped")
        raise RuntimeError("the other's error, hidden by main's")

    def fails() -> int:
        raise ValueError("main's error")

    with pytest.raises(ValueError, match="main's error"):
        beside(fails, waits)
    assert seen == ["stopped"] and not _scan_threads()

    def other_fails(stop: threading.Event) -> None:
        raise OSError("the scan's error")

    with pytest.raises(OSError, match="the scan's error"):
        beside(lambda: 7, other_fails)
    assert beside(lambda: 7, lambda stop: None) == 7


@pytest.mark.parametrize("part_bytes", [1 << 30, 1 << 16])
def test_a_value_that_does_not_fit_inferred_types_names_its_row(
    tmp_path: Path, part_bytes: int
) -> None:
    """Types inferred from the file's start: a later value of another type stops the
    conversion naming its row of the file, found by halving the part's rows (before:
    the part's rows and pyarrow's row number within its block), among quoted line ends
    and a row of the wrong number of values."""
    path = tmp_path / "late.csv"
    rows = [f'{i},"text {i}\nline two{"." * 70}"\n' for i in range(150_000)]  # 15 MB
    rows[90_000] = "1,2,3\n"  # the wrong number of values: skipped alone, before
    rows[120_000] = "x1,y\n"
    path.write_text("v,w\n" + "".join(rows), encoding="utf-8")
    src = TableSource(path, part_bytes=part_bytes)
    assert src._plan()[0]["v"].dtype == "int64"  # (from the first 8 MiB)
    with pytest.raises(rf.SchemaError) as e:
        write_source(src, tmp_path / "out", on_error="skip")
    assert str(e.value).startswith(f"{path}: row 120001: cannot read csv: ")
    assert "invalid value 'x1'" in str(e.value) and "pass schema=" in str(e.value)


def test_text_that_is_not_utf8_with_a_schema_names_the_rows_lost(tmp_path: Path) -> None:
    """(Kept as it was: with a given schema a CSV is read as text, and text that is not
    UTF-8 fails its part's read; the part's rows are skipped, named as the part's. The
    first version of the row search named only the one row while the part was lost.)"""
    path = tmp_path / "u.csv"
    rows = [f"{i},{'x' * 50}\n".encode() for i in range(200_000)]
    rows[150_000] = b"150000,\xff\xfe\n"
    path.write_bytes(b"n,s\n" + b"".join(rows))
    schema = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})
    src = TableSource(path, schema=schema)
    out = tmp_path / "out"
    write_source(src, out, on_error="skip")
    (skipped,) = rf.Manifest.load(out).report["skipped"]
    part = next(p for p in src.parts() if p.first_row <= 150_001 < p.first_row + p.rows)
    assert skipped["item"] == f"{path}: rows {part.first_row}-{part.first_row + part.rows - 1}"
    assert len(rf.open_dataset(out)) == 200_000 - part.rows

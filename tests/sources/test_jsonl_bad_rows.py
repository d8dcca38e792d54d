"""A JSON Lines row that pyarrow cannot read is one error naming its row of the file; the
part's other rows are written.

pyarrow's JSON reader fails a whole block for one bad line. Before, the part it was in
(4 MiB, ~57,000 rows in the case below) became one skipped item: with a schema and
``on_error="skip"``, 57,457 good rows of a 200,000-row file were lost for one mistyped
value, and the report said "1 input item skipped". A part whose read fails is now read
again in halves down to the rows that fail. Where the types were inferred from the
file's start, a row whose values do not fit them stops the conversion (as a CSV value
does), named by its row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import recordforge as rf
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

pytest.importorskip("pyarrow.json")

SCHEMA = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})

#: Lines pyarrow cannot read as a row of SCHEMA, each ending with "}" (so the scan cuts
#: parts at lines): a string for an integer, broken JSON, a float for an integer, an
#: object for an integer, a list for a string, text that is not UTF-8 (pyarrow reads it
#: into a string: it was written as text).
BAD = [
    b'{"n": "x", "s": "a"}',
    b'{"n": 1, "s": }',
    b'{"n": 1.5, "s": "b"}',
    b'{"n": {"m": 2}, "s": "d"}',
    b'{"n": 3, "s": ["c"]}',
    b'{"n": 4, "s": "\xff\xfe"}',
]


#: Good rows first (~9 MB): the file's columns and types are read from its first blocks,
#: which must read (see the closing test).
LEAD = 50_000


def _file(
    path: Path, rows: int = 3000, lead: int = LEAD
) -> tuple[list[tuple[int, str]], list[int]]:
    """``lead`` good rows, then ``rows`` rows with the BAD lines spread among them (CRLF
    ends and empty lines in between); the good rows' values and the bad rows' numbers
    (1-based, in rows)."""
    lines: list[bytes] = []
    good: list[tuple[int, str]] = []
    bad: list[int] = []
    for i in range(lead + rows):
        if i >= lead and i % 401 == 7:
            lines.append(BAD[len(bad) % len(BAD)])
            bad.append(i + 1)
        else:
            text = f"row {i} " + "é" * (i % 5) + ("." * 160 if i < lead else "")
            good.append((i, text))
            lines.append(json.dumps({"n": i, "s": text}).encode())
        if i % 97 == 0:
            lines.append(b"  ")  # an empty line: not a row
        lines[-1] += b"\r\n" if i % 3 == 0 else b"\n"
    path.write_bytes(b"".join(lines))
    return good, bad


def _written(src: TableSource, out: Path, **options: Any) -> dict[str, bytes]:
    write_source(src, out, **options)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("part_bytes", [1 << 20, 4096])
def test_bad_rows_are_skipped_alone_and_named(tmp_path: Path, part_bytes: int) -> None:
    path = tmp_path / "t.jsonl"
    good, bad = _file(path)
    src = TableSource(path, schema=SCHEMA, part_bytes=part_bytes, batch_size=100)
    with pytest.raises(rf.ItemError) as e:
        write_source(src, tmp_path / "fail")
    assert e.value.item == f"{path}: row {bad[0]}"
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"skip{workers}"
        outs.append(_written(src, out, on_error="skip", workers=workers))
        report = rf.Manifest.load(out).report
        skipped = report["skipped"]
        assert [s["item"] for s in skipped] == [f"{path}: row {i}" for i in bad]
        assert all(s["reason"].startswith("cannot read jsonl: ") for s in skipped), skipped
        assert report["items"] == LEAD + 3000
        got = [(int(r["n"]), r["s"].decode()) for r in rf.open_dataset(out)]
        assert got == good
    assert outs[0] == outs[1]


def test_the_records_are_those_of_the_file_without_its_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    _file(path)
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(
        b"".join(line for line in path.read_bytes().splitlines(True) if line.rstrip() not in BAD)
    )
    a = _written(TableSource(path, schema=SCHEMA), tmp_path / "a", on_error="skip")
    b = _written(TableSource(clean, schema=SCHEMA), tmp_path / "b")
    shards = [name for name in a if name.endswith(".tfrecord")]
    assert shards and [a[n] for n in shards] == [b[n] for n in shards]


def test_inferred_types_stop_at_the_row_that_does_not_fit(tmp_path: Path) -> None:
    """Types inferred from the file's start: a later value of another type stops the
    conversion, naming its row (not pyarrow's row of the piece it read); broken JSON is
    a bad row of its own, skipped with ``on_error="skip"``."""
    path = tmp_path / "t.jsonl"
    rows = [json.dumps({"n": i, "s": f"r{i}"}).encode() for i in range(200_000)]
    rows[150_000] = b'{"n": "x", "s": "a"}'
    path.write_bytes(b"\n".join(rows) + b"\n")
    src = TableSource(path, part_bytes=1 << 20)
    assert len(src.parts()) > 2
    with pytest.raises(rf.SchemaError, match=r"t\.jsonl: row 150001: .*pass schema="):
        write_source(src, tmp_path / "typed", on_error="skip")
    rows[150_000] = b'{"n": 1, "s": }'
    rows[160_000] = b'{"n": 1, "s": "\xe9t\xe9"}'  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(rows) + b"\n")
    src = TableSource(path, part_bytes=1 << 20)
    write_source(src, tmp_path / "broken", on_error="skip")
    report = rf.Manifest.load(tmp_path / "broken").report
    skipped = [(s["item"], s["reason"]) for s in report["skipped"]]
    assert [item for item, _ in skipped] == [f"{path}: row 150001", f"{path}: row 160001"]
    assert skipped[1][1] == "cannot read jsonl: column 's': text that is not UTF-8"
    assert len(rf.open_dataset(tmp_path / "broken")) == 199_998


def test_the_cli_names_the_row(tmp_path: Path) -> None:
    from helpers import cli

    path = tmp_path / "t.jsonl"
    good, bad = _file(path, rows=700)
    assert bad
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA.to_json()))
    out = tmp_path / "out"
    done = cli("convert", "table", str(path), "--schema", str(schema), "--out", str(out))
    assert done.returncode != 0
    assert f"t.jsonl: row {bad[0]}: cannot read jsonl" in done.stderr.replace("\n", " ")
    assert "Traceback" not in done.stderr
    done = cli(
        "convert", "table", str(path), "--schema", str(schema), "--out", str(out),
        "--on-error", "skip", "--overwrite",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(rf.open_dataset(out)) == len(good)


def test_many_bad_rows_in_one_part_are_each_found(tmp_path: Path) -> None:
    """100 bad rows spread over one part are each found by halving (a budget of reads
    that ended the search with large pieces "read together" lost 22,765 good rows of a
    4 MiB part like this one, and its output depended on the part size: helper-55)."""
    path = tmp_path / "t.jsonl"
    lead = [json.dumps({"n": i, "s": "." * 200}).encode() for i in range(45_000)]
    rows = [
        b'{"n": "x", "s": "c"}'
        if i % 570 == 285
        else json.dumps({"n": i, "s": f"row {i}" + "." * 50}).encode()
        for i in range(57_000)
    ]
    path.write_bytes(b"\n".join(lead + rows) + b"\n")
    bad = [f"{path}: row {45_000 + i + 1}" for i in range(285, 57_000, 570)]
    outs = []
    for part_bytes in (1 << 30, 1 << 16):
        src = TableSource(path, schema=SCHEMA, part_bytes=part_bytes)
        assert (len(src.parts()) == 1) == (part_bytes == 1 << 30)
        out = tmp_path / f"p{part_bytes}"
        outs.append(_written(src, out, on_error="skip"))
        assert [s["item"] for s in rf.Manifest.load(out).report["skipped"]] == bad
        assert len(rf.open_dataset(out)) == 45_000 + 56_900
    assert outs[0] == outs[1]


def test_a_long_good_row_beside_a_bad_one_is_kept(tmp_path: Path) -> None:
    """A good row longer than a block (read in a larger one), in a part with a bad row:
    the pieces are each read in one block (it failed as "straddling", and with inferred
    types stopped the conversion naming the good row: helper-55)."""
    path = tmp_path / "t.jsonl"
    lead = [json.dumps({"n": i, "s": "r" * 100}).encode() for i in range(45_000)]
    long = json.dumps({"n": 7, "s": "x" * (9 << 20)}).encode()
    path.write_bytes(b"\n".join([*lead, b'{"n": 1, "s": }', long, b'{"n": 2, "s": "e"}']) + b"\n")
    for schema in (SCHEMA, None):
        out = tmp_path / f"out{schema is None}"
        write_source(TableSource(path, schema=schema), out, on_error="skip")
        skipped = rf.Manifest.load(out).report["skipped"]
        assert [s["item"] for s in skipped] == [f"{path}: row 45001"]
        got = [int(r["n"]) for r in rf.open_dataset(out)]
        assert got[-2:] == [7, 2] and len(got) == 45_002


def test_only_values_of_another_type_stop_inferred_types(tmp_path: Path) -> None:
    """With inferred types, a row pyarrow refuses for another reason (a key given twice,
    broken JSON) is an error of its own, not a type change (json.loads read the first as
    an object, and the conversion stopped with the pass-schema= hint: helper-55)."""
    path = tmp_path / "t.jsonl"
    rows = [json.dumps({"n": i, "s": f"r{i}"}).encode() for i in range(200_000)]
    rows[150_000] = b'{"n": 1, "n": 2, "s": "a"}'
    rows[150_010] = b'{"n": 1, "s": "a",}'
    path.write_bytes(b"\n".join(rows) + b"\n")
    out = tmp_path / "out"
    write_source(TableSource(path, part_bytes=1 << 20), out, on_error="skip")
    skipped = [s["item"] for s in rf.Manifest.load(out).report["skipped"]]
    assert skipped == [f"{path}: row 150001", f"{path}: row 150011"]


def test_a_bad_row_in_the_first_block_fails_the_plan_naming_the_file(tmp_path: Path) -> None:
    """(A limit, kept as it was: the file's columns are read from its first block; a row
    there that pyarrow cannot read fails the whole file. A fallback to the given
    schema's columns read records other than the normal path's: helper-55.)"""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1, "s": "a"}\n' + BAD[1] + b"\n")
    with pytest.raises(rf.ItemError, match=r"t\.jsonl: cannot read jsonl"):
        write_source(TableSource(path, schema=SCHEMA), tmp_path / "out", on_error="skip")

"""Tables (CSV, Parquet, JSONL) -> records: type inference, missing values, schema
override, bad input, and parity with TFX-written records and TensorFlow's parser."""

from __future__ import annotations

import collections
import doctest
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
import recordforge.sources.table as table_module
from recordforge.sources._table_parts import cell_converter
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TAXI_INT64 = {
    "pickup_community_area",
    "trip_start_month",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_timestamp",
}
TAXI_BYTES = {"payment_type", "company"}


def _convert(src: TableSource, out: Path, **kwargs: Any) -> list[dict[str, Any]]:
    manifest = rf.write_dataset(
        src.items(),
        out,
        to_records=src.to_records,
        schema=src.schema(),
        source=src.describe(),
        **kwargs,
    )
    return [
        rf.decode_example(record)
        for shard in manifest.splits["train"]
        for record in rf.read_records(out / shard.file)
    ]


def _canonical(example: dict[str, Any]) -> tuple[Any, ...]:
    """A hashable form of a decoded Example. Every empty feature is the same: TFX
    writes a Feature with no list set (decoded as an empty float32 array), we write an
    empty list of the column's kind, and TensorFlow's parser reads both as no values."""

    def value(v: Any) -> tuple[Any, ...]:
        if len(v) == 0:
            return ("empty",)
        if isinstance(v, np.ndarray):
            return (str(v.dtype), tuple(v.tolist()))  # float32 -> exact Python floats
        return ("bytes", tuple(v))

    return tuple(sorted((k, value(v)) for k, v in example.items()))


def _records(out: Path) -> list[bytes]:
    manifest = rf.Manifest.load(out)
    return [r for s in manifest.splits["train"] for r in rf.read_records(out / s.file)]


def _tf_parse(out: Path, schema: rf.Schema) -> dict[str, Any]:
    tf = pytest.importorskip("tensorflow")
    records = _records(out)
    return dict(tf.io.parse_example(tf.constant(records), schema.to_tf_feature_description()))


def test_chicago_taxi_equals_tfx_records(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "tfx_chicago_taxi"
    src = TableSource(folder / "data.csv", nullable_ints="float32")
    ours = _convert(src, tmp_path / "out", max_records=4096)
    theirs = [
        rf.decode_example(record)
        for shard in sorted((folder / "tfrecord_gzip").iterdir())
        for record in rf.read_records(shard)
    ]
    assert len(ours) == len(theirs) == 15_000
    assert collections.Counter(map(_canonical, ours)) == collections.Counter(
        map(_canonical, theirs)
    )
    # The kinds are the ones EXPECTED.md lists, and every column is present in every record.
    schema = src.schema()
    assert {n for n, s in schema.items() if s.kind == "int64"} == TAXI_INT64
    assert {n for n, s in schema.items() if s.kind == "bytes"} == TAXI_BYTES
    assert len(schema) == 18
    assert all(set(example) == set(schema) for example in ours)
    # Empty cells: present, empty, of the column's kind (company: 5,140 empty cells).
    assert sum(ex["company"] == [] for ex in ours) == 5140
    assert all(ex["pickup_census_tract"].dtype == np.float32 for ex in ours)
    assert all(len(ex["pickup_census_tract"]) == 0 for ex in ours)


def test_chicago_taxi_tensorflow_parses_with_schema(shared_data: Path, tmp_path: Path) -> None:
    src = TableSource(shared_data / "tfx_chicago_taxi" / "data.csv")
    schema = src.schema()
    # By default integer columns with missing cells stay int64 (float32 would round them).
    assert schema["dropoff_census_tract"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["trip_seconds"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["payment_type"] == rf.FeatureSpec(dtype="string", meaning=rf.Text())
    assert schema["fare"] == rf.FeatureSpec(dtype="float32")
    out = tmp_path / "out"
    ours = _convert(src, out)
    manifest = rf.Manifest.load(out)
    assert manifest.schema == schema
    assert manifest.source["format"] == "csv"
    parsed = _tf_parse(out, schema)
    assert parsed["trip_start_timestamp"].numpy().tolist() == [
        int(ex["trip_start_timestamp"][0]) for ex in ours
    ]
    np.testing.assert_array_equal(
        parsed["fare"].numpy(), np.array([ex["fare"][0] for ex in ours], np.float32)
    )
    tracts = parsed["dropoff_census_tract"]  # VarLenFeature: a SparseTensor
    assert tracts.values.numpy().tolist() == [
        v for ex in ours for v in ex["dropoff_census_tract"].tolist()
    ]
    assert len(tracts.values) == 15_000 - 4239
    assert 17031081500 in tracts.values.numpy().tolist()  # exact, not rounded to float32


def test_penguins_na_is_an_empty_feature(shared_data: Path, tmp_path: Path) -> None:
    src = TableSource(shared_data / "pypi_bundled" / "palmerpenguins" / "penguins.csv")
    schema = src.schema()
    # pyarrow reads "NA" as missing in numeric columns, and (strings_can_be_null) in text.
    assert schema["bill_length_mm"] == rf.FeatureSpec(dtype="float32", shape=(None,))
    assert schema["body_mass_g"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["sex"] == rf.FeatureSpec(dtype="string", shape=(None,), meaning=rf.Text())
    assert schema["species"] == rf.FeatureSpec(dtype="string", meaning=rf.Text())
    assert schema["year"] == rf.FeatureSpec(dtype="int64")
    examples = _convert(src, tmp_path / "out")
    assert len(examples) == 344
    fourth = examples[3]  # Adelie,Torgersen,NA,NA,NA,NA,NA,2007
    assert fourth["species"] == [b"Adelie"]
    assert fourth["bill_length_mm"].dtype == np.float32 and len(fourth["bill_length_mm"]) == 0
    assert fourth["body_mass_g"].dtype == np.int64 and len(fourth["body_mass_g"]) == 0
    assert fourth["sex"] == []
    assert fourth["year"].tolist() == [2007]
    assert examples[0]["bill_length_mm"].tolist() == [np.float32(39.1)]
    assert sum(ex["sex"] == [] for ex in examples) == 11
    parsed = _tf_parse(tmp_path / "out", schema)
    assert parsed["year"].numpy().tolist() == [ex["year"][0] for ex in examples]
    assert len(parsed["sex"].values) == 344 - 11


def test_iris_first_line_is_not_a_header(shared_data: Path) -> None:
    path = shared_data / "pypi_bundled" / "sklearn" / "iris.csv"
    # scikit-learn's bundled CSVs start with "n_samples,n_features,class names".
    assert list(TableSource(path).schema()) == ["150", "4", "setosa", "versicolor", "virginica"]
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]
    src = TableSource(path, skip_rows=1, column_names=names)
    schema = src.schema()
    assert list(schema) == names
    assert schema["target"] == rf.FeatureSpec(dtype="int64")
    assert schema["sepal_length"] == rf.FeatureSpec(dtype="float32")
    examples = [rf.decode_example(r) for b in src.items() for r in src.to_records(b).records]
    assert len(examples) == 150
    assert examples[0]["sepal_length"].tolist() == [np.float32(5.1)]
    assert collections.Counter(int(ex["target"][0]) for ex in examples) == {0: 50, 1: 50, 2: 50}


COLUMNS: dict[str, list[Any]] = {
    "id": [1, 2, 3, 4],
    "tokens": [["a", "bb"], None, [], ["é"]],
    "ints": [[1, 2, 3], [4], None, []],
    "floats": [[0.5], [], [1.25, -2.0], None],
    "score": [0.5, None, 1.5, 2.5],
    "count": [7, None, 9, 10],
    "name": ["x", "y", None, ""],
    "flag": [True, False, True, None],
}


def _check_list_table(src: TableSource, tmp_path: Path) -> None:
    schema = src.schema()
    assert schema["id"] == rf.FeatureSpec(dtype="int64")
    assert schema["tokens"] == rf.FeatureSpec(dtype="string", shape=(None,), meaning=rf.Text())
    assert schema["ints"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["floats"] == rf.FeatureSpec(dtype="float32", shape=(None,))
    assert schema["score"] == rf.FeatureSpec(dtype="float32", shape=(None,))
    assert schema["count"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["name"] == rf.FeatureSpec(dtype="string", shape=(None,), meaning=rf.Text())
    assert schema["flag"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    examples = _convert(src, tmp_path / "out")
    assert [ex["tokens"] for ex in examples] == [[b"a", b"bb"], [], [], ["é".encode()]]
    assert [ex["ints"].tolist() for ex in examples] == [[1, 2, 3], [4], [], []]
    assert all(ex["ints"].dtype == np.int64 for ex in examples)  # empty ones too
    assert [ex["floats"].tolist() for ex in examples] == [[0.5], [], [1.25, -2.0], []]
    assert all(ex["floats"].dtype == np.float32 for ex in examples)
    assert [ex["score"].tolist() for ex in examples] == [[0.5], [], [1.5], [2.5]]
    assert [ex["count"].tolist() for ex in examples] == [[7], [], [9], [10]]
    assert [ex["name"] for ex in examples] == [[b"x"], [b"y"], [], [b""]]
    assert [ex["flag"].tolist() for ex in examples] == [[1], [0], [1], []]
    parsed = _tf_parse(tmp_path / "out", schema)
    assert parsed["id"].numpy().tolist() == [1, 2, 3, 4]
    ints = parsed["ints"]
    assert ints.values.numpy().tolist() == [1, 2, 3, 4]
    assert ints.indices.numpy()[:, 0].tolist() == [0, 0, 0, 1]


def test_parquet_with_list_columns_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(COLUMNS), path)
    _check_list_table(TableSource(path, batch_size=3), tmp_path)


def test_jsonl_with_list_columns_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        dict(zip(COLUMNS, values, strict=True)) for values in zip(*COLUMNS.values(), strict=True)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    _check_list_table(TableSource(path), tmp_path)


def test_batches_give_the_same_records_as_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(COLUMNS), path)
    src = TableSource(path, batch_size=3)
    batches = list(src.batches())
    assert [(b.first_row, len(b)) for b in batches] == [(1, 3), (4, 1)]
    converted = [src.to_records(b) for b in batches]
    assert [(c.items, c.errors) for c in converted] == [(3, []), (1, [])]
    assert all(isinstance(c.records, rf.RecordBatch) for c in converted)  # no fallback
    # Column by column through Arrow and Rust == one row at a time through Python.
    by_batch = [r for c in converted for r in c.records]
    assert by_batch == [r for row in src.rows() for r in src.row_to_records(row)]
    back = pickle.loads(pickle.dumps(src))
    assert back == src
    assert [r for b in back.items() for r in back.to_records(b).records] == by_batch
    # A Converted crosses processes (workers) with its records as bytes.
    moved = pickle.loads(pickle.dumps(converted[0]))
    assert list(moved.records) == list(converted[0].records) and moved.items == 3


def test_taxi_batches_equal_row_by_row(shared_data: Path) -> None:
    for nullable_ints in ("int64", "float32"):
        src = TableSource(
            shared_data / "tfx_chicago_taxi" / "data.csv",
            nullable_ints=nullable_ints,  # type: ignore[arg-type]
            batch_size=1000,
        )
        converted = [src.to_records(b) for b in src.items()]
        assert all(isinstance(c.records, rf.RecordBatch) for c in converted)  # no fallback
        by_batch = [r for c in converted for r in c.records]
        assert by_batch == [r for row in src.rows() for r in src.row_to_records(row)]


def test_schema_override_wins(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n1,x,2.5,9\n2,,3.5,8\n", encoding="utf-8")
    schema = rf.Schema(
        {
            "a": rf.FeatureSpec(dtype="float32"),
            "b": rf.FeatureSpec(dtype="bytes", shape=(None,)),
            "c": rf.FeatureSpec(dtype="float32", shape=(1,)),
        }
    )
    src = TableSource(path, schema=schema)
    assert src.schema() == schema
    examples = _convert(src, tmp_path / "out")
    assert [sorted(ex) for ex in examples] == [["a", "b", "c"]] * 2  # d is not in the schema
    assert [ex["a"].dtype for ex in examples] == [np.float32, np.float32]
    assert [ex["a"].tolist() for ex in examples] == [[1.0], [2.0]]
    assert [ex["b"] for ex in examples] == [[b"x"], []]
    assert rf.Manifest.load(tmp_path / "out").schema == schema
    parsed = _tf_parse(tmp_path / "out", schema)
    assert parsed["c"].numpy().tolist() == [[2.5], [3.5]]


def test_rows_that_do_not_match_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("n,s\n1,a\nnope,b\n3,\n4,d\n", encoding="utf-8")
    schema = rf.Schema({"n": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")})
    src = TableSource(path, schema=schema)
    with pytest.raises(rf.ItemError) as e:
        _convert(src, tmp_path / "fail")
    assert e.value.item == f"{path}: row 2"
    assert "column 'n'" in e.value.reason and "'nope'" in e.value.reason
    report = rf.ConversionReport()
    examples = _convert(src, tmp_path / "skip", on_error="skip", report=report)
    assert [ex["n"].tolist() for ex in examples] == [[1], [4]]
    assert [s["item"] for s in report.skipped] == [f"{path}: row 2", f"{path}: row 3"]
    assert "missing value" in report.skipped[1]["reason"]
    manifest = rf.Manifest.load(tmp_path / "skip")
    assert manifest.report["skipped"] == report.skipped


@pytest.mark.parametrize(
    ("spec", "value", "error"),
    [
        (rf.FeatureSpec(dtype="int64"), [1, 2], "expected one value, got a list of 2"),
        (rf.FeatureSpec(dtype="int64"), 1.5, "expected an integer"),
        (rf.FeatureSpec(dtype="float32", shape=(2,)), [1.0], "expected 2 values, got 1"),
        (rf.FeatureSpec(dtype="float32", shape=(None,)), [1.0, None], "missing value"),
        (rf.FeatureSpec(dtype="bytes"), 3, "expected bytes"),
        (rf.FeatureSpec(dtype="float32"), "x", "expected a number"),
    ],
)
def test_value_conversion_errors(spec: rf.FeatureSpec, value: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        cell_converter(spec)(value)


def test_list_column_needs_a_list_shape_in_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": [[1, 2]]}), path)
    src = TableSource(path, schema=rf.Schema({"v": rf.FeatureSpec(dtype="int64")}))
    with pytest.raises(rf.ItemError, match="row 1: column 'v': expected one value"):
        src.row_to_records(next(src.rows()))
    (error,) = src.to_records(src.items()[0]).errors
    assert error.item == f"{path}: row 1" and "expected one value" in error.reason


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(rf.RecordforgeError, match=r"bad\.parquet"):
        TableSource(garbage).schema()
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n", encoding="utf-8")
    with pytest.raises(rf.RecordforgeError, match=r"ragged\.csv.*Expected 2 columns"):
        TableSource(ragged).schema()
    with pytest.raises(FileNotFoundError):
        TableSource(tmp_path / "missing.csv").schema()
    with pytest.raises(ValueError, match="format="):
        TableSource(tmp_path / "data.xlsx")
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(rf.SchemaError, match="does not have"):
        TableSource(good, schema=rf.Schema({"zz": rf.FeatureSpec(dtype="int64")})).schema()
    with pytest.raises(rf.SchemaError, match="not supported"):
        TableSource(ragged, schema=rf.Schema({"a": rf.FeatureSpec(dtype="int64", shape=(None, 2))}))


def test_format_from_extension_or_argument(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    src = TableSource(path, format="jsonl")
    assert [row.values for row in src.rows()] == [{"a": 1}, {"a": 2}]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\tx\n", encoding="utf-8")
    assert TableSource(tsv).format == "csv"
    assert [row.values for row in TableSource(tsv).rows()] == [{"a": 1, "b": "x"}]


def test_module_docstring_examples() -> None:
    result = doctest.testmod(table_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_csv_type_changing_after_the_first_block(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    rows = "".join(f"{i}\n" for i in range(1_000_000)) + "1.5\n"
    path.write_text("v\n" + rows, encoding="utf-8")
    with pytest.raises(rf.ItemError, match=r"late\.csv.*pass schema="):
        TableSource(path).schema()
    src = TableSource(path, schema=rf.Schema({"v": rf.FeatureSpec(dtype="float32")}))
    last = list(src.batches())[-1]
    assert rf.decode_example(src.to_records(last).records[-1])["v"].tolist() == [1.5]


def test_workers_give_the_same_shards(shared_data: Path, tmp_path: Path) -> None:
    src = TableSource(shared_data / "pypi_bundled" / "palmerpenguins" / "penguins.csv")
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        rf.write_dataset(
            src.items(),
            out,
            to_records=src.to_records,
            schema=src.schema(),
            workers=workers,
            max_records=100,
        )
        outs.append(out)
    files = sorted(p.name for p in outs[0].iterdir() if p.suffix == ".tfrecord")
    assert len(files) == 4
    assert all((outs[0] / f).read_bytes() == (outs[1] / f).read_bytes() for f in files)


# -- the schema from the conversion's counts (no pass over the file before it) -----------


def _tables(shared_data: Path, tmp_path: Path) -> list[Path]:
    """CSV, Parquet and JSONL tables with missing values in some columns only."""
    import pyarrow.parquet as pq

    taxi = shared_data / "tfx_chicago_taxi" / "data.csv"
    penguins = shared_data / "pypi_bundled" / "palmerpenguins" / "penguins.csv"
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(penguins)
    pq.write_table(table, tmp_path / "penguins.parquet", row_group_size=50)
    jsonl = tmp_path / "penguins.jsonl"
    with jsonl.open("w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    return [taxi, penguins, tmp_path / "penguins.parquet", jsonl]


@pytest.mark.parametrize("workers", [1, 2])
def test_schema_counted_by_the_conversion_is_the_one_of_a_pass_over_the_file(
    workers: int, shared_data: Path, tmp_path: Path
) -> None:
    for k, path in enumerate(_tables(shared_data, tmp_path)):
        src = TableSource(path, part_bytes=20_000, part_rows=60)
        assert src.tallies()
        manifest = write_source(src, tmp_path / f"{k}-{workers}", workers=workers, max_records=97)
        passed = TableSource(path).schema()  # the pass over the whole file, before
        assert manifest.schema == passed, path
        # Some columns have missing values, some not; each one counted in the report.
        shapes = {spec.shape for spec in passed.values()}
        assert shapes == {(), (None,)}, path
        counted = {
            n[len("table/missing/") :] for n in manifest.report["counters"] if "missing" in n
        }
        assert counted == {name for name, spec in passed.items() if spec.shape == (None,)}
        # The records are those of a conversion told that schema.
        told = TableSource(path, schema=passed, part_bytes=20_000, part_rows=60)
        write_source(told, tmp_path / f"{k}-told-{workers}", max_records=97)
        for shard in manifest.splits["train"]:
            mine = (tmp_path / f"{k}-{workers}" / shard.file).read_bytes()
            theirs = (tmp_path / f"{k}-told-{workers}" / shard.file).read_bytes()
            assert mine == theirs, (path, shard.file)


def test_nullable_ints_as_floats_still_needs_the_pass(shared_data: Path, tmp_path: Path) -> None:
    taxi = shared_data / "tfx_chicago_taxi" / "data.csv"
    src = TableSource(taxi, nullable_ints="float32")
    assert not src.tallies()  # an int column with a missing value is float32: known first
    manifest = write_source(src, tmp_path / "out", max_records=500)
    assert manifest.schema == TableSource(taxi, nullable_ints="float32").schema()
    assert manifest.schema["trip_seconds"].dtype == "float32"
    assert not any("missing" in n for n in manifest.report["counters"])


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_value_that_does_not_fit_the_inferred_type_stops_the_conversion(
    on_error: str, tmp_path: Path
) -> None:
    """A column inferred as ints from the file's start with a float far down: the pass
    that used to run first refused the file; the conversion refuses it where it meets
    the value, whatever ``on_error`` (a skip would drop a whole part), naming the file
    and the value's row (before session 29: the part's bytes and rows), with the shards
    before it kept for a rerun."""
    path = tmp_path / "late.csv"
    path.write_text("v,w\n" + "".join(f"{i},x\n" for i in range(1_000_000)) + "1.5,y\n")
    src = TableSource(path)
    out = tmp_path / "out"
    with pytest.raises(rf.SchemaError, match=r"late\.csv: row 1000001: .*'1\.5'") as caught:
        write_source(src, out, on_error=on_error, max_records=300_000)
    assert not isinstance(caught.value, rf.ItemError)
    # The 900,000 rows before the part holding the value: 3 completed shards, kept.
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".shard")) == [
        f".train-0000{k}.shard" for k in range(3)
    ]
    assert not (out / "dataset.json").exists()


def test_jsonl_keys_a_schema_names_past_the_first_block_are_searched_for(tmp_path: Path) -> None:
    """A key that a given schema names and the first 4 MiB block lacks is looked for in
    the rest of the file: typed by its first line with a value that is not null (a null
    first, and the key's text as another key's value, do not decide), the rows
    before it missing it; the same bytes on 2 workers. A key found nowhere is a
    SchemaError naming the file and the key."""
    path = tmp_path / "late.jsonl"
    n = (4 << 20) // 9 + 5000
    lines = [b'{"a":%d}\n' % i for i in range(n)]
    lines += [b'{"a":-3,"note":"b"}\n', b'{"a":-2,"b":null}\n', b'{"a":-1,"b":[1.5]}\n']
    path.write_bytes(b"".join(lines))
    schema = rf.Schema(
        {
            "a": rf.FeatureSpec(dtype="int64", shape=()),
            "b": rf.FeatureSpec(dtype="float32", shape=(None,)),
        }
    )
    rows = _convert(TableSource(str(path), schema=schema), tmp_path / "o")
    assert len(rows) == n + 3
    assert [float(v) for v in rows[-1]["b"]] == [1.5] and int(rows[-1]["a"][0]) == -1
    assert len(rows[0].get("b", [])) == 0 and len(rows[-2].get("b", [])) == 0
    one = sorted(p.name for p in (tmp_path / "o").iterdir())
    src = TableSource(str(path), schema=schema)
    rf.write_dataset(
        src.items(), tmp_path / "w2", to_records=src.to_records, schema=src.schema(),
        source=src.describe(), workers=2,
    )  # fmt: skip
    for name in one:
        assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "o" / name).read_bytes()
    schema = rf.Schema({**schema, "c": rf.FeatureSpec(dtype="int64", shape=())})
    with pytest.raises(rf.SchemaError, match=r"late\.jsonl.*\['c'\].*no line of it holds"):
        TableSource(str(path), schema=schema).items()

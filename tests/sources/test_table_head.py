"""A CSV's type inference reads its first two blocks, not pyarrow's 32 blocks of
read-ahead (``csv_head``), and infers exactly what a read of the whole file infers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pytest

import recordforge as rf
from recordforge.sources import table as table_module
from recordforge.sources.table import TableSource

BLOCK = 4096


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _inferred(path: Path, monkeypatch: pytest.MonkeyPatch, head: bool, **kw: Any) -> Any:
    """The plan's schema and Arrow schema, the first batch read from ``csv_head``'s
    stream (``head``) or from the file's stream (what the inference read before)."""
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    original = table_module.TableSource._arrow_batches

    def batches(self: TableSource, *a: Any, **k: Any) -> Any:
        if not head:
            k["head"] = False
        return original(self, *a, **k)

    monkeypatch.setattr(table_module.TableSource, "_arrow_batches", batches)
    source = TableSource(str(path), **kw)
    schema, _, arrow_schema = source._plan()
    monkeypatch.undo()
    return schema, arrow_schema


def _both(path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Any:
    new = _inferred(path, monkeypatch, True, **kw)
    assert new == _inferred(path, monkeypatch, False, **kw)
    return new


def test_the_inference_reads_two_blocks_of_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = "".join(f"{i},name {i},{i / 7}\n" for i in range(1_500_000))
    path.write_text("a,b,c\n" + rows)  # ~40 MB
    before = _rchar()
    schema, _, _ = TableSource(str(path))._plan()
    read = _rchar() - before
    assert read <= 2 * table_module._BLOCK_BYTES + (1 << 20), read
    assert list(schema) == ["a", "b", "c"]
    assert schema["a"].dtype == "int64" and schema["c"].dtype == "float32"


@pytest.mark.parametrize("gz", [False, True])
def test_types_from_the_first_block_only_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    # The first block's rows are integers; later ones floats, then text: the first
    # block decides, as a read of the whole file decides.
    lines = [f"{i},{i}" for i in range(1000)] + [f"{i}.5,x{i}" for i in range(4000)]
    text = "a,b\n" + "\n".join(lines) + "\n"
    path = tmp_path / ("t.csv.gz" if gz else "t.csv")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    _schema, arrow_schema = _both(path, monkeypatch)
    assert arrow_schema.field("a").type == pa.int64()


def _same_error(path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> str:
    errors = []
    for head in (True, False):
        with pytest.raises(rf.RecordforgeError) as e:
            _inferred(path, monkeypatch, head, **kw)
        monkeypatch.undo()
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    return errors[0]


def test_skipped_lines_past_the_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preamble = "".join(f"# note {i:04d} " + "." * 60 + "\n" for i in range(100))
    rows = "".join(f"{i},{i * 2},word{i}\n" for i in range(3000))
    path = tmp_path / "pre.csv"
    path.write_text(preamble + "a,b,c\n" + rows)
    assert len(preamble) > BLOCK
    assert "Could not skip initial 100 rows" in _same_error(path, monkeypatch, skip_rows=100)


def test_a_header_longer_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"column_with_a_long_name_{i:04d}" for i in range(200)]
    assert len(",".join(names)) > BLOCK
    row = ",".join(str(i) for i in range(200))
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + "".join(row + "\n" for _ in range(100)))
    assert "cannot infer number of columns" in _same_error(path, monkeypatch)


@pytest.mark.parametrize("skip", [0, 3])
def test_a_first_row_past_the_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip: int
) -> None:
    # No row ends in the first block after the header: the first batch comes from a
    # later one, and two blocks would end in a cut row (csv_head reads the file's
    # stream instead).
    first = "0," + "y" * (BLOCK + 500) + ",0.5\n"
    rows = "".join(f"{i},w{i},{i}\n" for i in range(1, 3000))
    path = tmp_path / "long.csv"
    path.write_text("skipped\n" * skip + "a,b,c\n" + first + rows)
    schema, _arrow_schema = _both(path, monkeypatch, skip_rows=skip)
    assert list(schema) == ["a", "b", "c"]


def test_quoted_line_ends_in_the_first_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first block's line ends are inside a quoted value: its only row ends past it.
    long = '"' + "line\n" * 1000 + '"'
    rows = "".join(f"{i},short {i}\n" for i in range(3000))
    path = tmp_path / "quoted.csv"
    path.write_text("n,s\n0," + long + "\n" + rows)
    _schema, arrow_schema = _both(path, monkeypatch)
    assert arrow_schema.field("s").type == pa.string()


def test_a_cut_row_at_the_second_blocks_end_is_never_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converted whole: every row, none cut where the inference's read stopped."""
    rows = [f"{i},{'v' * (i % 97)},{i / 3}" for i in range(5000)]
    path = tmp_path / "cut.csv"
    path.write_text("a,b,c\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    out = tmp_path / "out"
    src = TableSource(str(path))
    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
    ds = rf.open_dataset(out)
    assert len(ds) == 5000
    assert ds[4999]["b"][0] == b"v" * (4999 % 97)


def test_a_given_schema_reads_two_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "".join(f"{i},w{i}\n" for i in range(3_000_000)))  # ~30 MB
    before = _rchar()
    given = rf.Schema({"a": rf.FeatureSpec(dtype="int64")})
    schema, _, _ = TableSource(str(path), schema=given)._plan()
    assert _rchar() - before <= 2 * table_module._BLOCK_BYTES + (1 << 20)
    assert list(schema) == ["a"]


# -- JSON Lines: the same, in blocks cut at their last line end -----------------------


def _json_inferred(path: Path, monkeypatch: pytest.MonkeyPatch, head: bool) -> Any:
    from recordforge.sources import _table_read

    monkeypatch.setattr(_table_read, "JSON_BLOCK", BLOCK)
    return _inferred(path, monkeypatch, head)


@pytest.mark.parametrize("gz", [False, True])
def test_json_lines_types_from_the_first_block_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    import json

    lines = [json.dumps({"a": i, "b": f"t{i}"}) for i in range(300)]
    lines += [json.dumps({"a": i + 0.5, "b": f"t{i}", "c": [i]}) for i in range(3000)]
    text = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("t.jsonl.gz" if gz else "t.jsonl")
    path.write_bytes(gzip.compress(text) if gz else text)
    new = _json_inferred(path, monkeypatch, True)
    assert new == _json_inferred(path, monkeypatch, False)
    assert new[1].field("a").type == pa.int64()


def test_a_json_line_longer_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    first = json.dumps({"a": 0, "b": "z" * (BLOCK + 100)})
    rest = "".join(json.dumps({"a": i, "b": f"t{i}"}) + "\n" for i in range(1, 3000))
    path = tmp_path / "long.jsonl"
    path.write_text(first + "\n" + rest)
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    from recordforge.sources import _table_read

    heads: list[Any] = []
    original = _table_read.json_head

    def spy(*a: Any) -> Any:
        heads.append(stream := original(*a))
        return stream

    monkeypatch.setattr(table_module, "json_head", spy)
    new = _json_inferred(path, monkeypatch, True)
    assert heads and not isinstance(heads[0], pa.BufferReader)  # the file's stream
    assert new == _json_inferred(path, monkeypatch, False)


def test_json_lines_inference_reads_two_blocks(tmp_path: Path) -> None:
    import json

    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(600_000):
            f.write(json.dumps({"a": i, "b": f"text {i}", "c": i / 3}) + "\n")
    before = _rchar()
    schema, _, _ = TableSource(str(path))._plan()
    assert _rchar() - before <= 8 * (1 << 20) + (1 << 20)
    assert list(schema) == ["a", "b", "c"]


def test_a_file_emptied_between_inference_and_scan_is_an_error(tmp_path: Path) -> None:
    """The type inference read rows, the row-end scan after it finds none (the file was
    cut meanwhile): an error naming the file, not a dataset of 0 rows."""
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(100)))
    src = TableSource(str(path))
    src._plan()
    path.write_text("a,b\n")
    with pytest.raises(rf.ItemError, match="found no rows where the type inference read 100"):
        src.items()


# -- a URL's file object that gives fewer bytes a call than asked for -----------------


class _Short(io.BytesIO):
    """At most 100 bytes a call, as a socket's file may give before its end."""

    def read(self, n: int | None = -1) -> bytes:
        return super().read(100 if n is None or n < 0 or n > 100 else n)

    def readinto(self, b: Any) -> int:
        view = memoryview(b)[:100]
        data = super().read(len(view))
        view[: len(data)] = data
        return len(data)


def _short_fs() -> Any:
    from fsspec.implementations.memory import MemoryFileSystem

    class ShortFS(MemoryFileSystem):  # type: ignore[misc]
        protocol = "shortread"
        store: ClassVar[dict[str, Any]] = {}
        pseudo_dirs: ClassVar[list[str]] = [""]

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return "/" + path.removeprefix("shortread://").lstrip("/")

        def _open(self, path: str, mode: str = "rb", **kw: Any) -> Any:
            if mode == "rb":
                return _Short(self.cat_file(path))
            return super()._open(path, mode, **kw)

    fsspec.register_implementation("shortread", ShortFS, clobber=True)
    return fsspec.filesystem("shortread")


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.jsonl"])
def test_short_reads_of_a_url_convert_every_row(tmp_path: Path, name: str) -> None:
    import json

    fs = _short_fs()
    if name.endswith(".jsonl"):
        text = "".join(json.dumps({"a": i, "b": f"w{i}", "c": i / 4}) + "\n" for i in range(3000))
    else:
        text = "a,b,c\n" + "".join(f"{i},w{i},{i / 4}\n" for i in range(3000))
    data = text.encode()
    fs.pipe(f"/x/{name}", gzip.compress(data) if name.endswith(".gz") else data)
    src = TableSource(f"shortread://x/{name}", part_bytes=10_000)
    rf.write_dataset(src.items(), tmp_path / "o", to_records=src.to_records, schema=src.schema())
    ds = rf.open_dataset(tmp_path / "o")
    assert len(ds) == 3000
    assert float(ds[2999]["c"]) == 2999 / 4 and ds[1234]["b"] == b"w1234"

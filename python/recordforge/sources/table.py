"""Tables: CSV, Parquet and JSON Lines files -> one ``tf.train.Example`` per row.

Files are read with pyarrow (imported when first needed) one record batch at a time, so
memory is bounded by a batch, never by the file. Column types are inferred from
pyarrow's types unless a :class:`~recordforge.Schema` is given:

* integer and boolean columns -> ``int64``
* floating-point columns -> ``float32``
* string columns -> ``string`` (UTF-8, meaning :class:`~recordforge.Text`); binary -> ``bytes``
* list columns -> variable-length features of their element type, shape ``(None,)``
* a column with no values at all (pyarrow's ``null`` type) -> ``float32``, shape ``(None,)``

A missing value (a null, an empty CSV cell, ``NA``, ...) becomes a feature that is
present but empty, as TFX writes it; a column with any missing value therefore has shape
``(None,)`` (``VarLenFeature``), one without has shape ``()`` (``FixedLenFeature``).
``nullable_ints="float32"`` stores integer columns that have missing values as floats,
as TFX's CSV example generator (via pandas) did; the default keeps them ``int64``,
because float32 cannot hold every integer (census tract 17031839100 becomes
17031838208).

>>> import tempfile, pathlib, recordforge as rf
>>> from recordforge.sources.table import TableSource
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d) / "t.csv"
...     _ = path.write_text("id,name,score\\n1,ann,0.5\\n2,,\\n")
...     src = TableSource(path)
...     schema = src.schema()
...     records = [r for batch in src.items() for r in src.to_records(batch).records]
>>> [(name, spec.dtype, spec.shape) for name, spec in schema.items()]
[('id', 'int64', ()), ('name', 'string', (None,)), ('score', 'float32', (None,))]
>>> rf.decode_example(records[1])
{'id': array([2]), 'name': [], 'score': array([], dtype=float32)}

With ``rf.write_dataset`` (items are batches of ``batch_size`` rows, each converted
column by column with pyarrow and encoded in Rust; a row that does not fit the schema
is named and rejected on its own)::

    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recordforge import _fs
from recordforge.columns import ColumnError, arrow_columns, infer_spec
from recordforge.errors import ItemError, SchemaError
from recordforge.example import encode_example, encode_record_batch
from recordforge.pipeline import Converted
from recordforge.schema import FeatureSpec, Schema

__all__ = ["FORMATS", "TableBatch", "TableRow", "TableSource"]

Format = Literal["csv", "parquet", "jsonl"]
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# Compressed CSV / JSONL are read through pyarrow's input streams, which detect these.
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
DEFAULT_BATCH_SIZE = 8192
_BLOCK_BYTES = 4 << 20
_EMPTY_DTYPE = {"int64": np.int64, "float32": np.float32, "bytes": np.bytes_}


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One row: the file, its 1-based data row number (header not counted) and its
    values as pyarrow gives them (``None`` for a missing value)."""

    file: str
    row: int
    values: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.file}: row {self.row}"


@dataclasses.dataclass(frozen=True)
class TableBatch:
    """Consecutive rows starting at data row ``first_row``: a pyarrow RecordBatch."""

    file: str
    first_row: int
    arrow: Any

    def __len__(self) -> int:
        return int(self.arrow.num_rows)

    @property
    def name(self) -> str:
        return f"{self.file}: rows {self.first_row}-{self.first_row + len(self) - 1}"

    def rows(self, names: Sequence[str] | None = None) -> Iterator[TableRow]:
        """The batch's rows, with the columns ``names`` (all by default; a column the
        batch lacks is missing, ``None``, in every row)."""
        have = set(self.arrow.schema.names)
        names = list(self.arrow.schema.names if names is None else names)
        columns = [
            self.arrow.column(n).to_pylist() if n in have else [None] * len(self) for n in names
        ]
        for i, values in enumerate(zip(*columns, strict=True)):
            yield TableRow(self.file, self.first_row + i, dict(zip(names, values, strict=True)))


def _format_of(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the table format from the file name; "
            "pass format='csv', 'parquet' or 'jsonl'"
        )
    return fmt


def _source(path: str) -> Any:
    """What pyarrow opens: the path, or for a URL (gs://, s3://, ...) an fsspec file."""
    return _fs.open_file(path, "rb") if _fs.is_url(path) else path


_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


def _input_stream(pa: Any, path: str) -> Any:
    """pyarrow's input stream of a file, decompressed by its extension (a URL is read
    through fsspec; pyarrow then cannot tell the compression from the name itself)."""
    if not _fs.is_url(path):
        return pa.input_stream(path)
    codec = _CODECS.get(Path(path).suffix.lower())
    return pa.input_stream(_fs.open_file(path, "rb"), compression=codec)


def _pyarrow() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading tables needs pyarrow: pip install 'recordforge[table]'"
        ) from None
    return pyarrow


@dataclasses.dataclass(frozen=True, init=False)
class TableSource:
    """Rows of a CSV, Parquet or JSON Lines file as ``tf.train.Example`` records.

    ``format`` is taken from the extension (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``,
    ``.ndjson``, ``.json``, optionally ``.gz`` ...) unless given. ``schema`` overrides
    inference: only its columns are written, each converted to its dtype (a CSV is then
    read as text, so a cell that does not parse is an :class:`~recordforge.ItemError`
    naming the file and row). ``null_values`` replaces pyarrow's list of CSV strings
    meaning "missing" (``""``, ``NA``, ``NULL``, ``NaN``, ...; see
    ``pyarrow.csv.ConvertOptions``); they count in text columns too. ``batch_size`` is
    the most rows per batch. ``delimiter`` defaults to a tab for ``.tsv``, else a comma.
    ``skip_rows`` lines are skipped before the header; ``column_names`` replaces the
    header (the file then has none after the skipped lines). scikit-learn's bundled CSVs
    (``iris.csv``) start with a line ``150,4,setosa,versicolor,virginica`` (rows,
    columns, class names) that is not a header: read them with ``skip_rows=1`` and
    ``column_names=[...]``.
    """

    path: str
    format: Format
    given_schema: Schema | None
    batch_size: int
    nullable_ints: Literal["int64", "float32"]
    null_values: tuple[str, ...] | None
    delimiter: str
    column_names: tuple[str, ...] | None
    skip_rows: int
    _cache: dict[str, Any] = dataclasses.field(compare=False, repr=False)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: Format | None = None,
        schema: Schema | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        nullable_ints: Literal["int64", "float32"] = "int64",
        null_values: Sequence[str] | None = None,
        delimiter: str | None = None,
        column_names: Sequence[str] | None = None,
        skip_rows: int = 0,
    ) -> None:
        p = Path(path)
        fmt = format if format is not None else _format_of(p)
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ValueError(f"format must be 'csv', 'parquet' or 'jsonl', not {fmt!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if nullable_ints not in ("int64", "float32"):
            raise ValueError(f"nullable_ints must be 'int64' or 'float32', not {nullable_ints!r}")
        if schema is not None:
            for name, spec in schema.items():
                if len(spec.shape) > 1:
                    raise SchemaError(
                        f"feature {name!r}: shape {spec.shape} is not supported for tables "
                        "(one value, (n,) or (None,))"
                    )
        if delimiter is None:
            delimiter = "\t" if ".tsv" in [s.lower() for s in p.suffixes] else ","
        for name, value in (
            ("path", os.fspath(path) if _fs.is_url(path) else str(p)),
            ("format", fmt),
            ("given_schema", schema),
            ("batch_size", batch_size),
            ("nullable_ints", nullable_ints),
            ("null_values", None if null_values is None else tuple(null_values)),
            ("delimiter", delimiter),
            ("column_names", None if column_names is None else tuple(column_names)),
            ("skip_rows", skip_rows),
            ("_cache", {}),
        ):
            object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # The inferred schema travels (a worker need not scan the file again); the
        # converters are closures and are rebuilt where they are used.
        state = dict(self.__dict__)
        state["_cache"] = {k: v for k, v in self._cache.items() if k == "plan"}
        return state

    def describe(self) -> dict[str, Any]:
        """What goes into ``dataset.json``'s ``source``."""
        return {"type": "table", "path": self.path, "format": self.format}

    # -- reading ---------------------------------------------------------------------

    def _arrow_batches(self, column_types: Mapping[str, Any] | None) -> Iterator[Any]:
        """pyarrow record batches of the file; ``column_types`` fixes CSV column types."""
        pa = _pyarrow()
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq  # type: ignore[import-untyped]

                parquet = pq.ParquetFile(_source(self.path))
                yield from parquet.iter_batches(batch_size=self.batch_size)
                return
            if self.format == "csv":
                import pyarrow.csv as pcsv  # type: ignore[import-untyped]

                convert: dict[str, Any] = {"strings_can_be_null": True}
                if self.null_values is not None:
                    convert["null_values"] = list(self.null_values)
                if column_types:
                    convert["column_types"] = dict(column_types)
                    if self.given_schema is not None:
                        convert["include_columns"] = list(column_types)
                reader = pcsv.open_csv(
                    _input_stream(pa, self.path),
                    read_options=pcsv.ReadOptions(
                        block_size=_BLOCK_BYTES,
                        skip_rows=self.skip_rows,
                        column_names=None if self.column_names is None else list(self.column_names),
                    ),
                    parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                    convert_options=pcsv.ConvertOptions(**convert),
                )
            else:
                import pyarrow.json as pjson  # type: ignore[import-untyped]

                reader = pjson.open_json(
                    _input_stream(pa, self.path),
                    read_options=pjson.ReadOptions(block_size=_BLOCK_BYTES),
                )
            for batch in reader:
                for start in range(0, batch.num_rows, self.batch_size):
                    yield batch.slice(start, self.batch_size)
        except pa.ArrowException as e:
            hint = ""
            if self.given_schema is None and "conversion error" in str(e):
                hint = " (column types are inferred from the start of the file; pass schema=)"
            raise ItemError(self.path, f"cannot read {self.format}: {e}{hint}") from e

    def _plan(self) -> tuple[Schema, dict[str, Any] | None]:
        """The schema, and the CSV column types to read with; computed once."""
        if "plan" not in self._cache:
            self._cache["plan"] = self._make_plan()
        plan: tuple[Schema, dict[str, Any] | None] = self._cache["plan"]
        return plan

    def _make_plan(self) -> tuple[Schema, dict[str, Any] | None]:
        pa = _pyarrow()
        if self.given_schema is not None:
            columns = self._column_names()
            missing = [n for n in self.given_schema if n not in columns]
            if missing:
                raise SchemaError(
                    f"{self.path}: schema names columns the file does not have: {missing} "
                    f"(columns: {columns})"
                )
            types = {n: pa.string() for n in self.given_schema} if self.format == "csv" else None
            return self.given_schema, types
        arrow_schema = None
        nulls: dict[str, int] = {}
        for batch in self._arrow_batches(None):
            if arrow_schema is None:
                arrow_schema = batch.schema
            elif batch.schema != arrow_schema:
                raise SchemaError(
                    f"{self.path}: column types change within the file "
                    f"({arrow_schema} then {batch.schema}); pass schema= to set them"
                )
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                nulls[name] = nulls.get(name, 0) + column.null_count
        if arrow_schema is None:
            arrow_schema = self._arrow_schema()
        features = {
            field.name: self._infer(field.name, field.type, nulls.get(field.name, 0))
            for field in arrow_schema
        }
        types = {f.name: f.type for f in arrow_schema} if self.format == "csv" else None
        return Schema(features), types

    def _column_names(self) -> list[str]:
        return list(self._arrow_schema().names)

    def _arrow_schema(self) -> Any:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(_source(self.path)).schema_arrow
        for batch in self._arrow_batches(None):
            return batch.schema
        pa = _pyarrow()
        if self.format == "csv":  # a header and no rows: every column is text
            header: Sequence[str] | None = self.column_names
            if header is None:
                with _fs.open_file(self.path, "rb") as f:
                    lines = [f.readline().decode("utf-8") for _ in range(self.skip_rows + 1)]
                header = lines[-1].rstrip("\r\n").split(self.delimiter)
            return pa.schema([(name, pa.string()) for name in header if name])
        return pa.schema([])

    def _infer(self, name: str, arrow_type: Any, null_count: int) -> FeatureSpec:
        try:
            return infer_spec(name, arrow_type, null_count, self.nullable_ints)
        except SchemaError as e:
            raise SchemaError(f"{self.path}: {e}") from None

    def schema(self) -> Schema:
        """The schema of the records: the given one, or one inferred by a pass over the
        file (types from pyarrow, shapes from whether a column has missing values)."""
        return self._plan()[0]

    def batches(self) -> Iterator[TableBatch]:
        """The file's rows, ``batch_size`` at a time."""
        _, types = self._plan()
        row = 1
        for batch in self._arrow_batches(types):
            yield TableBatch(self.path, row, batch)
            row += batch.num_rows

    def items(self) -> Iterator[TableBatch]:
        """What ``write_dataset`` iterates over: batches (see :meth:`to_records`)."""
        return self.batches()

    def rows(self) -> Iterator[TableRow]:
        """The file's rows one by one (read a batch at a time)."""
        names = list(self.schema())
        for batch in self.batches():
            yield from batch.rows(names)

    # -- encoding --------------------------------------------------------------------

    def to_records(self, batch: TableBatch) -> Converted:
        """A batch -> one serialized Example per row, in order. Columns are converted
        as a whole and encoded in Rust; when a column does not fit the schema, the batch
        is converted row by row so that each bad row is named (file, row, column) and
        rejected on its own."""
        schema = self.schema()
        try:
            columns = arrow_columns(batch.arrow, schema)
        except ColumnError:
            records: list[bytes] = []
            errors: list[ItemError] = []
            for row in batch.rows(list(schema)):
                try:
                    records.extend(self.row_to_records(row))
                except ItemError as e:
                    errors.append(e)
            return Converted(records, len(batch), errors)
        return Converted(encode_record_batch(columns), len(batch))

    def _converters(self) -> dict[str, Callable[[Any], Any]]:
        if "converters" not in self._cache:
            self._cache["converters"] = {
                name: _converter(spec) for name, spec in self.schema().items()
            }
        converters: dict[str, Callable[[Any], Any]] = self._cache["converters"]
        return converters

    def row_to_records(self, item: TableRow) -> tuple[bytes]:
        """One row -> its serialized Example; :class:`~recordforge.ItemError` names the
        file, the row and the column when a value does not fit the schema."""
        features = {}
        for name, convert in self._converters().items():
            try:
                features[name] = convert(item.values.get(name))
            except (TypeError, ValueError, OverflowError) as e:
                raise ItemError(item.name, f"column {name!r}: {e}") from None
        return (encode_example(features),)


def _element(dtype: str) -> Callable[[Any], Any]:
    """Converts one value to the Python type the encoder maps to ``dtype``'s kind."""

    def to_int(v: Any) -> int:
        if isinstance(v, (bool, int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {v!r}")

    def to_float(v: Any) -> float:
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {v!r}")

    def to_bytes(v: Any) -> bytes:
        if isinstance(v, bytes):
            return v
        if isinstance(v, str):
            return v.encode("utf-8")
        raise ValueError(f"expected {dtype}, got {v!r}")

    return {"int64": to_int, "float32": to_float}.get(dtype, to_bytes)


def _converter(spec: FeatureSpec) -> Callable[[Any], Any]:
    """A function from a cell's value to what ``encode_example`` takes for ``spec``."""
    element = _element(spec.dtype)
    empty_dtype = _EMPTY_DTYPE[spec.kind]
    shape = spec.shape

    def convert(value: Any) -> Any:
        if value is None:
            if shape == ():
                raise ValueError(f"missing value, but the schema's shape is () ({spec.dtype})")
            if shape[0] not in (None, 0):
                raise ValueError(f"missing value, but the schema's shape is {shape}")
            return np.empty(0, empty_dtype)
        if not isinstance(value, (list, tuple)):
            return element(value) if shape == () else [element(value)]
        if shape == ():
            raise ValueError(f"expected one value, got a list of {len(value)}")
        if shape[0] is not None and len(value) != shape[0]:
            raise ValueError(f"expected {shape[0]} values, got {len(value)}")
        if any(v is None for v in value):
            raise ValueError("a list holds a missing value, which a feature cannot")
        if not value:
            return np.empty(0, empty_dtype)
        return [element(v) for v in value]

    return convert

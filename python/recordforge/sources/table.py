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
...     _ = path.write_text("id,name,score\\n1,ann,0.5\\n2,,\\n3,bo,1\\n")
...     src = TableSource(path, part_bytes=8)
...     schema = src.schema()
...     parts = src.items()
...     records = [r for part in parts for r in src.to_records(part).records]
>>> [(name, spec.dtype, spec.shape) for name, spec in schema.items()]
[('id', 'int64', ()), ('name', 'string', (None,)), ('score', 'float32', (None,))]
>>> [(part.first_row, part.rows) for part in parts], src.num_records()
([(1, 1), (2, 2)], 3)
>>> rf.decode_example(records[1])
{'id': array([2]), 'name': [], 'score': array([], dtype=float32)}

The items are parts (:class:`TablePart`): small picklable descriptions of a byte range
(CSV, JSONL; cut at row ends, 4 MiB by default) or of a run of row groups (Parquet),
fixed by the file alone. ``to_records(part)`` reads its part ``batch_size`` rows at a
time, so a worker reads its own rows, and the records, their order and the report are
the same for any number of workers and any part size. Rows are converted column by column
and encoded in Rust; a row that does not fit the schema is named and rejected alone::

    recordforge.writer.write_source(src, out, workers=4)

Every part is read with the column names and types found in the file's first block.
Whether a column has missing values (which makes its shape ``(None,)``) is counted by
the conversion itself, part by part (the report's ``table/missing/<column>``
counters), so :func:`~recordforge.writer.write_source` reads the file once:
``schema_after(report)`` is the schema of what was written. :meth:`TableSource.schema`,
asked before a conversion, reads the whole file for it.

``shuffle=True`` in ``write_dataset`` permutes parts: for rows in random order, shuffle
when reading (``Dataset.shuffle``) or pass a small ``part_bytes``. ``num_records()``
counts rows without reading them (Parquet metadata; for CSV and JSONL the byte scan
that cuts the parts), so ``num_shards`` can cut at rows.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from recordforge import _fs
from recordforge._buffers import batch_pool
from recordforge.columns import ColumnError, arrow_columns, infer_spec
from recordforge.errors import EncodeError, ItemError, SchemaError
from recordforge.example import encode_example, encode_record_batch
from recordforge.pipeline import ConversionReport, Converted
from recordforge.schema import FeatureSpec, Schema
from recordforge.sources._table_parts import (
    FORMATS,
    PART_BYTES,
    PART_ROWS,
    Format,
    TableBatch,
    TablePart,
    TableRow,
    arrow_source,
    cell_converter,
    format_of,
    input_stream,
    pyarrow_module,
)
from recordforge.sources._table_read import (
    apart,
    beside,
    csv_head,
    csv_only,
    file_parts,
    first_batch,
    json_head,
    open_csv,
    open_json,
    rows_agree,
)
from recordforge.sources._table_rows import read_part, rows_around, skip_row, wrong_rows
from recordforge.sources._table_schema import (
    MISSING,
    header_only_names,
    integral,
    late_fields,
    missing_counters,
    null_counts,
    unique_columns,
)

__all__ = ["FORMATS", "TableBatch", "TablePart", "TableRow", "TableSource"]

DEFAULT_BATCH_SIZE = 8192
_BLOCK_BYTES = 4 << 20


# The schema records are encoded with, the CSV column types to read with, the file's
# Arrow schema (for every part).
_Plan = tuple[Schema, dict[str, Any] | None, Any]


@dataclasses.dataclass(frozen=True, init=False)
class TableSource:
    """Rows of a CSV, Parquet or JSON Lines file as ``tf.train.Example`` records.

    ``format`` is taken from the extension (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``,
    ``.ndjson``, ``.json``, optionally ``.gz`` ...) unless given. ``schema`` overrides
    inference: only its columns are written, each converted to its dtype (a CSV is then
    read as text, so a cell that does not parse is an :class:`~recordforge.ItemError`
    naming the file and row; so is a JSON Lines row pyarrow cannot read). ``null_values``
    replaces pyarrow's CSV strings meaning "missing" (``""``, ``NA``, ``NULL``, ``NaN``,
    ...), in text columns too. ``batch_size`` is the most rows per batch. ``delimiter``
    defaults to a tab for ``.tsv``, else a comma.
    ``skip_rows`` lines are skipped before the header; ``column_names`` replaces the
    header (the file then has none after the skipped lines): scikit-learn's ``iris.csv``
    starts with ``150,4,setosa,versicolor,virginica``, not a header (``skip_rows=1``,
    ``column_names=[...]``). ``part_bytes`` (bytes of a CSV / JSONL, uncompressed bytes of
    Parquet row groups) and ``part_rows`` (Parquet rows) size the parts that :meth:`items`
    lists (see :mod:`recordforge.sources._table_parts`).
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
    part_bytes: int
    part_rows: int
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
        part_bytes: int = PART_BYTES,
        part_rows: int = PART_ROWS,
    ) -> None:
        path = _fs.fspath(path)  # (a file:// URL: the local path it names)
        p = Path(path)
        fmt = format if format is not None else format_of(p)
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ValueError(f"format must be 'csv', 'parquet' or 'jsonl', not {fmt!r}")
        csv_only(path, fmt, skip_rows, delimiter, column_names, null_values)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if part_bytes < 1 or part_rows < 1:
            raise ValueError(f"part_bytes, part_rows must be >= 1, not {part_bytes}, {part_rows}")
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
            ("part_bytes", part_bytes),
            ("part_rows", part_rows),
            ("_cache", {}),
        ):
            object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # The inferred schema travels (a worker need not scan the file again); the
        # converters are closures and are rebuilt where they are used.
        state = dict(self.__dict__)
        state["_cache"] = {k: v for k, v in self._cache.items() if k in ("plan", "tally")}
        return state

    def describe(self) -> dict[str, Any]:
        """What goes into ``dataset.json``'s ``source``."""
        return {"type": "table", "path": self.path, "format": self.format}

    # -- reading ---------------------------------------------------------------------

    def _csv_options(self, column_types: Mapping[str, Any] | None) -> dict[str, Any]:
        """pyarrow's CSV conversion options; ``column_types`` fixes the column types."""
        convert: dict[str, Any] = {"strings_can_be_null": True}
        if self.null_values is not None:
            convert["null_values"] = list(self.null_values)
        if column_types:
            convert["column_types"] = dict(column_types)
            if self.given_schema is not None:
                convert["include_columns"] = list(column_types)
        return convert

    def _sliced(self, reader: Any) -> Iterator[Any]:
        n = self.batch_size
        yield from (b.slice(i, n) for b in reader for i in range(0, b.num_rows, n))

    def _arrow_batches(
        self,
        column_types: Mapping[str, Any] | None,
        threads: bool = True,
        block: int = 4 << 20,
        file_schema: Any = None,
        head: bool = False,
        invalid: Callable[[Any], str] | None = None,
    ) -> Generator[Any]:
        """pyarrow record batches of the file; ``column_types`` fixes CSV column types,
        ``file_schema`` JSON Lines ones. Without ``threads``, a CSV or JSON Lines file is
        read on the calling thread, a ``block`` at a time (pyarrow's threads read ahead);
        with ``head``, its first batch only is read (see :func:`csv_head`); ``invalid``:
        see :func:`open_csv`."""
        pa = pyarrow_module()
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq  # type: ignore[import-untyped]

                parquet = pq.ParquetFile(arrow_source(self.path))
                yield from parquet.iter_batches(batch_size=self.batch_size)
                return
            if self.format == "csv":
                header = self.column_names is None
                reader = open_csv(
                    csv_head(pa, self.path, block, self.delimiter, self.skip_rows, header)
                    if head
                    else input_stream(pa, self.path),
                    self.delimiter,
                    block,
                    self.column_names,
                    self._csv_options(column_types),
                    skip_rows=self.skip_rows,
                    threads=threads,
                    invalid=invalid,
                )
            else:  # (a given schema: the file's, a key after the first block included)
                given = self.given_schema is not None
                stream = json_head(pa, self.path, block) if head else input_stream(pa, self.path)
                reader = open_json(stream, threads, file_schema, given, block, not head)
            yield from self._sliced(reader)
        except OSError as e:  # pyarrow's own (a cut .gz stream); FileNotFoundError... as is
            if type(e) is not OSError:
                raise
            raise ItemError(self.path, f"cannot read {self.format}: {e}") from e
        except pa.ArrowException as e:
            hint = ""
            if self.given_schema is None and "conversion error" in str(e):
                hint = " (column types are inferred from the start of the file; pass schema=)"
            raise ItemError(self.path, f"cannot read {self.format}: {e}{hint}") from e

    def _plan(self) -> _Plan:
        """The schema, the CSV column types to read with and the file's Arrow schema;
        computed once."""
        if "plan" not in self._cache:
            self._cache["plan"] = self._make_plan()
        plan: _Plan = self._cache["plan"]
        return plan

    def _make_plan(self) -> _Plan:
        pa = pyarrow_module()
        self._cache["tally"] = False  # (given types: nothing to count)
        if self.given_schema is not None:
            file_schema = self._arrow_schema()
            columns = unique_columns(self.path, file_schema)
            missing = [n for n in self.given_schema if n not in columns]
            if missing and self.format == "jsonl":  # keys first met after the first block
                file_schema, missing = late_fields(self.path, file_schema, missing)
            if missing:
                raise SchemaError(
                    f"{self.path}: schema names columns the file does not have: {missing} "
                    f"(columns: {columns}, read from its first 4 MiB"
                    + (", and no line of it holds these keys)" if self.format == "jsonl" else ")")
                )
            types = {n: pa.string() for n in self.given_schema} if self.format == "csv" else None
            return self.given_schema, types, file_schema
        # pyarrow infers the types from the first block: read from the first two blocks
        # (csv_head, json_head) without threads, which would convert blocks ahead, and
        # given back to the system, not kept by pyarrow's allocator (workers fork next).
        # (A row of the wrong number of values is the conversion's error, not the types'.)
        read = functools.partial(
            self._arrow_batches, None, threads=False, head=True, invalid=skip_row
        )
        first, batches = first_batch(read, _BLOCK_BYTES)
        self._cache["first_rows"] = 0 if first is None else first.num_rows
        batches.close()
        pa.default_memory_pool().release_unused()
        arrow_schema = self._arrow_schema() if first is None else first.schema
        unique_columns(self.path, arrow_schema)
        # Missing values are counted as records are encoded (every column may have
        # them while encoding: a value encodes the same whatever the shape), unless they
        # change a kind (nullable_ints="float32": an int column with one is float32).
        tally = first is not None and not (
            self.nullable_ints == "float32" and any(integral(field.type) for field in arrow_schema)
        )
        self._cache["tally"] = tally
        if tally:
            nulls = {field.name: 1 for field in arrow_schema}
        else:
            nulls = {} if first is None else self._null_counts(arrow_schema)
        types = {f.name: f.type for f in arrow_schema} if self.format == "csv" else None
        return self._schema_with(arrow_schema, nulls), types, arrow_schema

    def _schema_with(self, arrow_schema: Any, nulls: Mapping[str, int]) -> Schema:
        return Schema(
            {
                field.name: self._infer(field.name, field.type, nulls.get(field.name, 0))
                for field in arrow_schema
            }
        )

    def _null_counts(self, arrow_schema: Any) -> dict[str, int]:
        """Missing values per column over the whole file (see :func:`null_counts`)."""
        types = {f.name: f.type for f in arrow_schema} if self.format == "csv" else None
        read = functools.partial(self._part_batches, types=types, file_schema=arrow_schema)
        return null_counts(self.path, self.format, self.parts(), read, arrow_schema)

    def _arrow_schema(self) -> Any:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(arrow_source(self.path)).schema_arrow
        for batch in self._arrow_batches(None, threads=False, head=True, invalid=skip_row):
            return batch.schema
        pa = pyarrow_module()
        if self.format == "csv":  # a header and no rows: every column is text
            names = self.column_names or header_only_names(
                self.path, self.skip_rows, self.delimiter
            )
            return pa.schema([(name, pa.string()) for name in names])
        return pa.schema([])

    def _infer(self, name: str, arrow_type: Any, null_count: int) -> FeatureSpec:
        try:
            return infer_spec(name, arrow_type, null_count, self.nullable_ints)
        except SchemaError as e:
            raise SchemaError(f"{self.path}: {e}") from None

    def schema(self) -> Schema:
        """The schema of the records: the given one, or one inferred by a pass over the
        file (types from pyarrow, shapes from whether a column has missing values)."""
        plan = self._plan()
        if not self._cache["tally"]:
            return plan[0]
        if "schema" not in self._cache:
            self._cache["schema"] = self._schema_with(plan[2], self._null_counts(plan[2]))
        schema: Schema = self._cache["schema"]
        return schema

    def tallies(self) -> bool:
        """Whether the conversion counts the missing values that make the schema (see
        :meth:`schema_after`): the types are inferred and the counts change no kind."""
        self._plan()
        return bool(self._cache["tally"])

    def schema_after(self, report: ConversionReport) -> Schema:
        """The schema of the records a conversion wrote, from its ``report``'s counts of
        missing values (the file is not read again); :meth:`schema` where the conversion
        does not count them."""
        plan = self._plan()
        if not self._cache["tally"]:
            return plan[0]
        counters = report.counters
        nulls = {
            name[len(MISSING) :]: n for name, n in counters.items() if name.startswith(MISSING)
        }
        return self._schema_with(plan[2], nulls)

    def batches(self) -> Iterator[TableBatch]:
        """The file's rows, ``batch_size`` at a time, read in one pass."""
        _, types, _ = self._plan()
        row = 1
        for batch in self._arrow_batches(types):
            yield TableBatch(self.path, row, batch)
            row += batch.num_rows

    # -- parts -------------------------------------------------------------------------

    def parts(self) -> list[TablePart]:
        """The file's parts, in order, covering every row once: found by a byte scan
        (CSV, JSONL) or from the metadata (Parquet), without parsing a value; cached."""
        if "parts" not in self._cache:
            self._cache["parts"] = self._make_parts()
        parts: list[TablePart] = self._cache["parts"]
        return parts

    def _make_parts(self, stop: threading.Event | None = None) -> list[TablePart]:
        def count() -> int:  # a JSONL file with objects spread over lines: read
            return sum(batch.num_rows for batch in self._arrow_batches(None))

        skip, header = self.skip_rows, self.column_names is None
        options = dict(delimiter=self.delimiter, skip_rows=skip, header=header, stop=stop)
        return file_parts(self.path, self.format, self.part_rows, self.part_bytes, options, count)

    def num_records(self) -> int:
        """The number of rows (records), without reading them: from the Parquet metadata,
        or from the byte scan that cuts a CSV or JSONL file into parts (a JSONL file with
        objects spread over lines is read once to count them)."""
        return sum(part.rows for part in self.parts())

    def items(self) -> list[TablePart]:
        """What ``write_dataset`` iterates over: the parts (see :meth:`to_records`). The
        schema is planned first, so an unreadable file fails here as it did before; a
        CSV or JSONL file's row-end scan runs beside it, on a thread (:func:`beside`; not
        for a FIFO or device, see :func:`apart`); a scan that found no row where the
        inference read some is an error, never an empty dataset."""
        serial = self.format == "parquet" or self.nullable_ints == "float32"  # (plan reads parts)
        if serial or "parts" in self._cache or not apart(self.path):
            self._plan()
        else:
            beside(self._plan, lambda stop: self._cache.update(parts=self._make_parts(stop)))
        return rows_agree(self.path, self.parts(), self._cache.get("first_rows", 0))

    def rows(self) -> Iterator[TableRow]:
        """The file's rows one by one (read a batch at a time)."""
        names = list(self._plan()[0])
        for batch in self.batches():
            yield from batch.rows(names)

    def _part_batches(
        self,
        part: TablePart,
        types: dict[str, Any] | None,
        file_schema: Any,
        block: int = _BLOCK_BYTES,
        invalid: Callable[[Any], str] | None = None,
        rows: bytes | None = None,
    ) -> Iterator[Any]:
        """The part's rows (or ``rows``, some of them) as pyarrow batches of at most
        ``batch_size`` rows, read with the file's column names and types (CSV ``types``;
        the Arrow schema of the file), in pyarrow blocks of ``block`` bytes; a CSV row of
        the wrong number of values is handed to ``invalid`` (see :func:`open_csv`)."""
        if part.kind == "whole":
            yield from self._arrow_batches(types, True, block, file_schema, invalid=invalid)
            return
        pa = pyarrow_module()
        if self.format == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(arrow_source(self.path))
            yield from parquet.iter_batches(
                batch_size=self.batch_size, row_groups=list(range(part.start, part.stop))
            )
            return
        if rows is None:
            with _fs.open_file(self.path, "rb") as f:
                f.seek(part.start)
                rows = _fs.read_fully(f, part.stop - part.start)
        data = pa.BufferReader(pa.py_buffer(rows))
        if self.format == "csv":
            reader = open_csv(
                data,
                self.delimiter,
                block,
                file_schema.names,
                self._csv_options(types),
                invalid=invalid,
            )
        else:
            reader = open_json(data, False, file_schema, bool(self.given_schema), block)
        yield from self._sliced(reader)

    def _read_part(self, part: TablePart) -> tuple[list[Any], list[tuple[int, ItemError]]]:
        """The part's batches (:func:`read_part`); a CSV row of the wrong number of values
        or a row pyarrow cannot read is left out, an error naming its row (see there)."""

        def read(block: int | None, invalid: Callable[[Any], str] | None) -> Iterator[Any]:
            types, schema = self._plan()[1:]
            return self._part_batches(part, types, schema, block or _BLOCK_BYTES, invalid)

        def parse(rows: bytes) -> list[Any]:  # (some of the part's rows, in one block)
            return list(self._part_batches(part, *self._plan()[1:], len(rows) + 1, skip_row, rows))

        got, w, placed = read_part(part, self.format, read, parse, self.tallies(), self.delimiter)
        return got, placed or wrong_rows(self.path, part, self.delimiter, w)

    # -- encoding --------------------------------------------------------------------

    def to_records(self, item: TablePart | TableBatch) -> Converted:
        """A part (or a batch) -> one serialized Example per row, in order. Columns are
        converted as a whole and encoded in Rust; when a column does not fit the schema,
        the rows are converted one by one so that each bad row is named (file, row,
        column) and rejected on its own. A part that cannot be read is one error naming
        the file and its rows (every row of it counts as an item); where the types were
        inferred from the file's start (:meth:`tallies`), it stops the conversion, as
        :meth:`schema`'s pass over the file would have before it. The missing values of
        every column are counted (:data:`MISSING`) where the schema is made from them."""
        if isinstance(item, TableBatch):
            return self._batch_records(item)
        try:
            batches, wrong = self._read_part(item)
        except ItemError as e:
            if self.tallies() and e.__cause__ is not None:
                hint = ""
                if "conversion error" in str(e.__cause__):
                    hint = " (column types are inferred from the start of the file; pass schema=)"
                raise SchemaError(f"{e.item}: {e.reason}{hint}") from None
            return Converted([], item.rows, [e])
        if wrong:  # rows left out: the others converted around them
            convert = functools.partial(self._batch_records, count=False)
            return rows_around(self.path, item, batches, wrong, convert, self._missing)
        if not batches:
            return Converted([], 0)
        pa = pyarrow_module()
        table = pa.Table.from_batches(batches)
        counters = self._missing(table)
        try:
            columns = arrow_columns(table, self._plan()[0])
        except ColumnError:
            records: list[bytes] = []
            errors: list[ItemError] = []
            row = item.first_row
            for batch in batches:
                converted = self._batch_records(TableBatch(self.path, row, batch), False)
                records.extend(converted.records)
                errors.extend(converted.errors)
                row += batch.num_rows
            return Converted(records, item.rows, errors, counters)
        batch_records = encode_record_batch(columns, pool=batch_pool())
        return Converted(batch_records, item.rows, counters=counters)

    def _missing(self, table: Any) -> dict[str, int]:
        """The report's counters of ``table``'s missing values (where they are counted)."""
        if not self.tallies():
            return {}
        return missing_counters(table)

    def _batch_records(self, batch: TableBatch, count: bool = True) -> Converted:
        schema = self._plan()[0]
        counters = self._missing(batch.arrow) if count else {}
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
            return Converted(records, len(batch), errors, counters)
        batch_records = encode_record_batch(columns, pool=batch_pool())
        return Converted(batch_records, len(batch), counters=counters)

    def _converters(self) -> dict[str, Callable[[Any], Any]]:
        if "converters" not in self._cache:
            self._cache["converters"] = {
                name: cell_converter(spec) for name, spec in self._plan()[0].items()
            }
        converters: dict[str, Callable[[Any], Any]] = self._cache["converters"]
        return converters

    def row_to_records(self, item: TableRow) -> tuple[bytes]:
        """One row -> its serialized Example; :class:`~recordforge.ItemError` names the
        file, the row and the column when a value does not fit the schema."""
        features, name = {}, ""
        try:
            for name, convert in self._converters().items():
                features[name] = convert(item.values.get(name))
            return (encode_example(features),)
        except EncodeError as e:  # (it names the feature)
            raise ItemError(item.name, str(e)) from None
        except (TypeError, ValueError, OverflowError) as e:
            raise ItemError(item.name, f"column {name!r}: {e}") from None

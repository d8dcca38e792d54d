"""What a table's schema needs beyond the types of the file's first block: whether each
column has missing values (its shape is then ``(None,)``), counted by a pass over the
whole file (:func:`null_counts`, what :meth:`TableSource.schema
<recordforge.sources.table.TableSource.schema>` runs before a conversion) or by the
conversion itself, part by part, as report counters (:func:`missing_counters`, named
:data:`MISSING` + the column).

>>> import pyarrow as pa
>>> from recordforge.sources._table_schema import missing_counters
>>> missing_counters(pa.table({"a": [1, None, None], "b": ["x", "y", "z"]}))
{'table/missing/a': 2}
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from recordforge import _fs
from recordforge.errors import ItemError, SchemaError
from recordforge.sources._table_parts import TablePart, input_stream, pyarrow_module

__all__ = [
    "MISSING",
    "header_only_names",
    "integral",
    "late_fields",
    "missing_counters",
    "null_counts",
]

# The report's counter of a column's missing values: table/missing/<column>.
MISSING = "table/missing/"


def integral(arrow_type: Any) -> bool:
    """Whether a column of ``arrow_type`` is ints or booleans (nullable_ints applies)."""
    types = pyarrow_module().types
    if types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(types.is_integer(arrow_type) or types.is_boolean(arrow_type))


def missing_counters(table: Any) -> dict[str, int]:
    """The missing values of each column of a pyarrow Table or RecordBatch that has
    any, as report counters."""
    counts = ((name, table.column(name).null_count) for name in table.schema.names)
    return {f"{MISSING}{name}": n for name, n in counts if n}


def null_counts(
    path: str,
    fmt: str,
    parts: Sequence[TablePart],
    read: Callable[[TablePart], Iterable[Any]],
    arrow_schema: Any,
) -> dict[str, int]:
    """Missing values per column over the whole file: its ``parts`` read (``read``:
    a part's pyarrow batches) on threads (pyarrow parses without the GIL) with the types
    of the first block, as the conversion reads them; a value that does not convert is
    an error, as in a one-pass read. The first part (in file order) that fails is the
    error raised."""
    pa = pyarrow_module()

    def count(part: TablePart) -> dict[str, int]:
        nulls: dict[str, int] = {}
        try:
            for batch in read(part):
                if batch.schema != arrow_schema:
                    raise SchemaError(
                        f"{path}: column types change within the file "
                        f"({arrow_schema} then {batch.schema}); pass schema= to set them"
                    )
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    nulls[name] = nulls.get(name, 0) + column.null_count
        except pa.ArrowException as e:
            hint = ""
            if "conversion error" in str(e):
                hint = " (column types are inferred from the start of the file; pass schema=)"
            where = part.name.rsplit(": ", 1)[1]
            raise ItemError(path, f"cannot read {fmt} ({where}): {e}{hint}") from e
        return nulls

    # Each thread holds a part (4 MiB and its columns): a few threads at most.
    threads = min(len(parts), os.cpu_count() or 1, 8)
    if threads > 1:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            counts = list(pool.map(count, parts))
    else:
        counts = [count(part) for part in parts]
    total: dict[str, int] = {}
    for nulls in counts:
        for name, n in nulls.items():
            total[name] = total.get(name, 0) + n
    return total


def header_only_names(path: str, skip_rows: int, delimiter: str) -> list[str]:
    """The column names of a CSV file without rows, as pyarrow reads them (a BOM left
    out, quotes parsed, empty names kept); a header line without a line end (which
    pyarrow takes for an empty file) parsed by the ``csv`` module."""
    import csv

    import pyarrow.csv as pcsv  # type: ignore[import-untyped]

    pa = pyarrow_module()
    try:
        reader = pcsv.open_csv(
            input_stream(pa, path),
            read_options=pcsv.ReadOptions(use_threads=False, skip_rows=skip_rows),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        )
        return list(reader.schema.names)
    except pa.ArrowException:
        pass
    with _fs.open_file(path, "rb") as f:
        text = f.read(1 << 20).decode("utf-8-sig", errors="replace")
    lines = text.splitlines()[skip_rows:]
    return next(csv.reader(lines[:1], delimiter=delimiter), [])


def unique_columns(path: str, arrow_schema: Any) -> list[str]:
    """The column names of the file's Arrow schema, checked to be text and to name each
    column once (a record's features are named by them)."""
    try:
        names = list(arrow_schema.names)
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: column names that are not UTF-8 text: {e}") from None
    twice = sorted(name for name, n in collections.Counter(names).items() if n > 1)
    if twice:
        raise SchemaError(
            f"{path}: column names given more than once: {twice}; name every column once "
            "(for a CSV, TableSource's column_names= replaces its header)"
        )
    return names


def late_fields(path: str, arrow_schema: Any, names: Sequence[str]) -> tuple[Any, list[str]]:
    """``arrow_schema`` (a JSON Lines file's, inferred from its first block) with the
    fields ``names`` (keys a given schema names that the first block lacks) added, each
    typed by pyarrow from the first line that holds it with a value that is not null;
    and the names found nowhere. The file (decompressed, as it is read) is searched for
    each key's JSON text, as it is or with its non-ASCII characters escaped as Python's
    ``json.dumps`` writes them, at memory speed, and lines are parsed only where it
    occurs (a key written with other escapes is not found: it is reported missing)."""
    import json

    pa = pyarrow_module()
    import pyarrow.json as pj  # type: ignore[import-untyped]

    fields = list(arrow_schema)
    missing = []
    for name in names:
        needles = {json.dumps(name, ensure_ascii=False).encode(), json.dumps(name).encode()}
        line = _first_line_with(path, sorted(needles), name)
        if line is None:
            missing.append(name)
            continue
        try:
            typed = pj.read_json(pa.BufferReader(line + b"\n")).schema.field(name)
        except (pa.ArrowException, KeyError):
            missing.append(name)
            continue
        fields.append(typed)
    return pa.schema(fields), missing


def _first_line_with(path: str, needles: Sequence[bytes], name: str) -> bytes | None:
    """The first line of ``path`` holding one of ``needles`` as the key ``name`` of its
    object, with a value that is not null (whole lines searched, a block at a time; a
    line longer than a block is gathered in pieces, copied once)."""
    import json

    pieces: list[bytes] = []  # the line that the blocks so far leave open
    with input_stream(pyarrow_module(), path) as f:
        while True:
            block = f.read(16 << 20)
            if block and b"\n" not in block:
                pieces.append(block)
                continue
            data = b"".join([*pieces, block])
            cut = data.rfind(b"\n") + 1 if block else len(data)
            lines: bytes = data[:cut]
            pieces = [data[cut:]]
            at = min((k for k in (lines.find(n) for n in needles) if k >= 0), default=-1)
            while at >= 0:
                start = lines.rfind(b"\n", 0, at) + 1
                end = lines.find(b"\n", at)
                end = len(lines) if end < 0 else end
                try:
                    value = json.loads(lines[start:end])
                except ValueError:
                    value = None
                if isinstance(value, dict) and value.get(name) is not None:
                    return lines[start:end]
                found = (lines.find(n, end) for n in needles)
                at = min((k for k in found if k >= 0), default=-1)
            if not block:
                return None

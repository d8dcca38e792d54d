"""How a table's parts are opened with pyarrow: CSV readers, parts re-read in one block,
Parquet parts from the file's metadata (see :mod:`recordforge.sources.table`)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from recordforge import _fs
from recordforge.errors import ItemError
from recordforge.sources._table_parts import (
    COMPRESSED,
    SpreadRowsError,
    TablePart,
    arrow_source,
    csv_parts,
    input_stream,
    jsonl_parts,
    parquet_parts,
    pyarrow_module,
    scan_lines,
    whole_part,
)

__all__ = [
    "apart",
    "beside",
    "csv_head",
    "csv_only",
    "file_parts",
    "first_batch",
    "json_head",
    "open_csv",
    "open_json",
    "parquet_file_parts",
    "rows_agree",
    "straddled_block",
]

T = TypeVar("T")

#: The block size JSON Lines files are read in.
JSON_BLOCK = 4 << 20


def csv_only(path: str, fmt: str, *options: object) -> None:
    """Refuses the CSV options (``skip_rows``, ``delimiter``, ``column_names``,
    ``null_values``, in that order) given for a file of another format: never silently
    left unused."""
    names = ("skip_rows", "delimiter", "column_names", "null_values")
    given = [name for name, value in zip(names, options, strict=True) if value not in (None, 0)]
    if fmt != "csv" and given:
        raise ValueError(f"{path}: {', '.join(given)}: for CSV files only, and this is {fmt}")


def open_csv(
    stream: Any,
    delimiter: str,
    block: int,
    column_names: Sequence[str] | None,
    convert: dict[str, Any],
    *,
    skip_rows: int = 0,
    threads: bool = False,
    invalid: Callable[[Any], str] | None = None,
) -> Any:
    """pyarrow's streaming CSV reader as every table read opens it: quoted values may hold
    line ends (``newlines_in_values``), blocks of ``block`` bytes, ``convert`` the
    keywords of its ``ConvertOptions``; ``invalid``: pyarrow's handler of a row whose
    number of values is not the header's (None: the read fails there)."""
    import pyarrow.csv as pcsv  # type: ignore[import-untyped]

    return pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(
            use_threads=threads,
            block_size=block,
            skip_rows=skip_rows,
            column_names=None if column_names is None else list(column_names),
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid
        ),
        convert_options=pcsv.ConvertOptions(**convert),
    )


def open_json(
    stream: Any,
    threads: bool,
    schema: Any,
    ignore: bool,
    block: int = JSON_BLOCK,
    utf8: bool = True,
) -> Iterator[Any]:
    """The record batches of pyarrow's streaming JSON Lines reader as every table read
    opens it: blocks of ``block`` bytes (a line must fit in one); with ``schema``, its
    columns (not the first block's alone: a key a given schema names, first met later,
    included), and a field it leaves out dropped (``ignore``: a given schema's) or
    refused. pyarrow takes text that is not UTF-8 into its strings: with ``utf8``, such
    a batch is refused (``ArrowInvalid`` naming the column; JSON text is UTF-8), as a
    line that is not JSON is, instead of written as text (checked at ~3% of the parse)."""
    import pyarrow.json as pjson  # type: ignore[import-untyped]

    parse = None
    if schema is not None:
        behavior = "ignore" if ignore else "error"
        parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=behavior)
    read = pjson.ReadOptions(use_threads=threads, block_size=block)
    reader = pjson.open_json(stream, read_options=read, parse_options=parse)
    if not utf8:
        return iter(reader)
    return _utf8_checked(reader)


def _utf8_checked(batches: Iterable[Any]) -> Iterator[Any]:
    pa = pyarrow_module()
    for batch in batches:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raise pa.ArrowInvalid(f"column {name!r}: text that is not UTF-8") from None
        yield batch


def straddled_block(error: BaseException, part: TablePart, block: int | None) -> int | None:
    """The block size to read a part with again, after a read in blocks of ``block``
    bytes (None: the default) failed because a CSV's quoted value holding a line end, or
    a JSON Lines line, is longer than a block: a byte part in one block, a whole file
    (compressed) in blocks 4 times larger, up to 1 GiB. None for any other error."""
    if "straddl" not in str(error) or part.format == "parquet":
        return None
    if part.kind == "bytes":
        return part.stop - part.start + 1 if block is None else None
    larger = 4 * (block or JSON_BLOCK)
    return larger if larger <= 1 << 30 else None


def parquet_file_parts(path: str, part_rows: int, part_bytes: int) -> list[TablePart]:
    """The parts of a Parquet file, from its metadata: runs of its row groups."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    meta = pq.ParquetFile(arrow_source(path)).metadata
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    return parquet_parts(
        path,
        [g.num_rows for g in groups],
        [g.total_byte_size for g in groups],
        part_rows=part_rows,
        part_bytes=part_bytes,
    )


def first_batch(read: Callable[..., Generator[Any]], block: int) -> tuple[Any, Generator[Any]]:
    """The first batch of ``read(block=block)`` (None: no rows) and the batches, read
    again in blocks 4 times larger while the first rows hold a quoted value with line
    ends longer than a block (up to 1 GiB): the file's first read, which infers its types,
    then reads what a later part would read (the part in one block)."""
    while True:
        batches = read(block=block)
        try:
            return next(batches, None), batches
        except ItemError as e:
            if "straddl" not in str(e.__cause__) or block >= 1 << 30:
                raise
            block *= 4


def csv_head(pa: Any, path: str, block: int, delimiter: str, skip: int, header: bool) -> Any:
    """The stream the type inference reads a CSV's first block from: its first two
    blocks (pyarrow's reader reads up to 32 blocks ahead on its I/O thread into fresh
    memory, ~110 ms of CPU for 4 MiB blocks, before the first batch is used), where the
    first block holds a whole row past the skipped lines and the header, so that the
    first batch is the first block's rows as the whole file gives them; the file's
    stream otherwise (a first row longer than a block)."""

    def whole_row(data: bytes) -> bool:
        first = memoryview(data)[:block]
        lines = scan_lines(
            io.BytesIO(first), csv=True, delimiter=delimiter, chunk=1 << 16, skip=skip
        )
        # (a line cut by the block's end is not a row: only ends before it count); the
        # scan stops at the rows needed
        rows = 0
        for ends, marks in lines:
            rows += int(((ends < len(first)) & (marks == 1)).sum())
            if rows >= 1 + header:
                return True
        return False

    return _head(pa, path, block, whole_row)


def json_head(pa: Any, path: str, block: int = JSON_BLOCK) -> Any:
    """:func:`csv_head` for a JSON Lines file (blocks of ``block`` bytes, cut at their
    last line end): its first two blocks where the first holds a line end."""
    return _head(pa, path, block, lambda data: data.find(b"\n", 0, block) >= 0)


def _head(pa: Any, path: str, block: int, whole_row: Callable[[bytes], bool]) -> Any:
    """The first two blocks of ``path`` as a stream, where the file is no longer or
    ``whole_row`` of them says the first block's batch does not need the rest; the
    file's stream (opened again) otherwise."""
    stream = input_stream(pa, path)
    data = _fs.read_fully(stream, 2 * block)
    if len(data) < 2 * block or whole_row(data):  # (shorter: the whole file)
        return pa.BufferReader(data)
    stream.close()
    return input_stream(pa, path)


def apart(path: str) -> bool:
    """Whether two opens of ``path`` read apart, so that the row-end scan may run beside
    the type inference: a regular file (links followed) or a URL, but not on fsspec's
    memory file system, whose opens of a path share one file object (and its position).
    Not a FIFO or device, whose open could wait for a writer for ever."""
    if _fs.is_url(path):
        return not path.startswith("memory://")
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def rows_agree(path: str, parts: list[TablePart], first_rows: int) -> list[TablePart]:
    """``parts``, where they hold a row when the type inference read ``first_rows``: a
    file changed between the two reads (or read through a shared handle) is an error
    naming it, never an empty dataset."""
    if first_rows and not any(part.rows for part in parts):
        raise ItemError(
            path,
            f"the row-end scan found no rows where the type inference read {first_rows}: "
            "was the file changed while it was read?",
        )
    return parts


def beside(main: Callable[[], T], other: Callable[[threading.Event], object]) -> T:
    """``main()``, with ``other(stop)`` run on a thread meanwhile: a table's type inference
    with its row-end scan beside it (each waits on the file or runs in pyarrow or Rust,
    the GIL let go: one core each). ``main``'s error is the one raised (``stop`` is set,
    so that ``other`` ends at its next block), then ``other``'s; the thread is waited
    for either way, so that none is left running (workers fork next)."""
    stop, ended = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            other(stop)
        except BaseException as e:
            failed.append(e)
        finally:
            ended.set()

    thread = threading.Thread(target=run, name="recordforge-scan", daemon=True)
    thread.start()
    try:
        result = main()
        ended.wait()
    except BaseException:  # main's error, or an interrupt while it or the wait ran
        stop.set()
        while not ended.is_set():  # the scan ends at its next block
            with contextlib.suppress(KeyboardInterrupt):
                ended.wait()
        raise
    finally:
        # Waited for on an event: Python 3.11's Thread.join, interrupted, marks a thread
        # that still runs as stopped.
        thread.join()
    if failed:
        raise failed[0]
    return result


def file_parts(
    path: str,
    fmt: str,
    part_rows: int,
    part_bytes: int,
    csv_options: dict[str, Any],
    count: Callable[[], int],
) -> list[TablePart]:
    """The parts of a table file: from a Parquet file's metadata, or from the row-end
    scan of a CSV (:func:`csv_parts` with ``csv_options``) or JSON Lines file; a
    compressed one is one part from the start (no byte ranges in a stream), a JSONL file
    whose objects spread over lines too, its rows ``count()``-ed by reading it."""
    pa = pyarrow_module()
    try:
        if fmt == "parquet":
            return parquet_file_parts(path, part_rows, part_bytes)
        compressed = Path(path).suffix.lower() in COMPRESSED
        with input_stream(pa, path) if compressed else _fs.open_file(path, "rb") as f:
            if fmt == "csv":
                parts = csv_parts(f, path, part_bytes=part_bytes, **csv_options)
            else:
                stop = csv_options.get("stop")
                parts = jsonl_parts(f, path, part_bytes=part_bytes, stop=stop)
    except pa.ArrowException as e:
        raise ItemError(path, f"cannot read {fmt}: {e}") from e
    except OSError as e:  # pyarrow's own (a cut .gz stream); FileNotFoundError... as is
        if type(e) is not OSError:
            raise
        raise ItemError(path, f"cannot read {fmt}: {e}") from e
    except SpreadRowsError:  # pyarrow reads them: one part
        return whole_part(path, fmt, count())
    if compressed:
        return whole_part(path, fmt, sum(p.rows for p in parts))
    return parts

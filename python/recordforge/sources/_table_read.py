"""How a table's parts are opened with pyarrow: CSV readers, parts re-read in one block,
Parquet parts from the file's metadata (see :mod:`recordforge.sources.table`)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from recordforge.errors import ItemError
from recordforge.sources._table_parts import TablePart, arrow_source, parquet_parts

__all__ = ["first_batch", "open_csv", "parquet_file_parts", "straddled_block"]


def open_csv(
    stream: Any,
    delimiter: str,
    block: int,
    column_names: Sequence[str] | None,
    convert: dict[str, Any],
    *,
    skip_rows: int = 0,
    threads: bool = False,
) -> Any:
    """pyarrow's streaming CSV reader as every table read opens it: quoted values may hold
    line ends (``newlines_in_values``), blocks of ``block`` bytes, ``convert`` the
    keywords of its ``ConvertOptions``."""
    import pyarrow.csv as pcsv  # type: ignore[import-untyped]

    return pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(
            use_threads=threads,
            block_size=block,
            skip_rows=skip_rows,
            column_names=None if column_names is None else list(column_names),
        ),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(**convert),
    )


def straddled_block(error: Exception, part: TablePart) -> int | None:
    """The block size to read a CSV byte part with again when pyarrow could not read it
    in blocks because a quoted value holding a line end is longer than a block: the
    whole part in one. None for any other error."""
    if "straddl" not in str(error) or part.kind != "bytes" or part.format != "csv":
        return None
    return part.stop - part.start + 1


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

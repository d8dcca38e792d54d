"""The rows of a table part that pyarrow leaves out: a CSV row whose number of values is
not the header's is skipped by pyarrow's ``invalid_row_handler`` (:func:`skip_row`, or
one that collects them), named by its row of the file (:func:`wrong_rows`); a JSON Lines
row that pyarrow cannot read (or a CSV value that does not fit the inferred types)
fails the whole part's read, so the part is read again in halves down to that row
(:func:`read_apart`). The part's other rows are converted around them
(:func:`rows_around`), each under its own row number."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from recordforge import _fs
from recordforge.errors import ItemError, SchemaError
from recordforge.pipeline import Converted
from recordforge.sources._table_parts import TableBatch, TablePart, csv_rows, pyarrow_module
from recordforge.sources._table_read import straddled_block

__all__ = ["read_apart", "read_part", "rows_around", "skip_row", "wrong_rows"]

#: ``(expected values, values found, the row's text)`` of a row pyarrow left out.
Wrong = tuple[int, int, str]


def skip_row(row: Any) -> str:
    """pyarrow's handler of a CSV row of the wrong number of values: left out."""
    return "skip"


def _reason(expected: int, got: int, text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"{got} values where the header names {expected} columns: {shown!r}"


#: Rows of a part and their errors, each at its position among the part's rows.
Placed = list[tuple[int, ItemError]]


def read_part(
    part: TablePart,
    fmt: str,
    read: Callable[[int | None, Callable[[Any], str] | None], Iterable[Any]],
    parse: Callable[[bytes], list[Any]] | None = None,
    inferred: bool = False,
    delimiter: str = ",",
) -> tuple[list[Any], list[Wrong], Placed]:
    """The batches of ``part`` (``read(block, invalid)``: pyarrow's reader of its rows,
    in blocks of ``block`` bytes or the default, a CSV row of the wrong number of values
    handed to ``invalid``), checked to hold the rows the scan counted, the CSV rows left
    out, and the rows that could not be read: a JSON Lines byte part whose read fails,
    or a CSV one whose types were ``inferred``, is read apart with ``parse`` (see
    :func:`read_apart`; a CSV part only to name the row that stops the conversion).
    ItemError (naming the file and the part's rows) when pyarrow cannot read them
    otherwise. A value or line longer than a block: read again in larger blocks
    (:func:`straddled_block`)."""
    pa = pyarrow_module()
    where = f"bytes {part.start}-{part.stop}" if part.kind == "bytes" else part.kind
    wrong: list[Wrong] = []
    placed: Placed = []

    def invalid(row: Any) -> str:
        wrong.append((row.expected_columns, row.actual_columns, row.text))
        return "skip"

    handler = invalid if fmt == "csv" else None
    block = None
    try:
        while True:
            try:
                batches = list(read(block, handler))
                break
            except (pa.ArrowInvalid, ItemError) as e:  # (a whole file's read: ItemError)
                cause = e.__cause__ if isinstance(e, ItemError) else e
                if cause is None or (block := straddled_block(cause, part, block)) is None:
                    # (a CSV part's rows of the wrong number of values are not
                    # collected there: with a given schema it stays one error)
                    apart = part.kind == "bytes" and cause is e and (fmt == "jsonl" or inferred)
                    if not apart or parse is None or not isinstance(cause, Exception):
                        raise
                    batches, placed = read_apart(part, parse, inferred, cause, delimiter)
                    break
                wrong.clear()
    except pa.ArrowException as e:
        raise ItemError(part.name, f"cannot read {fmt} ({where}): {e}") from e
    read_rows = sum(b.num_rows for b in batches) + len(wrong) + len(placed)
    if read_rows != part.rows:
        raise ItemError(
            part.name,
            f"the scan for row ends counted {part.rows} rows in {where}, pyarrow read "
            f"{read_rows}; was the file changed while it was read?",
        )
    return batches, wrong, placed


#: What pyarrow says of a row that is JSON whose values do not fit the columns' types
#: (or that has a key they do not), as opposed to text that is not JSON.
_TYPES_SAY = ("changed from", "couldn't parse", "unexpected field")

#: pyarrow's own row number, of the piece it was given (the row is named instead).
_PIECE_ROW = re.compile(r" in row \d+$|Row #\d+: ")


def read_apart(
    part: TablePart,
    parse: Callable[[bytes], list[Any]],
    inferred: bool,
    error: Exception,
    delimiter: str = ",",
) -> tuple[list[Any], Placed]:
    """A CSV or JSON Lines byte part whose read failed (``error``), read again in halves
    until each row that fails is alone: the batches of the other rows (``parse(data)``: the
    part's reader over ``data``), in order, and an error per row that failed, naming its
    row of the file. The pieces read form a binary tree over the part's rows: a row that
    fails costs ~2 log2(rows) reads of ~0.2 ms, and a part whose every row fails ~2
    reads a row (60,000 such rows: ~18 s; good rows convert at ~0.01 ms). A row whose
    values do not fit the types inferred from the file's start (``inferred``; see
    :data:`_TYPES_SAY`; any CSV row: a CSV part fails only on its types, or on text that
    is not UTF-8) stops the conversion (:class:`SchemaError`), at the first such row;
    any other row that fails is an error of its own. ``error`` is raised again where
    the part's lines are not the rows the scan counted."""
    with _fs.open_file(part.path, "rb") as f:
        f.seek(part.start)
        data = _fs.read_fully(f, part.stop - part.start)
    if part.format == "csv":
        lines = csv_rows(data, delimiter)
    else:
        data = data.removeprefix(b"\xef\xbb\xbf") if part.start == 0 else data  # (a BOM)
        lines = [line for line in data.split(b"\n") if line.strip(b" \t\r")]
    if len(lines) != part.rows:
        raise error
    batches: list[Any] = []
    placed: Placed = []
    pa = pyarrow_module()

    def apart(lo: int, hi: int) -> None:
        try:
            batches.extend(parse(b"\n".join(lines[lo:hi]) + b"\n"))
        except pa.ArrowInvalid as e:
            if hi - lo == 1:
                placed.append((lo, _row_error(part, lo, e, inferred)))
            else:
                apart(lo, (lo + hi) // 2)
                apart((lo + hi) // 2, hi)

    apart(0, len(lines))
    return batches, placed


def _row_error(part: TablePart, k: int, e: Exception, inferred: bool) -> ItemError:
    """The error of row ``k`` of ``part``, which pyarrow could not read (``e``)."""
    name, reason = f"{part.path}: row {part.first_row + k}", _PIECE_ROW.sub("", str(e))
    typed = part.format == "csv" or any(what in reason for what in _TYPES_SAY)
    if inferred and typed:
        hint = "column types are inferred from the start of the file; pass schema="
        raise SchemaError(f"{name}: cannot read {part.format}: {reason} ({hint})")
    return ItemError(name, f"cannot read {part.format}: {reason}")


def wrong_rows(
    path: str, part: TablePart, delimiter: str, wrong: list[Wrong]
) -> list[tuple[int, ItemError]]:
    """The errors of ``part``'s rows of the wrong number of values, each with its
    position among the part's rows (-1: not found) and naming its row of the file:
    found by their text among the part's rows, in order (the row ends from the same
    scan as the parts'; pyarrow does not number them). A part read whole (a stream) is
    not read again: its rows are not found."""
    if not wrong:
        return []
    if part.kind != "bytes":
        return [(-1, ItemError(part.name, _reason(*row))) for row in wrong]
    with _fs.open_file(path, "rb") as f:
        f.seek(part.start)
        data = _fs.read_fully(f, part.stop - part.start)
    rows = csv_rows(data, delimiter)
    found: list[tuple[int, ItemError]] = []
    k = 0
    for expected, got, text in wrong:
        want = text.encode("utf-8", "surrogateescape").rstrip(b"\r\n")
        while k < len(rows) and rows[k] != want:
            k += 1
        at = k if k < len(rows) else -1
        name = f"{path}: row {part.first_row + at}" if at >= 0 else part.name
        found.append((at, ItemError(name, _reason(expected, got, text))))
        k += 1
    return found


def rows_around(
    path: str,
    part: TablePart,
    batches: list[Any],
    wrong: list[tuple[int, ItemError]],
    convert: Callable[[TableBatch], Converted],
    missing: Callable[[Any], dict[str, int]],
) -> Converted:
    """The records of a part some of whose rows were left out (``wrong``, from
    :func:`wrong_rows`): the others (``batches``) converted by ``convert`` in runs of
    consecutive rows, each row named by its row of the file, the errors in the rows'
    order; ``missing`` counts the missing values of the rows read."""
    pa = pyarrow_module()
    table = pa.Table.from_batches(batches) if batches else None
    counters = missing(table) if table is not None else {}
    unplaced = any(at < 0 for at, _ in wrong)
    if unplaced:  # a row not found (a whole-file stream, not read again): one run
        wrong = [(part.rows, error) for _, error in wrong]
    records: list[bytes] = []
    errors: list[ItemError] = []
    taken = start = 0  # rows of the table converted; the run's first row in the part
    for at, error in [*wrong, (part.rows, None)]:
        n = max(0, min(at - start, (table.num_rows if table is not None else 0) - taken))
        if n and table is not None:
            row = part.first_row + start
            for batch in table.slice(taken, n).to_batches():
                converted = convert(TableBatch(path, row, batch))
                records.extend(converted.records)
                errors.extend(converted.errors)
                row += batch.num_rows
            taken += n
        if error is not None:
            errors.append(error)
        start = at + 1
    if unplaced:  # the rows after one left out are not known: named by the part
        errors = [ItemError(part.name, e.reason) for e in errors]
    return Converted(records, part.rows, errors, counters)

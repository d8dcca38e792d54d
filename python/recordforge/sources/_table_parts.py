"""The pieces of a table: parts of a file (what a conversion reads on its own, in any
process), batches and rows, and the conversion of one cell to a feature value.

A part is a byte range of a CSV or JSON Lines file that starts and ends at a row
boundary, or a range of a Parquet file's row groups. Parts are fixed by the file alone
(never by a number of workers): a CSV or JSONL file is cut after the first row end at or
past every ``part_bytes`` (4 MiB by default) from the start of the part; a Parquet file
is cut after the row group that takes the part to ``part_rows`` rows (131,072) or to
``part_bytes`` bytes uncompressed (a row group is never split). A compressed CSV or
JSONL (``.gz``, ...) cannot be entered in the middle: it is one part.

The cut points come from one sequential byte scan that follows pyarrow's CSV parser: a
quote opens a quoted value only at the start of a field, ``""`` inside one is a quote, and
a line end inside a quoted value is not a row end; ``\\n``, ``\\r\\n`` and a lone ``\\r``
end a row; an empty line is no row. The same scan counts the rows, so each part knows its
first row number and its row count, and a reader can check that it read exactly those.
JSON Lines rows end at ``\\n`` only, and a line of whitespace is no row.

>>> import io
>>> data = b'id,text\\n1,"two\\nlines"\\n2,b\\n\\n3,c'
>>> parts = csv_parts(io.BytesIO(data), part_bytes=8)
>>> [(p.start, p.stop, p.first_row, p.rows) for p in parts]  # (bytes, first row, rows)
[(8, 22, 1, 1), (22, 30, 2, 2)]
"""

from __future__ import annotations

import dataclasses
import io
import mmap
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from recordforge import _fs
from recordforge._core import CsvPartScanner, CsvRowScanner, PartCutter
from recordforge.schema import FeatureSpec

__all__ = [
    "COMPRESSED",
    "FORMATS",
    "PART_BYTES",
    "PART_ROWS",
    "Format",
    "ScanStopped",
    "SpreadRowsError",
    "TableBatch",
    "TablePart",
    "TableRow",
    "arrow_source",
    "cell_converter",
    "csv_parts",
    "csv_rows",
    "format_of",
    "input_stream",
    "jsonl_parts",
    "parquet_parts",
    "pyarrow_module",
    "scan_lines",
    "whole_part",
]

# A CSV / JSONL part ends at the first row end at or past this many bytes from its start
# (pyarrow's block size). A worker holds a part's rows and records at once: 40 MB CSV,
# peak RSS 193 MB one-pass, 219 MB in 4 MiB parts, ~300 MB in 16 MiB parts.
PART_BYTES = 4 << 20
# A Parquet part takes row groups until it has at least this many rows.
PART_ROWS = 1 << 17
# Bytes scanned at once (numpy temporaries of a few times this; 1 MiB is also faster).
_SCAN_BYTES = 1 << 20
# Bytes a CSV's part scan reads at once, into one reused, page-aligned buffer (see
# _csv_start: the alignment, not the size, decided the copy's speed on this project's
# VM; 128 KiB keeps the buffer in the core's cache).
_CSV_READ_BYTES = 128 << 10
_BOM = b"\xef\xbb\xbf"
_NL, _CR, _CLOSE = 10, 13, ord("}")
_EMPTY_DTYPE = {"int64": np.int64, "float32": np.float32, "bytes": np.bytes_}


@dataclasses.dataclass(frozen=True)
class TablePart:
    """Rows ``first_row`` .. ``first_row + rows - 1`` (1-based data rows, the header not
    counted) of a table file: bytes ``start`` .. ``stop`` (``kind="bytes"``), row groups
    ``start`` .. ``stop`` (``kind="row_groups"``), or the whole file read from its start
    (``kind="whole"``: a compressed file)."""

    index: int
    path: str
    format: str
    kind: Literal["bytes", "row_groups", "whole"]
    start: int
    stop: int
    first_row: int
    rows: int

    @property
    def name(self) -> str:
        return f"{self.path}: rows {self.first_row}-{self.first_row + self.rows - 1}"


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


def _json_marks(
    proc: bytes, arr: np.ndarray, ends: np.ndarray, last: int
) -> tuple[np.ndarray, int]:
    """JSONL lines ending at ``ends`` of a chunk: 0 empty (white space only), 1 a row
    (its last non-space byte is ``}``), 2 not (an object spread over lines); and the
    last non-space byte of the line left open after the chunk. Most lines end with
    ``}`` right before their ``\\n`` or ``\\r\\n``: only the others are looked at."""
    marks = np.ones(len(ends), np.int8)
    b1 = arr[np.maximum(ends - 1, 0)]
    b2 = arr[np.maximum(ends - 2, 0)]
    plain = (ends >= 2) & ((b1 == _CLOSE) | ((b1 == _CR) & (b2 == _CLOSE)))
    if len(ends):
        plain[0] = False  # the first line may have begun before the chunk
    for i in np.flatnonzero(~plain).tolist():
        start = int(ends[i - 1]) + 1 if i else 0
        text = proc[start : int(ends[i])].rstrip(b" \t\r\n")
        byte = text[-1] if text else (last if i == 0 else 0)
        marks[i] = 0 if not byte else 1 if byte == _CLOSE else 2
    rest = proc[int(ends[-1]) + 1 :] if len(ends) else proc
    rest = rest.rstrip(b" \t\r\n")
    if rest:
        last = rest[-1]
    elif len(ends):
        last = 0
    return marks, last


def scan_lines(
    f: IO[bytes], *, csv: bool, delimiter: str = ",", chunk: int = _SCAN_BYTES, skip: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The row ends of a CSV (``csv=True``) or JSONL file, a chunk at a time: for each
    line, the offset just past its end, and a mark: 0 for an empty line (no row), 1 for
    a row, 2 for a JSONL line that does not end with ``}`` (an object spread over lines).
    A last line without a line end ends at the end of the file. A CSV is scanned in Rust
    (``_core.CsvRowScanner``: line ends, and quoted values as pyarrow's parser reads
    them), a JSONL file with NumPy. A CSV's first ``skip`` lines, counted as pyarrow's
    ``skip_rows`` counts them (raw lines, quotes not looked at), come as one empty line."""
    if csv:
        yield from _csv_lines(f, delimiter, chunk, skip)
        return
    line_start = 0  # where the open line starts
    last = 0  # the open line's last non-space byte so far (0: none yet)
    offset = 0  # file offset of the chunk's first byte
    first = True
    while True:
        data = f.read(max(chunk, len(_BOM)) if first else chunk)
        if first:
            first = False
            if data.startswith(_BOM):  # pyarrow skips it
                data, offset = data[len(_BOM) :], len(_BOM)
                if not data:
                    continue
        if not data:
            break
        arr = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(arr == _NL)  # a \r is space in JSON
        nonempty, last = _json_marks(data, arr, ends, last)
        if len(ends):
            line_start = offset + int(ends[-1]) + 1
            yield offset + ends + 1, nonempty.astype(np.int8)
        offset += len(data)
    if line_start < offset and last:
        yield np.array([offset]), np.array([1 if last == _CLOSE else 2], np.int8)


#: A raw line end, as pyarrow's ``skip_rows`` counts lines.
_RAW_LINE_END = re.compile(rb"\r\n|\r|\n")


def _skip_raw_lines(
    data: np.ndarray, read: Callable[[], np.ndarray], skip: int, start: int
) -> tuple[int, np.ndarray]:
    """Skips ``skip`` raw lines (``\\r\\n``, ``\\r`` or ``\\n`` ends, quotes not looked at)
    of the stream whose chunk ``data`` starts at byte ``start`` (``read`` gives the next
    chunks): where the rest starts, and the rest of its chunk. A chunk at a time: a long
    line costs no more memory than a chunk."""
    carried_cr = False  # the last chunk ended with a line's \r: a \n first here is its end
    while True:
        chunk = bytes(data)
        pos = 1 if carried_cr and chunk[:1] == b"\n" else 0
        carried_cr = False
        while skip and (m := _RAW_LINE_END.search(chunk, pos)) is not None:
            pos, skip = m.end(), skip - 1
            carried_cr = m.group() == b"\r" and pos == len(chunk)
        if not skip and not carried_cr:
            return start + pos, data[pos:]
        start += len(chunk)
        data = read()
        if not len(data):
            return start, data
        if not skip:  # the \r ended the last line skipped
            cut = 1 if data[0] == _NL else 0
            return start + cut, data[cut:]


def _csv_start(
    f: IO[bytes], chunk: int, skip: int
) -> tuple[Callable[[], np.ndarray], int, int | None, np.ndarray]:
    """The start of a CSV's scan: a ``read`` of its next chunks (into one buffer, reused:
    a fresh ``bytes`` a read can be fresh memory each time, a page fault every 4 KB),
    where its lines start (past a byte-order mark, which pyarrow skips, and ``skip`` raw
    lines), the end of the skipped lines (None: none), and the first chunk's rest. The
    buffer is page-aligned (an anonymous map), as the file's chunks are: the kernel's copy
    out of the page cache ran 5x slower on this project's VM (AMD EPYC) where the
    destination is 4-28 bytes past the source's alignment on 64 bytes, as a
    ``bytearray``'s data (16 past) is for a read from the file's start. Private: a
    process forked during a scan has a copy of its own (``mmap``'s default is shared)."""
    buffer = mmap.mmap(-1, max(chunk, len(_BOM)), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    array = np.frombuffer(buffer, np.uint8)
    readinto = getattr(f, "readinto", None)

    def read() -> np.ndarray:
        if readinto is None:
            return np.frombuffer(f.read(len(buffer)) or b"", np.uint8)
        n = 0
        while n < len(buffer) and (got := readinto(memoryview(buffer)[n:])):
            n += got
        return array[:n]

    data = read()
    start = len(_BOM) if bytes(data[: len(_BOM)]) == _BOM else 0
    data = data[start:]
    skipped = None
    if skip:
        start, data = _skip_raw_lines(data, read, skip, start)
        skipped = start
    return read, start, skipped, data


def _csv_lines(
    f: IO[bytes], delimiter: str, chunk: int, skip: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The scan of :func:`scan_lines` for a CSV."""
    read, start, skipped, data = _csv_start(f, chunk, skip)
    if skipped is not None:  # the skipped lines, as one empty line
        yield np.array([skipped], np.int64), np.zeros(1, np.int8)
    scanner = CsvRowScanner(delimiter.encode("utf-8")[0], start)
    while True:
        ends, marks = scanner.feed(data)
        if len(ends):
            yield ends.astype(np.int64), marks
        data = read()
        if not len(data):
            break
    ends, marks = scanner.finish()
    if len(ends):
        yield ends.astype(np.int64), marks


def csv_rows(data: bytes, delimiter: str) -> list[bytes]:
    """The rows of CSV bytes (a part's: no header), in order, each without its line end,
    as :func:`scan_lines` finds them (empty lines are no row)."""
    rows: list[bytes] = []
    start = 0
    for ends, marks in scan_lines(io.BytesIO(data), csv=True, delimiter=delimiter):
        for end, mark in zip(ends.tolist(), marks.tolist(), strict=True):
            if mark:
                rows.append(data[start:end].rstrip(b"\r\n"))
            start = end
    return rows


class SpreadRowsError(ValueError):
    """A JSONL file whose objects are not one to a line: it cannot be cut at lines."""


class ScanStopped(Exception):
    """A row-end scan stopped by its ``stop`` event (what it was for failed)."""


def csv_parts(
    f: IO[bytes],
    path: str = "<csv>",
    *,
    delimiter: str = ",",
    skip_rows: int = 0,
    header: bool = True,
    part_bytes: int = PART_BYTES,
    stop: threading.Event | None = None,
) -> list[TablePart]:
    """The parts of a CSV file (read from ``f``'s start): byte ranges of whole rows,
    after ``skip_rows`` lines and the header line (when ``header``). Once ``stop`` is
    set, :class:`ScanStopped` is raised at the next block read. The scan and the cuts
    are made in Rust (``_core.CsvPartScanner``, the GIL let go), which hands back only
    the parts: the scan runs beside the type inference on one core."""
    read, start, skipped, data = _csv_start(f, _CSV_READ_BYTES, skip_rows)
    scanner = CsvPartScanner(
        delimiter.encode("utf-8")[0], start, min(1, skip_rows), header, part_bytes
    )
    # (the skipped lines come as one empty line, as scan_lines gives them)
    cuts = [] if skipped is None else scanner.line(skipped, False)
    while True:
        if stop is not None and stop.is_set():
            raise ScanStopped(path)
        cuts += scanner.feed(data)
        data = read()
        if not len(data):
            break
    cuts += scanner.finish()
    return _parts(path, "csv", cuts)


def jsonl_parts(
    f: IO[bytes],
    path: str = "<jsonl>",
    *,
    part_bytes: int = PART_BYTES,
    stop: threading.Event | None = None,
) -> list[TablePart]:
    """The parts of a JSON Lines file: byte ranges of whole lines, cut as a CSV's are
    (``_core.PartCutter``). Raises :class:`SpreadRowsError` when a line does not end an
    object (pretty-printed JSON); ``stop`` as for :func:`csv_parts`."""
    cutter = PartCutter(0, False, part_bytes)
    cuts: list[tuple[int, int, int, int]] = []
    for ends, marks in scan_lines(f, csv=False):
        if stop is not None and stop.is_set():
            raise ScanStopped(path)
        if (marks == 2).any():
            raise SpreadRowsError(f"{path}: an object is spread over lines")
        cuts += cutter.lines(ends.astype(np.int64), marks)
    cuts += cutter.finish()
    return _parts(path, "jsonl", cuts)


def _parts(path: str, fmt: str, cuts: list[tuple[int, int, int, int]]) -> list[TablePart]:
    return [
        TablePart(i, path, fmt, "bytes", start, stop, first_row, rows)
        for i, (start, stop, first_row, rows) in enumerate(cuts)
    ]


def parquet_parts(
    path: str,
    group_rows: Sequence[int],
    group_bytes: Sequence[int] | None = None,
    *,
    part_rows: int = PART_ROWS,
    part_bytes: int = PART_BYTES,
) -> list[TablePart]:
    """The parts of a Parquet file whose row groups have ``group_rows`` rows (and
    ``group_bytes`` bytes uncompressed): runs of consecutive row groups, each closed once
    it has ``part_rows`` rows or ``part_bytes`` bytes or more."""
    sizes = [0] * len(group_rows) if group_bytes is None else list(group_bytes)
    parts: list[TablePart] = []
    start, rows, size, first_row = 0, 0, 0, 1
    for g, (n, b) in enumerate(zip(group_rows, sizes, strict=True)):
        rows, size = rows + n, size + b
        if rows >= part_rows or size >= part_bytes or g == len(group_rows) - 1:
            if rows:
                parts.append(
                    TablePart(
                        len(parts), path, "parquet", "row_groups", start, g + 1, first_row, rows
                    )
                )
            first_row += rows
            start, rows, size = g + 1, 0, 0
    return parts


def whole_part(path: str, fmt: str, rows: int) -> list[TablePart]:
    """A file read from its start as one part (``rows`` counted by a scan)."""
    return [TablePart(0, path, fmt, "whole", 0, -1, 1, rows)] if rows else []


# Text that pyarrow's cast reads as an integer or a float: a cell converts the same
# whether its column is cast whole or, beside a bad cell, row by row.
_INT_TEXT = re.compile(r"-?[0-9]+|0[xX][0-9a-fA-F]+")
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)",
    re.IGNORECASE,
)
_INT64 = (-(2**63), 2**63 - 1)


def _element(dtype: str) -> Callable[[Any], Any]:
    """Converts one value to the Python type the encoder maps to ``dtype``'s kind."""

    def to_int(v: Any) -> int:
        n: int | None = None
        if isinstance(v, (bool, int, np.integer)) or (
            isinstance(v, (float, np.floating)) and float(v).is_integer()
        ):
            n = int(v)
        elif isinstance(v, str) and _INT_TEXT.fullmatch(v):
            n = int(v, 16) if v[1:2] in ("x", "X") else int(v)
        if n is None:
            raise ValueError(f"expected an integer, got {v!r}")
        if not _INT64[0] <= n <= _INT64[1]:
            raise ValueError(f"{v!r} does not fit in int64")
        return n

    def to_float(v: Any) -> float:
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):
            return float(v)
        raise ValueError(f"expected a number, got {v!r}")

    def to_bytes(v: Any) -> bytes:
        if isinstance(v, bytes):
            return v
        if isinstance(v, str):
            return v.encode("utf-8")
        raise ValueError(f"expected {dtype}, got {v!r}")

    return {"int64": to_int, "float32": to_float}.get(dtype, to_bytes)


def cell_converter(spec: FeatureSpec) -> Callable[[Any], Any]:
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


# -- opening a table file --------------------------------------------------------------


def arrow_source(path: str) -> Any:
    """What pyarrow opens: the path, or for a URL (gs://, s3://, ...) an fsspec file."""
    return _fs.open_file(path, "rb") if _fs.is_url(path) else path


_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


def input_stream(pa: Any, path: str) -> Any:
    """pyarrow's input stream of a file, decompressed by its extension (a URL is read
    through fsspec; pyarrow then cannot tell the compression from the name itself)."""
    if not _fs.is_url(path):
        return pa.input_stream(path)
    codec = _CODECS.get(Path(path).suffix.lower())
    return pa.input_stream(_fs.open_file(path, "rb"), compression=codec)


def pyarrow_module() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading tables needs pyarrow: pip install 'recordforge[table]'"
        ) from None
    return pyarrow


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
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


def format_of(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the table format from the file name; "
            "pass format='csv', 'parquet' or 'jsonl'"
        )
    return fmt

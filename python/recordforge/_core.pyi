# Type stubs of the compiled module (checked against it by `mypy.stubtest`).
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, disjoint_base

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "Arena",
    "BatchReader",
    "BlockPool",
    "CsvRowScanner",
    "RecordBatch",
    "RecordFile",
    "RecordIterator",
    "RecordWalker",
    "RowReader",
    "SchemaSample",
    "Shuffler",
    "TFRecordWriter",
    "VerifiedFile",
    "WalkSpan",
    "__version__",
    "count_features",
    "crc32c",
    "decode_batch",
    "decode_example",
    "decode_sequence_example",
    "detect_compression",
    "encode_columns",
    "encode_example",
    "encode_record_batch",
    "encode_sequence_example",
    "file_crc32c",
    "frame_records",
    "masked_crc32c",
    "read_records",
    "resize_bilinear",
    "scan_records",
    "take_records",
    "verify_file",
]
__version__: str
DEFAULT_MAX_RECORD_BYTES: int

_FeatureValue: TypeAlias = npt.NDArray[np.int64] | npt.NDArray[np.float32] | list[bytes]

def crc32c(data: bytes | bytearray | memoryview) -> int: ...
def masked_crc32c(data: bytes | bytearray | memoryview) -> int: ...
def encode_example(mapping: Mapping[str, Any]) -> bytes: ...
def encode_columns(columns: dict[str, Any]) -> list[bytes]: ...
def encode_record_batch(columns: dict[str, Any], *, threads: int | None = None) -> RecordBatch: ...
def frame_records(records: Iterable[bytes | bytearray | memoryview]) -> bytes: ...
@overload
def decode_example(
    data: bytes | bytearray | memoryview, *, copy: Literal[True] = True
) -> dict[str, _FeatureValue]: ...
@overload
def decode_example(
    data: bytes | bytearray | memoryview, *, copy: bool
) -> dict[str, _FeatureValue | list[memoryview]]: ...
def count_features(data: bytes) -> int: ...
def decode_batch(
    records: Iterable[bytes], features: Sequence[tuple[str, str, int | None]]
) -> list[tuple[Any, npt.NDArray[np.int64]]]: ...
def encode_sequence_example(
    context: Mapping[str, Any], feature_lists: Mapping[str, Sequence[Any]]
) -> bytes: ...
def decode_sequence_example(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[str, _FeatureValue], dict[str, list[_FeatureValue]]]: ...
def read_records(
    path_or_file: Any,
    compression: str | None = "auto",
    verify: bool = True,
    *,
    max_record_bytes: int = ...,
) -> RecordIterator: ...
def scan_records(
    path_or_file: Any,
    compression: str | None = "auto",
    verify: bool = True,
    threads: int = 0,
    *,
    max_record_bytes: int = ...,
) -> tuple[int, int, int]: ...
def file_crc32c(path: str | os.PathLike[str], threads: int = 2) -> int: ...
def resize_bilinear(
    image: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8] | npt.NDArray[np.float32]
) -> None: ...
def verify_file(
    path: str | os.PathLike[str],
    names: Sequence[str],
    sums: Sequence[bool],
    threads: int = 2,
    checksum: bool = False,
    *,
    max_record_bytes: int = ...,
) -> VerifiedFile: ...
def detect_compression(head: bytes) -> str | None: ...

@final
class VerifiedFile:
    MISSING: ClassVar[int]
    NO_KIND: ClassVar[int]
    KINDS: ClassVar[dict[int, str]]
    @property
    def offsets(self) -> npt.NDArray[np.uint64]: ...
    @property
    def sizes(self) -> npt.NDArray[np.uint64]: ...
    @property
    def crc_ok(self) -> npt.NDArray[np.bool_]: ...
    @property
    def damage(self) -> list[tuple[int, int, int, str]]: ...
    @property
    def kinds(self) -> npt.NDArray[np.int8]: ...
    @property
    def counts(self) -> npt.NDArray[np.uint64]: ...
    @property
    def sums(self) -> npt.NDArray[np.int64]: ...
    @property
    def errors(self) -> list[tuple[int, str]]: ...
    @property
    def crc32c(self) -> int | None: ...

@final
class SchemaSample:
    def __new__(cls, max_records: int, max_bytes: int) -> Self: ...
    def add_file(self, path: str | os.PathLike[str], *, max_record_bytes: int = ...) -> None: ...
    def add(self, record: bytes, where: str) -> bool: ...
    @property
    def full(self) -> bool: ...
    @property
    def records(self) -> int: ...
    @property
    def lists(self) -> bool: ...
    def features(self) -> list[tuple[str, str | None, int | None, int]]: ...

@disjoint_base
class TFRecordWriter:
    def __new__(
        cls, path_or_file: Any, compression: str | None = None, *, checksum: str | None = None
    ) -> Self: ...
    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def write_many(self, records: Iterable[bytes | bytearray | memoryview]) -> list[int]: ...
    def write_batch(
        self, batch: RecordBatch, start: int = 0, stop: int | None = None
    ) -> npt.NDArray[np.uint64]: ...
    def write_framed(self, frames: bytes | bytearray | memoryview) -> npt.NDArray[np.uint64]: ...
    def flush(self) -> None: ...
    def close(self, *, timeout: float | None = None) -> None: ...
    @property
    def offset(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def _owner(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def compression(self) -> str | None: ...
    @property
    def checksum(self) -> str | None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...

@final
class RecordIterator:
    def __iter__(self) -> Self: ...
    def __next__(self) -> bytes: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def name(self) -> str: ...

@final
class RecordBatch(Sequence[bytes]):
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> bytes: ...  # type: ignore[override]
    def sizes(self) -> npt.NDArray[np.int64]: ...
    def framed(self, start: int = 0, stop: int | None = None) -> bytes: ...
    @property
    def nbytes(self) -> int: ...

@final
class WalkSpan:
    @property
    def kind(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def records(self) -> int: ...
    @property
    def payload(self) -> bytes | None: ...

@final
class CsvRowScanner:
    def __new__(cls, delimiter: int, offset: int = 0) -> Self: ...
    def feed(self, chunk: bytes) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8]]: ...
    def finish(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8]]: ...

@final
class RecordWalker:
    def __new__(
        cls,
        path: str | os.PathLike[str],
        compression: str | None = "auto",
        verify: bool = True,
        *,
        payloads: bool = True,
        max_record_bytes: int = ...,
    ) -> Self: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> WalkSpan: ...
    @property
    def compression(self) -> str | None: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def name(self) -> str: ...

@final
class RecordFile:
    def __new__(cls, path: str | os.PathLike[str], *, max_record_bytes: int = ...) -> Self: ...
    def offsets(self, verify: bool = True) -> npt.NDArray[np.uint64]: ...
    def intact(self) -> tuple[npt.NDArray[np.uint64], list[tuple[int, int, str]]]: ...
    def read(self, offset: int) -> bytes: ...
    def read_many(self, offsets: Sequence[int]) -> list[bytes]: ...
    def is_current(self) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def max_record_bytes(self) -> int: ...
    overhead: int

_Skipped: TypeAlias = tuple[int, int, int, str]

@final
class BatchReader(Iterator[tuple[int, list[tuple[Any, npt.NDArray[np.int64]]], list[_Skipped]]]):
    def __new__(
        cls,
        files: Sequence[str | os.PathLike[str]],
        features: Sequence[tuple[str, str, int | None]],
        batch_size: int,
        *,
        drop_remainder: bool = False,
        compression: str | None = "auto",
        verify: bool = True,
        skip_corrupt: bool = False,
        every: tuple[int, int] | None = None,
        shuffle: tuple[int, int] | None = None,
        threads: int = 0,
        prefetch: int = 2,
        max_record_bytes: int = ...,
        mapped: Sequence[RecordFile | None] | None = None,
        blocks: BlockPool | None = None,
        open: Callable[[str], Any] | None = None,
    ) -> Self: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> tuple[int, list[tuple[Any, npt.NDArray[np.int64]]], list[_Skipped]]: ...

def take_records(
    files: Sequence[RecordFile],
    file_index: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.uint64],
    features: Sequence[tuple[str, str, int | None]],
    verify: bool = True,
    threads: int = 0,
    *,
    arena: Arena | None = None,
) -> list[tuple[Any, npt.NDArray[np.int64]]]: ...

@final
class Arena:
    def __new__(cls) -> Self: ...
    @property
    def kept_bytes(self) -> int: ...

@final
class BlockPool:
    def __new__(cls) -> Self: ...
    @property
    def kept_bytes(self) -> int: ...

@final
class Shuffler:
    def __new__(cls, size: int, seed: int) -> Self: ...
    def push(self, item: Any) -> Any | None: ...
    def drain(self) -> Any | None: ...

@final
class RowReader:
    def __new__(
        cls,
        counts: Sequence[int],
        features: Sequence[tuple[str, str, int | None, tuple[int | None, ...] | None]],
        load: Callable[[int], tuple[RecordFile, npt.NDArray[np.uint64]]],
        *,
        every: tuple[int, int] | None = None,
    ) -> Self: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int | np.integer[Any], /) -> dict[str, Any]: ...

"""What every inspection shares: the input and progress types, problems, and results
that turn into JSON."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recordforge.inspect._values import bytes_json

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


# Called with the number of bytes (of the files on disk) just processed.
Progress = Callable[[int], None]


PROGRESS_STEP = 32 << 20


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return bytes_json(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Result:
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (what ``--json`` prints)."""
        out: dict[str, Any] = _jsonable(self)
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """Something wrong, with where: ``record`` is the record's index in its file,
    ``offset`` the byte offset of its length field (decompressed stream for compressed
    files), ``end`` the end of a damaged region when there is one."""

    file: str
    kind: str
    message: str
    record: int | None = None
    offset: int | None = None
    end: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f": record {self.record}"
        if self.offset is not None:
            where += f" at byte offset {self.offset}"
        return f"{where}: {self.message}"

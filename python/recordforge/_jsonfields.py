"""Checked reads of untrusted JSON (``dataset.json``, schema files): every value is
checked for its type and range before it is used, and a bad one is a
:class:`~recordforge.SchemaError` that names the file and the field.

>>> from recordforge._jsonfields import Field
>>> field = Field("dataset.json")["splits"]["train"]["shards"][2]["records"]
>>> field.count("x")
Traceback (most recent call last):
...
recordforge.errors.SchemaError: dataset.json: splits.train.shards[2].records: expected a \
non-negative integer, got 'x'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from recordforge.errors import SchemaError

__all__ = ["MAX_COUNT", "Field"]

# Counts and sizes above this are not believed (no file holds 2**63 bytes).
MAX_COUNT = (1 << 63) - 1


def _shown(value: Any) -> str:
    """A short ``repr`` of an untrusted value (a 4,000-digit number stays readable)."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


@dataclasses.dataclass(frozen=True)
class Field:
    """Where a value is: the file (``source``) and the path of keys to it."""

    source: str
    path: str = ""

    def __getitem__(self, key: str | int) -> Field:
        if isinstance(key, int):
            return Field(self.source, f"{self.path}[{key}]")
        return Field(self.source, f"{self.path}.{key}" if self.path else key)

    def __str__(self) -> str:
        return f"{self.source}: {self.path}" if self.path else self.source

    def error(self, message: str) -> SchemaError:
        return SchemaError(f"{self}: {message}")

    def wrong(self, expected: str, value: Any) -> SchemaError:
        return self.error(f"expected {expected}, got {_shown(value)}")

    def mapping(self, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.wrong("a JSON object", value)
        return value

    def array(self, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.wrong("a list", value)
        return value

    def text(self, value: Any, *, optional: bool = False) -> Any:
        """A string (or ``None`` when ``optional``)."""
        if optional and value is None:
            return None
        if not isinstance(value, str):
            raise self.wrong("a string" + (" or null" if optional else ""), value)
        return value

    def flag(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.wrong("true or false", value)
        return value

    def integer(self, value: Any, *, low: int = -MAX_COUNT, high: int = MAX_COUNT) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.wrong(f"an integer in {low}..{high}", value)
        return value

    def count(self, value: Any) -> int:
        """A record count or a byte size: an integer in 0..2**63-1."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise self.wrong("a non-negative integer", value)
        return value

    def get(self, data: Mapping[str, Any], key: str) -> Any:
        """``data[key]``, or an error naming the missing field."""
        if key not in data:
            raise self.error(f"has no {key!r}")
        return data[key]

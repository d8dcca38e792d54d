"""``dataset.json``: the manifest written last, atomically, when a conversion completes.

It records the format version, the schema, each split's shards (file, records, bytes,
checksum), the compression, the source, the tool version and the conversion report. A
directory without it is an unfinished conversion.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge._atomic import write_json_atomic
from recordforge.errors import SchemaError
from recordforge.schema import Schema

__all__ = ["MANIFEST_NAME", "Manifest", "ShardInfo", "write_json_atomic"]

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One shard file of a split. ``checksum`` is ``"<algorithm>:<hex digest>"`` of the
    file's bytes: ``crc32c:`` (8 hex digits, the default) or ``sha256:`` (64)."""

    file: str
    records: int
    bytes: int
    checksum: str

    @property
    def checksum_algorithm(self) -> str:
        return self.checksum.partition(":")[0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardInfo:
        data = dict(data)
        if "sha256" in data and "checksum" not in data:  # written before checksum choices
            data["checksum"] = f"sha256:{data.pop('sha256')}"
        return cls(**data)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    """The parsed ``dataset.json``."""

    schema: Schema | None
    splits: Mapping[str, tuple[ShardInfo, ...]]
    compression: str | None = None
    index: bool = False
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    report: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tool_version: str = ""

    def records(self, split: str | None = None) -> int:
        """Records in one split, or in all of them."""
        names = [split] if split is not None else list(self.splits)
        return sum(s.records for name in names for s in self.splits[name])

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "tool": {"name": "recordforge", "version": self.tool_version},
            "schema": self.schema.to_json() if self.schema is not None else None,
            "compression": self.compression,
            "index": self.index,
            "splits": {
                name: {
                    "records": sum(s.records for s in shards),
                    "shards": [dataclasses.asdict(s) for s in shards],
                }
                for name, shards in self.splits.items()
            },
            "source": dict(self.source),
            "report": dict(self.report),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise SchemaError(
                f"{MANIFEST_NAME}: format_version {data.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        schema = Schema.from_json(data["schema"]) if data.get("schema") else None
        return cls(
            schema=schema,
            splits={
                name: tuple(ShardInfo.from_json(s) for s in split["shards"])
                for name, split in data["splits"].items()
            },
            compression=data.get("compression"),
            index=bool(data.get("index", False)),
            source=data.get("source") or {},
            report=data.get("report") or {},
            tool_version=data.get("tool", {}).get("version", ""),
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        """Reads ``dataset.json`` from a directory (local, or a URL such as gs://...)."""
        path = _fs.join(directory, MANIFEST_NAME)
        try:
            data = json.loads(_fs.read_bytes(path))
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: not valid JSON: {e}") from None
        return cls.from_json(data)

    def save(self, directory: str | os.PathLike[str]) -> Path | str:
        """Writes ``dataset.json`` atomically (on an object store: a temporary key, then
        moved to its final key)."""
        if _fs.is_url(directory):
            path = _fs.join(directory, MANIFEST_NAME)
            text = json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"
            _fs.write_bytes(path, text.encode("utf-8"))
            return path
        return write_json_atomic(Path(directory) / MANIFEST_NAME, self.to_json())

"""``dataset.json``: the manifest written last, atomically, when a conversion completes.

It records the format version, the schema, each split's shards (file, records, bytes,
checksum), the compression, the source, the tool version and the conversion report. A
directory without it is an unfinished conversion.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge._atomic import write_json_atomic
from recordforge._jsonfields import Field, _shown
from recordforge.errors import SchemaError
from recordforge.records import COMPRESSION_SUFFIXES
from recordforge.schema import Schema

__all__ = ["MANIFEST_NAME", "Manifest", "ShardInfo", "write_json_atomic"]

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1
# A manifest of 100,000 shards is ~15 MB; a larger file is not read into memory.
MAX_MANIFEST_BYTES = 256 << 20
_COMPRESSIONS = tuple(COMPRESSION_SUFFIXES)
_COMPRESSIONS_SHOWN = ", ".join(f'"{c}"' for c in _COMPRESSIONS if c) + " or null"


def inside(directory: str | os.PathLike[str], name: str, field: Field) -> Path:
    """``directory / name``, checked: it resolves (links followed) to a path inside the
    directory, and when it exists it is a regular file (not a device, FIFO or directory).
    A :class:`~recordforge.SchemaError` names ``field`` and the path otherwise."""
    path = Path(directory) / name
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or real == root:
        raise field.error(f"{path} resolves to {real}, outside the dataset directory {root}")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise field.error(f"{path} is not a regular file")
    return path


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
    def from_json(cls, data: Any, *, field: Field | None = None) -> ShardInfo:
        """A shard entry, every field checked (``field`` names where it is)."""
        field = field or Field(MANIFEST_NAME, "shard")
        data = dict(field.mapping(data))
        if "sha256" in data and "checksum" not in data:  # written before checksum choices
            data["checksum"] = f"sha256:{field['sha256'].text(data.pop('sha256'))}"
        return cls(
            file=_plain_name(field.get(data, "file"), field["file"]),
            records=field["records"].count(field.get(data, "records")),
            bytes=field["bytes"].count(field.get(data, "bytes")),
            checksum=field["checksum"].text(field.get(data, "checksum")),
        )


def _plain_name(value: Any, field: Field) -> str:
    """A shard's file name: a plain name in the dataset's directory (no directory part,
    not hidden, no NUL), as the writer makes them."""
    name: str = field.text(value)
    if (
        not name
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise field.wrong("a plain file name in the dataset's directory", name)
    return name


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
    #: Each split's ``records`` as ``dataset.json`` gives it (checked by :meth:`problems`).
    totals: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)

    def records(self, split: str | None = None) -> int:
        """Records in one split, or in all of them."""
        names = [split] if split is not None else list(self.splits)
        return sum(s.records for name in names for s in self.splits[name])

    def problems(self) -> list[str]:
        """What makes this manifest disagree with itself, each naming the field: a split's
        ``records`` that is not the sum of its shards', a file listed twice, more records
        than an uncompressed shard's bytes can hold (16 bytes of framing each)."""
        out = []
        seen: dict[str, str] = {}
        for split, shards in self.splits.items():
            total = self.totals.get(split)
            if total is not None and total != sum(s.records for s in shards):
                out.append(
                    f"splits.{split}.records: {total}, but its shards hold "
                    f"{sum(s.records for s in shards)}"
                )
            for k, shard in enumerate(shards):
                where = f"splits.{split}.shards[{k}]"
                if shard.file in seen:
                    also = seen[shard.file]
                    out.append(f"{where}.file: {shard.file!r} is listed twice (also {also})")
                seen.setdefault(shard.file, where)
                if self.compression is None and shard.records * 16 > shard.bytes:
                    out.append(
                        f"{where}.records: {shard.records} records cannot fit in "
                        f"{shard.bytes} bytes (16 bytes of framing each)"
                    )
        return out

    def check(self, source: str = MANIFEST_NAME) -> None:
        """Raises :class:`~recordforge.SchemaError` naming the first of :meth:`problems`."""
        found = self.problems()
        if found:
            raise SchemaError(f"{source}: {found[0]}")

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
    def from_json(cls, data: Any, *, source: str = MANIFEST_NAME) -> Manifest:
        """The manifest of ``data`` (parsed JSON), every field checked for its type and
        range: a bad one is a :class:`~recordforge.SchemaError` naming the file
        (``source``) and the field, e.g. ``dataset.json: splits.train.shards[2].records:
        expected a non-negative integer, got 'x'``. (Whether the manifest agrees with
        itself is :meth:`problems`.)"""
        top = Field(source)
        data = top.mapping(data)
        version = data.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise top["format_version"].error(
                f"{_shown(version)} is not supported (expected {FORMAT_VERSION})"
            )
        schema_json = data.get("schema")
        schema = Schema.from_json(schema_json, field=top["schema"]) if schema_json else None
        compression = data.get("compression")
        if compression not in _COMPRESSIONS:
            raise top["compression"].wrong(_COMPRESSIONS_SHOWN, compression)
        splits: dict[str, tuple[ShardInfo, ...]] = {}
        totals: dict[str, int] = {}
        named = top["splits"].mapping(top.get(data, "splits"))
        if not named:  # (write_dataset writes every split, if empty an empty list)
            raise top["splits"].error("no split (a dataset has at least one)")
        for name, split in named.items():
            at = top["splits"][name]
            split = at.mapping(split)
            shards = at["shards"].array(at.get(split, "shards"))
            splits[name] = tuple(
                ShardInfo.from_json(s, field=at["shards"][k]) for k, s in enumerate(shards)
            )
            if "records" in split:
                totals[name] = at["records"].count(split["records"])
        tool = top["tool"].mapping(data.get("tool") or {})
        return cls(
            schema=schema,
            splits=splits,
            compression=compression,
            index=top["index"].flag(data.get("index", False)),
            source=top["source"].mapping(data.get("source") or {}),
            report=top["report"].mapping(data.get("report") or {}),
            tool_version=top["tool"]["version"].text(tool.get("version", "")),
            totals=totals,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        """Reads ``dataset.json`` from a directory (local, or a URL such as gs://...): a
        regular file inside the directory (links resolved), of at most 256 MiB, every
        field checked (:meth:`from_json`)."""
        path = _fs.join(directory, MANIFEST_NAME)
        if _fs.is_url(path):
            with _fs.open_file(path) as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        else:
            inside(directory, MANIFEST_NAME, Field(path))
            with open(path, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise SchemaError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not read")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:  # ValueError: JSON, UTF-8, 4,300+ digits
            raise SchemaError(f"{path}: not valid JSON: {e}") from None
        return cls.from_json(data, source=path)

    def save(self, directory: str | os.PathLike[str]) -> Path | str:
        """Writes ``dataset.json`` atomically (on an object store: a temporary key, then
        moved to its final key)."""
        if _fs.is_url(directory):
            path = _fs.join(directory, MANIFEST_NAME)
            text = json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"
            _fs.write_bytes(path, text.encode("utf-8"))
            return path
        return write_json_atomic(Path(directory) / MANIFEST_NAME, self.to_json())

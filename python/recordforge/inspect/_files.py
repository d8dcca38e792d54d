"""Inputs: the TFRecord files named by paths, with their ``dataset.json`` entries, and
their ``.idx`` files."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _fs, _index
from recordforge._jsonfields import Field
from recordforge._outdir import check_finished
from recordforge.inspect._common import Paths, Problem
from recordforge.manifest import MANIFEST_NAME, Manifest, ShardInfo, inside
from recordforge.records import COMPRESSION_SUFFIXES, Compression, detect_compression

_GLOB_CHARS = frozenset("*?[")

# Names of files in a directory without dataset.json that are taken as TFRecord files
# (anywhere in the name: a.tfrecord-00001, shard.gz.1).
_RECORD_HINTS = ("tfrec", "-of-", ".rec", *(s for s in COMPRESSION_SUFFIXES.values() if s))


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputFile:
    """One TFRecord file to look at: ``name`` is its path, or its URL (``gs://``,
    ``s3://``, ...: then read by range, never downloaded); ``shard`` is its
    ``dataset.json`` entry, if any. A remote file's size and its ``.idx``'s are those
    listed when it was resolved (``None``: not there)."""

    name: str
    split: str | None = None
    shard: ShardInfo | None = None
    manifest: Manifest | None = None
    listed_size: int | None = None
    listed_index_size: int | None = None

    @property
    def remote(self) -> str | None:
        """The URL of a remote file, else ``None``."""
        return self.name if _fs.is_url(self.name) else None

    @property
    def path(self) -> Path:
        """The local file (a remote one has none)."""
        if self.remote is not None:
            raise ValueError(f"{self.name}: a remote file has no local path")
        return Path(self.name)

    @property
    def index_name(self) -> str:
        return f"{self.name}.idx"

    @property
    def index_path(self) -> Path:
        """The local ``.idx`` (a remote one has none: see :attr:`index_name`)."""
        return self.path.with_name(self.path.name + ".idx")

    def exists(self) -> bool:
        if self.remote is not None:
            return self.listed_size is not None
        return self.path.is_file()

    def size(self) -> int:
        if self.remote is not None:
            return self.listed_size or 0
        return self.path.stat().st_size

    def has_index(self) -> bool:
        if self.remote is not None:
            return self.listed_index_size is not None
        return self.index_path.is_file()

    @functools.cached_property
    def compression(self) -> Compression:
        """From the first bytes (of a remote file: one ranged read of 12 bytes)."""
        return detect_compression(self.name)


def resolve(paths: Paths) -> list[InputFile]:
    """The TFRecord files named by ``paths``: dataset directories (their shards, in split
    order, from ``dataset.json``), other directories (files whose names look like
    TFRecord files: ``tfrec``, ``-of-``, ``.gz``, ``.zlib``), globs, and files. A file
    listed in a ``dataset.json`` beside it carries its manifest entry. Raises
    ``FileNotFoundError`` naming what matched nothing."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[InputFile] = []
    for given in paths:
        if _fs.is_url(given):
            check_finished(str(given).rstrip("/"))
            out.extend(_resolve_url(str(given).rstrip("/")))
            continue
        p = Path(_fs.fspath(given))  # (a file: URL: the path it names)
        if p.is_dir():
            check_finished(p)
            if (p / MANIFEST_NAME).is_file():
                manifest = Manifest.load(p)
                source = Field(str(p / MANIFEST_NAME))
                for split, shards in manifest.splits.items():
                    out.extend(
                        InputFile(
                            name=str(
                                inside(p, s.file, source["splits"][split]["shards"][k]["file"])
                            ),
                            split=split,
                            shard=s,
                            manifest=manifest,
                        )
                        for k, s in enumerate(shards)
                    )
                continue
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and not f.name.endswith(".idx")
                and any(h in f.name for h in _RECORD_HINTS)
            )
            if not found:
                raise FileNotFoundError(f"{p}: no {MANIFEST_NAME} and no TFRecord files in it")
            out.extend(_with_manifest(f) for f in found)
        elif p.is_file():
            out.append(_with_manifest(p))
        elif _GLOB_CHARS & set(str(given)):
            matches = sorted(glob.glob(str(given)))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                raise FileNotFoundError(f"{given}: the pattern matches no files")
            out.extend(_with_manifest(f) for f in files)
        else:
            raise FileNotFoundError(f"{given}: no such file or directory")
    # A file of an unfinished conversion is not a dataset's (yet).
    for parent in dict.fromkeys(_fs.parent(i.name) for i in out):
        check_finished(parent)
    return out


def _resolve_url(url: str) -> list[InputFile]:
    """A remote dataset directory, directory, glob or file (gs://, s3://, ...): its
    files, with their sizes and their ``.idx``'s from one listing per directory; the
    manifest is read from the remote ``dataset.json``. Nothing is downloaded."""
    if _fs.exists(_fs.join(url, MANIFEST_NAME)):
        manifest = Manifest.load(url)
        entries = [
            (_fs.join(url, s.file), split, s)
            for split, shards in manifest.splits.items()
            for s in shards
        ]
        sizes = _listed([u for u, _, _ in entries])
        return [
            InputFile(
                name=u,
                split=split,
                shard=s,
                manifest=manifest,
                listed_size=sizes.get(u),
                listed_index_size=sizes.get(f"{u}.idx"),
            )
            for u, split, s in entries
        ]
    if _fs.isdir(url):
        names = [
            n
            for n, is_dir in _fs.listdir(url)
            if not is_dir
            and not n.startswith(".")
            and not n.endswith(".idx")
            and any(h in n for h in _RECORD_HINTS)
        ]
        if not names:
            raise FileNotFoundError(f"{url}: no {MANIFEST_NAME} and no TFRecord files in it")
        urls = [_fs.join(url, n) for n in names]
    elif _GLOB_CHARS & set(url.split("://", 1)[1]):
        urls = _fs.glob(url)
        if not urls:
            raise FileNotFoundError(f"{url}: the pattern matches no files")
    elif not _fs.isfile(url):
        raise FileNotFoundError(f"{url}: no such file or directory")
    else:
        urls = [url]
    sizes = _listed(urls)
    return [
        InputFile(name=u, listed_size=sizes.get(u), listed_index_size=sizes.get(f"{u}.idx"))
        for u in urls
    ]


def _listed(urls: list[str]) -> dict[str, int]:
    """The size of every file in the directories of ``urls``, by URL: one listing per
    directory."""
    out: dict[str, int] = {}
    for parent in dict.fromkeys(_fs.parent(u) for u in urls):
        fs, where = _fs.filesystem(parent)
        for entry in fs.ls(where, detail=True, refresh=True):
            if entry.get("type") != "directory":
                name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
                out[_fs.join(parent, name)] = int(entry.get("size") or 0)
    return out


def _with_manifest(path: Path) -> InputFile:
    """A file, with its entry of a ``dataset.json`` beside it when it is listed there."""
    if (path.parent / MANIFEST_NAME).is_file():
        with contextlib.suppress(Exception):
            manifest = Manifest.load(path.parent)
            for split, shards in manifest.splits.items():
                for s in shards:
                    if s.file == path.name:
                        return InputFile(name=str(path), split=split, shard=s, manifest=manifest)
    return InputFile(name=str(path))


def read_index(item: InputFile) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The ``offset size`` lines of the ``.idx`` of ``item``, read only when it is no
    larger than an index of that shard can be (a local one: when it is a regular file in
    its shard's directory, links resolved; a remote one: by one ranged read). Raises
    ``ValueError`` (a ``SchemaError`` for a path outside) saying what is wrong."""
    limit = _index.max_size(item.size() if item.exists() else 0)
    if item.remote is not None:
        data = _fs.read_range(item.index_name, 0, limit + 1)
    else:
        path = item.index_path
        inside(path.parent, path.name, Field(str(path)))
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than an index of its shard can be ({limit} bytes)")
    text = data.decode("ascii").split()
    if len(text) % 2:
        raise ValueError(f"{len(text)} numbers: not 'offset size' pairs")
    values = np.array(text, dtype=np.int64).reshape(-1, 2) if text else np.zeros((0, 2), np.int64)
    return values[:, 0], values[:, 1]


def manifest_problems(items: Sequence[InputFile], *, compression: bool = True) -> list[Problem]:
    """What is wrong with the ``dataset.json`` of ``items`` without reading a record: its
    own disagreements (split totals, files listed twice, counts that cannot fit) and
    (``compression``) a ``compression`` that the files' first bytes contradict."""
    out: list[Problem] = []
    seen: set[int] = set()
    for item in items:
        manifest = item.manifest
        if manifest is None or item.shard is None:
            continue
        where = _fs.join(_fs.parent(item.name), MANIFEST_NAME)
        if id(manifest) not in seen:
            seen.add(id(manifest))
            out.extend(Problem(file=where, kind="manifest", message=m) for m in manifest.problems())
        if compression and item.exists():
            found = item.compression
            if found != manifest.compression:
                claim = "null" if manifest.compression is None else repr(manifest.compression)
                out.append(
                    Problem(
                        file=item.name,
                        kind="manifest",
                        message=f"{found or 'not'} compressed (from its first bytes), "
                        f"dataset.json says compression {claim}",
                    )
                )
    return out

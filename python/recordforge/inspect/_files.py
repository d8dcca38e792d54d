"""Inputs: the TFRecord files named by paths, with their ``dataset.json`` entries, and
their ``.idx`` files."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from recordforge import _fs, _index
from recordforge._jsonfields import Field
from recordforge._outdir import check_finished
from recordforge.inspect._common import Paths, Problem
from recordforge.manifest import MANIFEST_NAME, Manifest, ShardInfo, inside
from recordforge.records import COMPRESSION_SUFFIXES, detect_compression

_GLOB_CHARS = frozenset("*?[")

_T = TypeVar("_T")


def as_given(result: _T, items: list[InputFile]) -> _T:
    """``result`` with each remote file's local copy named by its URL instead, in every
    string it holds (file fields, messages, ``.idx`` paths), so that reports name what
    the user gave."""
    names = {str(i.path): i.remote for i in items if i.remote is not None}
    return _renamed(result, names) if names else result


def _renamed(obj: Any, names: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for local, url in names.items():
            if local in obj:
                obj = obj.replace(local, url)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: _renamed(getattr(obj, f.name), names) for f in dataclasses.fields(obj) if f.init
        }
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, list):
        return [_renamed(x, names) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_renamed(x, names) for x in obj)
    if isinstance(obj, dict):
        return {_renamed(k, names): _renamed(v, names) for k, v in obj.items()}
    return obj


# Names of files in a directory without dataset.json that are taken as TFRecord files
# (anywhere in the name: a.tfrecord-00001, shard.gz.1).
_RECORD_HINTS = ("tfrec", "-of-", ".rec", *(s for s in COMPRESSION_SUFFIXES.values() if s))


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputFile:
    """One TFRecord file to look at; ``shard`` is its ``dataset.json`` entry, if any."""

    path: Path
    split: str | None = None
    shard: ShardInfo | None = None
    manifest: Manifest | None = None
    #: The URL of a remote file; ``path`` is then its local copy.
    remote: str | None = None

    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".idx")


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
        p = Path(given)
        if p.is_dir():
            check_finished(p)
            if (p / MANIFEST_NAME).is_file():
                manifest = Manifest.load(p)
                source = Field(str(p / MANIFEST_NAME))
                for split, shards in manifest.splits.items():
                    out.extend(
                        InputFile(
                            path=inside(p, s.file, source["splits"][split]["shards"][k]["file"]),
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
    for parent in dict.fromkeys(_fs.parent(i.remote or i.path) for i in out):
        check_finished(parent)
    return out


def _resolve_url(url: str) -> list[InputFile]:
    """A remote dataset directory, directory, glob or file (gs://, s3://, ...): its
    files are downloaded once per process (with their ``.idx``), then looked at locally;
    the manifest is read from the remote ``dataset.json``."""

    def stage(remote: str) -> Path:
        idx = f"{remote}.idx"
        if _fs.exists(idx):
            _fs.staged(idx)
        return Path(_fs.staged(remote))

    if _fs.exists(_fs.join(url, MANIFEST_NAME)):
        manifest = Manifest.load(url)
        return [
            InputFile(
                path=stage(_fs.join(url, s.file)),
                split=split,
                shard=s,
                manifest=manifest,
                remote=_fs.join(url, s.file),
            )
            for split, shards in manifest.splits.items()
            for s in shards
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
        return [InputFile(path=stage(_fs.join(url, n)), remote=_fs.join(url, n)) for n in names]
    if _GLOB_CHARS & set(url.split("://", 1)[1]):
        matches = _fs.glob(url)
        if not matches:
            raise FileNotFoundError(f"{url}: the pattern matches no files")
        return [InputFile(path=stage(m), remote=m) for m in matches]
    if not _fs.isfile(url):
        raise FileNotFoundError(f"{url}: no such file or directory")
    return [InputFile(path=stage(url), remote=url)]


def _with_manifest(path: Path) -> InputFile:
    """A file, with its entry of a ``dataset.json`` beside it when it is listed there."""
    if (path.parent / MANIFEST_NAME).is_file():
        with contextlib.suppress(Exception):
            manifest = Manifest.load(path.parent)
            for split, shards in manifest.splits.items():
                for s in shards:
                    if s.file == path.name:
                        return InputFile(path=path, split=split, shard=s, manifest=manifest)
    return InputFile(path=path)


def read_index(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The ``offset size`` lines of an ``.idx`` file, read only when it is a regular file
    in its shard's directory (links resolved) no larger than an index of that shard can
    be. Raises ``ValueError`` (a ``SchemaError`` for a path outside) saying what is wrong."""
    inside(path.parent, path.name, Field(str(path)))
    shard = path.with_name(path.name.removesuffix(".idx"))
    limit = _index.max_size(shard.stat().st_size if shard.is_file() else 0)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than an index of its shard can be ({limit} bytes)")
    text = data.decode("ascii").split()
    if len(text) % 2:
        raise ValueError(f"{len(text)} numbers: not 'offset size' pairs")
    values = np.array(text, dtype=np.int64).reshape(-1, 2) if text else np.zeros((0, 2), np.int64)
    return values[:, 0], values[:, 1]


def manifest_problems(items: list[InputFile]) -> list[Problem]:
    """What is wrong with the ``dataset.json`` of ``items`` without reading a record: its
    own disagreements (split totals, files listed twice, counts that cannot fit) and a
    ``compression`` that the files' first bytes contradict."""
    out: list[Problem] = []
    seen: set[int] = set()
    for item in items:
        manifest = item.manifest
        if manifest is None or item.shard is None:
            continue
        parent = str(item.path.parent) if item.remote is None else _fs.parent(item.remote)
        where = _fs.join(parent, MANIFEST_NAME)
        if id(manifest) not in seen:
            seen.add(id(manifest))
            out.extend(Problem(file=where, kind="manifest", message=m) for m in manifest.problems())
        if item.path.is_file():
            found = detect_compression(item.path)
            if found != manifest.compression:
                claim = "null" if manifest.compression is None else repr(manifest.compression)
                out.append(
                    Problem(
                        file=str(item.path),
                        kind="manifest",
                        message=f"{found or 'not'} compressed (from its first bytes), "
                        f"dataset.json says compression {claim}",
                    )
                )
    return out

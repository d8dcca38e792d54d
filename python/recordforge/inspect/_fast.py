"""``verify --fast``: each shard's size and whole-file checksum against ``dataset.json``,
no record read. A remote shard's checksum is the one its store keeps, asked for with one
metadata request (the data is never read): GCS keeps a CRC32C of every object; S3 keeps
one of an object uploaded with ``ChecksumAlgorithm=CRC32C`` (a single PUT, or a
multipart upload whose checksum type is ``FULL_OBJECT``). A shard whose store keeps no
CRC32C of the whole object, or whose manifest checksum is not a CRC32C, has its size
checked only: the result says so, naming it (:attr:`VerifyResult.unchecked`), never
an unqualified "ok". A local shard's checksum is computed from its bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from recordforge import _core, _fs
from recordforge._ranged import retrying
from recordforge.inspect._common import Problem, Progress
from recordforge.inspect._files import InputFile, manifest_problems

__all__ = ["fast_checks", "store_crc32c"]


def store_crc32c(url: str) -> tuple[int | None, str]:
    """The CRC32C of the whole object ``url`` that its store keeps, from one metadata
    request, and ``""``; or ``None`` and why there is none to use."""
    fs, where = _fs.filesystem(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"gs", "gcs"}:
        info = retrying(url, lambda: fs.info(where))
        value = info.get("crc32c")
        if not value:
            return None, "the store gives no CRC32C for it"
        return _decoded(str(value)), ""
    if protocols & {"s3", "s3a"}:
        bucket, _, key = where.partition("/")
        head = retrying(
            url,
            lambda: fs.call_s3("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED"),
        )
        value = head.get("ChecksumCRC32C")
        if not value:
            return None, "S3 keeps no CRC32C of it (uploaded without ChecksumAlgorithm=CRC32C)"
        kind = head.get("ChecksumType")
        # A multipart upload's COMPOSITE checksum is of its parts' checksums ("...-N").
        if kind == "COMPOSITE" or (kind is None and "-" in str(value)):
            return None, "S3's CRC32C of it is of its upload's parts, not of the object"
        return _decoded(str(value)), ""
    return None, f"the {'/'.join(sorted(protocols))} store keeps no CRC32C of its objects"


def _decoded(value: str) -> int | None:
    """A store's CRC32C: base64 of its 4 bytes, big-endian."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


def _local_digest(name: str, algorithm: str) -> str | None:
    if algorithm == "crc32c":
        return f"crc32c:{_core.file_crc32c(name, os.cpu_count() or 1):08x}"
    if algorithm == "sha256":
        h = hashlib.sha256()
        with open(name, "rb", buffering=0) as f:
            while block := f.read(1 << 22):
                h.update(block)
        return f"sha256:{h.hexdigest()}"
    return None


def fast_checks(
    items: Sequence[InputFile], checksums: bool, progress: Progress | None
) -> tuple[list[Problem], list[str], list[Problem]]:
    """(problems, what was checked, what was not: a problem of kind ``unchecked`` for
    each file whose size only was, saying why) of ``items`` against their
    ``dataset.json``."""
    problems: list[Problem] = list(manifest_problems(items, compression=False))
    unchecked: list[Problem] = []
    checked = ["sizes (dataset.json)"]
    compared = False
    for item in items:
        if item.shard is None:
            unchecked.append(
                Problem(
                    file=item.name,
                    kind="unchecked",
                    message="not listed in a dataset.json: nothing to compare",
                )
            )
            continue
        if not item.exists():
            problems.append(
                Problem(
                    file=item.name, kind="missing", message="listed in dataset.json but missing"
                )
            )
            continue
        size, expected = item.size(), item.shard.checksum
        if size != item.shard.bytes:
            problems.append(
                Problem(
                    file=item.name,
                    kind="manifest",
                    message=f"size is {size} bytes, dataset.json says {item.shard.bytes}",
                )
            )
        if not checksums:
            continue
        algorithm = item.shard.checksum_algorithm
        digest: str | None
        if item.remote is None:
            digest = _local_digest(item.name, algorithm)
            why = f"unknown checksum algorithm in dataset.json: {expected!r}"
        elif algorithm != "crc32c":
            digest, why = None, f"dataset.json gives a {algorithm} checksum, stores keep CRC32Cs"
        else:
            crc, why = store_crc32c(item.name)
            digest = None if crc is None else f"crc32c:{crc:08x}"
        if progress is not None:
            progress(size)
        if digest is None:
            unchecked.append(
                Problem(
                    file=item.name,
                    kind="unchecked",
                    message=f"size checked, checksum NOT checked: {why}",
                )
            )
            continue
        compared = True
        if digest != expected:
            problems.append(
                Problem(
                    file=item.name,
                    kind="manifest",
                    message=f"checksum is {digest}"
                    + (" (kept by the store)" if item.remote is not None else "")
                    + f", dataset.json says {expected}",
                )
            )
    if compared:
        checked.append("checksums (the store's CRC32C for remote shards)")
    return problems, checked, unchecked

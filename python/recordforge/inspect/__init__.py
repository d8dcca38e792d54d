"""Look into TFRecord files: count, verify, index, salvage, describe, summarise, preview.

Every function takes a dataset directory (with ``dataset.json``), a directory of
TFRecord files, a glob, or files — plain, GZIP or ZLIB, detected from their first bytes —
and returns plain data (dataclasses with a ``to_json()``); the ``recordforge`` command
line renders them. Problems are reported, not raised: each names the file, the record
index and the byte offset (in the decompressed record stream for compressed files).

>>> import os, tempfile, recordforge as rf
>>> d = tempfile.mkdtemp()
>>> manifest = rf.write_dataset([{"id": i} for i in range(10)], d, index=True)
>>> rf.inspect.count(d).records, rf.inspect.count(d).files[0].method
(10, 'manifest')
>>> rf.inspect.verify(d).ok
True
>>> shard = os.path.join(d, manifest.splits["train"][0].file)
>>> size = len(rf.encode_example({"id": 0})) + 16  # every record has this framed size
>>> with open(shard, "r+b") as f:  # flip one bit in the payload of the fourth record
...     _ = f.seek(3 * size + 14)
...     b = f.read(1)
...     _ = f.seek(-1, 1)
...     _ = f.write(bytes([b[0] ^ 1]))
>>> size
31
>>> for problem in rf.inspect.verify(d).problems:  # doctest: +ELLIPSIS
...     print(problem)
/.../train-00000-of-00001.tfrecord: record 3 at byte offset 93: data CRC mismatch
/.../train-00000-of-00001.tfrecord: checksum is crc32c:..., dataset.json says crc32c:...
>>> result = rf.inspect.salvage(shard, os.path.join(d, "fixed.tfrecord"))
>>> result.records, result.lost_records, [(r.start, r.end) for r in result.lost]
(9, 1, [(93, 124)])
"""

from __future__ import annotations

from recordforge.inspect._common import Paths as Paths
from recordforge.inspect._common import Problem
from recordforge.inspect._common import Progress as Progress
from recordforge.inspect._decode import DEFAULT_MAX_FEATURES, record_type
from recordforge.inspect._decode import RecordType as RecordType
from recordforge.inspect._files import InputFile, resolve
from recordforge.inspect._framing import (
    CountResult,
    FileCount,
    IndexResult,
    LostRegion,
    SalvageResult,
    count,
    salvage,
    write_index,
)
from recordforge.inspect._info import FeatureInfo, FileInfo, HeadRecord, Info, head, info
from recordforge.inspect._preview import PreviewCell, PreviewResult, preview
from recordforge.inspect._stats import FeatureStats, Stats, stats
from recordforge.inspect._values import describe_value
from recordforge.inspect._verify import VerifyResult, verify
from recordforge.records import detect_compression

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "CountResult",
    "FeatureInfo",
    "FeatureStats",
    "FileCount",
    "FileInfo",
    "HeadRecord",
    "IndexResult",
    "Info",
    "InputFile",
    "LostRegion",
    "PreviewCell",
    "PreviewResult",
    "Problem",
    "SalvageResult",
    "Stats",
    "VerifyResult",
    "count",
    "describe_value",
    "detect_compression",
    "head",
    "info",
    "preview",
    "record_type",
    "resolve",
    "salvage",
    "stats",
    "verify",
    "write_index",
]

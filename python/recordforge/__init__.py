"""recordforge: datasets to sharded TFRecord files and back, with a Rust core.

``import recordforge`` needs only NumPy; TensorFlow, PyTorch, JAX, pyarrow and Pillow
are optional extras, imported when a feature needs them.

>>> import recordforge as rf
>>> data = rf.encode_example({"label": 3, "score": 0.5, "name": "cat"})
>>> ex = rf.decode_example(data)
>>> ex["label"].tolist(), ex["score"].tolist(), ex["name"]
([3], [0.5], [b'cat'])
"""

from __future__ import annotations

# _cli_startup first: it must run before NumPy is imported.
from recordforge import _cli_startup, images, inspect  # noqa: F401
from recordforge._core import __version__
from recordforge.dataset import Dataset, Ragged, open_dataset
from recordforge.errors import (
    CorruptRecordError,
    DecodeError,
    DirectoryLockedError,
    EncodeError,
    ItemError,
    RecordforgeError,
    RecordforgeWarning,
    SchemaError,
    UnfinishedConversionError,
)
from recordforge.example import (
    RecordBatch,
    crc32c,
    decode_batch,
    decode_example,
    decode_sequence_example,
    encode_columns,
    encode_example,
    encode_record_batch,
    encode_sequence_example,
    masked_crc32c,
)
from recordforge.manifest import Manifest, ShardInfo
from recordforge.pipeline import ConversionReport
from recordforge.records import RecordStats, TFRecordWriter, read_records, scan_records
from recordforge.schema import (
    BBox,
    ClassLabel,
    FeatureSpec,
    Image,
    Schema,
    Text,
    infer_schema,
)
from recordforge.sequence import RaggedSteps, infer_sequence_schema
from recordforge.sharding import WriteOptions
from recordforge.writer import write_dataset

__all__ = [
    "BBox",
    "ClassLabel",
    "ConversionReport",
    "CorruptRecordError",
    "Dataset",
    "DecodeError",
    "DirectoryLockedError",
    "EncodeError",
    "FeatureSpec",
    "Image",
    "ItemError",
    "Manifest",
    "Ragged",
    "RaggedSteps",
    "RecordBatch",
    "RecordStats",
    "RecordforgeError",
    "RecordforgeWarning",
    "Schema",
    "SchemaError",
    "ShardInfo",
    "TFRecordWriter",
    "Text",
    "UnfinishedConversionError",
    "WriteOptions",
    "__version__",
    "crc32c",
    "decode_batch",
    "decode_example",
    "decode_sequence_example",
    "encode_columns",
    "encode_example",
    "encode_record_batch",
    "encode_sequence_example",
    "images",
    "infer_schema",
    "infer_sequence_schema",
    "inspect",
    "masked_crc32c",
    "open_dataset",
    "read_records",
    "scan_records",
    "write_dataset",
]

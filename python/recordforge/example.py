"""``tf.train.Example`` / ``SequenceExample`` encode and decode, and CRC32C.

The codecs are a hand-written protobuf wire codec in Rust: no protobuf package, no
TensorFlow, and nothing registered in protobuf's descriptor pool.

Value mapping when encoding (the same as TensorFlow's):

* ``int``, ``bool``, NumPy integer and bool arrays -> ``int64_list``
* ``float``, NumPy float arrays -> ``float_list`` (stored as float32)
* ``str`` (UTF-8), ``bytes``, NumPy ``bytes_`` / ``str_`` arrays -> ``bytes_list``
* a scalar gives a one-value list; a list or tuple gives its values; a NumPy array is
  flattened in C order. An empty list has no kind: pass an empty NumPy array instead.

Decoding returns ``np.ndarray[int64]``, ``np.ndarray[float32]`` or ``list[bytes]`` per
feature; a Feature with no kind decodes to an empty float32 array.
"""

from __future__ import annotations

from collections.abc import Sequence

from recordforge import _core

__all__ = [
    "crc32c",
    "decode_batch",
    "decode_example",
    "decode_sequence_example",
    "encode_columns",
    "encode_example",
    "encode_record_batch",
    "encode_sequence_example",
    "masked_crc32c",
]

# The functions are the Rust ones, exported as they are: a Python wrapper would add a
# call layer to the hot path. Their docstrings (below) are executed by the test suite.
encode_example = _core.encode_example
encode_columns = _core.encode_columns
encode_record_batch = _core.encode_record_batch
RecordBatch = _core.RecordBatch
# A sequence of the serialized records (integer indexing and iteration, like a list).
Sequence.register(RecordBatch)
decode_example = _core.decode_example
decode_batch = _core.decode_batch
encode_sequence_example = _core.encode_sequence_example
decode_sequence_example = _core.decode_sequence_example
crc32c = _core.crc32c
masked_crc32c = _core.masked_crc32c

"""PyPI ``tfrecord`` package side of bench_core.py; run in its own process (it registers
the same protobuf messages as TensorFlow, so the two cannot share a process).

    python benchmarks/_peer_tfrecord.py --data DIR --out results.json

What its API allows us to measure:

* write: ``tfrecord.TFRecordWriter.write`` takes a dict and serializes it before framing
  it; there is no public framing-only call. We run the package's own ``write`` with its
  ``serialize_tf_example`` step replaced by the identity, so the timed code is exactly
  the package's framing (struct.pack, ``masked_crc`` via the ``crc32c`` package and
  NumPy, four ``file.write`` calls).
* read: ``tfrecord.reader.tfrecord_iterator`` does NOT check either CRC and yields a
  memoryview into one reused buffer (no copy per record): less work than the others.
* decode: what ``tfrecord.reader.example_loader`` does per record:
  ``Example.ParseFromString`` plus ``extract_feature_dict`` (NumPy arrays per feature).
* encode: ``TFRecordWriter.serialize_tf_example`` with ``{name: (value, dtype)}`` dicts,
  built before timing.
* gzip: reading only (``compression_type="gzip"``, Python's ``gzip`` module; it first
  decompresses the whole file once to learn its length); the writer has no compression.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import tfrecord
from _common import (
    EXAMPLES,
    LARGE,
    MEDIUM,
    SMALL,
    FreshPaths,
    Results,
    load_manifest,
    load_payloads,
    load_rows,
    measure,
    peer_args,
    protobuf_version,
    rows_digest,
    sha256_file,
    warm_page_cache,
)
from tfrecord import example_pb2
from tfrecord.reader import extract_feature_dict, tfrecord_iterator

TYPENAME_MAPPING = {"byte": "bytes_list", "float": "float_list", "int": "int64_list"}

# write() calls ``TFRecordWriter.serialize_tf_example`` through the class, so the bypass
# has to patch the class (in this process only); the encode benchmark keeps the original.
SERIALIZE = tfrecord.TFRecordWriter.serialize_tf_example


def bench_write(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """1. Framing write: the package's write() with serialization bypassed."""
    tfrecord.TFRecordWriter.serialize_tf_example = staticmethod(lambda datum: datum)
    try:
        for name in (SMALL, LARGE):
            recs = load_payloads(data, name)
            work = {"bytes": sum(map(len, recs)), "records": len(recs)}
            paths = FreshPaths(out_dir, f"write-{name}")

            def write_loop(recs: list[bytes] = recs, paths: FreshPaths = paths) -> None:
                w = tfrecord.TFRecordWriter(paths.next())
                write = w.write
                for r in recs:
                    write(r)
                w.close()

            R.add(f"write_{name}", measure(write_loop, setup=paths.cleanup, **T), **work)
            R.checks[f"write_{name}_sha256"] = sha256_file(paths.last())
            paths.cleanup()
    finally:
        tfrecord.TFRecordWriter.serialize_tf_example = staticmethod(SERIALIZE)
    R.notes["write"] = "package's write() with serialize_tf_example bypassed"


def bench_read(R: Results, data: Path, T: dict[str, Any]) -> None:
    """2. Framing read (this package checks no CRC)."""
    for name in (SMALL, LARGE):
        path = str(data / f"{name}.tfrecord")
        warm_page_cache(path)
        n = nbytes = 0
        for rec in tfrecord_iterator(path):
            n += 1
            nbytes += len(rec)
        R.checks[f"read_{name}"] = [n, nbytes]
        work = {"bytes": nbytes, "records": n}

        def read(path: str = path) -> None:
            for _ in tfrecord_iterator(path):
                pass

        R.add(f"read_{name}", measure(read, **T), **work)
    R.notes["read"] = "no CRC check; yields a reused memoryview (no copy)"


def decode(b: bytes) -> dict[str, object]:
    """What example_loader does with each record."""
    ex = example_pb2.Example()
    ex.ParseFromString(b)
    out: dict[str, object] = extract_feature_dict(ex.features, None, TYPENAME_MAPPING)
    return out


def bench_codec(R: Results, data: Path, kinds: dict[str, str], T: dict[str, Any]) -> None:
    """3./4. Example decode and encode."""
    examples = load_payloads(data, EXAMPLES)

    def decode_all() -> None:
        for b in examples:
            decode(b)

    R.add("decode", measure(decode_all, **T), rows=len(examples))
    R.checks["decode_digest"] = rows_digest([decode(b) for b in examples])

    rows = load_rows(data)
    dtype = {"float_list": "float", "int64_list": "int", "bytes_list": "byte"}
    datums = [
        {k: (v.encode() if isinstance(v, str) else v, dtype[kinds[k]]) for k, v in row.items()}
        for row in rows
    ]

    def encode_all() -> None:
        for d in datums:
            SERIALIZE(d)

    R.add("encode", measure(encode_all, **T), rows=len(datums))
    R.checks["encode_digest"] = rows_digest([decode(SERIALIZE(d)) for d in datums])


def bench_gzip(R: Results, data: Path, T: dict[str, Any]) -> None:
    """5. GZIP read (informative; the package's writer has no compression)."""
    gz = str(data / f"{MEDIUM}.tfrecord.gz")
    warm_page_cache(gz)
    got = [bytes(r) for r in tfrecord_iterator(gz, compression_type="gzip")]
    R.checks["gzip_read"] = [len(got), sum(map(len, got))]
    work = {"bytes": R.checks["gzip_read"][1], "records": len(got)}
    del got

    def gzip_read() -> None:
        for _ in tfrecord_iterator(gz, compression_type="gzip"):
            pass

    R.add("gzip_read", measure(gzip_read, **T), **work)


def main() -> None:
    args = peer_args(__doc__ or "")
    data: Path = args.data
    m = load_manifest(data)
    R = Results("tfrecord", version("tfrecord"), m)
    R.checks["crc32c_package"] = version("crc32c")
    out_dir = data / "out-tfrecord"
    out_dir.mkdir(exist_ok=True)
    T = R.timing_kwargs()
    if "write" in args.sections:
        bench_write(R, data, out_dir, T)
    if "read" in args.sections:
        bench_read(R, data, T)
    if "codec" in args.sections:
        bench_codec(R, data, m["feature_kinds"], T)
    if "gzip" in args.sections:
        bench_gzip(R, data, T)
    R.notes["protobuf"] = protobuf_version()
    R.write(args.out)


if __name__ == "__main__":
    main()

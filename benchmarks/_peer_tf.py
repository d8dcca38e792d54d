"""TensorFlow side of bench_core.py; run in its own process (TensorFlow and the PyPI
``tfrecord`` package register the same protobuf messages and cannot share a process).

    python benchmarks/_peer_tf.py --data DIR --out results.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path
from typing import Any

import tensorflow as tf
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
    save_payloads,
    sha256_file,
    warm_page_cache,
)

# Batch sizes of the informative batched rows.
READ_BATCH = {SMALL: 1024, LARGE: 16}
PARSE_BATCH = 1024


def bench_write(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """1. Framing write: tf.io.TFRecordWriter.write(bytes) per record."""
    for name in (SMALL, LARGE):
        recs = load_payloads(data, name)
        work = {"bytes": sum(map(len, recs)), "records": len(recs)}
        paths = FreshPaths(out_dir, f"write-{name}")

        def write_loop(recs: list[bytes] = recs, paths: FreshPaths = paths) -> None:
            with tf.io.TFRecordWriter(paths.next()) as w:
                write = w.write
                for r in recs:
                    write(r)

        R.add(f"write_{name}", measure(write_loop, setup=paths.cleanup, **T), **work)
        R.checks[f"write_{name}_sha256"] = sha256_file(paths.last())
        paths.cleanup()


def bench_read(R: Results, data: Path, T: dict[str, Any], T_slow: dict[str, Any]) -> None:
    """2. Framing read: tf.data.TFRecordDataset iterated eagerly (TF checks both CRCs)."""
    for name in (SMALL, LARGE):
        path = str(data / f"{name}.tfrecord")
        warm_page_cache(path)
        ds = tf.data.TFRecordDataset(path)
        n = nbytes = 0
        for x in ds:
            n += 1
            nbytes += len(x.numpy())
        R.checks[f"read_{name}"] = [n, nbytes]
        work = {"bytes": nbytes, "records": n}

        def read(ds: tf.data.Dataset = ds) -> None:
            for _ in ds:
                pass

        def read_numpy(ds: tf.data.Dataset = ds) -> None:
            for x in ds:
                x.numpy()

        def warm(ds: tf.data.Dataset = ds) -> None:
            for _ in ds.take(2000):
                pass

        batched = ds.batch(READ_BATCH[name])

        def read_batched(ds: tf.data.Dataset = batched) -> None:
            for _ in ds:
                pass

        R.add(f"read_{name}", measure(read, warmup=warm, **T_slow), **work)
        R.add(f"read_{name}_numpy", measure(read_numpy, warmup=warm, **T_slow), **work)
        R.add(f"read_{name}_batched", measure(read_batched, **T), **work)
        R.notes[f"read_{name}_batched"] = f"ds.batch({READ_BATCH[name]})"


def bench_decode(R: Results, data: Path, kinds: dict[str, str], T: dict[str, Any]) -> None:
    """3. Example decode: FromString + read-out into lists; tf.io.parse_example batched."""
    examples = load_payloads(data, EXAMPLES)
    from_string = tf.train.Example.FromString
    schema = list(kinds.items())

    def tf_decode(b: bytes) -> dict[str, list[object]]:
        # Names and kinds known up front: the fastest pure-Python read-out we measured
        # (iterating the map's items is ~10% slower, asking WhichOneof ~30% slower).
        fm = from_string(b).features.feature
        return {k: list(getattr(fm[k], kind).value) for k, kind in schema}

    def decode_all() -> None:
        for b in examples:
            tf_decode(b)

    R.add("decode", measure(decode_all, **T), rows=len(examples))
    R.checks["decode_digest"] = rows_digest([tf_decode(b) for b in examples])

    dtypes = {"float_list": tf.float32, "int64_list": tf.int64, "bytes_list": tf.string}
    spec = {k: tf.io.FixedLenFeature([], dtypes[kind]) for k, kind in schema}
    batches = [examples[i : i + PARSE_BATCH] for i in range(0, len(examples), PARSE_BATCH)]

    def parse_batched() -> None:
        for batch in batches:
            out = tf.io.parse_example(tf.constant(batch), spec)
            for v in out.values():
                v.numpy()

    R.add("decode_parse_example", measure(parse_batched, **T), rows=len(examples))
    R.notes["decode_parse_example"] = f"batches of {PARSE_BATCH}, FixedLenFeature spec"
    first = {
        k: v.numpy() for k, v in tf.io.parse_example(tf.constant(examples[:100]), spec).items()
    }
    parsed = [
        {k: (first[k][i] if kind == "bytes_list" else first[k][i : i + 1]) for k, kind in schema}
        for i in range(min(100, len(examples)))
    ]
    R.checks["parse_example_digest_100"] = rows_digest(parsed)


def bench_encode(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """4. Example encode from the same Python dicts."""
    rows = load_rows(data)
    Example, Features, Feature = tf.train.Example, tf.train.Features, tf.train.Feature
    FloatList, Int64List, BytesList = tf.train.FloatList, tf.train.Int64List, tf.train.BytesList

    def tf_encode(row: dict[str, object]) -> bytes:
        # Appending into the message in place: ~2.5x faster than the tutorial's nested
        # constructors with protobuf's upb backend, so this is the figure we compare with.
        ex = Example()
        fm = ex.features.feature
        for k, v in row.items():
            if isinstance(v, float):
                fm[k].float_list.value.append(v)
            elif isinstance(v, int):
                fm[k].int64_list.value.append(v)
            else:
                fm[k].bytes_list.value.append(v.encode() if isinstance(v, str) else v)
        out: bytes = ex.SerializeToString()
        return out

    def tf_encode_tutorial(row: dict[str, object]) -> bytes:
        # The TensorFlow tutorial's _float_feature / _int64_feature / _bytes_feature
        # helpers, inlined: nested constructors with keyword arguments.
        feature = {}
        for k, v in row.items():
            if isinstance(v, float):
                feature[k] = Feature(float_list=FloatList(value=[v]))
            elif isinstance(v, int):
                feature[k] = Feature(int64_list=Int64List(value=[v]))
            else:
                b = v.encode() if isinstance(v, str) else v
                feature[k] = Feature(bytes_list=BytesList(value=[b]))
        out: bytes = Example(features=Features(feature=feature)).SerializeToString()
        return out

    def encode_all() -> None:
        for row in rows:
            tf_encode(row)

    def encode_all_tutorial() -> None:
        for row in rows:
            tf_encode_tutorial(row)

    R.add("encode", measure(encode_all, **T), rows=len(rows))
    R.add("encode_tutorial", measure(encode_all_tutorial, **T), rows=len(rows))
    # The driver decodes these with recordforge and compares them with the input rows.
    save_payloads(out_dir, "encoded", [tf_encode(r) for r in rows])
    save_payloads(out_dir, "encoded_tutorial", [tf_encode_tutorial(r) for r in rows])


def bench_gzip(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """5. GZIP write and read (informative)."""
    recs = load_payloads(data, MEDIUM)
    work = {"bytes": sum(map(len, recs)), "records": len(recs)}
    paths = FreshPaths(out_dir, "write-gzip", ".tfrecord.gz")
    options = tf.io.TFRecordOptions(compression_type="GZIP")

    def gzip_write() -> None:
        with tf.io.TFRecordWriter(paths.next(), options=options) as w:
            write = w.write
            for r in recs:
                write(r)

    R.add("gzip_write", measure(gzip_write, setup=paths.cleanup, **T), **work)
    R.checks["gzip_write_sha256"] = sha256_file(paths.last())
    R.checks["gzip_write_size"] = os.path.getsize(paths.last())
    paths.cleanup()

    gz = str(data / f"{MEDIUM}.tfrecord.gz")
    warm_page_cache(gz)
    gds = tf.data.TFRecordDataset(gz, compression_type="GZIP")
    got = [x.numpy() for x in gds]
    R.checks["gzip_read"] = [len(got), sum(map(len, got))]
    del got

    def gzip_read() -> None:
        for _ in gds:
            pass

    R.add("gzip_read", measure(gzip_read, **T), **work)


def main() -> None:
    args = peer_args(__doc__ or "")
    data: Path = args.data
    m = load_manifest(data)
    R = Results("tensorflow", tf.__version__, m)
    out_dir = data / "out-tf"
    out_dir.mkdir(exist_ok=True)
    T, T_slow = R.timing_kwargs(), R.timing_kwargs(slow=True)
    if "write" in args.sections:
        bench_write(R, data, out_dir, T)
    if "read" in args.sections:
        bench_read(R, data, T, T_slow)
    if "codec" in args.sections:
        bench_decode(R, data, m["feature_kinds"], T)
        bench_encode(R, data, out_dir, T)
    if "gzip" in args.sections:
        bench_gzip(R, data, out_dir, T)
    R.notes["protobuf"] = protobuf_version()
    R.write(args.out)


if __name__ == "__main__":
    main()

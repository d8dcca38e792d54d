"""Hidden costs (issue 17): the workloads where real use meets a path that the other
benchmarks do not time, recordforge beside its peers.

    python benchmarks/bench_costs.py [--rounds 3] [--images 1540] [--rows 200000]
        [--peers-python .venv-peers/bin/python] [--tfd-python .venv-tfd/bin/python]
        [--before /path/to/other/python]
        [--only images,table,decode,scan,write-columns,take,stats] [--json out.json]

Workloads (data written once into a temporary directory, files in the page cache):

- ``images``: ``--images`` records of ~150 KB (``image/encoded`` random bytes, an int64
  ``label``, a bytes ``image/id``) in 4 files without ``dataset.json``, opened and read
  whole in batches of 64: ``rf.open_dataset(files).batches(64)`` (schema inferred at
  open, both CRCs checked), and with ``copy=False`` (bytes values as memoryviews of
  reused buffers), vs ``tf.data.TFRecordDataset`` + ``tf.io.parse_example`` with a
  hand-written feature description, and the TF-free peers that install. ``epoch 2``:
  recordforge's second pass over the same ``Dataset`` (a training loop's later epochs:
  the files already mapped, the ``copy=False`` buffers already made), the first pass
  before the clock starts.
- ``table``: ``--rows`` records of 21 features (16 float32, 4 int64, 1 bytes) in 8 files
  without ``dataset.json``, opened and read in batches of 1024, vs TF the same way.
- ``decode``: one record at a time, ``rf.decode_example`` (``bytes`` values, and with
  ``copy=False`` memoryviews of the record) vs ``ds[i]`` vs TF's protobuf
  ``tf.train.Example.FromString`` on the image records: the label read (``tf``; the
  image bytes stay in the record until read), and every feature's values read
  (``tf-values``), which is what ``decode_example`` hands out.
- ``scan``: ``rf.scan_records`` (framing + both CRCs) of the image files vs
  ``rf.crc32c`` over the same bytes already in memory (the CRC limit).
- ``write-columns``: ``rf.write_dataset(columns)`` of the image records (read into
  columns before the clock) vs the in-process ``encode_example`` + ``TFRecordWriter``
  loop (``rf-loop``) vs TensorFlow's ``TFRecordWriter`` with ``tf.train.Example``.
- ``take``: ``ds.take`` of every image record, 64 random indices a call, with ``bytes``
  values and with ``copy=False`` (memoryviews of a reused buffer), vs tfd-utils'
  ``get_record`` a record at a time in the same order (a read and a protobuf parse, no
  CRC).
- ``stats``: ``rf.inspect.stats`` of the table records (every feature's presence,
  lengths, numbers, top values, class labels), described in blocks of records
  (``rf``), vs the same with ``_stats._FAST = False``: a record at a time, as before the
  blocks (``rf one at a time``). No peer computes these (TFDV is not installed).

Each run also reports its minor page faults per record (fresh memory the kernel zeroes).

Every peer runs in its own process, in alternating rounds (the machine's load swings);
each reports wall time and CPU time (user + system, all threads) per record, and a digest
of what it read (sum of labels). ``--before`` adds recordforge run from another source
tree (e.g. ``/work/main/python``) as the peer ``rf-before``, for before/after figures.
``--peers-python``: an interpreter with the TF-free peers (``rustfrecord``,
``tfrecord-lite``, ``tfrecords``) installed; each one missing is said so. ``--tfd-python``:
one with ``tfd-utils`` 1.3 (it needs NumPy 2, ``rustfrecord`` pins 1.24), the peer of
``take``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
IMAGE_BYTES = 150_000
IMAGE_FILES, TABLE_FILES = 4, 8
FLOATS, INTS = 16, 4


# ---------------------------------------------------------------------------------------
# Data (made by the driver, with recordforge; the framing is TensorFlow's byte for byte)


def make_data(root: Path, images: int, rows: int) -> None:
    import numpy as np

    import recordforge as rf

    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    per = -(-images // IMAGE_FILES)
    for k in range(IMAGE_FILES):
        with rf.TFRecordWriter(root / "images" / f"img-{k}.tfrecord") as w:
            for i in range(k * per, min(images, (k + 1) * per)):
                size = IMAGE_BYTES + int(rng.integers(-20_000, 20_000))
                w.write(
                    rf.encode_example(
                        {
                            "image/encoded": rng.bytes(size),
                            "image/id": f"{i:08d}".encode(),
                            "label": i % 1000,
                        }
                    )
                )
    (root / "table").mkdir()
    per = -(-rows // TABLE_FILES)
    for k in range(TABLE_FILES):
        n = max(0, min(rows, (k + 1) * per) - k * per)
        cols: dict[str, Any] = {f"f{j}": rng.random(n, dtype=np.float32) for j in range(FLOATS)}
        cols.update({f"i{j}": rng.integers(0, 1 << 40, n) for j in range(INTS)})
        cols["label"] = (np.arange(k * per, k * per + n) % 1000).astype(np.int64)
        cols["name"] = [f"row-{k}-{i}".encode() for i in range(n)]
        with rf.TFRecordWriter(root / "table" / f"part-{k}.tfrecord") as w:
            w.write_many(rf.encode_columns(cols))
    for f in sorted(root.rglob("*.tfrecord")):
        f.read_bytes()  # into the page cache


def files(root: Path, which: str) -> list[str]:
    return sorted(str(p) for p in (root / which).glob("*.tfrecord"))


# ---------------------------------------------------------------------------------------
# Peers: each function runs in its own process and returns (records, digest)


def rf_batches(root: Path, which: str, batch: int, copy: bool = True) -> tuple[int, int]:
    import recordforge as rf

    return read_batches(rf.open_dataset(files(root, which)), batch, copy)


def read_batches(ds: Any, batch: int, copy: bool) -> tuple[int, int]:
    n = total = 0
    for b in ds.batches(batch, copy=copy):
        n += len(b["label"])
        total += int(b["label"].sum())
    return n, total


def rf_second_epoch(
    root: Path, which: str, batch: int, copy: bool
) -> Callable[[], tuple[int, int]]:
    """A training loop's later epochs: the dataset opened and read once before the clock
    starts (its files mapped and their pages faulted in, the ``copy=False`` buffers
    made), then read again."""
    import recordforge as rf

    ds = rf.open_dataset(files(root, which))
    read_batches(ds, batch, copy)
    return lambda: read_batches(ds, batch, copy)


def tf_batches(root: Path, which: str, batch: int) -> tuple[int, int]:
    import tensorflow as tf

    if which == "images":
        desc = {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/id": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
        }
    else:
        desc = {f"f{j}": tf.io.FixedLenFeature([], tf.float32) for j in range(FLOATS)}
        desc.update({f"i{j}": tf.io.FixedLenFeature([], tf.int64) for j in range(INTS)})
        desc["label"] = tf.io.FixedLenFeature([], tf.int64)
        desc["name"] = tf.io.FixedLenFeature([], tf.string)
    ds = (
        tf.data.TFRecordDataset(files(root, which), num_parallel_reads=tf.data.AUTOTUNE)
        .batch(batch)
        .map(lambda x: tf.io.parse_example(x, desc), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    n = total = 0
    for b in ds:
        labels = b["label"].numpy()
        n += len(labels)
        total += int(labels.sum())
    return n, total


def rustfrecord_batches(root: Path, which: str, batch: int) -> tuple[int, int]:
    from rustfrecord import Reader  # type: ignore[import-not-found]

    n = total = 0
    for f in files(root, which):
        for record in Reader(f, compressed=False, features=["label", "image/encoded"]):
            n += 1
            total += int(record["label"][0])
    return n, total


def tfrecord_lite_batches(root: Path, which: str, batch: int) -> tuple[int, int]:
    """``tfrecord_lite.tf_record_iterator`` yields each record decoded (a dict)."""
    from tfrecord_lite import tf_record_iterator  # type: ignore[import-not-found]

    n = total = 0
    for f in files(root, which):
        for ex in tf_record_iterator(f):
            n += 1
            total += int(ex["label"][0])
    return n, total


def tfrecords_batches(root: Path, which: str, batch: int) -> tuple[int, int]:
    """The ``tfrecords`` package reads records but parses no Example: records only
    (its digest is -1)."""
    import tfrecords  # type: ignore[import-not-found]

    n = 0
    for f in files(root, which):
        for _ in tfrecords.tf_record_iterator(f):
            n += 1
    return n, -1


def rf_decode(root: Path, way: str) -> Callable[[], tuple[int, int]]:
    import recordforge as rf

    paths = files(root, "images")
    if way == "ds[i]":
        ds = rf.open_dataset(paths)
        return lambda: (len(ds), sum(int(ds[i]["label"]) for i in range(len(ds))))
    records = [r for f in paths for r in rf.read_records(f)]
    copy = way != "copy=False"
    decode = rf.decode_example
    return lambda: (len(records), sum(int(decode(r, copy=copy)["label"][0]) for r in records))


def tf_decode(root: Path, values: bool = False) -> Callable[[], tuple[int, int]]:
    """``FromString`` and the label (the parse keeps a reference to the record: a bytes
    value is only copied out when read); with ``values``, every feature's values read
    as Python values too, as ``rf.decode_example`` hands them out."""
    import tensorflow as tf

    import recordforge as rf

    records = [r for f in files(root, "images") for r in rf.read_records(f)]
    parse = tf.train.Example.FromString
    if not values:
        return lambda: (
            len(records),
            sum(parse(r).features.feature["label"].int64_list.value[0] for r in records),
        )

    def every_value() -> tuple[int, int]:
        total = 0
        for r in records:
            features = parse(r).features.feature
            out = {k: list(getattr(v, v.WhichOneof("kind")).value) for k, v in features.items()}
            total += int(out["label"][0])
        return len(records), total

    return every_value


def rf_scan(root: Path) -> tuple[int, int]:
    import recordforge as rf

    n = size = 0
    for f in files(root, "images"):
        stats = rf.scan_records(f)
        n, size = n + stats.records, size + stats.stream_bytes
    return n, size


def image_columns(root: Path) -> dict[str, Any]:
    """The image records' features as columns (read before the clock starts)."""
    import numpy as np

    import recordforge as rf

    ds = rf.open_dataset(files(root, "images"))
    cols: dict[str, list[Any]] = {"image/encoded": [], "image/id": [], "label": []}
    for batch in ds.batches(256):
        for name in cols:
            cols[name].extend(batch[name].tolist())
    return {
        "image/encoded": np.array(cols["image/encoded"], dtype=object),
        "image/id": np.array(cols["image/id"], dtype=object),
        "label": np.array(cols["label"], dtype=np.int64),
    }


def write_columns(name: str, root: Path) -> Callable[[], tuple[int, int]]:
    """``write_dataset(columns)`` of the image records (JPEG-sized bytes) vs the
    in-process ``encode_example`` + ``TFRecordWriter`` loop vs TensorFlow's writer with
    ``tf.train.Example``; the digest is the bytes written."""
    import recordforge as rf

    cols = image_columns(root)
    n = len(cols["label"])
    out = Path(tempfile.mkdtemp(prefix="write-", dir=root))

    def size() -> int:
        return sum(f.stat().st_size for f in out.rglob("*.tfrecord"))

    if name in ("rf", "rf-before"):

        def run() -> tuple[int, int]:
            rf.write_dataset(cols, out / "ds")
            return n, size()

        return run
    if name == "rf-loop":
        rows = [{k: v[i] for k, v in cols.items()} for i in range(n)]
        rows = [{**r, "label": int(r["label"])} for r in rows]

        def loop() -> tuple[int, int]:
            with rf.TFRecordWriter(out / "loop.tfrecord") as w:
                for r in rows:
                    w.write(rf.encode_example(r))
            return n, size()

        return loop
    import tensorflow as tf

    def tf_loop() -> tuple[int, int]:
        with tf.io.TFRecordWriter(str(out / "tf.tfrecord")) as w:
            for i in range(n):
                feature = {
                    "image/encoded": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[cols["image/encoded"][i]])
                    ),
                    "image/id": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[cols["image/id"][i]])
                    ),
                    "label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(cols["label"][i])])
                    ),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                w.write(example.SerializeToString())
        return n, size()

    return tf_loop


def rf_take(root: Path, copy: bool = True) -> Callable[[], tuple[int, int]]:
    """``ds.take`` of every image record, 64 random indices a call (the indices drawn
    before the clock); the digest is the sum of the labels and of the image bytes'
    lengths. ``copy=False``: the image bytes as views of a reused buffer."""
    import numpy as np

    import recordforge as rf

    ds = rf.open_dataset(files(root, "images"))
    ds[0]  # the offsets found (no .idx: one framing walk a file), outside the clock
    order = np.random.default_rng(0).permutation(len(ds))

    def run() -> tuple[int, int]:
        total = 0
        for start in range(0, len(order), 64):
            got = ds.take(order[start : start + 64], copy=copy)
            total += int(got["label"].sum()) + sum(len(v) for v in got["image/encoded"])
        return len(order), total

    return run


def rf_stats(root: Path, blocks: bool) -> Callable[[], tuple[int, int]]:
    """``rf.inspect.stats`` of the table records; the digest is the records described
    and every feature's records holding it."""
    from recordforge.inspect import _stats

    _stats._FAST = blocks

    def run() -> tuple[int, int]:
        import recordforge as rf

        got = rf.inspect.stats(files(root, "table"))
        return got.records, sum(f.present for f in got.features)

    return run


def tfd_take(root: Path) -> Callable[[], tuple[int, int]]:
    """tfd-utils' ``TFRecordRandomAccess.get_record`` (a read and a protobuf parse a
    record, no CRC) over the image records by key, in ``rf_take``'s order."""
    import numpy as np
    from tfd_utils import TFRecordRandomAccess

    paths = files(root, "images")
    reader = TFRecordRandomAccess(
        paths,
        key_feature_name="image/id",
        index_file=str(root / "tfd.index"),
        use_multiprocessing=False,
    )
    n = len(reader.index)  # built outside the clock
    keys = [f"{i:08d}" for i in np.random.default_rng(0).permutation(n).tolist()]

    def run() -> tuple[int, int]:
        total = 0
        for key in keys:
            feature = reader.get_record(key).features.feature
            total += feature["label"].int64_list.value[0]
            total += len(feature["image/encoded"].bytes_list.value[0])
        return len(keys), total

    return run


# ---------------------------------------------------------------------------------------
# The peer process: setup outside the clock where the workload allows it


def run_peer(name: str, workload: str, root: Path, prepared: dict[str, Any]) -> dict[str, Any]:
    fn: Callable[[], tuple[int, int]]
    if workload in ("images", "table"):
        batch = 64 if workload == "images" else 1024
        table = {
            "rf": rf_batches,
            "rf-before": rf_batches,
            "rf copy=False": lambda root, workload, batch: rf_batches(root, workload, batch, False),
            "tf": tf_batches,
            "rustfrecord": rustfrecord_batches,
            "tfrecord-lite": tfrecord_lite_batches,
            "tfrecords": tfrecords_batches,
        }
        if name.endswith("epoch 2"):
            fn = rf_second_epoch(root, workload, batch, copy="copy=False" not in name)
        else:
            fn = lambda: table[name](root, workload, batch)  # noqa: E731
    elif workload == "decode":
        # The records are read before the clock starts: only the decoding is timed.
        if name in ("rf", "rf-before"):
            fn = rf_decode(root, "decode_example")
        elif name == "rf copy=False":
            fn = rf_decode(root, "copy=False")
        elif name in ("rf-ds[i]", "rf-before-ds[i]"):
            fn = rf_decode(root, "ds[i]")
        else:
            fn = tf_decode(root, values=name == "tf-values")
    elif workload == "scan":
        if name in ("rf", "rf-before"):
            fn = lambda: rf_scan(root)  # noqa: E731
        else:
            import recordforge as rf

            data = [Path(f).read_bytes() for f in files(root, "images")]
            n = sum(rf.scan_records(f, verify=False).records for f in files(root, "images"))

            def crc() -> tuple[int, int]:
                for d in data:
                    rf.crc32c(d)
                return n, sum(len(d) for d in data)

            fn = crc
    elif workload == "write-columns":
        fn = write_columns(name, root)
    elif workload == "stats":
        fn = rf_stats(root, blocks=name != "rf one at a time")
    elif workload == "take" and name == "tfd-utils":
        fn = tfd_take(root)
    elif workload == "take":
        fn = rf_take(root, copy=not name.endswith("copy=False"))
    else:
        raise SystemExit(f"unknown workload {workload}")
    modules = {
        "tf": ["tensorflow", "recordforge"],
        "rustfrecord": ["rustfrecord"],
        "tfrecord-lite": ["tfrecord_lite"],
        "tfrecords": ["tfrecords"],
        "tfd-utils": ["tfd_utils"],
    }
    for module in modules.get(name, ["recordforge"]):
        importlib.import_module(module)  # imports are not what is timed
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w0, c0 = time.perf_counter(), time.process_time()
    n, digest = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {"records": n, "digest": digest, "wall": wall, "cpu": cpu, "faults": faults}


# ---------------------------------------------------------------------------------------
# The driver


def peer_command(name: str, python: str, before: str | None) -> tuple[list[str], dict[str, str]]:
    # NumPy's OpenBLAS threads spin for ~0.1 s of CPU after import, on this machine's two
    # cores: a workload timed right after its imports (``scan`` takes ~15 ms) would share
    # the cores with them. No workload here calls BLAS. Every peer gets the same setting.
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    if name.startswith("rf-before"):
        env["PYTHONPATH"] = before or ""
    return [python, str(HERE)], env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=1540)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--peers-python", default=None)
    p.add_argument(
        "--tfd-python", default=None, help="an interpreter with tfd-utils >= 1.3 (numpy 2)"
    )
    p.add_argument("--before", default=None, help="PYTHONPATH of another recordforge")
    p.add_argument("--only", default="images,table,decode,scan,write-columns,take,stats")
    p.add_argument("--json", default=None)
    p.add_argument("--peer", nargs=3, metavar=("NAME", "WORKLOAD", "ROOT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peer:
        name, workload, root = a.peer
        print(json.dumps(run_peer(name, workload, Path(root), {})))
        return
    plan: dict[str, list[str]] = {
        "images": [
            "rf",
            "rf copy=False",
            "rf epoch 2",
            "rf copy=False epoch 2",
            "tf",
            "rustfrecord",
            "tfrecord-lite",
            "tfrecords",
        ],
        "table": ["rf", "tf"],
        "decode": ["rf", "rf copy=False", "rf-ds[i]", "tf", "tf-values"],
        "scan": ["rf", "crc32c"],
        "write-columns": ["rf", "rf-loop", "tf"],
        "take": ["rf", "rf copy=False", "tfd-utils"],
        "stats": ["rf", "rf one at a time"],
    }
    if a.before:
        for w in plan.values():
            w.insert(1, "rf-before")
        plan["decode"].insert(3, "rf-before-ds[i]")
    foreign = {"rustfrecord", "tfrecord-lite", "tfrecords", "tfd-utils"}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    unavailable: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp:
        root = Path(tmp)
        make_data(root, a.images, a.rows)
        for r in range(a.rounds):
            for workload in a.only.split(","):
                for name in plan[workload]:
                    if name in unavailable:
                        continue
                    python = sys.executable
                    if name in foreign:
                        python = (a.tfd_python if name == "tfd-utils" else None) or a.peers_python
                        if not python:
                            unavailable[name] = "no --peers-python"
                            continue
                    cmd, env = peer_command(name, python, a.before)
                    cmd += ["--peer", name, workload, str(root)]
                    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if out.returncode != 0:
                        unavailable[name] = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
                        continue
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault(workload, {}).setdefault(name, []).append(got)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    report(results, unavailable)
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "unavailable": unavailable}))


Results = dict[str, dict[str, list[dict[str, Any]]]]


def report(results: Results, unavailable: dict[str, str]) -> None:
    head = f"{'workload':13} {'peer':22} {'records':>8} {'wall µs/rec':>12} {'CPU µs/rec':>11}"
    head += f" {'faults/rec':>10}"
    print(f"{head}  digest")
    for workload, peers in results.items():
        for name, runs in peers.items():
            n = max(runs[0]["records"], 1)
            wall = min(r["wall"] for r in runs) / n * 1e6
            cpu = min(r["cpu"] for r in runs) / n * 1e6
            digests = {r["digest"] for r in runs}
            rate = ""
            if workload == "scan":
                rate = f"  {runs[0]['digest'] / min(r['wall'] for r in runs) / 1e9:.1f} GB/s"
            faults = min(r.get("faults", 0) for r in runs) / n
            print(
                f"{workload:13} {name:22} {n:8d} {wall:12.2f} {cpu:11.2f} {faults:10.1f}"
                f"  {sorted(digests)}{rate}"
            )
    for name, why in unavailable.items():
        print(f"not run: {name}: {why}")


if __name__ == "__main__":
    main()

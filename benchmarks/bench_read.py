"""Reading for training: TFRecord files -> columns, and random access, vs the peers.

    python benchmarks/bench_read.py [--rows N] [--images N] [--random N] [--json out.json]
                                    [--tfd-python PATH] [--keep-data DIR]

Side by side in one run, on data generated with ``rf.write_dataset`` in a temporary
directory (files in the page cache, every figure the best of ``--rounds`` passes):

1. table: ``--rows`` records of 21 features (16 float32, 4 int64, 1 string; the table of
   ``bench_table.py``), 8 shards, read into columns of ``--batch`` records:
   ``ds.batches(n)`` vs ``tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)``
   ``.batch(n).map(tf.io.parse_example, AUTOTUNE).prefetch(AUTOTUNE)`` and the PyPI
   ``tfrecord`` package's ``tfrecord_loader`` (one dict of arrays per record; it checks
   no CRC; run on the first ``--tfrecord-files`` shards: it is slow);
2. images: ``--images`` records of a ~100 KB ``image/encoded`` bytes feature (random bytes,
   not decoded) plus an int64 ``label``, 4 shards, the same three readers;
3. random access: ``--samples`` random records of one ``--random``-record file with a
   ``.idx`` index: ``ds[i]`` one at a time, ``ds.take(indices)``, a plain-Python
   seek + read through the same index (raw bytes, no CRC, not decoded), and the PyPI
   ``tfd-utils`` package's ``TFRecordRandomAccess.get_record(key)`` (protobuf parse, no
   CRC) when it can be imported (``--tfd-python``: an interpreter that has it; it pins
   protobuf < 6, which TensorFlow 2.21 does not accept, so it lives in its own venv).

recordforge checks both CRCs of every record in every row. Every peer runs in its own
process (TensorFlow and ``tfrecord`` register the same protobuf messages) and reports a
digest of what it read: per-feature sums that do not depend on the order (TensorFlow's
parallel reads interleave files), and for random access the values in request order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import measure, warm_page_cache

HERE = Path(__file__).resolve().parent
FLOATS, INTS = 16, 4
TABLE_SHARDS, IMAGE_SHARDS = 8, 4
IMAGE_BYTES = 100_000


# ---------------------------------------------------------------------------------------
# Data (made by the driver, with recordforge)


def table_columns(n: int, seed: int = 0) -> dict[str, Any]:
    """The 21-column table of bench_table.py (16 float32, 4 int64, 1 string)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {f"f{i:02d}": rng.random(n, dtype=np.float32) for i in range(FLOATS)}
    columns.update({f"i{i}": rng.integers(-(10**9), 10**9, n) for i in range(INTS)})
    words = np.array(["taxi", "cash", "credit card", "no charge", "unknown", "dispute"])
    columns["text"] = words[rng.integers(0, len(words), n)].astype(object)
    return columns


def image_rows(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """~100 KB of random bytes (not a real image: nothing is decoded) and a label."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        size = int(rng.integers(IMAGE_BYTES * 9 // 10, IMAGE_BYTES * 11 // 10))
        yield {"image/encoded": rng.bytes(size), "label": int(rng.integers(0, 1000))}


def make_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import recordforge as rf

    t0 = time.perf_counter()
    rf.write_dataset(
        table_columns(args.rows), work / "table", max_records=-(-args.rows // TABLE_SHARDS)
    )
    per_shard = -(-args.images // IMAGE_SHARDS)
    rf.write_dataset(image_rows(args.images), work / "images", max_records=per_shard)
    columns = table_columns(args.random, seed=2)
    columns["key"] = np.array([f"{i:08d}" for i in range(args.random)], dtype=object)
    rf.write_dataset(columns, work / "random", max_records=args.random, index=True)
    rng = np.random.default_rng(3)
    np.save(work / "indices.npy", rng.choice(args.random, args.samples, replace=False))
    print(f"data written in {time.perf_counter() - t0:.0f} s", flush=True)
    return {}


# ---------------------------------------------------------------------------------------
# Digests: the same whoever read the values


class Digest:
    """Order-independent sums per feature: numbers as their bit patterns (exact), bytes
    as CRC-32 + length; plus the number of records."""

    def __init__(self) -> None:
        self.records = 0
        self.sums: dict[str, int] = {}

    def add(self, name: str, values: Any) -> None:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            bits = values.reshape(-1)
            bits = bits.view(np.uint32 if bits.dtype.itemsize == 4 else np.uint64)
            total = int(bits.astype(np.uint64).sum(dtype=np.uint64))
        else:
            total = sum(zlib.crc32(v) + len(v) for v in _flat_bytes(values))
        self.sums[name] = (self.sums.get(name, 0) + total) % (1 << 64)

    def result(self) -> dict[str, Any]:
        return {"records": self.records, "sums": dict(sorted(self.sums.items()))}


def _flat_bytes(values: Any) -> Iterable[bytes]:
    for v in np.asarray(values, dtype=object).reshape(-1):
        if isinstance(v, (list, np.ndarray)):
            yield from _flat_bytes(v)
        else:
            yield bytes(v)


def table_files(work: Path, name: str) -> list[str]:
    return sorted(str(p) for p in (work / name).glob("*.tfrecord"))


def nbytes(files: list[str]) -> int:
    return sum(os.path.getsize(f) for f in files)


def timed(fn: Callable[[], Any], rounds: int, budget: float) -> dict[str, Any]:
    """Best of ``rounds`` passes (a pass lasts seconds: one call per sample)."""
    return measure(fn, reps=rounds, min_time=0.0, max_total=budget)


def timed_short(fn: Callable[[], Any], rounds: int) -> dict[str, Any]:
    """For calls of milliseconds: samples of >= 0.2 s, best of ``5 * rounds``."""
    return measure(fn, reps=5 * rounds, min_time=0.2, max_total=15)


# ---------------------------------------------------------------------------------------
# Peers (each in its own process)


def peer_rf(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import recordforge as rf

    out: dict[str, Any] = {"version": rf.__version__}
    for name, batch in (("table", args.batch), ("images", args.image_batch)):
        if name not in args.sections:
            continue
        ds = rf.open_dataset(work / name)
        for f in ds.files:
            warm_page_cache(f)
        digest = Digest()
        for b in ds.batches(batch):
            digest.records += len(b["label" if name == "images" else "i0"])
            for k, v in b.items():
                digest.add(k, v)

        def run(ds: Any = ds, batch: int = batch) -> None:
            for _ in ds.batches(batch):
                pass

        first = Digest()  # of the shards the tfrecord peer reads
        for b in rf.open_dataset(ds.files[: args.tfrecord_files]).batches(batch):
            first.records += len(b["label" if name == "images" else "i0"])
            for k, v in b.items():
                first.add(k, v)
        out[name] = {
            **timed(run, args.rounds, 60),
            "records": len(ds),
            "bytes": nbytes(ds.files),
            "digest": digest.result(),
            "digest_first": first.result(),
        }
        print(f"[rf] {name}: {len(ds) / out[name]['best_s']:,.0f} rec/s", flush=True)

    if "random" not in args.sections:
        return out
    ds = rf.open_dataset(work / "random")
    (path,) = ds.files
    warm_page_cache(path)
    indices = np.load(work / "indices.npy")
    wanted = ["i0", "text", "f00"]
    taken = ds.take(indices)
    single = [ds[int(i)] for i in indices[:50]]
    assert all(int(r["i0"]) == int(v) for r, v in zip(single, taken["i0"], strict=False))
    out["random"] = {
        "values": {k: _listed(taken[k]) for k in wanted},
        "take": {**timed_short(lambda: ds.take(indices), args.rounds), "records": len(indices)},
        "single": {
            **timed_short(lambda: [ds[i] for i in indices.tolist()], args.rounds),
            "records": len(indices),
        },
    }
    for k in ("take", "single"):
        rate = len(indices) / out["random"][k]["best_s"]
        print(f"[rf] random {k}: {rate:,.0f} rec/s", flush=True)

    # Plain Python: seek + read through the same .idx (raw bytes: no CRC, no decoding).
    text = Path(path + ".idx").read_text().split()
    offsets, sizes = np.array(text[0::2], np.int64), np.array(text[1::2], np.int64)

    def python_read() -> list[bytes]:
        got = []
        with open(path, "rb") as f:
            for i in indices.tolist():
                f.seek(int(offsets[i]) + 12)
                got.append(f.read(int(sizes[i]) - 16))
        return got

    raw = python_read()
    decoded = [rf.decode_example(r) for r in raw]
    out["python"] = {
        "values": {
            "i0": [int(d["i0"][0]) for d in decoded],
            "text": [d["text"][0].decode() for d in decoded],
            "f00": [float(d["f00"][0]) for d in decoded],
        },
        "random": {**timed_short(python_read, args.rounds), "records": len(indices)},
    }
    return out


def _listed(values: Any) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(values).tolist()]


def peer_tf(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    out: dict[str, Any] = {"version": tf.__version__}
    table = {f"f{i:02d}": tf.io.FixedLenFeature([], tf.float32) for i in range(FLOATS)}
    table.update({f"i{i}": tf.io.FixedLenFeature([], tf.int64) for i in range(INTS)})
    table["text"] = tf.io.FixedLenFeature([], tf.string)
    images = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    auto = tf.data.AUTOTUNE
    for name, batch, description in (
        ("table", args.batch, table),
        ("images", args.image_batch, images),
    ):
        if name not in args.sections:
            continue
        files = table_files(work, name)
        for f in files:
            warm_page_cache(f)

        def dataset(files: list[str] = files, batch: int = batch, d: Any = description) -> Any:
            return (
                tf.data.TFRecordDataset(files, num_parallel_reads=auto)
                .batch(batch)
                .map(lambda x, d=d: tf.io.parse_example(x, d), num_parallel_calls=auto)
                .prefetch(auto)
            )

        digest = Digest()
        for b in dataset().as_numpy_iterator():
            digest.records += len(b["label" if name == "images" else "i0"])
            for k, v in b.items():
                digest.add(k, v)

        def run(dataset: Callable[[], Any] = dataset) -> None:
            for _ in dataset().as_numpy_iterator():
                pass

        out[name] = {
            **timed(run, args.rounds, 90),
            "records": digest.records,
            "bytes": nbytes(files),
            "digest": digest.result(),
        }
        print(f"[tf] {name}: {digest.records / out[name]['best_s']:,.0f} rec/s", flush=True)
    return out


def peer_tfrecord(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from importlib.metadata import version

    from tfrecord.reader import tfrecord_loader

    out: dict[str, Any] = {"version": version("tfrecord")}
    table: dict[str, str] = {f"f{i:02d}": "float" for i in range(FLOATS)}
    table.update({f"i{i}": "int" for i in range(INTS)})
    table["text"] = "byte"
    images = {"image/encoded": "byte", "label": "int"}
    for name, description in (("table", table), ("images", images)):
        if name not in args.sections:
            continue
        files = table_files(work, name)[: args.tfrecord_files]
        for f in files:
            warm_page_cache(f)
        digest = Digest()
        for f in files:
            for row in tfrecord_loader(f, None, description):
                digest.records += 1
                for k, v in row.items():
                    digest.add(k, v if k in ("text", "image/encoded") else np.asarray(v))

        def run(files: list[str] = files, d: dict[str, str] = description) -> None:
            for f in files:
                for _ in tfrecord_loader(f, None, d):
                    pass

        out[name] = {
            **timed(run, args.rounds, 90),
            "records": digest.records,
            "bytes": nbytes(files),
            "digest": digest.result(),
        }
        rate = digest.records / out[name]["best_s"]
        print(f"[tfrecord] {name}: {rate:,.0f} rec/s ({len(files)} files)", flush=True)
    return out


def peer_tfd(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from importlib.metadata import version

    from tfd_utils import TFRecordRandomAccess

    (path,) = table_files(work, "random")
    warm_page_cache(path)
    reader = TFRecordRandomAccess(path, key_feature_name="key")  # builds its index (untimed)
    keys = [f"{i:08d}" for i in np.load(work / "indices.npy").tolist()]

    def run() -> list[Any]:
        return [reader.get_record(k) for k in keys]

    records = run()

    def value(r: Any, name: str) -> Any:
        f = r.features.feature[name]
        return f.int64_list.value[0] if name == "i0" else f.float_list.value[0]

    return {
        "version": version("tfd-utils"),
        "values": {
            "i0": [int(value(r, "i0")) for r in records],
            "text": [r.features.feature["text"].bytes_list.value[0].decode() for r in records],
            "f00": [float(value(r, "f00")) for r in records],
        },
        "random": {**timed_short(run, args.rounds), "records": len(keys)},
    }


PEERS = {"rf": peer_rf, "tf": peer_tf, "tfrecord": peer_tfrecord, "tfd": peer_tfd}


# ---------------------------------------------------------------------------------------
# Driver


def run_peer(name: str, args: argparse.Namespace, work: Path, python: str) -> dict[str, Any]:
    cmd = [python, __file__, "--peer", name, "--work", str(work)]
    for flag in ("rounds", "batch", "image_batch", "tfrecord_files"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--sections", ",".join(args.sections)]
    print(f"-- {name}", flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, cwd=HERE)
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def tfd_python(args: argparse.Namespace) -> str | None:
    for python in [args.tfd_python, sys.executable]:
        if python is None:
            continue
        if os.sep in python:  # a path: the peers run from benchmarks/, so make it absolute
            python = os.path.abspath(python)
        if shutil.which(python) is None:
            print(f"bench_read: --tfd-python {python}: no such interpreter", file=sys.stderr)
            continue
        probe = subprocess.run([python, "-c", "import tfd_utils"], capture_output=True, check=False)
        if probe.returncode == 0:
            return str(python)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="table records")
    ap.add_argument("--images", type=int, default=4000, help="~100 KB image records")
    ap.add_argument("--random", type=int, default=200_000, help="records of the random file")
    ap.add_argument("--samples", type=int, default=5000, help="random records read")
    ap.add_argument("--batch", type=int, default=1024, help="table batch size")
    ap.add_argument("--image-batch", type=int, default=64, help="image batch size")
    ap.add_argument("--tfrecord-files", type=int, default=1, help="shards the tfrecord peer reads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sections", default="table,images,random", help="a subset of these")
    ap.add_argument("--tfd-python", help="a Python that can import tfd_utils")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-data", type=Path, help="make (or reuse) the data here, keep it")
    ap.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.sections = [x for x in args.sections.split(",") if x]
    if args.peer:
        print(json.dumps(PEERS[args.peer](args, args.work)))
        return
    work = args.keep_data or Path(tempfile.mkdtemp(prefix="rf-bench-read-"))
    try:
        if not (work / "indices.npy").exists():
            work.mkdir(parents=True, exist_ok=True)
            make_data(args, work)
        results: dict[str, Any] = {"cpus": os.cpu_count(), "args": vars(args) | {"json": None}}
        results["args"]["keep_data"] = None
        columns = {"table", "images"} & set(args.sections)
        for name in ("rf", "tf", "tfrecord") if columns else ("rf",):
            results[name] = run_peer(name, args, work, sys.executable)
        python = tfd_python(args)
        if "random" not in args.sections:
            results["tfd"] = {"error": "not run"}
        elif python:
            results["tfd"] = run_peer("tfd", args, work, python)
        else:
            results["tfd"] = {"error": "tfd_utils is not importable (pass --tfd-python)"}
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    finally:
        if args.keep_data is None:
            shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> None:
    ours = r["rf"]
    print(f"\n{r['cpus']} CPUs; best of {r['args']['rounds']}; recordforge checks every CRC\n")
    if {"table", "images"} & set(ours):
        print("| read into columns | reader | records/s | MB/s | recordforge is | digest |")
        print("|---|---|---|---|---|---|")
    for name, title in (("table", "21-feature table"), ("images", "~100 KB images")):
        if name not in ours:
            continue
        mine = ours[name]["records"] / ours[name]["best_s"]
        rows = [("recordforge `ds.batches`", ours[name], None)]
        rows += [("TensorFlow tf.data", r["tf"].get(name), 3.0)]
        rows += [("`tfrecord` loader", r["tfrecord"].get(name), None)]
        for label, res, target in rows:
            if res is None:
                print(f"| {title} | {label} | — | — | — | {r['tf'].get('error', 'failed')} |")
                continue
            rate = res["records"] / res["best_s"]
            ratio = "" if res is ours[name] else f"{mine / rate:.1f}x"
            if target is not None:
                ratio += f" (>= {target:.0f}x: {'PASS' if mine / rate >= target else 'MISS'})"
            key = "digest_first" if res is r["tfrecord"].get(name) else "digest"
            same = "same" if ours[name][key] == res["digest"] else "DIFFERENT"
            print(
                f"| {title} | {label} | {rate:,.0f} | {res['bytes'] / res['best_s'] / 1e6:,.0f} "
                f"| {ratio} | {same} |"
            )
    if "random" not in ours:
        return
    random = ours["random"]
    n = random["take"]["records"]
    rounds = 5 * r["args"]["rounds"]
    print(
        f"\n| random access ({n:,} of {r['args']['random']:,}; best of {rounds} samples "
        "of >= 0.2 s) | records/s | vs ours | values |"
    )
    print("|---|---|---|---|")
    take = n / random["take"]["best_s"]
    rows = [
        ("recordforge `ds.take(indices)` (CRC)", random["take"], random["values"]),
        ("recordforge `ds[i]` loop (CRC)", random["single"], random["values"]),
        (
            "Python seek + read via .idx (raw bytes, no CRC)",
            ours["python"]["random"],
            ours["python"]["values"],
        ),
    ]
    tfd = r["tfd"]
    if "random" in tfd:
        rows.append(("tfd-utils `get_record` (parsed, no CRC)", tfd["random"], tfd["values"]))
    for label, res, values in rows:
        rate = n / res["best_s"]
        same = "same" if values == random["values"] else "DIFFERENT"
        print(f"| {label} | {rate:,.0f} | take is {take / rate:.1f}x | {same} |")
    if "random" in tfd:
        rate = n / tfd["random"]["best_s"]
        ok = take >= 334_000 and take >= 2 * rate
        print(f"\ntarget take >= 334k rec/s and >= 2x tfd-utils: {'PASS' if ok else 'MISS'}")
    else:
        print(
            f"\ntfd-utils: {tfd.get('error')}; target take >= 334k rec/s: "
            f"{'PASS' if take >= 334_000 else 'MISS'}"
        )


if __name__ == "__main__":
    main()

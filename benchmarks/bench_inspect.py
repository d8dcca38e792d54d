"""recordforge inspect benchmark: ``count`` and ``verify`` throughput on a >= 2 GB dataset,
against TensorFlow (``sum(1 for _ in tf.data.TFRecordDataset(files))``) and against the
machine's sequential read rate (the same files read with 8 MB ``readinto`` calls).

    python benchmarks/bench_inspect.py [--gb 2.0] [--rounds 3] [--json out.json] [--keep-data]

The dataset — Examples with a 50-400 KB random ``image`` bytes feature, an int64 label and
an id, written by ``rf.write_dataset`` in 256 MB shards with ``dataset.json`` — is
generated into a temporary directory (never the working directory) and deleted at the
end. Every figure is the best of ``--rounds`` passes over files that are in the page
cache (the first pass warms it), so the sequential read rate is a memory-bandwidth
figure, and the comparison is about CPU work per byte, not about the disk. TensorFlow
runs in its own process (its import is not timed) and, being slow, gets fewer rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import recordforge as rf
from recordforge import inspect

TF_SCRIPT = """
import json, sys, time
import tensorflow as tf
files, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
best, n = float("inf"), 0
for _ in range(rounds):
    t = time.perf_counter()
    n = sum(1 for _ in tf.data.TFRecordDataset(files))
    best = min(best, time.perf_counter() - t)
print(json.dumps({"seconds": best, "records": n}))
"""


def generate(out: Path, gigabytes: float, seed: int = 0) -> rf.Manifest:
    rng = np.random.default_rng(seed)
    pool = rng.bytes(64 << 20)  # record payloads are windows of this random pool
    target = int(gigabytes * 1e9)

    def rows() -> Any:
        written = i = 0
        while written < target:
            size = int(rng.integers(50_000, 400_000))
            start = int(rng.integers(0, len(pool) - size))
            written += size + 40
            yield {"image": pool[start : start + size], "label": i % 10, "id": i}
            i += 1

    return rf.write_dataset(rows(), out, max_bytes="256MB")


def sequential_read(files: list[Path]) -> int:
    buf = bytearray(8 << 20)
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def best_of(rounds: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gb", type=float, default=2.0, help="dataset size in GB (default 2.0)")
    ap.add_argument("--rounds", type=int, default=3, help="passes per measurement (best kept)")
    ap.add_argument("--tf-rounds", type=int, default=2, help="passes for TensorFlow")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated dataset")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="recordforge-bench-inspect-"))
    try:
        t = time.perf_counter()
        manifest = generate(tmp / "dataset", args.gb)
        files = [tmp / "dataset" / s.file for s in manifest.splits["train"]]
        size = sum(p.stat().st_size for p in files)
        records = manifest.records()
        print(
            f"dataset: {records:,} records, {len(files)} shards, {size / 1e9:.2f} GB "
            f"(generated in {time.perf_counter() - t:.0f} s) in {tmp}",
            flush=True,
        )
        sequential_read(files)  # warm the page cache
        results: dict[str, dict[str, Any]] = {}

        def run(name: str, fn: Callable[[], Any], check: Callable[[Any], bool]) -> None:
            seconds, result = best_of(args.rounds, fn)
            assert check(result), (name, result)
            results[name] = {"seconds": seconds, "gb_per_s": size / seconds / 1e9}
            print(f"  {name:<34} {size / seconds / 1e9:6.2f} GB/s  ({seconds:.2f} s)", flush=True)

        paths = [str(p) for p in files]
        run("sequential read (8 MB readinto)", lambda: sequential_read(files), lambda n: n == size)
        run(
            "count (framing scan)",
            lambda: inspect.count(paths, scan=True),
            lambda r: r.ok and r.records == records,
        )
        run(
            "count --verify (framing + CRCs)",
            lambda: inspect.count(paths, verify=True),
            lambda r: r.ok and r.records == records,
        )
        run(
            "verify --no-checksums",
            lambda: inspect.verify(tmp / "dataset", checksums=False),
            lambda r: r.ok and r.records == records,
        )
        run(
            "verify (all, CRC32C checksums)",
            lambda: inspect.verify(tmp / "dataset"),
            lambda r: r.ok and r.records == records,
        )
        done = subprocess.run(
            [sys.executable, "-c", TF_SCRIPT, json.dumps(paths), str(args.tf_rounds)],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if done.returncode == 0:
            tf_result = json.loads(done.stdout.strip().splitlines()[-1])
            assert tf_result["records"] == records, tf_result
            results["tensorflow"] = {
                "seconds": tf_result["seconds"],
                "gb_per_s": size / tf_result["seconds"] / 1e9,
            }
            print(
                f"  {'TensorFlow sum(1 for _ in ds)':<34} "
                f"{results['tensorflow']['gb_per_s']:6.2f} GB/s  ({tf_result['seconds']:.2f} s)"
            )
        else:
            print(f"TensorFlow run failed:\n{done.stderr[-2000:]}")
        report(results)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                        "dataset": {"bytes": size, "records": records, "shards": len(files)},
                        "results": results,
                    },
                    indent=2,
                )
            )
    finally:
        if args.keep_data:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict[str, dict[str, Any]]) -> None:
    seq = results["sequential read (8 MB readinto)"]["gb_per_s"]
    tf = results.get("tensorflow", {}).get("gb_per_s")
    print("\ntargets: >= 5x TensorFlow, within 2x of the sequential read rate")
    for name in (
        "count (framing scan)",
        "count --verify (framing + CRCs)",
        "verify --no-checksums",
        "verify (all, CRC32C checksums)",
    ):
        rate = results[name]["gb_per_s"]
        vs_tf = f"{rate / tf:5.1f}x TF {'ok ' if rate >= 5 * tf else 'MISS'}" if tf else "no TF"
        vs_seq = f"{rate / seq:5.2f}x seq. read {'ok' if rate >= seq / 2 else 'MISS'}"
        print(f"  {name:<34} {rate:6.2f} GB/s  {vs_tf}  {vs_seq}")


if __name__ == "__main__":
    main()

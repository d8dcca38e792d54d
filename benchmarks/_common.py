"""Shared helpers for the benchmark driver and its peer processes.

Imports only the standard library and NumPy, so that every peer process (recordforge,
TensorFlow, the PyPI ``tfrecord`` package) loads exactly the same harness code and
nothing else of the others.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------
# Data set layout (written once by bench_core.py into a temporary directory)

SMALL = "small"  # many ~200 B records (random bytes)
LARGE = "large"  # 100 KB - 1 MB records (random bytes)
MEDIUM = "medium"  # ~64 KB records of concatenated serialized Examples (compressible): GZIP
EXAMPLES = "examples"  # serialized 21-feature tf.train.Example rows


def blob_paths(data_dir: Path, name: str) -> tuple[Path, Path]:
    return data_dir / f"{name}.bin", data_dir / f"{name}.lens.npy"


def save_payloads(data_dir: Path, name: str, payloads: list[bytes]) -> None:
    blob, lens = blob_paths(data_dir, name)
    blob.write_bytes(b"".join(payloads))
    np.save(lens, np.array([len(p) for p in payloads], dtype=np.int64))


def load_payloads(data_dir: Path, name: str) -> list[bytes]:
    """The records of data set ``name`` as a list of ``bytes`` (same bytes in every peer)."""
    blob, lens = blob_paths(data_dir, name)
    data = blob.read_bytes()
    ends = np.cumsum(np.load(lens)).tolist()
    out, start = [], 0
    for end in ends:
        out.append(data[start:end])
        start = end
    return out


def load_rows(data_dir: Path) -> list[dict[str, Any]]:
    with open(data_dir / "rows.pkl", "rb") as f:
        rows: list[dict[str, Any]] = pickle.load(f)
    return rows


def load_manifest(data_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((data_dir / "manifest.json").read_text())
    return manifest


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def warm_page_cache(path: str | os.PathLike[str]) -> None:
    """Reads the whole file once so the timed reads find it in the page cache."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 22)
        while f.readinto(buf):
            pass


# ---------------------------------------------------------------------------------------
# Timing


def measure(
    fn: Callable[[], Any],
    *,
    reps: int,
    min_time: float,
    max_total: float,
    warmup: Callable[[], Any] | None = None,
    setup: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Best-of-``reps`` wall time of one call of ``fn``, with ``time.perf_counter``.

    A warm-up call (``warmup`` if given, else ``fn``) runs first and is not counted. One
    sample is ``inner`` back-to-back calls, ``inner`` chosen so that a sample lasts at
    least ``min_time``; the number of samples is cut (to at least 1) so that the timed
    part stays under about ``max_total`` seconds. ``setup`` runs, untimed, before every
    sample. The garbage collector is disabled while timing (as ``timeit`` does). The
    process CPU time of each sample is recorded too (``best_cpu_s``).
    """
    if setup is not None:
        setup()
    (warmup or fn)()
    if setup is not None:
        setup()
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        inner = max(1, math.ceil(min_time / max(first, 1e-9)))
        per_sample = first * inner
        n = max(1, min(reps, int(max_total / max(per_sample, 1e-9))))
        samples, cpu = [first], [first_cpu]
        for _ in range(n):
            if setup is not None:
                gc.enable()
                setup()
                gc.collect()
                gc.disable()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
            cpu.append((time.process_time() - c0) / inner)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        "best_s": min(samples),
        "median_s": float(np.median(samples)),
        "samples": len(samples),
        "inner": inner,
        "all_s": [float(f"{s:.6g}") for s in samples],
        # CPU time of the whole process (all its threads) for the same calls: a cross-check
        # when other load on the machine stretches the wall-clock figures.
        "best_cpu_s": min(cpu),
    }


class FreshPaths:
    """Hands out a new file name for every timed write, and deletes the old ones (untimed).

    Rewriting one file in place would make ext4 (``auto_da_alloc``) start writeback on
    close for a truncated-and-rewritten file, charging disk I/O to whichever writer ran
    second; fresh names keep every writer on the same footing: bytes into the page cache.
    """

    def __init__(self, directory: Path, stem: str, suffix: str = ".tfrecord") -> None:
        self.directory = directory
        self.stem = stem
        self.suffix = suffix
        self.count = 0
        self.made: list[Path] = []

    def next(self) -> str:
        self.count += 1
        p = self.directory / f"{self.stem}-{self.count}{self.suffix}"
        self.made.append(p)
        return str(p)

    def last(self) -> Path:
        return self.made[-1]

    def cleanup(self, keep_last: bool = False) -> None:
        keep = self.made[-1:] if keep_last else []
        for p in self.made:
            if p not in keep:
                p.unlink(missing_ok=True)
        self.made = list(keep)


# ---------------------------------------------------------------------------------------
# Peer process plumbing


SECTIONS = ("write", "read", "codec", "gzip")


def peer_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, type=Path, help="data directory made by bench_core.py")
    ap.add_argument("--out", required=True, type=Path, help="where to write the JSON results")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated subset of: " + ",".join(SECTIONS),
    )
    args = ap.parse_args()
    args.sections = [x for x in args.sections.split(",") if x]
    for x in args.sections:
        if x not in SECTIONS:
            ap.error(f"unknown section {x!r}")
    return args


class Results:
    """Collects one peer's measurements and checks, and writes them as JSON."""

    def __init__(self, peer: str, version: str, manifest: dict[str, Any]) -> None:
        self.peer = peer
        self.version = version
        self.manifest = manifest
        self.results: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, Any] = {}
        self.notes: dict[str, str] = {}

    def timing_kwargs(self, slow: bool = False) -> dict[str, Any]:
        t = self.manifest["timing"]
        return {
            "reps": t["reps"],
            "min_time": t["min_time"],
            "max_total": t["max_total_slow"] if slow else t["max_total"],
        }

    def add(self, key: str, timing: dict[str, Any], **work: Any) -> None:
        self.results[key] = {**timing, **work}
        best = timing["best_s"]
        rate = []
        if "bytes" in work:
            rate.append(f"{work['bytes'] / best / 1e9:.3f} GB/s")
        if "records" in work:
            rate.append(f"{work['records'] / best:,.0f} rec/s")
        if "rows" in work:
            rate.append(f"{work['rows'] / best:,.0f} rows/s")
        print(
            f"[{self.peer}] {key}: {', '.join(rate)} ({timing['samples']}x{timing['inner']})",
            flush=True,
        )

    def write(self, out: Path) -> None:
        out.write_text(
            json.dumps(
                {
                    "peer": self.peer,
                    "version": self.version,
                    "results": self.results,
                    "checks": self.checks,
                    "notes": self.notes,
                },
                indent=1,
            )
        )


def protobuf_version() -> str:
    """The protobuf runtime the peer's Example classes use (its speed depends on it)."""
    from importlib.metadata import version

    from google.protobuf.internal import api_implementation

    return f"protobuf {version('protobuf')} ({api_implementation.Type()})"


def rows_digest(decoded: list[dict[str, Any]]) -> str:
    """A digest of decoded rows that is the same whoever decoded them.

    Each value is normalised: numbers to float32 / int64 arrays, strings to bytes; keys
    are sorted, so map order (which protobuf does not fix) does not matter.
    """
    h = hashlib.sha256()
    for row in decoded:
        for k in sorted(row):
            v = row[k]
            h.update(k.encode())
            if isinstance(v, np.ndarray) and v.dtype.kind in "fi":
                h.update(v.dtype.kind.encode())
                h.update(v.astype(np.float32 if v.dtype.kind == "f" else np.int64).tobytes())
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], (bytes, str)):
                h.update(b"s")
                for s in v:
                    h.update(s if isinstance(s, bytes) else s.encode())
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], float):
                h.update(b"f")
                h.update(np.asarray(v, np.float32).tobytes())
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], int):
                h.update(b"i")
                h.update(np.asarray(v, np.int64).tobytes())
            elif isinstance(v, (bytes, str)):
                h.update(b"s")
                h.update(v if isinstance(v, bytes) else v.encode())
            elif isinstance(v, float):
                h.update(b"f")
                h.update(np.float32(v).tobytes())
            elif isinstance(v, int):
                h.update(b"i")
                h.update(np.int64(v).tobytes())
            else:
                h.update(repr(v).encode())
    return h.hexdigest()


def precompile(env: dict[str, str]) -> None:
    """``compileall`` over the recordforge package that ``env`` imports, so that a fresh
    process of it starts as an installed package does (pip writes the ``.pyc`` files).
    Without it, ``PYTHONDONTWRITEBYTECODE`` (set on the development VM) makes every
    process of an editable install compile each module again: ~70 ms of start-up."""
    import subprocess
    import sys

    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import recordforge, os; print(os.path.dirname(recordforge.__file__))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], env=env, check=True)

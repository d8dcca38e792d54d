"""recordforge side of bench_core.py; run in its own process, like the other peers.

python benchmarks/_peer_rf.py --data DIR --out results.json
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    rows_digest,
    sha256_file,
    warm_page_cache,
)

import recordforge as rf


def bench_write(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """1. Framing write: write() per record, and write_many(list)."""
    for name in (SMALL, LARGE):
        recs = load_payloads(data, name)
        work = {"bytes": sum(map(len, recs)), "records": len(recs)}
        paths = FreshPaths(out_dir, f"write-{name}")

        def write_loop(recs: list[bytes] = recs, paths: FreshPaths = paths) -> None:
            with rf.TFRecordWriter(paths.next()) as w:
                write = w.write
                for r in recs:
                    write(r)

        def write_many(recs: list[bytes] = recs, paths: FreshPaths = paths) -> None:
            with rf.TFRecordWriter(paths.next()) as w:
                w.write_many(recs)

        R.add(f"write_{name}", measure(write_loop, setup=paths.cleanup, **T), **work)
        R.checks[f"write_{name}_sha256"] = sha256_file(paths.last())
        R.add(f"write_{name}_many", measure(write_many, setup=paths.cleanup, **T), **work)
        R.checks[f"write_{name}_many_sha256"] = sha256_file(paths.last())
        paths.cleanup()


def bench_read(R: Results, data: Path, T: dict[str, Any]) -> None:
    """2. Framing read with both CRCs checked (plus informative variants)."""
    for name in (SMALL, LARGE):
        path = str(data / f"{name}.tfrecord")
        warm_page_cache(path)
        n = nbytes = 0
        for rec in rf.read_records(path, verify=True):
            n += 1
            nbytes += len(rec)
        R.checks[f"read_{name}"] = [n, nbytes]
        work = {"bytes": nbytes, "records": n}

        def read(path: str = path) -> None:
            for _ in rf.read_records(path, verify=True):
                pass

        def read_noverify(path: str = path) -> None:
            for _ in rf.read_records(path, verify=False):
                pass

        R.add(f"read_{name}", measure(read, **T), **work)
        R.add(f"read_{name}_noverify", measure(read_noverify, **T), **work)

        # Informative: framing + CRC checks alone, no records handed to Python (the
        # ceiling for read_records), on one thread and on every core.
        if hasattr(rf, "scan_records"):
            for threads in (1, 0):

                def scan(path: str = path, threads: int = threads) -> None:
                    rf.scan_records(path, verify=True, threads=threads)

                R.add(f"scan_{name}_t{threads}", measure(scan, **T), **work)


def bench_codec(R: Results, data: Path, T: dict[str, Any]) -> None:
    """3./4. Example decode (bytes -> dict of arrays) and encode (dict -> bytes)."""
    examples = load_payloads(data, EXAMPLES)
    decode = rf.decode_example

    def decode_all() -> None:
        for b in examples:
            decode(b)

    R.add("decode", measure(decode_all, **T), rows=len(examples))
    R.checks["decode_digest"] = rows_digest([decode(b) for b in examples])

    rows = load_rows(data)
    encode = rf.encode_example

    def encode_all() -> None:
        for row in rows:
            encode(row)

    R.add("encode", measure(encode_all, **T), rows=len(rows))
    R.checks["encode_matches_input_file"] = [encode(r) for r in rows] == examples


def bench_gzip(R: Results, data: Path, out_dir: Path, T: dict[str, Any]) -> None:
    """5. GZIP write and read (informative)."""
    recs = load_payloads(data, MEDIUM)
    work = {"bytes": sum(map(len, recs)), "records": len(recs)}
    paths = FreshPaths(out_dir, "write-gzip", ".tfrecord.gz")

    def gzip_write() -> None:
        with rf.TFRecordWriter(paths.next(), compression="gzip") as w:
            write = w.write
            for r in recs:
                write(r)

    R.add("gzip_write", measure(gzip_write, setup=paths.cleanup, **T), **work)
    R.checks["gzip_write_sha256"] = sha256_file(paths.last())
    R.checks["gzip_write_size"] = os.path.getsize(paths.last())
    paths.cleanup()

    gz = str(data / f"{MEDIUM}.tfrecord.gz")
    warm_page_cache(gz)
    got = list(rf.read_records(gz, compression="gzip"))
    R.checks["gzip_read"] = [len(got), sum(map(len, got))]
    del got

    def gzip_read() -> None:
        for _ in rf.read_records(gz, compression="gzip"):
            pass

    R.add("gzip_read", measure(gzip_read, **T), **work)


def main() -> None:
    args = peer_args(__doc__ or "")
    data: Path = args.data
    R = Results("recordforge", rf.__version__, load_manifest(data))
    out_dir = data / "out-rf"
    out_dir.mkdir(exist_ok=True)
    T = R.timing_kwargs()
    if "write" in args.sections:
        bench_write(R, data, out_dir, T)
    if "read" in args.sections:
        bench_read(R, data, T)
    if "codec" in args.sections:
        bench_codec(R, data, T)
    if "gzip" in args.sections:
        bench_gzip(R, data, out_dir, T)
    R.write(args.out)


if __name__ == "__main__":
    main()

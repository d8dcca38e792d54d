"""Reading a dataset from S3 against reading it from local disk: a moto S3 server on
loopback (offline), the same dataset written locally and to ``s3://``.

    python benchmarks/bench_remote.py [--records 40000] [--payload 2500] [--rounds 3]
                                      [--json out.json]

Workloads, each in a fresh process per run, local and remote side by side in
alternating rounds:

- ``batches``: one pass of ``open_dataset(...).batches(256)`` over every record (records/s,
  MB/s);
- ``getitem``: 300 ``ds[i]`` at random indexes after one warm-up call (µs per call; the
  first call reads the ``.idx`` files);
- ``write``: ``write_dataset`` of the same columns to a fresh directory or prefix;
- ``wire-read`` and ``wire-write``: the store's own ceiling, the same bytes moved with no
  encoding or decoding (the shards read by 8 MiB ranged GETs; 16 MB objects uploaded, as
  many at once as the writer uploads shards). ``batches`` and ``write`` on s3 are
  reported against them as well as against local disk: moto on loopback serves ~100 MB/s
  on this machine, so the ratio to the ceiling is recordforge's own share of a remote
  read or write.

Per run: wall time, CPU time of the process (user + sys; the moto server runs in this
benchmark's own process and is not counted), peak RSS (VmHWM) and the bytes left in a
fresh ``TMPDIR`` given to the run, at its peak (sampled every 10 ms: local disk used for
staging; none is the goal).
Loopback S3 measures recordforge's own cost of a remote read (requests, copies, CRCs),
not a real network.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

BUCKET = "bench-remote"
# Reads, random access and writes; then the store's ceilings: the same bytes moved by
# plain ranged GETs (wire-read) and uploads (wire-write), nothing encoded or decoded.
KINDS = ("batches", "getitem", "write", "wire-read", "wire-write")

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    import numpy as np
    import recordforge as rf

    kind, where, out = sys.argv[1], sys.argv[2], sys.argv[3]

    def hwm():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    def columns(n, payload):
        rng = np.random.default_rng(0)
        blob = np.array([rng.bytes(payload) for _ in range(n)], dtype=object)
        return {"id": np.arange(n), "blob": blob}

    if where.startswith("s3://") or out.startswith("s3://"):
        # The S3 client made and one request answered before the clock starts (botocore
        # loads its models, ~0.4 s of CPU, once per process): a per-record figure here is
        # what a long training or conversion job pays, not its start.
        import fsspec
        remote = where if where.startswith("s3://") else out
        fsspec.filesystem("s3").ls(remote.split("/")[2])
    c0, t0 = time.process_time(), time.perf_counter()
    result = {}
    if kind == "batches":
        ds = rf.open_dataset(where)
        n = nbytes = 0
        for batch in ds.batches(256):
            n += len(batch["id"])
            nbytes += sum(len(b) for b in batch["blob"])
        result.update(records=n, payload_mb=nbytes / 1e6)
    elif kind == "getitem":
        ds = rf.open_dataset(where)
        ds[0]
        picks = np.random.default_rng(1).integers(0, len(ds), 300).tolist()
        c0, t0 = time.process_time(), time.perf_counter()
        for i in picks:
            ds[i]
        result.update(calls=len(picks))
    elif kind == "wire-read":  # the store's ceiling: the shards' bytes, 8 MiB GETs, no decoding
        import fsspec
        fs, root = fsspec.core.url_to_fs(where)
        n = 0
        for name in sorted(p for p in fs.ls(root, detail=False) if p.endswith(".tfrecord")):
            size = fs.size(name)
            for start in range(0, size, 8 << 20):
                n += len(fs.cat_file(name, start=start, end=min(size, start + (8 << 20))))
        result.update(records=int(sys.argv[4]), bytes=n)
    elif kind == "wire-write":  # the store's ceiling: the same bytes put as 16 MB objects,
        import concurrent.futures  # as many at once as the writer uploads
        import fsspec
        from recordforge._shardwriter import UPLOADS
        n = int(sys.argv[4])
        blob = np.random.default_rng(0).bytes(16_000_000)
        total = n * (int(sys.argv[5]) + 40)  # about the shards' bytes
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)

        def put(k):
            with fs.open(f"{root}/part-{k}", "wb", block_size=16 << 20) as f:
                f.write(blob[: min(len(blob), total - k)])

        c0, t0 = time.process_time(), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
            list(pool.map(put, range(0, total, len(blob))))
        result.update(records=n)
    else:
        n, payload = int(sys.argv[4]), int(sys.argv[5])
        data = columns(n, payload)
        c0, t0 = time.process_time(), time.perf_counter()
        rf.write_dataset(data, out, max_bytes="16MB", index=True)
        result.update(records=n)
    result.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, rss_mb=hwm())
    print(json.dumps(result))
    """
)


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while counted
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def run(kind: str, where: str, out: str, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-remote-tmp-"))
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, where, out, *extra],
            env={**env, "TMPDIR": str(scratch)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = [0]
        stop = threading.Event()

        def watch() -> None:  # the run's peak use of TMPDIR, sampled every 10 ms
            while not stop.wait(0.01):
                peak[0] = max(peak[0], tree_bytes(scratch))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stdout, stderr = child.communicate(timeout=900)
        stop.set()
        watcher.join()
        if child.returncode != 0:
            return {"failed": child.returncode, "stderr": stderr[-2000:]}
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        result["tmp_bytes"] = max(peak[0], tree_bytes(scratch))
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--payload", type=int, default=2_500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    env.pop("AWS_PROFILE", None)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    os.environ["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"]
    import s3fs

    fs = s3fs.S3FileSystem(anon=False)
    fs.mkdir(BUCKET)
    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    extra = [str(args.records), str(args.payload)]
    places = {"local": str(work / "data"), "s3": f"s3://{BUCKET}/data"}
    try:
        for where in places.values():  # the dataset read by the read workloads
            made = run("write", where, where, env, extra)
            assert "failed" not in made, made
        size_mb = tree_bytes(work / "data") / 1e6
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            order = ["local", "s3"] if r % 2 == 0 else ["s3", "local"]
            for kind in KINDS:
                for place in order:
                    where = places[place]
                    out = (
                        str(work / f"w{r}")
                        if place == "local"
                        else f"s3://{BUCKET}/w{r}-{time.monotonic_ns()}"
                    )
                    result = run(kind, where, out, env, extra)
                    samples.setdefault((kind, place), []).append(result)
                    shown = {
                        k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()
                    }
                    print(f"round {r + 1} {kind:8s} {place:5s} {shown}", flush=True)
                    if place == "local":
                        shutil.rmtree(work / f"w{r}", ignore_errors=True)
        print()
        print(
            f"{args.records:,} records of {args.payload:,} bytes ({size_mb:,.0f} MB in shards of "
            f"16 MB, with .idx); moto S3 on loopback; {args.rounds} alternating rounds, "
            "medians; CPU of the client process only, its S3 client made before the clock starts."
        )
        print()
        print("| workload | where | wall s | CPU s | per item | peak RSS MB | TMPDIR bytes |")
        print("|---|---|--:|--:|--:|--:|--:|")
        table: dict[str, Any] = {}
        for kind in KINDS:
            for place in ("local", "s3"):
                ok = [s for s in samples[(kind, place)] if "wall_s" in s]
                if not ok:
                    print(f"| {kind} | {place} | failed | | | | |")
                    continue
                wall = statistics.median(s["wall_s"] for s in ok)
                cpu = statistics.median(s["cpu_s"] for s in ok)
                items = ok[0].get("records") or ok[0].get("calls")
                per = f"{1e6 * wall / items:,.1f} µs wall, {1e6 * cpu / items:,.1f} µs CPU"
                rss = max(s["rss_mb"] for s in ok)
                tmp = max(s["tmp_bytes"] for s in ok)
                table[f"{kind}/{place}"] = {"wall_s": wall, "cpu_s": cpu, "rss_mb": rss, "tmp": tmp}
                print(f"| {kind} | {place} | {wall:.3f} | {cpu:.3f} | {per} | {rss:.0f} | {tmp} |")
        for kind in ("batches", "getitem", "write"):
            a, b = table.get(f"{kind}/local"), table.get(f"{kind}/s3")
            if a and b:
                print(f"{kind}: s3 at {a['wall_s'] / b['wall_s']:.2f}x the speed of local (wall)")
        for kind, wire in (("batches", "wire-read"), ("write", "wire-write")):
            a, b = table.get(f"{wire}/s3"), table.get(f"{kind}/s3")
            if a and b:
                print(
                    f"{kind}: s3 at {a['wall_s'] / b['wall_s']:.2f}x the speed of the store's "
                    f"own ceiling ({wire}: the same bytes moved with no encoding or decoding)"
                )
        if args.json:
            args.json.write_text(
                json.dumps({f"{k}/{p}": v for (k, p), v in samples.items()}, indent=1)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()

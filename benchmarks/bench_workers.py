"""``recordforge convert --workers N``: how a conversion scales with worker processes.

    python benchmarks/bench_workers.py [--quick] [--rounds 3] [--workers 1,2,auto]
                                       [--workloads annotation,image,csv] [--json out.json]
                                       [--pythonpath DIR] [--scale N] [--keep-data]

Three workloads, each converted by a fresh process of the CLI (``recordforge convert
...``) per run, every worker count side by side in alternating rounds:

- ``annotation``: COCO per annotation with ``--resize 256`` (decode, resize and re-encode
  every image: CPU-bound);
- ``image``: COCO per image, image bytes as in the files (reading files: I/O-bound);
- ``csv``: a generated CSV of 1,000,000 rows x 21 columns (``convert table``).

Per run: wall time, CPU time (user + sys of the CLI process and of every worker process
it waited for, from ``os.wait4``), the peak resident memory of the CLI process and of its
largest worker (``ru_maxrss``, reported at exit by a ``sitecustomize`` hook the
benchmark puts on the CLI's ``PYTHONPATH``), and the SHA-256 of every output file: the
outputs of every worker count must be byte-identical. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _coco_common import TINY_COCO, replicate
from _common import precompile

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("recordforge")

CONFIGS: dict[str, dict[str, Any]] = {
    # On 2 busy cores: ~4 min with workers 1,2,auto (~2.5 min with 1,2); --quick ~1 min.
    "default": {"ann_copies": 12, "image_copies": 60, "csv_rows": 1_000_000, "rounds": 3},
    "quick": {"ann_copies": 3, "image_copies": 15, "csv_rows": 200_000, "rounds": 2},
}
# Speed-up of the best wall time at 2 workers over 1 worker.
TARGETS = {"annotation": 1.7, "image": 1.0, "csv": 1.6}
# Shards are scaled down with the data, so that every workload has about as many shards
# per worker as a full-size conversion (COCO train2017 per image: ~70 shards of 256 MB).
SHARD_BYTES = {"annotation": "8MB", "image": "32MB", "csv": "24MB"}

# Imported by the CLI process (it is on its PYTHONPATH): at exit it writes its CPU time,
# split into its own and that of the workers it waited for, and its peak memory (VmHWM of
# /proc/self/status: this process's own peak since its exec, not ru_maxrss, which Linux
# carries across exec: the CLI's would start at this benchmark's size). It starts no
# thread: a second thread in the CLI process makes recordforge start its workers by
# `spawn` instead of `fork` (recordforge._workers.start_method), which is not what a user
# gets. The processes the CLI starts do nothing here (RF_BENCH_ROLE); their peak memory
# is read by this benchmark from /proc while the conversion runs (peak_rss_kb).
SITECUSTOMIZE = """\
import os
_dir = os.environ.get("RF_BENCH_RUSAGE")
if _dir and os.environ.get("RF_BENCH_ROLE") != "child":
    import atexit

    os.environ["RF_BENCH_ROLE"] = "child"

    def _report():
        import json, resource
        with open("/proc/self/status") as f:
            hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        path = os.path.join(_dir, f"cli-{os.getpid()}.final")
        with open(path + ".tmp", "w") as f:
            json.dump({"hwm_kb": hwm, "self_cpu_s": own.ru_utime + own.ru_stime,
                       "children_cpu_s": kids.ru_utime + kids.ru_stime}, f)
        os.replace(path + ".tmp", path)

    # Registered first, so it runs last: after multiprocessing has joined its workers.
    atexit.register(_report)
"""


# How often the CLI's children are sampled for their peak memory. VmHWM is a high-water
# mark, so a sample misses only what a child adds in its last SAMPLE_S. Each sample costs
# ~0.2 ms of CPU: at 5 ms (until 2026-12-06) that was ~5% of a core taken from the
# conversion, which on 2 cores slowed the workers=2 runs and not the workers=1 ones.
SAMPLE_S = 0.025


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux: /proc/<pid>/task/<tid>/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def peak_rss_kb(pids: list[int], peaks: dict[int, int], started: dict[int, str]) -> None:
    """Records each process's VmHWM (its peak since its exec or fork) in ``peaks``, and
    in ``started`` how it started: ``spawn`` (a new interpreter running multiprocessing's
    spawn or its resource tracker) or ``fork`` (the CLI's own command line)."""
    for p in pids:
        try:
            if p not in started:
                line = Path(f"/proc/{p}/cmdline").read_bytes()
                started[p] = "spawn" if b"from multiprocessing" in line else "fork"
            with open(f"/proc/{p}/status") as f:
                hwm = next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), 0)
        except OSError:
            continue  # gone already: its last sample stands
        peaks[p] = max(peaks.get(p, 0), hwm)


class Workload(NamedTuple):
    key: str
    label: str
    unit: str  # what an item is
    items: int
    argv: list[str]  # after "recordforge"; the output directory and --workers are added


# ---------------------------------------------------------------------------------------
# Data


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """bench_table.py's table: 16 float32, 4 int64 and 1 string column."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {f"f{i:02d}": rng.random(rows, dtype=np.float32) for i in range(16)}
    cols.update({f"i{i}": rng.integers(-(10**9), 10**9, rows) for i in range(4)})
    words = np.array(["taxi", "cash", "credit card", "no charge", "unknown", "dispute"])
    cols["text"] = words[rng.integers(0, len(words), rows)]
    pcsv.write_csv(pa.table(cols), path)


def make_data(data: Path, cfg: dict[str, Any], which: Sequence[str]) -> list[Workload]:
    out: list[Workload] = []
    if "annotation" in which or "image" in which:
        copies = max(cfg["image_copies"], cfg["ann_copies"])
        full, subset = replicate(TINY_COCO, data, copies, cfg["ann_copies"])

        def coco(annotations: str, per: str, *more: str) -> list[str]:
            argv = ["convert", "coco", "--annotations", str(data / annotations)]
            return [*argv, "--images", images, "--per", per, "--max-bytes", SHARD_BYTES[per], *more]

        images = str(data / "images")
        if "annotation" in which:
            out.append(
                Workload(
                    "annotation",
                    f"COCO per annotation, --resize 256 ({len(subset['images']):,} images)",
                    "annotation",
                    len(subset["annotations"]),
                    coco("instances-subset.json", "annotation", "--resize", "256"),
                )
            )
        if "image" in which:
            mb = sum(p.stat().st_size for p in (data / "images").iterdir()) / 1e6
            out.append(
                Workload(
                    "image",
                    f"COCO per image ({len(full['images']):,} images, {mb:,.0f} MB of JPEG)",
                    "image",
                    len(full["images"]),
                    coco("instances.json", "image"),
                )
            )
    if "csv" in which:
        path = data / "table.csv"
        make_csv(path, cfg["csv_rows"])
        out.append(
            Workload(
                "csv",
                f"CSV, {cfg['csv_rows']:,} rows x 21 columns ({path.stat().st_size / 1e6:,.0f} MB)",
                "row",
                cfg["csv_rows"],
                ["convert", "table", str(path), "--max-bytes", SHARD_BYTES["csv"]],
            )
        )
    return out


def warm(data: Path) -> None:
    """Every input file read once: the runs read from the page cache."""
    for p in sorted(data.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 22):
                    pass


# ---------------------------------------------------------------------------------------
# Runs


def supports_auto(env: dict[str, str], scratch: Path) -> bool:
    """Whether this build's CLI takes ``--workers auto``."""
    csv = scratch / "probe.csv"
    csv.write_text("a,b\n1,x\n2,y\n")
    cmd = [str(CLI), "convert", "table", str(csv), "--out", str(scratch / "probe-out")]
    done = subprocess.run([*cmd, "--workers", "auto"], env=env, capture_output=True, check=False)
    shutil.rmtree(scratch / "probe-out", ignore_errors=True)
    return done.returncode == 0


def hash_dir(out: Path) -> dict[str, str]:
    """SHA-256 of every file the conversion left, by name."""
    digests = {}
    for p in sorted(out.iterdir()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        digests[p.name] = h.hexdigest()
    return digests


def run_once(
    w: Workload, workers: str, out: Path, env: dict[str, str], timeout: float, log: Path
) -> dict[str, Any]:
    """One conversion in a fresh CLI process; its times, memory and output digests."""
    rusage_dir = out.with_name(out.name + ".rusage")
    rusage_dir.mkdir()
    cmd = [str(CLI), *w.argv, "--out", str(out), "--workers", workers]
    run_env = dict(env, RF_BENCH_RUSAGE=str(rusage_dir))
    with open(log, "ab") as err:
        err.write(f"\n$ {' '.join(cmd)}\n".encode())
        err.flush()
        t0 = time.perf_counter()
        # Its own session, so that a stop reaches its worker processes too.
        proc = subprocess.Popen(
            cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        deadline = t0 + timeout
        peaks: dict[int, int] = {}  # the peak memory of each process the CLI started
        started: dict[int, str] = {}  # and how it started
        # Readable when the CLI exits: the wait between samples ends at its exit.
        exited = os.pidfd_open(proc.pid)
        try:
            while True:
                peak_rss_kb(descendants(proc.pid), peaks, started)
                select.select([exited], [], [], SAMPLE_S)
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - t0
                    break
                if time.perf_counter() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    os.wait4(proc.pid, 0)
                    return {"stopped_after_s": timeout}
        finally:
            os.close(exited)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen quiet
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-10:]
        return {"failed": proc.returncode, "stderr_tail": tail}
    result: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
    }
    final = [json.loads(p.read_text()) for p in rusage_dir.glob("cli-*.final")]
    shutil.rmtree(rusage_dir)
    if final:
        f = final[0]
        result.update(parent_cpu_s=f["self_cpu_s"], workers_cpu_s=f["children_cpu_s"])
    result["parent_rss_mb"] = final[0]["hwm_kb"] / 1024 if final else None
    # Every process the CLI started, sampled every SAMPLE_S (the resource tracker of
    # multiprocessing included, where the workers are spawned).
    result["child_rss_mb"] = sorted((kb / 1024 for kb in peaks.values()), reverse=True)
    result["started_by"] = sorted(set(started.values()))
    result["worker_rss_mb"] = max(result["child_rss_mb"], default=0.0)
    result["outputs"] = hash_dir(out)
    result["output_mb"] = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    return result


def order(configs: list[str], round_no: int) -> list[str]:
    """Worker counts rotated by one place each round: none always runs first."""
    k = round_no % len(configs)
    return configs[k:] + configs[:k]


# ---------------------------------------------------------------------------------------
# Report


def summarise(w: Workload, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for workers, samples in runs.items():
        ok = [s for s in samples if "wall_s" in s]
        row: dict[str, Any] = {"workers": workers, "runs": len(samples), "ok_runs": len(ok)}
        if not ok:
            row["problems"] = samples
            rows[workers] = row
            continue
        best = min(ok, key=lambda s: s["wall_s"])
        row.update(
            all_wall_s=[round(s["wall_s"], 3) for s in ok],
            best_wall_s=best["wall_s"],
            items_per_s=w.items / best["wall_s"],
            cpu_s=best["cpu_s"],
            min_cpu_s=min(s["cpu_s"] for s in ok),
            cpu_us_per_item=1e6 * min(s["cpu_s"] for s in ok) / w.items,
            parent_cpu_s=best.get("parent_cpu_s"),
            workers_cpu_s=best.get("workers_cpu_s"),
            parent_rss_mb=max(s.get("parent_rss_mb") or 0 for s in ok),
            worker_rss_mb=max(s.get("worker_rss_mb", 0) for s in ok),
            # Python processes the CLI started: its workers (and multiprocessing's
            # resource tracker, when it starts one).
            children=max(len(s.get("child_rss_mb", [])) for s in ok),
            started_by=sorted({m for s in ok for m in s.get("started_by", [])}),
            output_mb=best["output_mb"],
            stopped_or_failed=[s for s in samples if "wall_s" not in s],
        )
        rows[workers] = row
    base = rows.get("1", {}).get("best_wall_s")
    base_runs = runs.get("1", [])
    for workers, row in rows.items():
        if base and "best_wall_s" in row:
            row["speedup"] = base / row["best_wall_s"]
            # Per round: this count against workers=1 of the same round, taken close in time.
            paired = [
                a["wall_s"] / b["wall_s"]
                for a, b in zip(base_runs, runs[workers], strict=True)
                if "wall_s" in a and "wall_s" in b
            ]
            row["paired_speedups"] = [round(x, 3) for x in paired]
            row["paired_speedup_median"] = statistics.median(paired) if paired else None
    # Byte-identical outputs, across every run of every worker count.
    digests = {
        json.dumps(s["outputs"], sort_keys=True)
        for samples in runs.values()
        for s in samples
        if "outputs" in s
    }
    files: dict[str, str] = next(
        (s["outputs"] for samples in runs.values() for s in samples if "outputs" in s), {}
    )
    target = TARGETS[w.key]
    two = rows.get("2", {}).get("speedup")
    return {
        "workload": w.key,
        "label": w.label,
        "items": w.items,
        "unit": w.unit,
        "rows": rows,
        "identical": len(digests) == 1,
        "distinct_outputs": len(digests),
        "files": len(files),
        "target": target,
        "pass": None if two is None else two >= target,
    }


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_report(summary: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print()
    print(
        f"recordforge convert --workers N on {meta['cpus']} CPUs ({meta['cpu']}), "
        f"{meta['rounds']} rounds, worker counts rotated each round; build "
        f"{meta['build']}; load average {meta['loadavg_before']} -> {meta['loadavg_after']}. "
        "Wall and CPU s: the run with the best wall time; CPU µs/item: the least CPU time of "
        "any run; speed-up: best wall time of workers=1 over this one's (in brackets, the "
        "median over rounds of the ratio within a round); peak RSS: VmHWM of the CLI "
        "process and of its largest child, the most of any run; children: the processes "
        "the CLI started, and how (fork, or spawn: a new interpreter)."
    )
    print()
    print(
        "| workload | workers | wall s, best (all) | items/s | CPU s: all (parent + workers) "
        "| CPU µs/item | speed-up (paired median) | peak RSS MB: parent / worker (children) |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for s in summary:
        for workers, r in s["rows"].items():
            if "best_wall_s" not in r:
                what = "; ".join(
                    f"stopped after {p['stopped_after_s']:.0f} s"
                    if "stopped_after_s" in p
                    else f"failed ({p.get('failed')})"
                    for p in r["problems"]
                )
                print(f"| {s['workload']} | {workers} | {what} | | | | | |")
                continue
            runs = ", ".join(f"{x:.2f}" for x in r["all_wall_s"])
            paired = fmt(r.get("paired_speedup_median"), ".2f")
            speed = f"{fmt(r.get('speedup'), '.2f')}x ({paired}x)"
            rss = f"{r['parent_rss_mb']:.0f} / {r['worker_rss_mb']:.0f} ({r['children']})"
            if r["started_by"]:
                rss += f", by {' and '.join(r['started_by'])}"
            split = f"{fmt(r['parent_cpu_s'], '.2f')} + {fmt(r['workers_cpu_s'], '.2f')}"
            print(
                f"| {s['workload']} | {workers} | {r['best_wall_s']:.2f} ({runs}) "
                f"| {r['items_per_s']:,.0f} {s['unit']}s/s | {r['cpu_s']:.2f} ({split}) "
                f"| {r['cpu_us_per_item']:,.1f} | {speed} | {rss} |"
            )
    print()
    for s in summary:
        status = "n/a" if s["pass"] is None else "PASS" if s["pass"] else "MISS"
        two = s["rows"].get("2", {}).get("speedup")
        same = (
            f"outputs byte-identical across all {sum(r['runs'] for r in s['rows'].values())} "
            f"runs ({s['files']} files each)"
            if s["identical"]
            else f"OUTPUTS DIFFER: {s['distinct_outputs']} distinct sets of files"
        )
        print(
            f"{s['workload']}: {s['label']}; {s['items']:,} {s['unit']}s. 2 workers "
            f"{fmt(two, '.2f')}x (target >= {s['target']}x): {status}; {same}"
        )


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller data, 2 rounds (~1 min)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; --quick 2)")
    ap.add_argument(
        "--workers", default="1,2,auto", help="worker counts; auto is run when the CLI takes it"
    )
    ap.add_argument("--workloads", default="annotation,image,csv")
    ap.add_argument("--timeout", type=float, default=120.0, help="stop a run after this long")
    ap.add_argument(
        "--pythonpath",
        type=Path,
        help="put this directory first on the CLI's PYTHONPATH (e.g. a snapshot of "
        "python/ from another commit, with its _core module)",
    )
    ap.add_argument(
        "--scale",
        type=int,
        default=1,
        help="the COCO workloads' images this many times the default (start-up and the end "
        "weigh less: the scaling of a long conversion)",
    )
    ap.add_argument("--json", type=Path, help="write every sample and the summary here")
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    for key in ("ann_copies", "image_copies"):
        cfg[key] *= max(1, args.scale)
    rounds = args.rounds or cfg["rounds"]
    which = [x.strip() for x in args.workloads.split(",") if x.strip()]
    for x in which:
        if x not in TARGETS:
            ap.error(f"unknown workload {x!r}: one of {', '.join(TARGETS)}")

    from bench_core import _build_id, _cpu_model, _loadavg

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="recordforge-bench-workers-"))
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(args.pythonpath.resolve())] if args.pythonpath else []
    paths += [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONHASHSEED="0")
    env["OPENBLAS_NUM_THREADS"] = "1"
    try:
        configs = [c.strip() for c in args.workers.split(",") if c.strip()]
        meta: dict[str, Any] = {
            "quick": args.quick,
            "rounds": rounds,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "loadavg_before": _loadavg(),
            "pythonpath": str(args.pythonpath) if args.pythonpath else None,
        }
        build = _build_id()
        meta["build"] = f"{build.get('commit', '?')} (_core {build['sha256']})"
        if args.pythonpath:
            meta["build"] = f"{args.pythonpath} (PYTHONPATH)"
        if "auto" in configs and not supports_auto(env, work):
            print("note: this build's CLI does not take --workers auto: not run")
            configs.remove("auto")
        # Byte-compiled modules, as an installed package has them: with
        # PYTHONDONTWRITEBYTECODE set (as on the development VM) an editable install
        # would compile its modules in every CLI start, ~0.15 s of the serial start-up.
        precompile(env)
        data = work / "data"
        data.mkdir()
        print(f"making data in {data} ...", flush=True)
        workloads = make_data(data, cfg, which)
        warm(data)
        for w in workloads:
            print(f"  {w.key}: {w.label}, {w.items:,} {w.unit}s", flush=True)
        log = work / "cli.stderr.log"
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            w.key: {c: [] for c in configs} for w in workloads
        }
        n = 0
        for r in range(rounds):
            for w in workloads:
                for c in order(configs, r):
                    n += 1
                    out = work / f"out-{w.key}-{c}-{n}"
                    res = run_once(w, c, out, env, args.timeout, log)
                    samples[w.key][c].append(res)
                    shown = (
                        f"{res['wall_s']:.2f} s, CPU {res['cpu_s']:.2f} s"
                        if "wall_s" in res
                        else json.dumps(res)[:300]
                    )
                    print(f"round {r + 1} {w.key} workers={c}: {shown}", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                    os.sync()
        meta["loadavg_after"] = _loadavg()
        summary = [summarise(w, samples[w.key]) for w in workloads]
        print_report(summary, meta)
        meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        print(f"total {meta['elapsed_s']} s")
        if args.json:
            args.json.write_text(
                json.dumps({"meta": meta, "summary": summary, "samples": samples}, indent=1)
            )
            print(f"wrote {args.json}")
    finally:
        if args.keep_data:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

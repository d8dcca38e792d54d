"""recordforge core benchmark: TFRecord framing, Example codec and GZIP, side by side with
TensorFlow and the PyPI ``tfrecord`` package.

    python benchmarks/bench_core.py [--quick] [--json out.json] [--rounds N] [--keep-data]

The data is generated once, into a temporary directory (never the working directory).
Each implementation then runs in its own fresh Python process on the same files
(``_peer_rf.py``, ``_peer_tf.py``, ``_peer_tfrecord.py``), one section (write, read,
codec, gzip) at a time, every peer in turn: TensorFlow and ``tfrecord`` register the same
protobuf messages and cannot be imported into one process, and a fresh process each keeps
allocator state the same for everybody. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _common import (
    EXAMPLES,
    LARGE,
    MEDIUM,
    SECTIONS,
    SMALL,
    load_payloads,
    rows_digest,
    save_payloads,
    sha256_file,
)

import recordforge as rf

HERE = Path(__file__).resolve().parent

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "small_records": 30_000,  # 150-250 B each, ~6 MB
        "large_records": 256,  # 100 KB - 1 MB each, ~140 MB
        "rows": 10_000,  # 21-feature Examples for decode / encode
        "medium_bytes": 16 << 20,  # GZIP data set: ~64 KB records of serialized Examples
        "timing": {"reps": 5, "min_time": 0.2, "max_total": 2.5, "max_total_slow": 6.0},
        # Sections run per peer process, every peer in turn: figures compared with each
        # other are taken close together in time (a TensorFlow start costs ~5 s).
        "groups": [["write", "read"], ["codec", "gzip"]],
    },
    "quick": {
        "small_records": 3_000,
        "large_records": 48,
        "rows": 2_500,
        "medium_bytes": 2 << 20,
        "timing": {"reps": 3, "min_time": 0.05, "max_total": 0.5, "max_total_slow": 0.8},
        "groups": [list(SECTIONS)],
    },
}

PEERS = {
    "recordforge": "_peer_rf.py",
    "tensorflow": "_peer_tf.py",
    "tfrecord": "_peer_tfrecord.py",
}

TARGETS = {
    "read_large_gbps": 8.0,
    "read_large_vs_tf": 3.0,
    "read_small_vs_tf": 3.0,
    "decode_vs_tf": 3.0,
    "encode_vs_tf": 10.0,
}

# ---------------------------------------------------------------------------------------
# Data


def make_rows(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Tabular rows: 16 float32 scalars, 4 int64 scalars, 1 short string (21 features)."""
    floats = rng.standard_normal((n, 16)).astype(np.float32).astype(np.float64)
    user_id = rng.integers(0, 1 << 40, n)
    item_id = rng.integers(0, 1_000_000, n)
    count = rng.integers(0, 100, n)
    timestamp = rng.integers(1_600_000_000, 1_800_000_000, n)
    cities = ["Paris", "Lyon", "Tokyo", "Osaka", "Lima", "Cusco", "Oslo", "Bergen", "Quito"]
    city = rng.integers(0, len(cities), n)
    names = [f"x{j:02d}" for j in range(16)]
    rows = []
    for i in range(n):
        row: dict[str, Any] = dict(zip(names, floats[i].tolist(), strict=True))
        row["user_id"] = int(user_id[i])
        row["item_id"] = int(item_id[i])
        row["count"] = int(count[i])
        row["timestamp"] = int(timestamp[i])
        row["city"] = cities[city[i]]
        rows.append(row)
    return rows


def feature_kinds(row: dict[str, Any]) -> dict[str, str]:
    return {
        k: "float_list"
        if isinstance(v, float)
        else "int64_list"
        if isinstance(v, int)
        else "bytes_list"
        for k, v in row.items()
    }


def random_payloads(rng: np.random.Generator, sizes: np.ndarray) -> list[bytes]:
    blob = rng.bytes(int(sizes.sum()))
    out, pos = [], 0
    for s in sizes.tolist():
        out.append(blob[pos : pos + s])
        pos += s
    return out


def generate(data: Path, cfg: dict[str, Any], quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(20240611)
    small = random_payloads(rng, rng.integers(150, 251, cfg["small_records"]))
    large = random_payloads(rng, rng.integers(100_000, 1_000_001, cfg["large_records"]))
    rows = make_rows(rng, cfg["rows"])
    examples = [rf.encode_example(r) for r in rows]

    # GZIP data: ~64 KB records made of serialized Examples (compressible, like real data).
    medium: list[bytes] = []
    while sum(map(len, medium)) < cfg["medium_bytes"]:
        chunk = [rf.encode_example(r) for r in make_rows(rng, 200)]
        medium.append(b"".join(chunk))

    for name, recs in ((SMALL, small), (LARGE, large), (EXAMPLES, examples), (MEDIUM, medium)):
        save_payloads(data, name, recs)
    with open(data / "rows.pkl", "wb") as f:
        pickle.dump(rows, f, protocol=pickle.HIGHEST_PROTOCOL)

    # The read benchmarks' input files (written by recordforge; every peer's writer must
    # produce the same bytes, which the checks below verify).
    for name, recs in ((SMALL, small), (LARGE, large)):
        with rf.TFRecordWriter(str(data / f"{name}.tfrecord")) as w:
            w.write_many(recs)
    with rf.TFRecordWriter(str(data / f"{MEDIUM}.tfrecord.gz"), compression="gzip") as w:
        w.write_many(medium)

    def stats(recs: list[bytes]) -> dict[str, int]:
        return {"records": len(recs), "bytes": sum(map(len, recs))}

    manifest = {
        "quick": quick,
        "timing": cfg["timing"],
        "feature_kinds": feature_kinds(rows[0]),
        "sets": {
            SMALL: stats(small),
            LARGE: stats(large),
            EXAMPLES: stats(examples),
            MEDIUM: stats(medium),
        },
        "expected": {
            "small_sha256": sha256_file(data / f"{SMALL}.tfrecord"),
            "large_sha256": sha256_file(data / f"{LARGE}.tfrecord"),
            "gzip_sha256": sha256_file(data / f"{MEDIUM}.tfrecord.gz"),
            "gzip_size": os.path.getsize(data / f"{MEDIUM}.tfrecord.gz"),
            "rows_digest": rows_digest(rows),
            "rows_digest_100": rows_digest(rows[:100]),
        },
    }
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------------------
# Peers


def run_peer(name: str, data: Path, section: str, timeout: float) -> dict[str, Any] | None:
    """Runs one peer's measurements of one section in a fresh process; its JSON results."""
    out = data / f"result-{name}-{section.replace(',', '-')}.json"
    out.unlink(missing_ok=True)
    log = data / f"{name}.stderr.log"
    # No measured code uses BLAS; one OpenBLAS thread keeps its idle spinning off the CPUs.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    print(f"--- {section}: {name} (own process) ---", flush=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, str(HERE / PEERS[name]), "--data", str(data), "--out", str(out)]
    with open(log, "a") as err:
        try:
            proc = subprocess.run(
                [*cmd, "--sections", section],
                cwd=data,
                env=env,
                stderr=err,
                timeout=timeout,
                check=False,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"!!! {name} failed ({rc}); last lines of its stderr:", *tail, sep="\n  ")
        if any("No module named" in line for line in tail):
            print("  (install the peers: pip install -r benchmarks/requirements.txt)")
        return None
    print(f"    {name} {section}: {time.perf_counter() - t0:.1f} s", flush=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def merge(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """Adds one peer run's results to what that peer has so far: other sections are added;
    a measurement seen before (another round) keeps its best round, samples pooled."""
    if old is None or new is None:
        return new or old
    for key, r in new["results"].items():
        prev = old["results"].get(key)
        if prev is None:
            old["results"][key] = r
            continue
        pooled = prev.get("all_s", []) + r.get("all_s", [])
        best = r if r["best_s"] <= prev["best_s"] else prev
        old["results"][key] = {
            **best,
            "all_s": pooled,
            "samples": len(pooled),
            "median_s": float(np.median(pooled)) if pooled else best["median_s"],
            "best_cpu_s": min(prev.get("best_cpu_s", np.inf), r.get("best_cpu_s", np.inf)),
        }
    old["checks"].update(new["checks"])
    old["notes"].update(new["notes"])
    return old


# ---------------------------------------------------------------------------------------
# Report


class Row(NamedTuple):
    """One table row: which measurement of each peer it shows side by side."""

    section: str
    label: str
    rf: str
    tf: str | None = None
    tfr: str | None = None
    kind: str = "framing"  # "framing" (GB/s, records/s) or "rows" (rows/s, µs/row)
    target: str | None = None


ROWS: list[Row] = [
    Row("1a", "write ~200 B records: write() per record", "write_small", "write_small",
        "write_small"),
    Row("1a", "  rf write_many(list) (peers: same as above)", "write_small_many", "write_small",
        "write_small"),
    Row("1b", "write 100 KB-1 MB records: write() per record", "write_large", "write_large",
        "write_large"),
    Row("1b", "  rf write_many(list) (peers: same as above)", "write_large_many", "write_large",
        "write_large"),
    Row("2a", "read ~200 B records, CRC verified: for x in ds", "read_small", "read_small",
        "read_small", target="read_small"),
    Row("2a", "  TF: for x in ds: x.numpy()", "read_small", "read_small_numpy"),
    Row("2a", "  TF: ds.batch(1024) (informative)", "read_small", "read_small_batched"),
    Row("2a", "  rf verify=False (informative)", "read_small_noverify", "read_small",
        "read_small"),
    Row("2a", "  rf scan_records, 1 thread: CRCs, no records (informative)", "scan_small_t1"),
    Row("2b", "read 100 KB-1 MB records, CRC verified: for x in ds", "read_large", "read_large",
        "read_large", target="read_large"),
    Row("2b", "  TF: for x in ds: x.numpy()", "read_large", "read_large_numpy"),
    Row("2b", "  TF: ds.batch(16) (informative)", "read_large", "read_large_batched"),
    Row("2b", "  rf verify=False (informative)", "read_large_noverify", "read_large",
        "read_large"),
    Row("2b", "  rf scan_records, 1 thread: CRCs, no records (informative)", "scan_large_t1"),
    Row("2b", "  rf scan_records, all cores (informative)", "scan_large_t0"),
    Row("3", "decode 21-feature Example -> values", "decode", "decode", "decode", "rows",
        target="decode"),
    Row("3", "  TF: tf.io.parse_example, batches of 1024 (informative)", "decode",
        "decode_parse_example", kind="rows"),
    Row("4", "encode 21-feature Example from a dict (TF: append into message)", "encode",
        "encode", "encode", "rows", target="encode"),
    Row("4", "  TF: tutorial-style nested Feature(...) constructors", "encode",
        "encode_tutorial", kind="rows"),
    Row("5", "GZIP write ~64 KB records (informative)", "gzip_write", "gzip_write"),
    Row("5", "GZIP read ~64 KB records (informative)", "gzip_read", "gzip_read", "gzip_read"),
]  # fmt: skip


def rate(res: dict[str, Any] | None, key: str | None) -> dict[str, float] | None:
    if res is None or key is None or key not in res.get("results", {}):
        return None
    r = res["results"][key]
    best = r["best_s"]
    out = {"best_s": best, "median_s": r["median_s"], "best_cpu_s": r.get("best_cpu_s", best)}
    if "bytes" in r:
        out["gbps"] = r["bytes"] / best / 1e9
        out["gbps_median"] = r["bytes"] / r["median_s"] / 1e9
        out["gbps_cpu"] = r["bytes"] / out["best_cpu_s"] / 1e9
    if "records" in r:
        out["per_s"] = r["records"] / best
    if "rows" in r:
        out["per_s"] = r["rows"] / best
        out["us_per_row"] = best / r["rows"] * 1e6
    return out


def fmt_count(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f} "


def cell(r: dict[str, float] | None, kind: str) -> str:
    if r is None:
        return "-"
    if kind == "framing":
        return f"{r['gbps']:.3f} GB/s\n{fmt_count(r['per_s'])}rec/s"
    return f"{fmt_count(r['per_s'])}rows/s\n{r['us_per_row']:.2f} µs/row"


def ratio(
    ours: dict[str, float] | None, peer: dict[str, float] | None, key: str = "best_s"
) -> float | None:
    if ours is None or peer is None:
        return None
    return peer[key] / ours[key]


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def build_report(
    results: dict[str, dict[str, Any] | None], manifest: dict[str, Any]
) -> dict[str, Any]:
    rf_res, tf_res, tfr_res = (results.get(p) for p in ("recordforge", "tensorflow", "tfrecord"))
    table = []
    for spec in ROWS:
        section, label, k_rf, k_tf, k_tfr, kind = spec[:6]
        ours, tfv, tfrv = rate(rf_res, k_rf), rate(tf_res, k_tf), rate(tfr_res, k_tfr)
        table.append(
            {
                "section": section,
                "label": label,
                "keys": [k_rf, k_tf, k_tfr],
                "kind": kind,
                "recordforge": ours,
                "tensorflow": tfv,
                "tfrecord": tfrv,
                "vs_tensorflow": ratio(ours, tfv),
                "vs_tfrecord": ratio(ours, tfrv),
            }
        )

    def best_tf(*keys: str) -> dict[str, float] | None:
        cands = [r for r in (rate(tf_res, k) for k in keys) if r is not None]
        return min(cands, key=lambda r: r["best_s"]) if cands else None

    targets = []
    rl = rate(rf_res, "read_large")
    targets.append(
        {
            "id": "read_large_gbps",
            "what": "read 100 KB-1 MB records, CRC verified",
            "target": f">= {TARGETS['read_large_gbps']:.0f} GB/s",
            "value": None if rl is None else rl["gbps"],
            "shown": "-" if rl is None else f"{rl['gbps']:.2f} GB/s",
            "shown_cpu": "-" if rl is None else f"{rl['gbps_cpu']:.2f} GB/s",
            "pass": None if rl is None else rl["gbps"] >= TARGETS["read_large_gbps"],
        }
    )
    for tid, what, ours_key, tf_keys in (
        (
            "read_large_vs_tf",
            "read large records vs TF (fastest plain eager iteration)",
            "read_large",
            ("read_large", "read_large_numpy"),
        ),
        (
            "read_small_vs_tf",
            "read small records vs TF (fastest plain eager iteration)",
            "read_small",
            ("read_small", "read_small_numpy"),
        ),
        (
            "decode_vs_tf",
            "decode vs Example.FromString + read-out into lists",
            "decode",
            ("decode",),
        ),
        (
            "encode_vs_tf",
            "encode vs building tf.train.Example + SerializeToString (fastest way)",
            "encode",
            ("encode", "encode_tutorial"),
        ),
    ):
        ours, theirs = rate(rf_res, ours_key), best_tf(*tf_keys)
        x = ratio(ours, theirs)
        targets.append(
            {
                "id": tid,
                "what": what,
                "target": f">= {TARGETS[tid]:.0f}x",
                "value": x,
                "shown": fmt_ratio(x),
                "shown_cpu": fmt_ratio(ratio(ours, theirs, "best_cpu_s")),
                "pass": None if x is None else x >= TARGETS[tid],
            }
        )
    return {"table": table, "targets": targets, "checks": run_checks(results, manifest)}


def run_checks(
    results: dict[str, dict[str, Any] | None], m: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    """Every peer wrote the same bytes, read the same records and decoded the same values."""
    exp, sets = m["expected"], m["sets"]
    out: list[tuple[str, bool, str]] = []

    def add(what: str, ok: bool, detail: str = "") -> None:
        out.append((what, ok, detail))

    for peer, res in results.items():
        if res is None:
            continue
        c = res["checks"]
        for name in (SMALL, LARGE):
            for key in (f"write_{name}_sha256", f"write_{name}_many_sha256"):
                if key in c:
                    what = key.removesuffix("_sha256")
                    add(f"{peer}: {what} output == reference file", c[key] == exp[f"{name}_sha256"])
            if f"read_{name}" in c:
                want, got = [sets[name]["records"], sets[name]["bytes"]], c[f"read_{name}"]
                add(f"{peer}: read_{name} records/bytes", got == want, f"{got} vs {want}")
        if "decode_digest" in c:
            add(f"{peer}: decoded values == input rows", c["decode_digest"] == exp["rows_digest"])
        if "encode_digest" in c:
            ok = c["encode_digest"] == exp["rows_digest"]
            add(f"{peer}: own encodings decode to input rows", ok)
        if "encode_matches_input_file" in c:
            ok = bool(c["encode_matches_input_file"])
            add(f"{peer}: encode output == decode input bytes", ok)
        if "parse_example_digest_100" in c:
            ok = c["parse_example_digest_100"] == exp["rows_digest_100"]
            add(f"{peer}: parse_example values == input rows (first 100)", ok)
        if "gzip_read" in c:
            want, got = [sets[MEDIUM]["records"], sets[MEDIUM]["bytes"]], c["gzip_read"]
            add(f"{peer}: gzip_read records/bytes", got == want, f"{got} vs {want}")
        if "gzip_write_sha256" in c:
            add(
                f"{peer}: gzip_write output == reference .gz (informative)",
                c["gzip_write_sha256"] == exp["gzip_sha256"],
                f"{c['gzip_write_size']} B vs {exp['gzip_size']} B",
            )
    return out


def check_tf_encodings(data: Path, manifest: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Decodes TensorFlow's encodings with recordforge and compares them to the input rows."""
    out = []
    for name in ("encoded", "encoded_tutorial"):
        if (data / "out-tf" / f"{name}.bin").exists():
            encoded = load_payloads(data / "out-tf", name)
            digest = rows_digest([rf.decode_example(b) for b in encoded])
            out.append(
                (
                    f"tensorflow: {name} rows, decoded by recordforge, == input rows",
                    digest == manifest["expected"]["rows_digest"],
                    "",
                )
            )
    return out


def print_report(
    report: dict[str, Any], results: dict[str, dict[str, Any] | None], meta: dict[str, Any]
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    ver = {p: (r["version"] if r else "not run") for p, r in results.items()}
    t = Table(
        title=(
            f"recordforge {ver.get('recordforge')} vs TensorFlow {ver.get('tensorflow')} vs "
            f"tfrecord {ver.get('tfrecord')}  ({'--quick' if meta['quick'] else 'default'} run; "
            f"best of N; payload bytes; ratio = peer time / recordforge time)"
        ),
        show_lines=True,
    )
    t.add_column("#", no_wrap=True)
    t.add_column("measurement")
    t.add_column("recordforge", justify="right", no_wrap=True)
    t.add_column("TensorFlow", justify="right", no_wrap=True)
    t.add_column("tfrecord (PyPI)", justify="right", no_wrap=True)
    t.add_column("rf ÷ TF", justify="right", no_wrap=True)
    t.add_column("rf ÷ tfrecord", justify="right", no_wrap=True)
    t.add_column("target", no_wrap=True)
    targets = {x["id"]: x for x in report["targets"]}
    target_ids = {
        "read_large": ["read_large_gbps", "read_large_vs_tf"],
        "read_small": ["read_small_vs_tf"],
        "decode": ["decode_vs_tf"],
        "encode": ["encode_vs_tf"],
    }
    for row, spec in zip(report["table"], ROWS, strict=True):
        tcell = ""
        parts = [targets[t] for t in target_ids.get(spec.target or "", [])]
        for p in parts:
            status = (
                "n/a" if p["pass"] is None else "[green]PASS[/]" if p["pass"] else "[red]MISS[/]"
            )
            tcell += ("\n" if tcell else "") + f"{p['target']}: {status}"
        t.add_row(
            row["section"],
            row["label"],
            cell(row["recordforge"], row["kind"]),
            cell(row["tensorflow"], row["kind"]),
            cell(row["tfrecord"], row["kind"]),
            fmt_ratio(row["vs_tensorflow"]),
            fmt_ratio(row["vs_tfrecord"]),
            tcell,
        )
    console.print(t)

    tt = Table(title="Targets (judged on wall-clock time; CPU time shown as a cross-check)")
    for col in ("target", "what", "measured", "result", "by CPU time"):
        tt.add_column(col)
    for x in report["targets"]:
        status = "n/a" if x["pass"] is None else "[green]PASS[/]" if x["pass"] else "[red]MISS[/]"
        tt.add_row(x["target"], x["what"], x["shown"], status, x["shown_cpu"])
    console.print(tt)

    bad = [c for c in report["checks"] if not c[1]]
    info_bad = [c for c in bad if "informative" in c[0]]
    hard_bad = [c for c in bad if "informative" not in c[0]]
    console.print(
        f"Correctness checks: {len(report['checks']) - len(bad)}/{len(report['checks'])} passed"
    )
    for c in bad:
        console.print(
            f"  {'[yellow]note[/]' if c in info_bad else '[red]FAILED[/]'}: {c[0]} {c[2]}"
        )
    if hard_bad:
        console.print(
            "[red]Some outputs differ between implementations: "
            "the timings compare different work.[/]"
        )
    build = meta["recordforge_build"]
    console.print(
        "Notes: tfrecord's reader checks no CRC and yields a reused memoryview; its writer is "
        "its own write() with serialization bypassed. TF read rows iterate tf.data eagerly "
        "(TF checks both CRCs). Writes go to the page cache (no fsync). "
        f"Load average before/after: {meta['loadavg_before']} / {meta['loadavg_after']} "
        f"on {meta['cpus']} CPUs ({meta['cpu']}). recordforge build: commit "
        f"{build['commit']}, _core sha256 {build['sha256']}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer repetitions (~40 s)")
    ap.add_argument("--json", type=Path, help="write all results and the report here")
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary data directory")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every peer process this many times, alternating, and keep each "
        "measurement's best round (for noisy machines; multiplies the run time)",
    )
    ap.add_argument(
        "--peers",
        default="recordforge,tensorflow,tfrecord",
        help="comma-separated subset of: " + ",".join(PEERS),
    )
    args = ap.parse_args()
    cfg = CONFIGS["quick" if args.quick else "default"]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}")

    t_start = time.perf_counter()
    meta = {
        "quick": args.quick,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "loadavg_before": _loadavg(),
        "recordforge_build": _build_id(),
    }
    data = Path(tempfile.mkdtemp(prefix="recordforge-bench-"))
    try:
        print(f"generating data in {data} ...", flush=True)
        manifest = generate(data, cfg, args.quick)
        s = manifest["sets"]
        print(
            f"  small: {s[SMALL]['records']:,} records / {s[SMALL]['bytes'] / 1e6:.1f} MB; "
            f"large: {s[LARGE]['records']:,} records / {s[LARGE]['bytes'] / 1e6:.1f} MB; "
            f"examples: {s[EXAMPLES]['records']:,} rows; "
            f"gzip set: {s[MEDIUM]['records']} records / {s[MEDIUM]['bytes'] / 1e6:.1f} MB "
            f"({manifest['expected']['gzip_size'] / 1e6:.1f} MB gzipped)",
            flush=True,
        )
        # Group by group of sections, every peer in turn (and, with --rounds, again), so
        # that the figures compared with each other are taken close together in time.
        results: dict[str, dict[str, Any] | None] = dict.fromkeys(peers)
        for group in cfg["groups"]:
            sections = ",".join(group)
            for round_no in range(max(1, args.rounds)):
                if args.rounds > 1:
                    print(f"=== {sections}: round {round_no + 1}/{args.rounds} ===", flush=True)
                for p in peers:
                    results[p] = merge(results[p], run_peer(p, data, sections, timeout=600))
        meta["loadavg_after"] = _loadavg()
        if _build_id()["sha256"] != meta["recordforge_build"]["sha256"]:
            meta["recordforge_build"]["changed_during_run"] = True
            print("!!! recordforge's extension module changed during the run: rerun.")
        report = build_report(results, manifest)
        report["checks"].extend(check_tf_encodings(data, manifest))
        print_report(report, results, meta)
        meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        print(f"total {meta['elapsed_s']} s")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"meta": meta, "manifest": manifest, "peers": results, "report": report},
                    indent=1,
                )
            )
            print(f"wrote {args.json}")
    finally:
        if args.keep_data:
            print(f"data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


def _build_id() -> dict[str, str]:
    """Which recordforge build was measured: its extension module's hash and the commit."""
    so = Path(rf._core.__file__)
    out = {"module": str(so), "sha256": sha256_file(so)[:16]}
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "crates", "python"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out["commit"] = head + (" (crates/ or python/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = "?"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


if __name__ == "__main__":
    main()

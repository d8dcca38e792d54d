"""COCO -> TFRecord benchmark: recordforge (per annotation and per image, 1 and 2 workers)
side by side with the Keras example "Creating TFRecords" (decode + ``encode_jpeg`` +
``tf.train.Example`` + ``tf.io.TFRecordWriter``) and with the same TensorFlow loop
storing the JPEG files' bytes as read.

    python benchmarks/bench_coco.py [--quick] [--json out.json] [--keep-data]
                                    [--copies 40] [--keras-copies 3] [--workers-timeout 60]

The tiny COCO val2017 images (50 images, 382 annotations) are replicated ``--copies`` times
(default 40: 2,000 images, 15,280 annotations, 330 MB of JPEG) under new file names and
ids, into a temporary directory; every way converts the same files, its output going to
the same file system. recordforge and TensorFlow run in their own processes
(``_coco_peer_rf.py``, ``_coco_peer_tf.py``). See README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from _coco_common import (
    FULL,
    KERAS_RECORDS_PER_FILE,
    SUBSET,
    TINY_COCO,
    expected_digests,
    replicate,
)

HERE = Path(__file__).resolve().parent

CONFIGS: dict[str, dict[str, Any]] = {
    # ~4.5 min on 2 busy cores, 2 of them in the two workers=2 runs, which stop at their
    # limit while write_dataset pickles the whole COCO index per chunk of 4 images (README).
    "default": {
        "copies": 40,
        "keras_copies": 3,
        "timing": {"reps": 3, "max_total": 25.0},
        "workers_timeout": 60.0,
    },
    "quick": {
        "copies": 8,
        "keras_copies": 1,
        "timing": {"reps": 2, "max_total": 4.0},
        "workers_timeout": 30.0,
    },
}

TARGETS = {"vs_keras": 40.0, "vs_tf_raw": 2.0, "image_bytes": 1.02}


class Way(NamedTuple):
    key: str
    label: str
    layout: str  # "annotation" or "image"
    expect: str  # which expected digest its records must match


WAYS = [
    Way("rf_annotation_w1", "recordforge, workers=1", "annotation", "annotation_raw"),
    Way("rf_annotation_w2", "recordforge, workers=2", "annotation", "annotation_raw"),
    Way("tf_raw_read_file", "TF raw bytes: tf.io.read_file", "annotation", "annotation_raw"),
    Way("tf_raw_open", "TF raw bytes: open().read()", "annotation", "annotation_raw"),
    Way("keras_way", "Keras example: decode + encode_jpeg", "annotation", "annotation_jpeg"),
    Way("rf_image_w1", "recordforge, workers=1", "image", "image"),
    Way("rf_image_w2", "recordforge, workers=2", "image", "image"),
]
PEERS = {"recordforge": "_coco_peer_rf.py", "tensorflow": "_coco_peer_tf.py"}

# ---------------------------------------------------------------------------------------
# Data


def generate(data: Path, copies: int, keras_copies: int, timing: dict[str, Any]) -> dict[str, Any]:
    full, subset = replicate(TINY_COCO, data, copies, keras_copies)

    def facts(coco: dict[str, Any], n_copies: int) -> dict[str, Any]:
        sizes = {
            im["id"]: (data / "images" / im["file_name"]).stat().st_size for im in coco["images"]
        }
        return {
            "copies": n_copies,
            "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "image_records": len(coco["images"]),
            "annotation_records": len(coco["annotations"]),
            "images_with_annotations": len({a["image_id"] for a in coco["annotations"]}),
            "source_bytes": sum(sizes.values()),
            # What the per-annotation layout must store at least: each annotation's image.
            "annotation_image_bytes": sum(sizes[a["image_id"]] for a in coco["annotations"]),
            "expected": expected_digests(coco, data),
        }

    manifest = {FULL: facts(full, copies), SUBSET: facts(subset, keras_copies), "timing": timing}
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------------------
# Peers


def run_peer(
    peer: str, data: Path, runs: list[str], timeout: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs ``runs`` in a fresh process of ``peer``; (results, stopped runs). A process
    past ``timeout`` is killed with its worker processes; the run is then reported as
    stopped after as long as it had run."""
    name = "-".join(runs)
    out = data / f"result-{name}.json"
    started = out.with_suffix(".started")
    log = data / f"{peer}.stderr.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(HERE / PEERS[peer]), "--data", str(data), "--out", str(out)]
    print(f"--- {peer}: {', '.join(runs)} (own process) ---", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as err:
        # Its own session, so that a stop reaches the worker pool's processes too.
        proc = subprocess.Popen(
            [*cmd, "--runs", ",".join(runs)], cwd=data, env=env, stderr=err, start_new_session=True
        )
        try:
            rc: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "stopped"
    for leftover in data.glob(f"out-{name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if rc == "stopped":
        ran = time.time() - float(started.read_text()) if started.exists() else None
        print(f"!!! {peer} {name}: stopped at the {timeout:.0f} s limit", flush=True)
        return {}, {runs[-1]: {"stopped_after_s": ran, "limit_s": timeout}}
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"!!! {peer} failed ({rc}); last lines of its stderr:", *tail, sep="\n  ")
        return {}, {}
    print(f"    {peer}: {time.perf_counter() - t0:.1f} s", flush=True)
    res: dict[str, Any] = json.loads(out.read_text())
    return {"version": res["version"], **res["results"]}, {}


# ---------------------------------------------------------------------------------------
# Report


def rate_row(
    way: Way, r: dict[str, Any] | None, stop: dict[str, Any] | None, m: dict[str, Any]
) -> dict[str, Any]:
    """One table row: rates, CPU, output bytes and their ratio to the source JPEG bytes."""
    row: dict[str, Any] = {"way": way.key, "label": way.label, "layout": way.layout}
    if r is not None:
        s = m[r["set"]]
        row.update(
            set=r["set"],
            images=r["images"],
            annotations=r["annotations"],
            best_s=r["best_s"],
            all_s=r["all_s"],
            cpu_s=r["best_cpu_s"],
            images_per_s=r["images"] / r["best_s"],
            annotations_per_s=r["annotations"] / r["best_s"],
            annotations_per_cpu_s=r["annotations"] / r["best_cpu_s"],
            output_bytes=r["output_bytes"],
            source_bytes=s["source_bytes"],
            output_vs_source=r["output_bytes"] / s["source_bytes"],
            load_s=r.get("load_s"),
        )
    elif stop is not None and stop.get("stopped_after_s"):
        # A lower bound on its time, so upper bounds on its rates.
        s = m[FULL]
        ran = stop["stopped_after_s"]
        row.update(
            set=FULL,
            images=s["images"],
            annotations=s["annotations"],
            stopped_after_s=ran,
            images_per_s_max=s["images"] / ran,
            annotations_per_s_max=s["annotations"] / ran,
        )
    return row


def build_report(
    results: dict[str, Any], stopped: dict[str, Any], m: dict[str, Any]
) -> dict[str, Any]:
    rows = {w.key: rate_row(w, results.get(w.key), stopped.get(w.key), m) for w in WAYS}

    def per_s(key: str) -> float | None:
        return rows[key].get("annotations_per_s")

    def per_cpu(key: str) -> float | None:
        return rows[key].get("annotations_per_cpu_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    def best_of(keys: list[str], f: Any) -> tuple[str | None, float | None]:
        vals = [(k, f(k)) for k in keys if f(k) is not None]
        return max(vals, key=lambda kv: kv[1]) if vals else (None, None)

    rf_keys = ["rf_annotation_w1", "rf_annotation_w2"]
    tf_keys = ["tf_raw_read_file", "tf_raw_open"]
    rf_best, rf_rate = best_of(rf_keys, per_s)
    tf_best, tf_rate = best_of(tf_keys, per_s)
    comparisons = []
    for a in rf_keys:
        for b in ["keras_way", *tf_keys]:
            stop = rows[a].get("annotations_per_s_max")
            comparisons.append(
                {
                    "rf": a,
                    "peer": b,
                    "ratio": ratio(per_s(a), per_s(b)),
                    "ratio_cpu": ratio(per_cpu(a), per_cpu(b)),
                    "ratio_max": ratio(stop, per_s(b)),  # rf run stopped: at most this
                }
            )
    vs_keras = ratio(rf_rate, per_s("keras_way"))
    vs_tf = ratio(rf_rate, tf_rate)
    img_bytes = rows["rf_image_w1"].get("output_vs_source") or rows["rf_image_w2"].get(
        "output_vs_source"
    )
    targets = [
        {
            "id": "vs_keras",
            "what": "rf per annotation vs the Keras example's way (annotations/s)",
            "target": f">= {TARGETS['vs_keras']:.0f}x",
            "judged_on": f"{rf_best} / keras_way",
            "value": vs_keras,
            "pass": None if vs_keras is None else vs_keras >= TARGETS["vs_keras"],
        },
        {
            "id": "vs_tf_raw",
            "what": "rf per annotation vs TF raw bytes, the faster of its two reads",
            "target": f">= {TARGETS['vs_tf_raw']:.0f}x",
            "judged_on": f"{rf_best} / {tf_best}",
            "value": vs_tf,
            "pass": None if vs_tf is None else vs_tf >= TARGETS["vs_tf_raw"],
        },
        {
            "id": "image_bytes",
            "what": "rf per image: output bytes / source JPEG bytes",
            "target": f"<= {TARGETS['image_bytes']:.2f}x",
            "judged_on": "rf_image_w1",
            "value": img_bytes,
            "pass": None if img_bytes is None else img_bytes <= TARGETS["image_bytes"],
        },
    ]
    return {
        "rows": list(rows.values()),
        "comparisons": comparisons,
        "targets": targets,
        "checks": run_checks(results, m),
    }


def run_checks(results: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    """Every way wrote the records it should: count, files of <= 4096 records, digest of
    the records' values (image bytes by CRC; the Keras way's images by JPEG size)."""
    out: list[dict[str, Any]] = []

    def add(what: str, ok: bool, detail: str = "") -> None:
        out.append({"check": what, "ok": ok, "detail": detail})

    for way in WAYS:
        r = results.get(way.key)
        if r is None:
            continue
        s = m[r["set"]]
        want = s[f"{way.layout}_records"]
        add(f"{way.key}: records", r["records"] == want, f"{r['records']} vs {want}")
        files = math.ceil(want / KERAS_RECORDS_PER_FILE)
        per_file = r["records_per_file"]
        ok = len(per_file) == files and max(per_file) <= KERAS_RECORDS_PER_FILE
        add(f"{way.key}: {files} files of <= 4096 records", ok, str(per_file))
        ok = r["digest"] == s["expected"][way.expect]
        add(f"{way.key}: record values == COCO JSON + image files ({way.expect})", ok)
        if "manifest_records" in r:
            add(f"{way.key}: dataset.json record count", r["manifest_records"] == want)
    for layout in ("annotation", "image"):
        w1, w2 = results.get(f"rf_{layout}_w1"), results.get(f"rf_{layout}_w2")
        if w1 and w2:
            add(
                f"rf per {layout}: workers=2 files == workers=1 files (sha256)",
                w1["shard_sha256"] == w2["shard_sha256"],
            )
    rf_a, tf_a = results.get("rf_annotation_w1"), results.get("tf_raw_open")
    if rf_a and tf_a:
        add(
            "rf per annotation and TF raw: same file names (Keras naming)",
            rf_a["files"] == tf_a["files"],
            f"{rf_a['files']} vs {tf_a['files']}",
        )
    return out


def fmt_rate(x: float | None, bound: float | None = None) -> str:
    if x is None:
        return "-" if bound is None else f"< {bound:,.0f}"
    return f"{x:,.0f}"


def fmt_ratio(x: float | None, bound: float | None = None) -> str:
    if x is None:
        return "-" if bound is None else f"< {bound:.2f}x"
    return f"{x:.2f}x" if x < 1 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def print_report(report: dict[str, Any], meta: dict[str, Any], m: dict[str, Any]) -> None:
    full, sub = m[FULL], m[SUBSET]
    print()
    print(
        f"COCO per annotation / per image -> TFRecord, files of <= 4096 records. Full set: "
        f"{full['images']:,} images ({full['copies']} copies of tiny COCO val2017), "
        f"{full['annotations']:,} annotations, {full['source_bytes'] / 1e6:,.1f} MB of JPEG. "
        f"The Keras example's way runs once on the first {sub['copies']} copies "
        f"({sub['images']} images, {sub['annotations']:,} annotations): its rates are per "
        f"image / per annotation of that subset. Times: whole conversion, JSON parse "
        f"included, best of the runs listed; output in the page cache (no fsync)."
    )
    print()
    print(
        "| layout | way | set | runs (s) | images/s | annotations/s | CPU s (best run) "
        "| output MB | output ÷ source JPEG |"
    )
    print("|---|---|---|---|--:|--:|--:|--:|--:|")
    for row in report["rows"]:
        if "best_s" in row:
            runs = ", ".join(f"{s:.2f}" for s in row["all_s"])
            print(
                f"| per {row['layout']} | {row['label']} | {row['set']} ({row['images']:,} img) "
                f"| {runs} | {fmt_rate(row['images_per_s'])} "
                f"| {fmt_rate(row['annotations_per_s'])} | {row['cpu_s']:.2f} "
                f"| {row['output_bytes'] / 1e6:,.1f} | {row['output_vs_source']:.3f}x |"
            )
        elif "stopped_after_s" in row:
            print(
                f"| per {row['layout']} | {row['label']} | full ({row['images']:,} img) "
                f"| stopped > {row['stopped_after_s']:.0f} "
                f"| < {row['images_per_s_max']:,.0f} | < {row['annotations_per_s_max']:,.0f} "
                f"| - | - | - |"
            )
        else:
            print(f"| per {row['layout']} | {row['label']} | not run | | | | | | |")
    print()
    print("| recordforge per annotation | ÷ Keras example's way | ÷ TF raw (tf.io.read_file) "
          "| ÷ TF raw (open().read()) |")  # fmt: skip
    print("|---|--:|--:|--:|")
    by = {(c["rf"], c["peer"]): c for c in report["comparisons"]}
    for rf_key in ("rf_annotation_w1", "rf_annotation_w2"):
        cells = []
        for peer in ("keras_way", "tf_raw_read_file", "tf_raw_open"):
            c = by[(rf_key, peer)]
            cpu = "" if c["ratio_cpu"] is None else f" (CPU {fmt_ratio(c['ratio_cpu'])})"
            cells.append(fmt_ratio(c["ratio"], c["ratio_max"]) + cpu)
        print(f"| workers={rf_key[-1]} | " + " | ".join(cells) + " |")
    print()
    print("| target | measured | judged on | result |")
    print("|---|--:|---|---|")
    for t in report["targets"]:
        shown = "-" if t["value"] is None else f"{t['value']:.3f}x"
        if t["id"] != "image_bytes" and t["value"] is not None:
            shown = fmt_ratio(t["value"])
        status = "n/a" if t["pass"] is None else "PASS" if t["pass"] else "MISS"
        print(f"| {t['what']} {t['target']} | {shown} | {t['judged_on']} | {status} |")
    print()
    rows = {r["way"]: r for r in report["rows"]}
    dup = full["annotation_image_bytes"] / full["source_bytes"]
    print(
        f"Bytes: per annotation every record carries its whole image, so the layout stores "
        f"{dup:.2f}x the source JPEG bytes before any framing "
        f"({full['annotations']:,} annotations on {full['images_with_annotations']:,} of "
        f"{full['images']:,} images); the Keras way re-encodes (tf.io.encode_jpeg, "
        f"quality 95), lossy, which changes its bytes. Per image: one record per image "
        f"with all its objects (polygons included)."
    )
    for key in ("rf_annotation_w1", "rf_image_w1"):
        r = rows[key]
        if r.get("load_s") is not None:
            print(f"  {key}: of its best run, {r['load_s']:.2f} s parse the COCO JSON")
    checks = report["checks"]
    bad = [c for c in checks if not c["ok"]]
    print(f"Correctness checks: {len(checks) - len(bad)}/{len(checks)} passed")
    for c in bad:
        print(f"  FAILED: {c['check']} {c['detail']}")
    build = meta["recordforge_build"]
    print(
        f"recordforge {meta['versions'].get('recordforge')}, TensorFlow "
        f"{meta['versions'].get('tensorflow')}; build {build['commit']}, _core sha256 "
        f"{build['sha256']}. Load average before/after: {meta['loadavg_before']} / "
        f"{meta['loadavg_after']} on {meta['cpus']} CPUs ({meta['cpu']})."
    )


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="400 images, fewer runs (~1 min)")
    ap.add_argument("--copies", type=int, help="copies of the 50 images (default 40)")
    ap.add_argument("--keras-copies", type=int, help="copies the Keras way converts (default 3)")
    ap.add_argument(
        "--workers-timeout",
        type=float,
        help="stop a workers=2 run after this many seconds (default 60; 0: no limit)",
    )
    ap.add_argument("--no-workers", action="store_true", help="skip the workers=2 runs")
    ap.add_argument("--json", type=Path, help="write all results and the report here")
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args()
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    copies = args.copies or cfg["copies"]
    keras_copies = min(copies, args.keras_copies or cfg["keras_copies"])
    limit = cfg["workers_timeout"] if args.workers_timeout is None else args.workers_timeout

    from bench_core import _build_id, _cpu_model, _loadavg

    t_start = time.perf_counter()
    meta: dict[str, Any] = {
        "quick": args.quick,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "loadavg_before": _loadavg(),
        "recordforge_build": _build_id(),
        "workers_timeout_s": limit or None,
    }
    # On the file system of $TMPDIR, like every output directory of every way.
    data = Path(tempfile.mkdtemp(prefix="recordforge-bench-coco-"))
    try:
        print(f"replicating tiny COCO x{copies} into {data} ...", flush=True)
        m = generate(data, copies, keras_copies, cfg["timing"])
        print(
            f"  {m[FULL]['images']:,} images, {m[FULL]['annotations']:,} annotations, "
            f"{m[FULL]['source_bytes'] / 1e6:,.1f} MB of JPEG",
            flush=True,
        )
        results: dict[str, Any] = {}
        stopped: dict[str, Any] = {}
        versions: dict[str, str] = {}
        plan: list[tuple[str, list[str], float | None]] = [
            ("recordforge", ["rf_annotation_w1", "rf_image_w1"], 900),
            ("tensorflow", ["tf_raw_read_file", "tf_raw_open", "keras_way"], 900),
        ]
        if not args.no_workers:
            plan += [
                ("recordforge", ["rf_annotation_w2"], limit or None),
                ("recordforge", ["rf_image_w2"], limit or None),
            ]
        for peer, runs, timeout in plan:
            res, stop = run_peer(peer, data, runs, timeout)
            if "version" in res:
                versions[peer] = res.pop("version")
            results.update(res)
            stopped.update(stop)
        meta["versions"] = versions
        meta["loadavg_after"] = _loadavg()
        builds = {k: r["build"] for k, r in results.items() if "build" in r}
        meta["recordforge_build"]["measured"] = builds
        if set(builds.values()) - {meta["recordforge_build"]["sha256"]}:
            meta["recordforge_build"]["changed_during_run"] = True
            print(f"!!! recordforge's extension module changed during the run: {builds}")
        elif _build_id()["sha256"] != meta["recordforge_build"]["sha256"]:
            meta["recordforge_build"]["changed_after_measured_runs"] = True
            print("note: recordforge's extension module changed after the runs it measured")
        report = build_report(results, stopped, m)
        print_report(report, meta, m)
        meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        print(f"total {meta['elapsed_s']} s")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"meta": meta, "manifest": m, "results": results, "report": report}, indent=1
                )
            )
            print(f"wrote {args.json}")
    finally:
        if args.keep_data:
            print(f"data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

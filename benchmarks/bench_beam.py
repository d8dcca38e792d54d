"""The same COCO conversion locally (``workers=1``, ``workers=2``) and on Apache Beam's
in-process runner (FnApiRunner: in this process, and with 2 worker processes): wall time
of each, Beam's overhead against local ``workers=2``, and the per-worker rate that the
Dataflow estimate in docs/beam.md starts from.

    python benchmarks/bench_beam.py [--quick] [--copies 40] [--per image|annotation]
                                    [--reps 2] [--json out.json] [--keep-data]

The tiny COCO val2017 images are replicated ``--copies`` times (default 40: 2,000 images,
15,280 annotations, ~330 MB of JPEG) into a temporary directory. Each way runs ``--reps``
times (best kept) in this process, writing to a fresh directory on the same file
system; every output is checked byte for byte against the local workers=1 output. Two
shardings: ``--num-shards 8`` (Beam converts in one pass) and the default 256 MB shards
(Beam first measures every item's records, then writes: two encodes). See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _coco_common import FULL, TINY_COCO, annotations_file, replicate  # noqa: E402

import recordforge as rf  # noqa: E402
from recordforge.sources.coco import CocoSource  # noqa: E402
from recordforge.writer import write_source  # noqa: E402

TARGET_OVERHEAD = 2.0


def _shas(out: Path) -> list[str]:
    return [s.checksum for shards in rf.Manifest.load(out).splits.values() for s in shards]


def _local(source: CocoSource, out: Path, workers: int, options: dict[str, Any]) -> None:
    write_source(
        source,
        out,
        workers=workers,
        **options,
    )


def _beam(source: CocoSource, out: Path, workers: int, options: dict[str, Any]) -> None:
    import recordforge.beam

    recordforge.beam.convert(source, out, workers=workers, **options)


def _time(fn: Any, reps: int, scratch: Path, name: str) -> tuple[float, Path]:
    best = float("inf")
    out = scratch / name
    for _ in range(reps):
        if out.exists():
            shutil.rmtree(out)
        start = time.perf_counter()
        fn(out)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 copies, 1 rep")
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--per", choices=["image", "annotation"], default="image")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.copies, args.reps = 8, 1
    if not TINY_COCO.is_dir():
        print(f"tiny COCO not found at {TINY_COCO}; nothing to measure")
        return 0
    data = Path(tempfile.mkdtemp(prefix="recordforge-bench-beam-"))
    try:
        full, _ = replicate(TINY_COCO, data, args.copies, 1)
        n_images, n_annotations = len(full["images"]), len(full["annotations"])
        jpeg_mb = sum(f.stat().st_size for f in (data / "images").iterdir()) / 1e6
        source = CocoSource.from_files(annotations_file(data, FULL), data / "images", per=args.per)
        scratch = data / "out"
        scratch.mkdir()
        rows: list[dict[str, Any]] = []
        for label, options in (("num_shards=8", {"num_shards": 8}), ("max_bytes=256MB", {})):
            ways = {
                "local workers=1": lambda o, opt=options: _local(source, o, 1, opt),
                "local workers=2": lambda o, opt=options: _local(source, o, 2, opt),
                "beam in-process, 1 worker": lambda o, opt=options: _beam(source, o, 1, opt),
                "beam in-process, 2 workers": lambda o, opt=options: _beam(source, o, 2, opt),
            }
            times: dict[str, float] = {}
            reference: list[str] | None = None
            for name, fn in ways.items():
                seconds, out = _time(fn, args.reps, scratch, name.replace(" ", "_"))
                shas = _shas(out)
                reference = reference or shas
                times[name] = seconds
                rows.append(
                    {
                        "sharding": label,
                        "way": name,
                        "seconds": round(seconds, 3),
                        "images_per_s": round(n_images / seconds, 1),
                        "jpeg_mb_per_s": round(jpeg_mb / seconds, 1),
                        "identical_to_workers_1": shas == reference,
                    }
                )
            for beam_way in ("beam in-process, 1 worker", "beam in-process, 2 workers"):
                ratio = times[beam_way] / times["local workers=2"]
                rows.append(
                    {
                        "sharding": label,
                        "beam": beam_way,
                        "overhead_beam_vs_local_w2": round(ratio, 2),
                    }
                )
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
            "data": f"tiny COCO x{args.copies}: {n_images} images, {n_annotations} "
            f"annotations, {jpeg_mb:.0f} MB JPEG, per {args.per}",
            "reps": args.reps,
            "rows": rows,
        }
        print(f"{result['machine']}; {result['data']}; best of {args.reps}")
        print("| sharding | way | s | images/s | JPEG MB/s | same bytes as workers=1 |")
        print("|---|---|---:|---:|---:|---|")
        for row in rows:
            if "way" in row:
                print(
                    f"| {row['sharding']} | {row['way']} | {row['seconds']:.2f} | "
                    f"{row['images_per_s']:,.0f} | {row['jpeg_mb_per_s']:.0f} | "
                    f"{'yes' if row['identical_to_workers_1'] else 'NO'} |"
                )
        for row in rows:
            if "overhead_beam_vs_local_w2" in row:
                ratio = row["overhead_beam_vs_local_w2"]
                verdict = "meets" if ratio < TARGET_OVERHEAD else "misses"
                print(
                    f"{row['beam']} / local workers=2 ({row['sharding']}): {ratio:.2f}x "
                    f"({verdict} the < {TARGET_OVERHEAD:.0f}x target)"
                )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if args.keep_data:
            print(f"data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

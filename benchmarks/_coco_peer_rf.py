"""recordforge side of bench_coco.py, in its own process: COCO -> TFRecord the way a user
does it (``CocoSource.from_files`` + ``write_dataset``, wired as ``recordforge convert
coco`` wires them), per annotation and per image, with 1 or 2 worker processes.

    python benchmarks/_coco_peer_rf.py --data DIR --out results.json [--runs ...]
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from _coco_common import (
    FULL,
    KERAS_RECORDS_PER_FILE,
    RUNS_RF,
    SUBSET,
    OutDirs,
    Results,
    annotation_key,
    annotations_file,
    digest,
    image_key,
    image_tag,
    images_dir,
    load_manifest,
    peer_args,
    shard_files,
    time_runs,
    warm_page_cache,
)

import recordforge as rf
from recordforge.sources.coco import CocoSource
from recordforge.writer import DEFAULT_TEMPLATE, write_source

# Per annotation, the shard files are named as the Keras example names its files.
KERAS_NAMES = "file_{index:02d}-{records}.tfrec"


def convert(data: Path, which: str, per: str, workers: int, out: Path) -> dict[str, float]:
    """One conversion, as ``recordforge convert coco --per PER --max-records 4096
    --workers N`` runs it; returns how long loading the JSON took."""
    t0 = time.perf_counter()
    source = CocoSource.from_files(annotations_file(data, which), images_dir(data), per=per)
    t1 = time.perf_counter()
    write_source(
        source,
        out,
        max_records=KERAS_RECORDS_PER_FILE,
        workers=workers,
        name_template=KERAS_NAMES if per == "annotation" else DEFAULT_TEMPLATE,
    )
    return {"load_s": t1 - t0, "write_s": time.perf_counter() - t1}


def check(out: Path, per: str) -> dict[str, Any]:
    """What the run wrote: shard files, records, bytes, and the digest of its records."""
    files = shard_files(out)
    keys, counts = [], []
    for path in files:
        n = 0
        for record in rf.read_records(path):
            ex = rf.decode_example(record)
            n += 1
            if per == "annotation":
                keys.append(
                    annotation_key(
                        id=ex["id"][0],
                        image_id=ex["image_id"][0],
                        category_id=ex["category_id"][0],
                        area=ex["area"],
                        bbox=ex["bbox"],
                        path=ex["path"][0],
                        image=image_tag(ex["image"][0]),
                    )
                )
            else:
                keys.append(
                    image_key(
                        source_id=ex["image/source_id"][0],
                        file_name=ex["image/filename"][0],
                        image=image_tag(ex["image/encoded"][0]),
                        size=(int(ex["image/width"][0]), int(ex["image/height"][0])),
                        ids=ex["image/object/id"],
                    )
                )
        counts.append(n)
    manifest = json.loads((out / "dataset.json").read_text())
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    return {
        "files": [p.name for p in files],
        "records_per_file": counts,
        "records": sum(counts),
        "output_bytes": sum(p.stat().st_size for p in files),
        "manifest_bytes": (out / "dataset.json").stat().st_size,
        "shard_sha256": [s["checksum"] for s in shards],
        "manifest_records": sum(s["records"] for s in shards),
        "digest": digest(keys),
    }


def main() -> None:
    args = peer_args(__doc__ or "", RUNS_RF)
    data: Path = args.data
    m = load_manifest(data)
    R = Results("recordforge", rf.__version__)
    T = m["timing"]
    # Which build this process measured (it may be rebuilt beside a long run).
    build = hashlib.sha256(Path(rf._core.__file__).read_bytes()).hexdigest()[:16]
    warm_page_cache(data, FULL)
    for run in args.runs:
        per = "annotation" if "annotation" in run else "image"
        workers = int(run[-1])
        outs = OutDirs(data, f"out-{run}")
        phases: list[dict[str, float]] = []

        def once(
            out: Path, per: str = per, workers: int = workers, phases: list[Any] = phases
        ) -> None:
            phases.append(convert(data, FULL, per, workers, out))

        def warmup(out: Path, per: str = per) -> None:
            convert(data, SUBSET, per, 1, out)

        slow = workers > 1
        timing = time_runs(
            once,
            outs,
            reps=1 if slow else T["reps"],
            max_total=T["max_total"],
            # Worker runs: one run in a fresh process, pool start included, as a user's.
            warmup=None if slow else warmup,
            started=args.out.with_suffix(".started"),
        )
        facts = check(outs.last(), per)
        facts["load_s"] = phases[timing["best_index"]]["load_s"]
        facts["expected_files"] = math.ceil(m[FULL][f"{per}_records"] / KERAS_RECORDS_PER_FILE)
        R.add(
            run,
            timing,
            images=m[FULL]["images"],
            annotations=m[FULL]["annotations"],
            set=FULL,
            build=build,
            **facts,
        )
        outs.cleanup()
    R.write(args.out)


if __name__ == "__main__":  # the worker pool's processes import this module too
    main()

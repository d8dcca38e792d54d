"""Shared helpers of the COCO benchmark (``bench_coco.py``) and its peer processes.

Standard library and NumPy only, so that the recordforge and the TensorFlow processes load
the same harness code and nothing else of each other. The data set layout:

    DATA/images/{image_id:012d}.jpg     the tiny COCO val2017 images, replicated
    DATA/instances.json                 COCO instances of all copies (new image / annotation ids)
    DATA/instances-subset.json          the first copies only (the Keras way's set, warm-ups)
    DATA/manifest.json                  counts, source bytes, expected digests, timing settings
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TINY_COCO = Path("/work/shared/data/tiny_coco")
FULL, SUBSET = "full", "subset"
# New ids of copy k: image ids stay below 10**6 in val2017 (12-digit file names keep
# working for 10**6 copies); annotation ids reach ~9.1e11 (crowd regions), so they move
# by whole 10**12 steps.
IMAGE_ID_STEP = 1_000_000
ANNOTATION_ID_STEP = 10**12
KERAS_RECORDS_PER_FILE = 4096  # the Keras example's num_samples, and our max_records


def annotations_file(data: Path, which: str) -> Path:
    return data / ("instances.json" if which == FULL else "instances-subset.json")


def images_dir(data: Path) -> str:
    # No trailing slash: recordforge joins with os.path.join, the Keras example with
    # f"{images_dir}/...": both give the same "path" feature.
    return str(data / "images")


# ---------------------------------------------------------------------------------------
# Data set


def replicate(
    src: Path, data: Path, copies: int, subset_copies: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies the val2017 images ``copies`` times under new ids and file names, with their
    annotations (new ids, same order); writes the full and the subset JSON. Deterministic.
    Returns the full and the subset COCO dicts."""
    coco = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    (data / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    subset: dict[str, Any] = {}
    for k in range(copies):
        for im in coco["images"]:
            new_id = im["id"] + k * IMAGE_ID_STEP
            name = f"{new_id:012d}.jpg"
            # A real copy, not a hard link: every file has its own pages in the page cache,
            # as a real data set of this many images would.
            shutil.copyfile(src / "val2017" / im["file_name"], data / "images" / name)
            images.append({**im, "id": new_id, "file_name": name})
        for ann in coco["annotations"]:
            annotations.append(
                {
                    **ann,
                    "id": ann["id"] + k * ANNOTATION_ID_STEP,
                    "image_id": ann["image_id"] + k * IMAGE_ID_STEP,
                }
            )
        if k + 1 == subset_copies:
            subset = {**coco, "images": list(images), "annotations": list(annotations)}
    full = {**coco, "images": images, "annotations": annotations}
    annotations_file(data, FULL).write_text(json.dumps(full))
    annotations_file(data, SUBSET).write_text(json.dumps(subset))
    return full, subset


def image_tag(data: bytes) -> str:
    """What the correctness digests know of stored image bytes: CRC32 and length (cheap;
    the check is about the conversion, not about adversaries)."""
    return f"crc:{zlib.crc32(data):08x}:{len(data)}"


def jpeg_tag(data: bytes) -> str:
    """What the digests know of a re-encoded image: that it is a JPEG, and its size."""
    width, height = jpeg_size(data)
    return f"jpeg:{width}x{height}"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, without decoding."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    i = 2
    while i + 9 <= len(data):
        marker = data[i + 1]
        if marker in range(0xC0, 0xD0) and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    raise ValueError("JPEG without a frame header")


def f32(values: Any) -> bytes:
    return np.asarray(values, dtype=np.float32).reshape(-1).tobytes()


def annotation_key(
    *,
    id: Any,
    image_id: Any,
    category_id: Any,
    area: Any,
    bbox: Any,
    path: bytes | str,
    image: str,
) -> bytes:
    """One per-annotation record, normalised (float32 bits, bytes path): equal for equal
    records, whoever wrote and whoever parsed them."""
    p = path if isinstance(path, bytes) else path.encode()
    head = struct.pack("<qqq", int(id), int(image_id), int(category_id))
    return b"|".join((head, f32(area), f32(bbox), p, image.encode()))


def image_key(
    *, source_id: bytes | str, file_name: bytes | str, image: str, size: tuple[int, int], ids: Any
) -> bytes:
    """One per-image record (the fields this check looks at), normalised."""
    sid = source_id if isinstance(source_id, bytes) else source_id.encode()
    name = file_name if isinstance(file_name, bytes) else file_name.encode()
    ids_b = np.sort(np.asarray(ids, dtype=np.int64).reshape(-1)).tobytes()
    return b"|".join((sid, name, image.encode(), struct.pack("<qq", *size), ids_b))


def digest(keys: Iterable[bytes]) -> str:
    """Order-free digest of records (their keys sorted)."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(hashlib.sha256(key).digest())
    return h.hexdigest()


def expected_digests(coco: dict[str, Any], data: Path) -> dict[str, str]:
    """What each layout's records must hold, computed from the JSON and the image files."""
    tags: dict[str, str] = {}
    jpegs: dict[str, str] = {}
    by_id = {im["id"]: im for im in coco["images"]}
    for im in coco["images"]:
        raw = (data / "images" / im["file_name"]).read_bytes()
        tags[im["file_name"]] = image_tag(raw)
        jpegs[im["file_name"]] = f"jpeg:{im['width']}x{im['height']}"
    ann_raw, ann_jpeg = [], []
    ids: dict[int, list[int]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        im = by_id[a["image_id"]]
        common = {
            "id": a["id"],
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "area": a["area"],
            "bbox": a["bbox"],
            "path": os.path.join(images_dir(data), im["file_name"]),
        }
        ann_raw.append(annotation_key(**common, image=tags[im["file_name"]]))
        ann_jpeg.append(annotation_key(**common, image=jpegs[im["file_name"]]))
        ids[a["image_id"]].append(a["id"])
    per_image = [
        image_key(
            source_id=str(im["id"]),
            file_name=im["file_name"],
            image=tags[im["file_name"]],
            size=(im["width"], im["height"]),
            ids=ids[im["id"]],
        )
        for im in coco["images"]
    ]
    return {
        "annotation_raw": digest(ann_raw),
        "annotation_jpeg": digest(ann_jpeg),
        "image": digest(per_image),
    }


def warm_page_cache(data: Path, which: str) -> int:
    """Reads the JSON and every image of the set once (the timed runs find them in the page
    cache); returns the images' bytes."""
    coco = json.loads(annotations_file(data, which).read_text())
    total = 0
    for im in coco["images"]:
        total += len((data / "images" / im["file_name"]).read_bytes())
    return total


# ---------------------------------------------------------------------------------------
# Timing


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (a worker pool's processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class OutDirs:
    """A fresh output directory for every run, on the same file system as the data; the
    previous ones are deleted (untimed) before the next run, then ``sync`` so every writer
    starts with no dirty pages of anyone else's to flush."""

    def __init__(self, root: Path, stem: str) -> None:
        self.root, self.stem, self.count = root, stem, 0
        self.made: list[Path] = []

    def next(self) -> Path:
        self.count += 1
        path = self.root / f"{self.stem}-{self.count}"
        self.made.append(path)
        return path

    def last(self) -> Path:
        return self.made[-1]

    def cleanup(self, keep_last: bool = False) -> None:
        keep = self.made[-1:] if keep_last else []
        for path in self.made:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
        self.made = list(keep)
        os.sync()


def time_runs(
    fn: Callable[[Path], Any],
    outs: OutDirs,
    *,
    reps: int,
    max_total: float,
    warmup: Callable[[Path], Any] | None = None,
    started: Path | None = None,
) -> dict[str, Any]:
    """Best of up to ``reps`` wall-clock runs of ``fn(out_dir)``, each into a fresh
    directory. A run always completes; no new one starts once the runs so far have taken
    ``max_total`` seconds (so slow ways get fewer runs, at least 1). ``warmup`` (untimed)
    runs first. The garbage collector stays on: this is a whole conversion as a user runs
    it. ``started`` (if given) gets the wall-clock time at which each run starts, so that a
    driver that kills a run past its limit knows how long it ran."""
    if warmup is not None:
        outs.cleanup()
        warmup(outs.next())
    samples: list[float] = []
    cpu: list[float] = []
    while len(samples) < max(1, reps):
        outs.cleanup()
        gc.collect()
        if started is not None:
            started.write_text(repr(time.time()))
        c0, t0 = _cpu_seconds(), time.perf_counter()
        fn(outs.next())
        samples.append(time.perf_counter() - t0)
        cpu.append(_cpu_seconds() - c0)
        if sum(samples) + min(samples) > max_total:
            break
    best = int(np.argmin(samples))
    return {
        "best_s": samples[best],
        "best_index": best,
        "median_s": float(np.median(samples)),
        "all_s": [round(s, 4) for s in samples],
        "runs": len(samples),
        "best_cpu_s": cpu[best],
        "all_cpu_s": [round(c, 4) for c in cpu],
    }


def shard_files(out: Path) -> list[Path]:
    """The TFRecord files a run wrote (not dataset.json), in name order."""
    return sorted(p for p in out.iterdir() if p.suffix in (".tfrecord", ".tfrec"))


# ---------------------------------------------------------------------------------------
# Peer process plumbing

RUNS_RF = ("rf_annotation_w1", "rf_image_w1", "rf_annotation_w2", "rf_image_w2")
RUNS_TF = ("keras_way", "tf_raw_read_file", "tf_raw_open")


def peer_args(description: str, runs: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, type=Path, help="data directory of bench_coco.py")
    ap.add_argument("--out", required=True, type=Path, help="where to write the JSON results")
    ap.add_argument("--runs", default=",".join(runs), help="comma-separated: " + ",".join(runs))
    args = ap.parse_args()
    args.runs = [x for x in args.runs.split(",") if x]
    for x in args.runs:
        if x not in runs:
            ap.error(f"unknown run {x!r}")
    return args


def load_manifest(data: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((data / "manifest.json").read_text())
    return manifest


class Results:
    """One peer process's measurements, checks and notes, written as JSON."""

    def __init__(self, peer: str, version: str) -> None:
        self.peer, self.version = peer, version
        self.results: dict[str, dict[str, Any]] = {}

    def add(self, key: str, timing: dict[str, Any], **facts: Any) -> None:
        self.results[key] = {**timing, **facts}
        rates = ", ".join(
            f"{facts[k] / timing['best_s']:,.0f} {k}/s"
            for k in ("images", "annotations")
            if k in facts
        )
        print(
            f"[{self.peer}] {key}: best {timing['best_s']:.2f} s of {timing['runs']} "
            f"({rates}; output {facts.get('output_bytes', 0) / 1e6:,.1f} MB)",
            flush=True,
        )

    def write(self, out: Path) -> None:
        out.write_text(
            json.dumps(
                {"peer": self.peer, "version": self.version, "results": self.results}, indent=1
            )
        )

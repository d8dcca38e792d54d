"""The conversion path at the writer's speed (issue 17): tiny COCO per annotation written
by a hand-written loop, by ``write_dataset(rows)`` and by the CLI, each in its own
process, in alternating rounds.

    python benchmarks/bench_convert_path.py [--copies 10] [--rounds 3] [--json out.json]
        [--before /path/to/other/python] [--tmp DIR] [--only loop,rows,cli,...]

The tiny COCO val2017 instances (50 images, 382 annotations) are repeated ``--copies``
times in one annotations JSON (new image and annotation ids, the same image files), so
``--copies 10`` gives 3,820 records of ~180 KB (the image bytes are in every record).

- ``loop``: the writer's speed. The records' feature dicts, built before the clock starts
  (image bytes read once per image), encoded with ``rf.encode_example`` and written with
  ``rf.TFRecordWriter`` into one file.
- ``loop+fsync``: ``loop`` with the file flushed to disk at the end (``os.fsync``), as
  ``write_dataset`` does for each shard: on a disk, the kernel's writeback is then
  counted in the process's system time instead of in the kernel's flusher threads.
- ``loop+read``: a hand-written converter: the JSON parsed, each image file read, the
  dicts built, encoded and written; what the CLI does, minus its checks and sharding.
- ``rows``: ``rf.write_dataset(rows)`` of the same dicts as ``loop`` (a list, built
  before the clock starts), into a fresh directory.
- ``cli``: ``recordforge convert coco --annotations A --images D --per annotation --out
  O`` in a fresh process; its CPU (from ``getrusage`` of the children) is reported
  whole and less the start-up (``python -m recordforge --version``: the same command's
  start-up, OpenBLAS settings included, measured in its own process in the same
  rounds: ``import``). The package is compiled to ``.pyc``
  first (``compileall``), as pip does when it installs one.
- ``cli-main``: the same command, ``recordforge.cli.__main__.main(argv)`` timed in a
  process that has imported ``recordforge.cli`` already (what ``cli - import`` estimates,
  without the noise of two processes).

Every run reports wall time and CPU time per record, user + system of all threads, and
user alone (writing ~180 KB records into the page cache is mostly system time, which
swings with the machine's memory state; Python's overhead is user time): the best of
the rounds (the machine is shared), each against ``loop``'s best, and ``paired CPU``: the
median over rounds of the CPU against ``loop``'s in the same round. And a digest of the
records written (every way writes the same records). ``--tmp /dev/shm`` keeps the disk
out of it. ``--before`` also runs ``rows``, ``cli``, ``cli-main`` and ``import`` with
``PYTHONPATH`` set to another source tree (e.g. a ``git worktree`` of an earlier commit,
its ``python/`` with a copy of ``_core.abi3.so``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import precompile

HERE = Path(__file__).resolve()
TINY_COCO = Path("/work/shared/data/tiny_coco")
IMAGE_ID_STEP = 1_000_000
ANNOTATION_ID_STEP = 10**12


def make_data(root: Path, copies: int) -> int:
    """Writes ``root/instances.json``: tiny COCO's images ``copies`` times under new ids,
    each pointing at its original file. Returns the number of annotations."""
    coco = json.loads((TINY_COCO / "annotations" / "instances_val2017.json").read_text())
    images, annotations = [], []
    for k in range(copies):
        images += [{**im, "id": im["id"] + k * IMAGE_ID_STEP} for im in coco["images"]]
        annotations += [
            {
                **ann,
                "id": ann["id"] + k * ANNOTATION_ID_STEP,
                "image_id": ann["image_id"] + k * IMAGE_ID_STEP,
            }
            for ann in coco["annotations"]
        ]
    coco = {**coco, "images": images, "annotations": annotations}
    (root / "instances.json").write_text(json.dumps(coco))
    return len(annotations)


def images_dir() -> str:
    return str(TINY_COCO / "val2017")


def coco_rows(annotations: Path, read: dict[str, bytes] | None = None) -> list[dict[str, Any]]:
    """The per-annotation feature dicts, as ``CocoSource(per="annotation")`` makes them
    (tiny COCO has no bad boxes and no unknown categories). ``read``: image bytes by file
    name, shared by all records of an image (read here when missing)."""
    coco = json.loads(annotations.read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    read = {} if read is None else read
    rows: list[dict[str, Any]] = []
    for im in coco["images"]:
        anns = by_image.get(im["id"], [])
        if not anns:
            continue
        path = os.path.join(images_dir(), im["file_name"])
        if im["file_name"] not in read:
            with open(path, "rb") as f:
                read[im["file_name"]] = f.read()
        data = read[im["file_name"]]
        rows.extend(annotation_row(data, path, im, ann) for ann in anns)
    return rows


def annotation_row(
    data: bytes, path: str, im: dict[str, Any], ann: dict[str, Any]
) -> dict[str, Any]:
    """One annotation's record: the image's bytes and path, and the annotation's fields
    (the Keras example's features)."""
    import numpy as np

    return {
        "image": data,
        "path": path,
        "area": np.float32(float(ann["area"])),
        "bbox": np.asarray([float(v) for v in ann["bbox"]], dtype=np.float32),
        "category_id": ann["category_id"],
        "id": ann["id"],
        "image_id": im["id"],
    }


def digest(out: Path) -> str:
    """SHA-256 of the records written under ``out``, in order (shard names sorted)."""
    import recordforge as rf

    h = hashlib.sha256()
    for f in sorted(out.glob("*.tfrecord")):
        for record in rf.read_records(f):
            h.update(record)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# The peer process


def usage() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def run_peer(name: str, root: Path, out: Path) -> dict[str, Any]:
    import recordforge as rf
    import recordforge.cli.__main__

    annotations = root / "instances.json"
    rows: list[dict[str, Any]] = []
    if name in ("loop", "loop+fsync", "rows"):
        rows = coco_rows(annotations)
    if name != "cli-main":
        out.mkdir()
    w0, (u0, s0) = time.perf_counter(), usage()
    if name in ("loop", "loop+fsync"):
        with rf.TFRecordWriter(out / "loop.tfrecord") as w:
            for row in rows:
                w.write(rf.encode_example(row))
        if name == "loop+fsync":
            fd = os.open(out / "loop.tfrecord", os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        n = len(rows)
    elif name == "loop+read":
        n = 0
        with rf.TFRecordWriter(out / "loop.tfrecord") as w:
            for row in coco_rows_streamed(annotations):
                w.write(rf.encode_example(row))
                n += 1
    elif name == "rows":
        rf.write_dataset(rows, out / "ds")
        n = len(rows)
    elif name == "cli-main":
        if recordforge.cli.__main__.main(cli_args(root, out)) != 0:
            raise SystemExit("the command failed")
        n = rf.Manifest.load(out).records()
    else:
        raise SystemExit(f"unknown peer {name}")
    wall, (u1, s1) = time.perf_counter() - w0, usage()
    return {"records": n, "wall": wall, "cpu": u1 - u0 + s1 - s0, "user": u1 - u0}


def cli_args(root: Path, out: Path) -> list[str]:
    return [
        "convert",
        "coco",
        "--annotations",
        str(root / "instances.json"),
        "--images",
        images_dir(),
        "--per",
        "annotation",
        "--out",
        str(out),
    ]


def coco_rows_streamed(annotations: Path) -> Any:
    """``coco_rows`` as a generator: each image file read when its records are made."""

    coco = json.loads(annotations.read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for im in coco["images"]:
        anns = by_image.get(im["id"], [])
        if not anns:
            continue
        path = os.path.join(images_dir(), im["file_name"])
        with open(path, "rb") as f:
            data = f.read()
        for ann in anns:
            yield annotation_row(data, path, im, ann)


# ---------------------------------------------------------------------------------------
# The driver


def child(
    cmd: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, float]]:
    """Runs ``cmd``; returns it and its wall, CPU (user + system) and user seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    return out, {"wall": wall, "cpu": user + after.ru_stime - before.ru_stime, "user": user}


def one_run(name: str, root: Path, out: Path, records: int, env: dict[str, str]) -> dict[str, Any]:
    base = name.removesuffix("-before")
    if base == "import":
        got, times = child([sys.executable, "-m", "recordforge", "--version"], env)
        result = {"records": records, **times}
    elif base == "cli":
        got, times = child([sys.executable, "-m", "recordforge", *cli_args(root, out)], env)
        result = {"records": records, **times}
    else:
        got, _ = child([sys.executable, str(HERE), "--peer", base, str(root), str(out)], env)
        if got.returncode == 0:
            result = json.loads(got.stdout.strip().splitlines()[-1])
    if got.returncode != 0:
        raise SystemExit(f"{name} failed:\n{got.stderr[-3000:]}")
    if base != "import":
        result["digest"] = digest(out / "ds" if base == "rows" else out)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="loop,loop+fsync,loop+read,rows,cli,cli-main,import")
    p.add_argument("--before", default=None, help="PYTHONPATH of another recordforge")
    p.add_argument("--tmp", default=None, help="where data and outputs go (default: TMPDIR)")
    p.add_argument("--json", default=None)
    p.add_argument("--peer", nargs=3, metavar=("NAME", "ROOT", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peer:
        name, root, out = a.peer
        print(json.dumps(run_peer(name, Path(root), Path(out))))
        return
    names = a.only.split(",")
    if a.before:
        names += [f"{n}-before" for n in names if n in ("rows", "cli", "cli-main", "import")]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-convert-", dir=a.tmp) as tmp:
        root = Path(tmp)
        records = make_data(root, a.copies)
        for f in (TINY_COCO / "val2017").iterdir():
            f.read_bytes()  # into the page cache
        # The fresh processes (cli, import) start as an installed package's would.
        precompile(dict(os.environ))
        if a.before:
            precompile(dict(os.environ, PYTHONPATH=a.before))
        for r in range(a.rounds):
            for name in names:
                env = dict(os.environ)
                if name.endswith("-before"):
                    env["PYTHONPATH"] = a.before or ""
                out = root / "out"
                shutil.rmtree(out, ignore_errors=True)
                results.setdefault(name, []).append(one_run(name, root, out, records, env))
                shutil.rmtree(out, ignore_errors=True)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    report(results, records)
    if a.json:
        Path(a.json).write_text(json.dumps({"records": records, "results": results}))


def report(results: dict[str, list[dict[str, Any]]], records: int) -> None:
    """Best of the rounds, µs per record: wall, CPU, user; CPU and user against loop's."""
    best = {
        name: [min(r[k] for r in runs) / records * 1e6 for k in ("wall", "cpu", "user")]
        for name, runs in results.items()
    }
    base = best.get("loop", [0.0, 0.0, 0.0])
    print(f"{records} records per run; best of {len(next(iter(results.values())))} rounds")
    print(
        f"{'way':20} {'wall µs/rec':>12} {'CPU µs/rec':>11} {'user µs/rec':>12} "
        f"{'CPU vs loop':>12} {'user vs loop':>13} {'paired CPU':>11}  digest"
    )

    def line(name: str, wall: float, cpu: float, user: float, tail: str) -> None:
        ratios = [f"{v / b:.2f}x" if b else "" for v, b in ((cpu, base[1]), (user, base[2]))]
        paired = ""
        if "loop" in results and name in results:
            # The median over rounds of this way's CPU over loop's in the same round.
            pairs = zip(results[name], results["loop"], strict=False)
            paired = f"{statistics.median(r['cpu'] / b['cpu'] for r, b in pairs):.2f}x"
        print(
            f"{name:20} {wall:12.1f} {cpu:11.1f} {user:12.1f} {ratios[0]:>12} {ratios[1]:>13}"
            f" {paired:>11}  {tail}"
        )

    for name, runs in results.items():
        wall, cpu, user = best[name]
        if name.startswith("import"):
            print(f"{name:20} {wall:12.1f} {cpu:11.1f} {user:12.1f}  (start-up, per record)")
            continue
        line(name, wall, cpu, user, runs[0]["digest"])
        startup = "import-before" if name.endswith("-before") else "import"
        if name.removesuffix("-before") == "cli" and startup in best:
            net = [v - s for v, s in zip(best[name], best[startup], strict=True)]
            line(f"{name} - import", *net, "")


if __name__ == "__main__":
    main()

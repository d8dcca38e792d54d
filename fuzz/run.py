"""Builds the seed corpora and runs the atheris fuzz targets for a bounded time.

    python fuzz/run.py                       # every target, 60 s each
    python fuzz/run.py --seconds 30 --targets decode
    python fuzz/run.py --fresh               # forget the corpus grown by earlier runs

Targets: ``read_records`` (framing, CRCs, compression), ``decode`` (the Example and
SequenceExample decoders), ``manifest`` (a mutated ``dataset.json`` read by the manifest
loader, ``open_dataset``, ``ds[i]`` and ``count``), ``dataset`` (a mutated whole file
read by ``open_dataset``, ``batches()`` and ``ds[i]``) and ``salvage`` (a mutated,
damaged whole file salvaged, counted and verified).

Seeds are generated at every run from the golden TFRecord files (never copied into the
repository): the files as they are, GZIP- and ZLIB-compressed with Python's ``gzip`` and
``zlib`` (for ``read_records``), and their individual records (for the decoders); the
``manifest`` and ``dataset`` targets add the files of small datasets written with fixed
data, ``salvage`` hand-made damage (torn writes, a 2^40 length, flips) of fixed records
(the same seeds every run). Everything is written under ``--workdir`` (default
``fuzz/work/``, which git ignores):

    seeds/<target>/          rebuilt every run
    corpus/<target>/         grows across runs (libFuzzer writes new inputs here)
    artifacts/<target>-<time>/  crash-*, timeout-*, oom-* inputs of one run
    tmp/<target>/            the dataset directories the targets read (removed after)

Each target runs with ``-max_total_time=SECONDS -timeout=10 -rss_limit_mb=2048``. The exit
status is non-zero when any target crashed, hung, ran out of memory or left an artifact;
keep the input as a regression file in ``fuzz/regressions/`` once it is understood.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
DEFAULT_GOLDEN = Path(os.environ.get("RECORDFORGE_GOLDEN", "/work/shared/data/tfrecord_vectors"))
GOLDEN_GLOBS = (
    "pytorch_data/*.tfrecord",
    "datumaro_tf_od_api/*.tfrecord",
    "tf_ranking/*.tfrecord",
)
TARGETS = {
    "read_records": FUZZ_DIR / "fuzz_read_records.py",
    "decode": FUZZ_DIR / "fuzz_decode.py",
    "manifest": FUZZ_DIR / "fuzz_manifest.py",
    "dataset": FUZZ_DIR / "fuzz_dataset.py",
    "salvage": FUZZ_DIR / "fuzz_salvage.py",
}
MAX_LEN = 1 << 15  # the largest golden file is ~22 kB

sys.path.insert(0, str(FUZZ_DIR))
import fuzz_read_records as frr  # noqa: E402


def golden_files(golden: Path) -> list[Path]:
    files = sorted(p for g in GOLDEN_GLOBS for p in golden.glob(g))
    if not files:
        raise SystemExit(f"no golden .tfrecord files under {golden} (set --golden)")
    return files


def _write(directory: Path, data: bytes) -> None:
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def build_read_records_seeds(files: list[Path], out: Path) -> int:
    sel = frr.selector
    seeds: list[bytes] = []
    for path in files:
        raw = path.read_bytes()
        gz, zl = _gzip(raw), zlib.compress(raw)
        seeds += [
            bytes([sel("auto")]) + raw,
            bytes([sel(None)]) + raw,
            bytes([sel("auto", verify=False)]) + raw,
            bytes([sel("auto", via_path=True)]) + raw,
            bytes([sel("auto")]) + gz,
            bytes([sel("gzip")]) + gz,
            bytes([sel("gzip", verify=False, via_path=True)]) + gz,
            bytes([sel("auto")]) + zl,
            bytes([sel("zlib")]) + zl,
            bytes([sel("zlib", via_path=True)]) + zl,
        ]
        records, _ = frr._parse_frames(raw)
        if len(records) > 1:  # multi-member GZIP, split at a record boundary and inside one
            first = len(records[0]) + 16
            seeds.append(bytes([sel("auto")]) + _gzip(raw[:first]) + _gzip(raw[first:]))
            seeds.append(bytes([sel("gzip")]) + _gzip(raw[: first + 5]) + _gzip(raw[first + 5 :]))
    small = frr.frame(b"") + frr.frame(b"foo")
    seeds += [
        bytes([sel("auto")]) + small,
        bytes([sel("zlib")]) + zlib.compress(small),
        bytes([sel("gzip")]) + _gzip(small) + _gzip(b""),
        bytes([sel(None)]),
        bytes([sel("gzip")]),
    ]
    for s in seeds:
        _write(out, s)
    return len(set(seeds))


def build_decode_seeds(files: list[Path], out: Path) -> int:
    import numpy as np

    import recordforge as rf

    seeds: set[bytes] = set()
    for path in files:
        records, _ = frr._parse_frames(path.read_bytes())
        seeds.update(records)
    seeds.add(rf.encode_example({"i": [1, -1, 2**62], "f": 0.5, "b": [b"x", b""]}))
    seeds.add(rf.encode_example({"e": np.array([], np.int64)}))
    seeds.add(
        rf.encode_sequence_example(
            {"id": 7}, {"tok": [[b"a"], np.array([], np.float32), [1, 2]], "none": []}
        )
    )
    seeds.add(b"")
    for s in seeds:
        _write(out, s)
    return len(seeds)


def build_manifest_seeds(files: list[Path], out: Path) -> int:
    import fuzz_manifest

    try:
        seeds = fuzz_manifest.seeds()
    finally:
        fuzz_manifest.cleanup()
    for s in seeds:
        _write(out, s)
    return len(set(seeds))


def build_dataset_seeds(files: list[Path], out: Path) -> int:
    import fuzz_dataset

    try:
        seeds = fuzz_dataset.seeds(files)
    finally:
        fuzz_dataset.cleanup()
    for s in seeds:
        _write(out, s)
    return len(set(seeds))


def build_salvage_seeds(files: list[Path], out: Path) -> int:
    import fuzz_salvage

    seeds = fuzz_salvage.seeds(files)
    for s in seeds:
        _write(out, s)
    return len(set(seeds))


def run_target(
    name: str, seconds: int, work: Path, seeds: Path, extra: list[str]
) -> tuple[bool, str]:
    corpus = work / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = work / "artifacts" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts / "fuzz.log"
    cmd = [
        sys.executable,
        str(TARGETS[name]),
        str(corpus),
        str(seeds),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-max_len={MAX_LEN}",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        *extra,
    ]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    # The manifest and dataset targets make their directories here (libFuzzer exits
    # without running Python's cleanup): removed once the target has stopped.
    scratch = work / "tmp" / name
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RF_FUZZ_TMP": str(scratch)}
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=seconds + 300,
                cwd=REPO,
                env=env,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "killed: libFuzzer did not stop on its own"
    elapsed = time.monotonic() - started
    shutil.rmtree(scratch, ignore_errors=True)
    text = log.read_text(errors="replace")
    bad = re.compile(r"(crash|timeout|oom|leak|slow-unit)-")
    found = sorted(p.name for p in artifacts.iterdir() if bad.match(p.name))
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", text)
    peak = re.search(r"stat::peak_rss_mb:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", text)
    summary = (
        f"{name}: rc={rc} in {elapsed:.0f}s, "
        f"{runs.group(1) if runs else '?'} execs, {speed.group(1) if speed else '?'} exec/s, "
        f"peak RSS {peak.group(1) if peak else '?'} MB"
        + (f", cov {cov[-1][0]} ft {cov[-1][1]} corpus {cov[-1][2]}" if cov else "")
    )
    ok = rc == 0 and not found
    if not ok:
        summary += f"\n  FAILED; log: {log}"
        for f in found:
            summary += f"\n  artifact: {artifacts / f}"
        tail = "\n".join(text.splitlines()[-40:])
        summary += "\n  --- log tail ---\n" + tail
    return ok, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    ap.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    ap.add_argument("--workdir", type=Path, default=FUZZ_DIR / "work")
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--fresh", action="store_true", help="delete the grown corpus first")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="targets fuzzed at once, each in its own process (each still gets --seconds)",
    )
    ap.add_argument(
        "--libfuzzer-arg", action="append", default=[], help="extra libFuzzer flag (repeatable)"
    )
    args = ap.parse_args(argv)

    files = golden_files(args.golden)
    work = args.workdir.resolve()
    builders = {
        "read_records": build_read_records_seeds,
        "decode": build_decode_seeds,
        "manifest": build_manifest_seeds,
        "dataset": build_dataset_seeds,
        "salvage": build_salvage_seeds,
    }
    for name in args.targets:
        seeds = work / "seeds" / name
        shutil.rmtree(seeds, ignore_errors=True)
        seeds.mkdir(parents=True)
        if args.fresh:
            shutil.rmtree(work / "corpus" / name, ignore_errors=True)
        n = builders[name](files, seeds)
        print(f"== {name}: {n} seeds from {len(files)} golden files in {seeds}", flush=True)
    # Each target is its own process with its own corpus, artifacts and scratch directory:
    # run side by side, they share nothing (the summaries are printed in target order).
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(
            pool.map(
                lambda name: run_target(
                    name, args.seconds, work, work / "seeds" / name, args.libfuzzer_arg
                ),
                args.targets,
            )
        )
    print()
    for _, summary in results:
        print(summary)
    failed = [s for ok, s in results if not ok]
    print("FAIL" if failed else "OK: no crash, hang or OOM")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

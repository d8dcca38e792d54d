"""The main path of one extra, run by tests/extras/run.sh in a fresh venv that holds only
recordforge and that extra: a dependency the extra forgot to declare fails here rather
than in a user's first command. Every input is made here, under ``--work``.

    python main_paths.py beam --work /tmp/some-empty-dir

Not collected by pytest (it needs a venv of its own); ``make extras`` runs it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import recordforge as rf

BIN = Path(sys.executable).parent
START = time.monotonic()
ROWS = 1000


def step(message: str) -> None:
    print(f"  [{time.monotonic() - START:5.1f}s] {message}", flush=True)


def cli(*args: object) -> str:
    """Runs this venv's ``recordforge`` command; its output is shown only on failure."""
    words = [str(a) for a in args]
    step("recordforge " + " ".join(words))
    done = subprocess.run(
        [str(BIN / "recordforge"), *words], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.stdout.write(done.stdout + done.stderr)
        raise SystemExit(f"recordforge {words[0]} exited with {done.returncode}")
    return done.stdout


def count(path: object) -> int:
    return int(json.loads(cli("count", "--json", path))["records"])


def make_csv(path: Path) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "score", "name", "maybe"])
        for i in range(ROWS):
            out.writerow([i, i / 4, f"row {i}", "" if i % 7 == 0 else i * 2])
    return path


def make_image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def ids_of(path: Path | str) -> np.ndarray:
    ds = rf.open_dataset(path)
    return np.concatenate([np.ravel(b["id"]) for b in ds.batches(256)])


def shards(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if ".tfrecord" in p.name}


def table(work: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = make_csv(work / "data.csv")
    cli("convert", "table", data, "--out", work / "csv", "--max-records", 300, "--index")
    cli("verify", work / "csv")
    assert np.array_equal(ids_of(work / "csv"), np.arange(ROWS))
    columns = {"id": np.arange(ROWS), "v": np.linspace(0, 1, ROWS, dtype=np.float32)}
    pq.write_table(pa.table(columns), work / "data.parquet")
    cli("convert", "table", work / "data.parquet", "--out", work / "parquet")
    cli("verify", work / "parquet")
    assert np.array_equal(ids_of(work / "parquet"), np.arange(ROWS))
    with (work / "data.jsonl").open("w") as f:
        f.writelines(json.dumps({"id": i, "tags": ["a"] * (i % 3)}) + "\n" for i in range(ROWS))
    cli("convert", "table", work / "data.jsonl", "--out", work / "jsonl")
    assert count(work / "jsonl") == ROWS


def images(work: Path) -> None:
    import simplejpeg  # noqa: F401  (the extra's JPEG decoder; Pillow decodes without it)

    root = make_image_folder(work / "folder")
    cli("convert", "images", root, "--out", work / "out", "--max-records", 5, "--index")
    cli("verify", "--images", work / "out")
    cli("preview", work / "out", "--out", work / "sheet.png", "-n", 8, "--cell", 64)
    assert (work / "sheet.png").stat().st_size > 0
    batch = next(rf.open_dataset(work / "out").batches(12))
    pixels = rf.images.decode_batch(list(batch["image/encoded"]), size=16)
    assert pixels.shape == (12, 16, 16, 3), pixels.shape


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cloud(work: Path) -> None:
    """s3:// against a moto server (loopback, offline) run by another interpreter
    (``RECORDFORGE_MOTO_PYTHON``, the dev venv's): moto is a test tool, not part of the
    extra. gs:// gets as far as an anonymous filesystem (no network here)."""
    import fsspec

    moto = os.environ.get("RECORDFORGE_MOTO_PYTHON")
    if not moto:
        raise SystemExit("cloud: set RECORDFORGE_MOTO_PYTHON to a python that has moto[server]")
    port = _free_port()
    server = subprocess.Popen(
        [moto, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        step(f"moto S3 server on 127.0.0.1:{port} (pid {server.pid})")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("cloud: the moto server did not start") from None
                time.sleep(0.2)
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        )
        os.environ.pop("AWS_PROFILE", None)
        fsspec.filesystem("s3").mkdir("extras")
        url = "s3://extras/ds"
        step(f"write_dataset -> {url}")
        rf.write_dataset({"id": np.arange(ROWS)}, url, max_records=300, index=True)
        cli("verify", url)
        cli("verify", "--fast", url)  # the CRC32C S3 keeps of each shard, none read
        cli("info", url)
        assert count(url) == ROWS
        assert np.array_equal(ids_of(url), np.arange(ROWS))
        data = make_csv(work / "data.csv")
        fsspec.filesystem("s3").put(str(data), "extras/in/data.csv")
        step("read s3://extras/in/data.csv back")
        assert rf._fs.read_bytes("s3://extras/in/data.csv") == data.read_bytes()
        fsspec.filesystem("gs", token="anon")
    finally:
        server.terminate()
        server.wait(timeout=30)


def beam(work: Path) -> None:
    """``convert table|images|coco --runner beam`` with nothing but the beam extra; the
    table's shards must equal the local runner's, byte for byte."""
    from recordforge.sources.samples import make_shapes

    data = make_csv(work / "data.csv")
    sharding = ("--max-records", 300)
    cli("convert", "table", data, "--out", work / "local", *sharding)
    cli("convert", "table", data, "--out", work / "beam", *sharding, "--runner", "beam")
    cli("verify", work / "beam")
    assert shards(work / "beam") == shards(work / "local"), "beam and local shards differ"
    # Two splits (the same file twice), one pipeline, one dataset.json.
    two = (data, data, "--split", "a", "--split", "b", *sharding)
    cli("convert", "table", *two, "--out", work / "local2")
    cli("convert", "table", *two, "--out", work / "beam2", "--runner", "beam")
    assert shards(work / "beam2") == shards(work / "local2"), "beam and local splits differ"
    root = make_image_folder(work / "folder")
    cli("convert", "images", root, "--out", work / "images", "--runner", "beam")
    cli("verify", "--images", work / "images")
    step("make_shapes: a COCO sample of 24 images")
    shapes = make_shapes(work / "shapes", images=24, size=64)
    coco = ("--annotations", shapes.instances, "--images", shapes.images)
    coco += ("--captions", shapes.captions, "--num-shards", 2)
    cli("convert", "coco", *coco, "--out", work / "coco", "--runner", "beam")
    cli("verify", "--images", work / "coco")
    assert count(work / "coco") == 24


def _image_dataset(work: Path) -> rf.Dataset:
    root = make_image_folder(work / "folder")
    cli("convert", "images", root, "--out", work / "images")
    return rf.open_dataset(work / "images")


def jax(work: Path) -> None:
    import grain
    import jax.numpy as jnp

    from recordforge.integrations.grain import numpy_batches

    ds = _image_dataset(work)
    step("to_grain, grain.MapDataset, numpy_batches(image_size=16) -> jax")
    source = ds.to_grain()
    first = grain.MapDataset.source(source).shuffle(seed=0).batch(4)[0]
    assert len(first["image/class/label"]) == 4
    batch = next(numpy_batches(ds, 4, image_size=16))
    assert jnp.asarray(batch["image/encoded"]).shape == (4, 16, 16, 3)


def torch(work: Path) -> None:
    ds = _image_dataset(work)
    step("to_torch(batch_size=4, image_size=16)")
    batch = next(iter(ds.to_torch(batch_size=4, image_size=16)))
    assert tuple(batch["image/encoded"].shape) == (4, 16, 16, 3)


def tf(work: Path) -> None:
    rf.write_dataset({"id": np.arange(ROWS)}, work / "out", max_records=300)
    step("to_tf_dataset(batch_size=100)")
    tfds = rf.open_dataset(work / "out").to_tf_dataset(batch_size=100)
    ids = np.concatenate([np.ravel(b["id"].numpy()) for b in tfds])
    assert np.array_equal(ids, np.arange(ROWS))


PATHS: dict[str, Callable[[Path], None]] = {
    "table": table,
    "images": images,
    "cloud": cloud,
    "beam": beam,
    "jax": jax,
    "torch": torch,
    "tf": tf,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extra", choices=sorted(PATHS))
    parser.add_argument("--work", type=Path, required=True, help="an empty directory")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    PATHS[args.extra](args.work)
    step(f"{args.extra}: main path passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

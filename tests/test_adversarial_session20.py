"""Adversarial checks of four changes: ``start_method()`` ending recordforge's idle
decode threads so that workers fork (``images.close_pools``); chunks that shrink
towards the end of an input of known length (``_SplitRun.chunk_size``); JPEGs decoded
at a reduced DCT scale (Pillow's ``draft``) before ``--resize`` in COCO and image
folders; workers holding a table batch's frames as ``RecordBatch.framed_view()``.

Anything that forks or spawns, or that needs a process with no stray thread, runs in a
fresh interpreter. It found four bugs, fixed: a user's thread whose name starts with
``rf-decode`` was taken for recordforge's own (its pools were shut down beside it, and a
decode in flight in it failed); columns with a custom ``to_records`` failed on forked
workers (a ``_ColumnRows`` slice was a dict of columns, not rows); COCO ``resize`` (and
an image folder's, without ``verify``) stored a JPEG cut in its middle, end marker put
back, re-encoded as a valid gray-filled image."""

from __future__ import annotations

import gc
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import record_chunk_sizes, run_file

import recordforge as rf
from recordforge import _core, _parallel
from recordforge.imageformat import resized_size
from recordforge.sources.coco import CocoSource
from recordforge.sources.images import ImageFolderSource
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

Image = pytest.importorskip("PIL.Image")

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tiny_coco"
TINY_COCO = _SHARED if _SHARED.is_dir() else None


def listing(out: Path) -> dict[str, bytes]:
    """Every file of an output directory (``dataset.json`` included), by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def clean_env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDFORGE_", "RF_ADV"))}
    return {**environ, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter: no pytest threads, no state of earlier tests."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- 1. start_method() ends recordforge's idle decode threads -----------------------------

DECODE_PRELUDE = """
import io, sys, threading, time, warnings
import numpy as np
from PIL import Image
import recordforge as rf
import recordforge.images as images
from recordforge._workers import start_method

def jpeg(k):
    out = io.BytesIO()
    a = (np.arange(24 * 20 * 3).reshape(20, 24, 3) * (k + 1) % 251).astype(np.uint8)
    Image.fromarray(a).save(out, "JPEG")
    return out.getvalue()

def names():
    return sorted(t.name.rsplit("_", 1)[0] for t in threading.enumerate())

IMAGES = [jpeg(k) for k in range(8)]
"""


def test_pools_of_several_thread_counts_are_ended_and_forked_workers_decode(
    tmp_path: Path,
) -> None:
    """Pools of 2, 3 and 1 threads (``threads=1`` makes none): every rf-decode thread is
    ended, the workers fork (no warning), decode on threads of their own inside
    ``to_records`` with the same results as one worker, and the parent decodes again
    the same afterwards, for a second split too."""
    code = DECODE_PRELUDE + textwrap.dedent(
        """
        def to_records(item):
            arrays = rf.images.decode_batch(IMAGES[: 2 + item["id"] % 6], threads=2)
            sums = [int(a.astype(np.int64).sum()) for a in arrays]
            return [rf.encode_example({"id": item["id"], "sums": sums})]

        if __name__ == "__main__":
            first = images.decode_batch(IMAGES, threads=2)
            images.decode_batch(IMAGES, threads=3)
            images.decode_batch(IMAGES, threads=1)
            print("before", names().count("rf-decode"))
            rows = [{"id": i} for i in range(60)]
            splits = {"train": rows, "test": rows[:9]}
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                rf.write_dataset(splits=splits, out=sys.argv[1] + "/w2", workers=2,
                                 to_records=to_records, max_records=11)
                print("after", names(), len(seen))
            again = images.decode_batch(IMAGES, threads=2)
            print("again", all((a == b).all() for a, b in zip(first, again)))
            rf.write_dataset(splits=splits, out=sys.argv[1] + "/w1", workers=1,
                             to_records=to_records, max_records=11)
        """
    )
    done = python(code, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before 5", "after ['MainThread'] 0", "again True"]
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


def test_a_user_thread_decoding_beside_the_pools_means_spawn_and_no_decode_fails() -> None:
    """A user's thread (an ordinary name) decoding in a loop while ``start_method`` is
    asked again and again: always spawn (never a fork beside a running thread), the
    pools are left alone, and every decode in the user's thread succeeds."""
    code = DECODE_PRELUDE + textwrap.dedent(
        """
        expected = images.decode_batch(IMAGES, threads=2)
        errors, stop = [], threading.Event()
        def loop():
            while not stop.is_set():
                try:
                    got = images.decode_batch(IMAGES, threads=2)
                    assert all((a == b).all() for a, b in zip(got, expected))
                except BaseException as e:
                    errors.append(repr(e))
        user = threading.Thread(target=loop, name="prefetcher")
        user.start()
        warnings.simplefilter("ignore")
        methods = {start_method() for _ in range(3000)}
        stop.set()
        user.join()
        print(sorted(methods), errors[:3], names().count("rf-decode"))
        """
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['spawn'] [] 2"


def test_a_user_thread_named_like_ours_alone_means_spawn_with_a_warning() -> None:
    """No pools at all, one user thread named ``rf-decode-prefetch``: it passes the
    name test, ``close_pools`` ends nothing, and the thread is still there: spawn, with
    the warning naming it (never a fork beside it)."""
    code = DECODE_PRELUDE + textwrap.dedent(
        """
        stop = threading.Event()
        user = threading.Thread(target=stop.wait, name="rf-decode-prefetch")
        user.start()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            method = start_method()
        stop.set()
        user.join()
        print(method, len(seen), "(rf-decode-prefetch)" in str(seen[0].message))
        """
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spawn 1 True"


def test_a_user_thread_named_like_ours_beside_the_pools_leaves_them_be() -> None:
    code = DECODE_PRELUDE + textwrap.dedent(
        """
        images.decode_batch(IMAGES, threads=2)
        stop = threading.Event()
        user = threading.Thread(target=stop.wait, name="rf-decode-prefetch")
        user.start()
        warnings.simplefilter("ignore")
        method = start_method()
        print(method, names().count("rf-decode"), len(images._POOLS))
        stop.set()
        user.join()
        """
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spawn 2 1"


def test_a_decode_in_a_thread_named_like_ours_survives_start_method() -> None:
    code = DECODE_PRELUDE + textwrap.dedent(
        """
        expected = images.decode_batch(IMAGES, threads=2)
        real, took, go = images._pool, threading.Event(), threading.Event()
        def paused(threads):
            pool = real(threads)
            if threading.current_thread().name.startswith("rf-decode-"):
                took.set()
                go.wait(10)
            return pool
        images._pool = paused
        result = []
        def user():
            try:
                got = images.decode_batch(IMAGES, threads=2)
                result.append(all((a == b).all() for a, b in zip(got, expected)))
            except BaseException as e:
                result.append(repr(e))
        thread = threading.Thread(target=user, name="rf-decode-prefetch")
        thread.start()
        took.wait(10)
        warnings.simplefilter("ignore")
        method = start_method()
        go.set()
        thread.join()
        print(method, result)
        """
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spawn [True]"


# -- 2. chunks that shrink towards the end --------------------------------------------


def varied(item: dict[str, Any]) -> list[bytes]:
    """0 to 5 records an item (0 for every sixth); ids 3, 10, 17, ... are refused; the
    item at ``RF_ADV_FAIL_AT`` (if set) raises a plain error (stops the conversion)."""
    i = item["id"]
    if str(i) == os.environ.get("RF_ADV_FAIL_AT"):
        raise RuntimeError(f"stopped at {i}")
    if i % 7 == 3:
        raise rf.ItemError(f"row {i}", "refused")
    return [
        rf.encode_example({"id": i, "k": k, "pad": b"z" * ((i * 7 + k) % 50)})
        for k in range((i * 5) % 6)
    ]


def test_any_length_and_layout_writes_the_bytes_of_one_worker(tmp_path: Path) -> None:
    """0, 1, 2, 13 and 97 items of 0 to 5 records, some refused (skipped), cut by
    records, bytes, shard count, gzip-compressed or shuffled: three workers on the
    sequence and two on a generator (no known length) write what one worker writes."""
    for n in (0, 1, 2, 13, 97):
        rows = [{"id": i} for i in range(n)]
        for k, opts in enumerate(
            (
                {"max_records": 7},
                {"num_shards": 4},
                {"max_bytes": 300, "index": True},
                {"max_records": 50, "compression": "gzip"},
                {"max_records": 5, "shuffle": True, "seed": 5},
            )
        ):
            outs = {}
            for label, workers, data in (("w1", 1, rows), ("w3", 3, rows), ("g2", 2, None)):
                if data is None and "num_shards" in opts:
                    continue  # needs a known length
                out = tmp_path / f"{n}-{k}-{label}"
                given = iter(rows) if data is None else data
                rf.write_dataset(
                    given, out, to_records=varied, on_error="skip", workers=workers, **opts
                )
                outs[label] = listing(out)
            assert all(o == outs["w1"] for o in outs.values()), (n, opts)


def test_splits_of_one_item_and_of_none_with_three_workers(tmp_path: Path) -> None:
    splits = {"train": [{"id": 1}], "val": [], "test": [{"id": 4}, {"id": 3}]}
    for workers in (1, 3):
        m = rf.write_dataset(
            splits=splits,
            out=tmp_path / f"w{workers}",
            to_records=varied,
            on_error="skip",
            workers=workers,
            num_shards=2,
        )
        assert [s.records for s in m.splits["train"]] == [0, 5]
        assert [s.records for s in m.splits["val"]] == [0, 0]
    assert listing(tmp_path / "w3") == listing(tmp_path / "w1")


def test_a_resumed_split_counts_only_the_items_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion stopped by an error at item 160 keeps its complete shards; the rerun
    (3 workers) starts at the journal's position, mid-item where a shard cut an item's
    records: its chunks cover exactly the items left, each within the share of the items
    not yet given, the last ones single items; the files are those of one uninterrupted
    worker."""
    rows = [{"id": i} for i in range(240)]
    options: dict[str, Any] = {"max_records": 9, "index": True}
    rf.write_dataset(rows, tmp_path / "ref", to_records=varied, on_error="skip", **options)
    out = tmp_path / "out"
    monkeypatch.setenv("RF_ADV_FAIL_AT", "160")
    with pytest.raises(RuntimeError, match="stopped at 160"):
        rf.write_dataset(rows, out, to_records=varied, on_error="skip", workers=2, **options)
    lines = next(out.glob(".recordforge-progress.json")).read_text().splitlines()
    start_item, start_record = json.loads(lines[-1])["position"]  # the last shard's
    assert (start_item, start_record) == (158, 3)  # mid-item: 3 of its 5 records written
    monkeypatch.delenv("RF_ADV_FAIL_AT")
    sizes = record_chunk_sizes(monkeypatch)
    rf.write_dataset(rows, out, to_records=varied, on_error="skip", workers=3, **options)
    assert listing(out) == listing(tmp_path / "ref")
    given = [(left, size) for left, size in sizes if left]
    assert given[0][0] == 240 - start_item, (start_item, start_record)
    share = 2 * 3 * _parallel.HELD_CHUNKS
    assert all(size <= -(-left // share) for left, size in given)
    assert sum(min(size, left) for left, size in given) == 240 - start_item
    assert [size for _, size in given[-3:]] == [1, 1, 1]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import recordforge as rf

    def to_records(item):
        i = item["id"]
        if i % 7 == 3:
            raise rf.ItemError(f"row {i}", "refused")
        return [rf.encode_example({"id": i, "k": k, "pad": b"z" * ((i * 7 + k) % 50)})
                for k in range((i * 5) % 6)]

    if __name__ == "__main__":
        rows = [{"id": i} for i in range(160)]
        rf.write_dataset(splits={"train": rows, "test": rows[:11]}, out=sys.argv[1],
                         workers=int(sys.argv[2]), to_records=to_records, on_error="skip",
                         max_records=7, index=True)
    """
)


def test_killed_at_stages_with_three_workers_resumes_to_the_same_files(tmp_path: Path) -> None:
    """Killed (SIGKILL) at points spread over the conversion on three workers, then rerun
    on two: the files of one worker, every time."""
    script = tmp_path / "convert.py"
    script.write_text(KILL_SCRIPT)

    def run(out: Path, workers: int, **env: str) -> subprocess.CompletedProcess[str]:
        return run_file(script, str(out), str(workers), env=clean_env(**env))

    assert run(tmp_path / "ref", 1).returncode == 0
    reference = listing(tmp_path / "ref")
    log = tmp_path / "stages"
    assert run(tmp_path / "logged", 3, RECORDFORGE_STAGE_LOG=str(log)).returncode == 0
    assert listing(tmp_path / "logged") == reference
    count = len(log.read_text().splitlines())
    for n in sorted({3, count // 5, count // 2, 4 * count // 5, count - 3}):
        out = tmp_path / f"kill-{n}"
        killed = run(out, 3, RECORDFORGE_KILL_AT=str(n))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        again = run(out, 2)
        assert again.returncode == 0, (n, again.stderr)
        assert listing(out) == reference, n


def doubled(row: dict[str, Any]) -> list[bytes]:
    return [rf.encode_example({"id": int(row["id"]) * 2, "name": row["name"]})]


def test_columns_with_a_custom_conversion_on_workers(tmp_path: Path) -> None:
    columns = {"id": np.arange(50), "name": [f"n{i}" for i in range(50)]}
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import recordforge as rf
        from test_adversarial_session20 import doubled
        columns = {"id": np.arange(50), "name": [f"n{i}" for i in range(50)]}
        rf.write_dataset(columns, sys.argv[1], to_records=doubled, workers=2, max_records=10)
        """
    )
    done = python(code, str(tmp_path / "w2"))
    rf.write_dataset(columns, tmp_path / "w1", to_records=doubled, max_records=10)
    assert done.returncode == 0, done.stderr[-600:]
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


# -- 3. --resize: JPEGs drafted at a reduced scale ---------------------------------------


def _pixels(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, w)[None, :]
    y = np.linspace(0, 255, h)[:, None]
    a = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], -1)
    return np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)


def _jpeg(im: Any, **options: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=92, **options)
    return out.getvalue()


def hostile_jpegs() -> dict[str, bytes]:
    """Grayscale, CMYK, progressive, EXIF-rotated, 1xN and Nx8, exactly 2x/4x/8x a
    target of 64, odd sizes with 4:2:0 subsampling, trailing bytes, a two-frame MPO."""
    rgb = Image.fromarray(_pixels(640, 480))
    exif = Image.Exif()
    exif[0x0112] = 6
    mpo = io.BytesIO()
    rgb.save(mpo, "MPO", save_all=True, append_images=[Image.fromarray(_pixels(640, 480, 1))])
    return {
        "gray": _jpeg(rgb.convert("L")),
        "cmyk": _jpeg(rgb.convert("CMYK")),
        "progressive": _jpeg(rgb, progressive=True),
        "exif6": _jpeg(rgb, exif=exif.tobytes()),
        "tall1": _jpeg(Image.fromarray(_pixels(1, 3000))),
        "wide8": _jpeg(Image.fromarray(_pixels(4000, 8))),
        "x2": _jpeg(Image.fromarray(_pixels(128, 96))),
        "x4": _jpeg(Image.fromarray(_pixels(256, 192))),
        "x8": _jpeg(Image.fromarray(_pixels(512, 384))),
        "odd": _jpeg(Image.fromarray(_pixels(515, 387)), subsampling=2),
        "small": _jpeg(Image.fromarray(_pixels(50, 40))),
        "trailing": _jpeg(rgb) + b"\x00GARBAGE\xff\xd9" * 50,
        "mpo": mpo.getvalue(),
    }


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    return hostile_jpegs()


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes: the stored bytes are a whole image
        return tuple(im.size)  # type: ignore[return-value]


def _mean_difference(stored: bytes, original: bytes) -> float:
    """Mean absolute difference of ``stored`` against a full-size decode of
    ``original`` resized (bicubic) to the stored size, in RGB levels."""
    with Image.open(io.BytesIO(stored)) as im:
        got = np.asarray(im.convert("RGB"), float)
        size = im.size
    with Image.open(io.BytesIO(original)) as im:
        full = np.asarray(im.convert("RGB").resize(size, 3), float)
    return float(np.abs(got - full).mean())


def _folder(root: Path, jpegs: dict[str, bytes]) -> Path:
    for k, (name, data) in enumerate(jpegs.items()):
        (root / "ab"[k % 2]).mkdir(parents=True, exist_ok=True)
        (root / "ab"[k % 2] / f"{name}.jpg").write_bytes(data)
    return root


@pytest.mark.parametrize("target", [1, 64, 300])
def test_image_folder_resize_records_the_stored_size(
    target: int, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """Every record's width and height are those of the image it stores (decoded),
    which is ``resized_size`` of the original (or the original, not larger), in its
    mode (gray stays gray, CMYK stays CMYK), close to a full-size decode resized."""
    src = ImageFolderSource(str(_folder(tmp_path / "tree", jpegs)), resize=target)
    seen = set()
    for item in src.items():
        (record,) = src.to_records(item)
        ex = rf.decode_example(record)
        name = Path(ex["image/filename"][0].decode()).stem
        stored, original = ex["image/encoded"][0], jpegs[name]
        seen.add(name)
        real = _size(stored)
        recorded = (int(ex["image/width"][0]), int(ex["image/height"][0]))
        with Image.open(io.BytesIO(original)) as im:
            expected = resized_size(im.size, target) or im.size
            mode = im.mode
        assert real == recorded == expected, name
        if expected == _size(original):
            assert stored == original, name  # not larger: stored as it is
            continue
        with Image.open(io.BytesIO(stored)) as im:
            assert im.format == "JPEG" and im.mode == mode, name
        # Within 4 levels; at 1 px the DCT-scaled edge blocks of a small image weigh
        # a little more (50x40 -> 7x5 at 1/8, last blocks of 2 and 0 pixels): 8.
        assert _mean_difference(stored, original) < (4 if target > 1 else 8), name
    assert seen == set(jpegs)
    if target == 64:
        write_source(src, tmp_path / "w1", max_records=3)
        write_source(src, tmp_path / "w2", max_records=3, workers=2)
        assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


@pytest.mark.parametrize("per", ["image", "annotation"])
def test_coco_resize_scales_sizes_and_boxes_by_the_stored_image(
    per: str, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """Per image: the recorded size is the stored image's real size, the normalized
    boxes are those of the unresized conversion, polygons scale by the real ratio. Per
    annotation: box and area scale by the real ratio. Two workers write one's bytes."""
    root = tmp_path / "coco"
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for k, (name, data) in enumerate(jpegs.items()):
        (root / "img" / f"{name}.jpg").write_bytes(data)
        w, h = _size(data)
        images.append({"id": k + 1, "file_name": f"{name}.jpg", "width": w, "height": h})
        anns.append(
            {
                "id": 100 + k,
                "image_id": k + 1,
                "category_id": 1,
                "bbox": [w / 4, h / 4, w / 2, h / 2],
                "area": w * h / 4,
                "iscrowd": 0,
                "segmentation": [[0, 0, w / 2, 0, w / 2, h / 2]],
            }
        )
    categories = [{"id": 1, "name": "thing"}]
    annotations = root / "instances.json"
    document = {"images": images, "annotations": anns, "categories": categories}
    annotations.write_text(json.dumps(document))
    plain = CocoSource.from_files(annotations, root / "img", per=per)
    plain_records = {
        item.file_name: plain.to_records(item) for item in plain.items() if hasattr(item, "width")
    }
    for target in (1, 64, 300):
        src = CocoSource.from_files(annotations, root / "img", per=per, resize=target)
        for item in src.items():
            (record,) = src.to_records(item)
            ex = rf.decode_example(record)
            stored = ex["image/encoded" if per == "image" else "image"][0]
            real = _size(stored)
            assert real == (resized_size((item.width, item.height), target) or real)
            sx, sy = real[0] / item.width, real[1] / item.height
            (plain_record,) = plain_records[item.file_name]
            before = rf.decode_example(plain_record)
            if per == "image":
                assert (int(ex["image/width"][0]), int(ex["image/height"][0])) == real
                for c in ("xmin", "ymin", "xmax", "ymax"):
                    key = f"image/object/bbox/{c}"
                    np.testing.assert_array_equal(ex[key], before[key])
                polygon = np.asarray(ex["image/object/mask/polygon"], np.float64).ravel()
                w, h = item.width / 2 * sx, item.height / 2 * sy
                np.testing.assert_allclose(polygon, [0, 0, w, 0, w, h], rtol=1e-6)
            else:
                w, h = item.width, item.height
                np.testing.assert_allclose(
                    ex["bbox"], [w / 4 * sx, h / 4 * sy, w / 2 * sx, h / 2 * sy], rtol=1e-6
                )
                np.testing.assert_allclose(ex["area"], [w * h / 4 * sx * sy], rtol=1e-6)
    src = CocoSource.from_files(annotations, root / "img", per=per, resize=64)
    write_source(src, tmp_path / "w1", max_records=4)
    write_source(src, tmp_path / "w2", max_records=4, workers=2)
    assert listing(tmp_path / "w2") == listing(tmp_path / "w1")


def _truncations(jpegs: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name in ("progressive", "x8", "gray", "cmyk"):
        data = jpegs[name]
        for cut in (len(data) - 2, len(data) * 3 // 4, len(data) // 3, 700):
            out[f"{name}-cut{cut}"] = data[:cut]
    return out


def test_truncated_jpegs_resized_are_item_errors_naming_the_file(
    jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """Cut at its end (EOI gone), in its middle, near its headers: with resize (drafted
    at 1/8 for 8 px, at 1/2 for 200) an image folder's truncated JPEG is an ItemError
    naming the file, as is a COCO image's (naming the image and the path); skipped, with
    the good images written, by two workers as by one."""
    cut = _truncations(jpegs)
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    for name, data in cut.items():
        (tree / "a" / f"{name}.jpg").write_bytes(data)
    (tree / "a" / "good.jpg").write_bytes(jpegs["odd"])
    root = tmp_path / "coco"
    (root / "img").mkdir(parents=True)
    images = []
    for k, (name, data) in enumerate({**cut, "good": jpegs["odd"]}.items()):
        (root / "img" / f"{name}.jpg").write_bytes(data)
        w, h = _size(jpegs["odd"]) if name == "good" else _size(jpegs[name.split("-")[0]])
        images.append({"id": k + 1, "file_name": f"{name}.jpg", "width": w, "height": h})
    annotations = root / "instances.json"
    categories = [{"id": 1, "name": "thing"}]
    document = {"images": images, "annotations": [], "categories": categories}
    annotations.write_text(json.dumps(document))
    for target in (8, 200):
        folder = ImageFolderSource(str(tree), resize=target)
        for item in folder.items():
            if "good" in str(item.path):
                continue
            with pytest.raises(rf.ItemError) as caught:
                folder.to_records(item)
            assert Path(item.path).name in caught.value.item, item
        coco = CocoSource.from_files(annotations, root / "img", resize=target)
        for item in coco.items():
            if item.file_name == "good.jpg":
                continue
            with pytest.raises(rf.ItemError) as caught:
                coco.to_records(item)
            # Found by the header scan (no end marker), before any decode.
            assert item.file_name in caught.value.item
            assert f"img/{item.file_name} is not a readable image" in caught.value.reason
    outs = {}
    for workers in (1, 2):
        src = CocoSource.from_files(annotations, root / "img", resize=64)
        m = write_source(src, tmp_path / f"c{workers}", on_error="skip", workers=workers)
        assert m.report["items"] == len(cut) + 1
        assert len(m.report["skipped"]) == len(cut)
        assert sum(s.records for s in m.splits["train"]) == 1
        outs[workers] = listing(tmp_path / f"c{workers}")
    assert outs[1] == outs[2]


def _cut_with_end_marker(jpegs: dict[str, bytes]) -> dict[str, bytes]:
    """Cut in the middle (or in the tables), the end marker put back: the header scan
    finds nothing wrong; libjpeg warns ("premature end of data segment") and fills in."""
    out = {}
    for name in ("progressive", "x8", "gray", "cmyk"):
        data = jpegs[name]
        for cut in (len(data) * 3 // 4, 700):
            out[f"{name}-eoi{cut}"] = data[:cut] + b"\xff\xd9"
    return out


def test_a_jpeg_cut_with_its_end_marker_put_back_is_found_by_verify_when_resized(
    jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """``ImageFolderSource(resize=, verify=True)``: an ItemError naming the file, at a
    drafted target (8) and at one it is not (600)."""
    (tmp_path / "a").mkdir()
    for name, data in _cut_with_end_marker(jpegs).items():
        (tmp_path / "a" / f"{name}.jpg").write_bytes(data)
    for target in (8, 600):
        src = ImageFolderSource(str(tmp_path), resize=target, verify=True)
        for item in src.items():
            with pytest.raises(rf.ItemError, match="premature end of data") as caught:
                src.to_records(item)
            assert Path(item.path).name in caught.value.item


def test_a_jpeg_cut_with_its_end_marker_put_back_is_refused_when_resized_unverified(
    jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """Without ``verify``, an image resized is decoded strictly all the same (it would
    otherwise be stored re-encoded as a clean image): an ItemError naming the file."""
    (tmp_path / "a").mkdir()
    for name, data in _cut_with_end_marker(jpegs).items():
        (tmp_path / "a" / f"{name}.jpg").write_bytes(data)
    src = ImageFolderSource(str(tmp_path), resize=8)
    for item in src.items():
        with pytest.raises(rf.ItemError, match=r"damaged JPEG|premature end of data") as caught:
            src.to_records(item)
        assert Path(item.path).name in caught.value.item


def test_coco_resize_refuses_a_jpeg_cut_with_its_end_marker_put_back(
    jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    (tmp_path / "img").mkdir()
    images = []
    for k, (name, data) in enumerate(_cut_with_end_marker(jpegs).items()):
        (tmp_path / "img" / f"{name}.jpg").write_bytes(data)
        w, h = _size(jpegs[name.split("-")[0]])
        images.append({"id": k + 1, "file_name": f"{name}.jpg", "width": w, "height": h})
    categories = [{"id": 1, "name": "thing"}]
    document = {"images": images, "annotations": [], "categories": categories}
    (tmp_path / "instances.json").write_text(json.dumps(document))
    src = CocoSource.from_files(tmp_path / "instances.json", tmp_path / "img", resize=64)
    refused = 0
    for item in src.items():
        try:
            src.to_records(item)
        except rf.ItemError as e:
            refused += item.file_name in e.item
    assert refused == len(images)


@pytest.mark.skipif(TINY_COCO is None, reason="tiny COCO not found")
def test_tiny_coco_resized_on_two_workers_equals_one(tmp_path: Path) -> None:
    """Real COCO JPEGs (640 px) to 100 (drafted at 1/4) and to 320 (exactly 1/2 for
    640 wide): stored sizes as recorded, two workers' files equal to one's."""
    assert TINY_COCO is not None
    annotations = TINY_COCO / "annotations" / "instances_val2017.json"
    for target in (100, 320):
        src = CocoSource.from_files(annotations, TINY_COCO / "val2017", resize=target)
        write_source(src, tmp_path / f"{target}-1", max_records=20)
        write_source(src, tmp_path / f"{target}-2", max_records=20, workers=2)
        assert listing(tmp_path / f"{target}-2") == listing(tmp_path / f"{target}-1")
        for shard in sorted((tmp_path / f"{target}-1").glob("*.tfrecord")):
            for record in rf.read_records(shard):
                ex = rf.decode_example(record)
                real = _size(ex["image/encoded"][0])
                assert real == (int(ex["image/width"][0]), int(ex["image/height"][0]))
                assert max(real) == target


# -- 4. framed_view: workers hold a batch's own buffer ------------------------------------


def _columns(n: int, salt: int) -> dict[str, Any]:
    return {
        "id": np.arange(n, dtype=np.int64) + salt,
        "blob": [bytes([(i + salt) % 251]) * ((i * 13 + salt) % 300) for i in range(n)],
    }


def test_framed_view_cannot_be_made_writable_pickled_or_read_out_of_bounds() -> None:
    pool = _core.BlockPool()
    batch = rf.encode_record_batch(_columns(40, 1), pool=pool)
    view = batch.framed_view()
    array = view.obj
    assert isinstance(array, np.ndarray) and array.base is batch
    for attempt in (
        lambda: setattr(array.flags, "writeable", True),
        lambda: array.setflags(write=True),
        lambda: np.frombuffer(view, np.uint8).__setitem__(0, 1),
        lambda: array.__setitem__(0, 1),
    ):
        with pytest.raises(ValueError):
            attempt()
    assert memoryview(array).readonly and np.asarray(view).flags.writeable is False
    with pytest.raises(TypeError):
        pickle.dumps(view)
    with pytest.raises(OverflowError):
        batch.framed_view(-1)
    assert sum(int(s) + 16 for s in batch.sizes()) == view.nbytes == len(batch.framed())
    empty = rf.encode_record_batch({"id": np.arange(0)}, pool=pool)
    assert len(empty) == 0 and bytes(empty.framed_view()) == b""
    with pytest.raises(IndexError):
        empty.framed_view(0, 1)


def test_views_across_threads_stay_their_bytes_while_the_pool_is_reused() -> None:
    """Four threads make batches in one pool, keep a view of every third (a slice of
    some), drop the rest (their buffers go back and are overwritten by later batches);
    then the pool and every batch are dropped: each view still holds its bytes."""
    pool = _core.BlockPool()
    kept: list[tuple[memoryview, bytes]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work(t: int, pool: Any) -> None:
        try:
            for k in range(60):
                n = 1 + (k * 7 + t) % 90
                batch = rf.encode_record_batch(_columns(n, t * 1000 + k), pool=pool, threads=1)
                if k % 3 == 0:
                    start, stop = (0, n) if k % 2 else (n // 3, n)
                    view, expected = batch.framed_view(start, stop), batch.framed(start, stop)
                    with lock:
                        kept.append((view, expected))
                del batch
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(t, pool)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    del pool
    gc.collect()
    churn = _core.BlockPool()
    for k in range(20):  # fresh allocations over freed memory, were any freed early
        rf.encode_record_batch(_columns(90, 7777 + k), pool=churn)
    assert len(kept) == 80
    assert all(bytes(view) == expected for view, expected in kept)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("tables")
    n = 2000
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n).astype(np.float32),
            "s": [f"row-{i}-" + "q" * (i % 37) for i in range(n)],
            "maybe": pa.array([None if i % 11 == 0 else i for i in range(n)], pa.int64()),
        }
    )
    pq.write_table(table, root / "t.parquet", row_group_size=97)
    pacsv.write_csv(table, root / "t.csv")
    with open(root / "t.jsonl", "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    # Bad cells in a few rows: those batches are converted row by row (lists of bytes,
    # not record batches) beside batches that are not, in the same chunks.
    lines = (root / "t.csv").read_text().splitlines()
    for i in (5, 400, 401, 1500):
        lines[i + 1] = lines[i + 1].replace(f"{i},", "oops,", 1)
    (root / "bad.csv").write_text("\n".join(lines) + "\n")
    return {p.stem + p.suffix: p for p in root.iterdir()}


@pytest.mark.parametrize("name", ["t.parquet", "t.csv", "t.jsonl", "bad.csv"])
def test_tables_on_workers_write_the_bytes_of_one(
    name: str, tables: dict[str, Path], tmp_path: Path
) -> None:
    """Parts of ~100-200 rows in batches of 128, by records, gzip by bytes, and a shard
    count: two and three workers write one's files (``bad.csv``: schema given, the bad
    rows skipped and named)."""
    schema = None
    if name == "bad.csv":
        schema = rf.Schema(
            {"id": rf.FeatureSpec(dtype="int64"), "s": rf.FeatureSpec(dtype="string")}
        )
    for k, opts in enumerate(
        (
            {"max_records": 301},
            {"max_bytes": "40kB", "compression": "gzip", "index": True},
            {"num_shards": 5},
        )
    ):
        outs = {}
        for workers in (1, 2, 3):
            src = TableSource(
                tables[name], part_bytes=7000, part_rows=200, batch_size=128, schema=schema
            )
            out = tmp_path / f"{k}-{workers}"
            m = write_source(src, out, workers=workers, on_error="skip", **opts)
            outs[workers] = listing(out)
        assert outs[1] == outs[2] == outs[3], opts
        assert len(src.items()) > 10
        skipped = m.report["skipped"]
        assert sum(s.records for s in m.splits["train"]) == 2000 - len(skipped)
        assert len(skipped) == (4 if name == "bad.csv" else 0)


TABLE_SCRIPT = textwrap.dedent(
    """
    import sys
    from recordforge.sources.table import TableSource
    from recordforge.writer import write_source

    if __name__ == "__main__":
        src = TableSource(sys.argv[1], part_bytes=7000, batch_size=128)
        write_source(src, sys.argv[2], workers=int(sys.argv[3]), max_records=250,
                     compression=sys.argv[4] if sys.argv[4] != "none" else None)
    """
)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_worker_killed_mid_table_then_rerun_writes_the_same_files(
    compression: str, tables: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "table.py"
    script.write_text(TABLE_SCRIPT)

    def run(out: Path, workers: int, **env: str) -> subprocess.CompletedProcess[str]:
        args = [str(tables["t.csv"]), str(out), str(workers), compression]
        return run_file(script, *args, env=clean_env(**env))

    assert run(tmp_path / "ref", 1).returncode == 0
    out = tmp_path / "out"
    killed = run(out, 2, RECORDFORGE_KILL_WORKER_AT="12")
    assert killed.returncode == 1 and "a worker process died" in killed.stderr, killed.stderr
    again = run(out, 2)
    assert again.returncode == 0, again.stderr
    assert listing(out) == listing(tmp_path / "ref")

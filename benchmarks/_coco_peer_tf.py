"""TensorFlow side of bench_coco.py, in its own process: the Keras example "Creating
TFRecords" (keras.io/examples/keras_recipes/creating_tfrecords), written out as it is
there, and the same loop storing the files' bytes as read (no decode / encode).

    python benchmarks/_coco_peer_tf.py --data DIR --out results.json [--runs ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf
from _coco_common import (
    FULL,
    KERAS_RECORDS_PER_FILE,
    RUNS_TF,
    SUBSET,
    OutDirs,
    Results,
    annotation_key,
    annotations_file,
    digest,
    image_tag,
    images_dir,
    jpeg_tag,
    load_manifest,
    peer_args,
    shard_files,
    time_runs,
    warm_page_cache,
)

# ---------------------------------------------------------------------------------------
# The Keras example's helpers, as they are there.


def image_feature(value: Any) -> tf.train.Feature:
    """Returns a bytes_list from a string / byte."""
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(value).numpy()]))


def bytes_feature(value: str) -> tf.train.Feature:
    """Returns a bytes_list from a string / byte."""
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))


def float_feature(value: float) -> tf.train.Feature:
    """Returns a float_list from a float / double."""
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def int64_feature(value: int) -> tf.train.Feature:
    """Returns an int64_list from a bool / enum / int / uint."""
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def float_feature_list(value: list[float]) -> tf.train.Feature:
    """Returns a list of float_list from a float / double."""
    return tf.train.Feature(float_list=tf.train.FloatList(value=value))


def create_example(
    image: Any, path: str, example: dict[str, Any], image_feature: Any = image_feature
) -> tf.train.Example:
    feature = {
        "image": image_feature(image),
        "path": bytes_feature(path),
        "area": float_feature(example["area"]),
        "bbox": float_feature_list(example["bbox"]),
        "category_id": int64_feature(example["category_id"]),
        "id": int64_feature(example["id"]),
        "image_id": int64_feature(example["image_id"]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


# The raw-bytes way: the file's bytes go into the feature as they are.
def raw_image_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def read_with_tf(image_path: str) -> bytes:
    data: bytes = tf.io.read_file(image_path).numpy()
    return data


def read_with_open(image_path: str) -> bytes:
    with open(image_path, "rb") as f:
        return f.read()


def convert(
    annotation_file: Path,
    images_dir: str,
    tfrecords_dir: Path,
    read_image: Callable[[str], Any] | None,
    limit: int | None = None,
) -> None:
    """The example's conversion loop. ``read_image`` None: the example itself
    (``decode_jpeg(read_file(path))`` then ``encode_jpeg``); else that function gives the
    bytes stored. ``limit``: the first annotations only (warm-up)."""
    with open(annotation_file) as f:
        annotations = json.load(f)["annotations"][:limit]
    num_samples = KERAS_RECORDS_PER_FILE
    num_tfrecords = len(annotations) // num_samples
    if len(annotations) % num_samples:
        num_tfrecords += 1  # add one record if there are any remaining samples
    os.makedirs(tfrecords_dir, exist_ok=True)
    for tfrec_num in range(num_tfrecords):
        samples = annotations[(tfrec_num * num_samples) : ((tfrec_num + 1) * num_samples)]
        with tf.io.TFRecordWriter(
            str(tfrecords_dir) + "/file_%.2i-%i.tfrec" % (tfrec_num, len(samples))  # noqa: UP031
        ) as writer:
            for sample in samples:
                image_path = f"{images_dir}/{sample['image_id']:012d}.jpg"
                if read_image is None:
                    image = tf.io.decode_jpeg(tf.io.read_file(image_path))
                    example = create_example(image, image_path, sample)
                else:
                    example = create_example(
                        read_image(image_path), image_path, sample, raw_image_feature
                    )
                writer.write(example.SerializeToString())


def check(out: Path, reencoded: bool) -> dict[str, Any]:
    """What the run wrote, parsed by TensorFlow: files, records, bytes, record digest."""
    files = shard_files(out)
    keys, counts = [], []
    for path in files:
        n = 0
        for raw in tf.data.TFRecordDataset(str(path)):
            fm = tf.train.Example.FromString(raw.numpy()).features.feature
            n += 1
            image = fm["image"].bytes_list.value[0]
            keys.append(
                annotation_key(
                    id=fm["id"].int64_list.value[0],
                    image_id=fm["image_id"].int64_list.value[0],
                    category_id=fm["category_id"].int64_list.value[0],
                    area=list(fm["area"].float_list.value),
                    bbox=list(fm["bbox"].float_list.value),
                    path=fm["path"].bytes_list.value[0],
                    image=jpeg_tag(image) if reencoded else image_tag(image),
                )
            )
        counts.append(n)
    return {
        "files": [p.name for p in files],
        "records_per_file": counts,
        "records": sum(counts),
        "output_bytes": sum(p.stat().st_size for p in files),
        "digest": digest(keys),
    }


def main() -> None:
    args = peer_args(__doc__ or "", RUNS_TF)
    data: Path = args.data
    m = load_manifest(data)
    R = Results("tensorflow", tf.__version__)
    T = m["timing"]
    warm_page_cache(data, FULL)
    images = images_dir(data)
    for run in args.runs:
        # The Keras way is slow: it runs once, on the subset (whole copies of the data).
        which = SUBSET if run == "keras_way" else FULL
        read_image = {"keras_way": None, "tf_raw_read_file": read_with_tf}.get(run, read_with_open)
        outs = OutDirs(data, f"out-{run}")

        def once(out: Path, which: str = which, read_image: Any = read_image) -> None:
            convert(annotations_file(data, which), images, out, read_image)

        def warmup(out: Path, run: str = run, read_image: Any = read_image) -> None:
            # Keras way: a few annotations (loads TF's kernels); others: the subset.
            limit = 8 if run == "keras_way" else None
            convert(annotations_file(data, SUBSET), images, out, read_image, limit)

        timing = time_runs(
            once,
            outs,
            reps=1 if run == "keras_way" else T["reps"],
            max_total=T["max_total"],
            warmup=warmup,
        )
        facts = check(outs.last(), reencoded=run == "keras_way")
        R.add(
            run,
            timing,
            images=m[which]["images"],
            annotations=m[which]["annotations"],
            set=which,
            **facts,
        )
        outs.cleanup()
    R.write(args.out)


if __name__ == "__main__":
    main()

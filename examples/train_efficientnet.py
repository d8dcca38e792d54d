"""Train the Keras example's EfficientNetB0 on a recordforge dataset.

The last step of the Keras example "Creating TFRecords", reproduced from a dataset that
``recordforge convert`` wrote: ``keras.applications.EfficientNetB0(weights=None,
classes=<the classes of the schema's class label>)`` on 224x224 images, Adam, sparse
categorical cross-entropy and accuracy, fed by ``tf.data`` through
``recordforge.integrations.tf.to_tf_dataset`` (``TFRecordDataset`` +
``tf.io.parse_example`` with the feature description generated from ``dataset.json``).

Per-annotation records (``convert coco --per annotation``: ``image``, ``category_id``)
are trained on as in the example; per-image records (the default, TF Object Detection
API keys) use the class of each image's first object as its label and leave out images
without objects. Class ids are mapped to 0..n-1 in the schema's order (COCO's 80
categories, ids 1..90, become 80 classes).

Examples::

    recordforge convert coco --annotations instances_val2017.json --images val2017/ \\
        --per annotation --out coco-ann
    python examples/train_efficientnet.py coco-ann --epochs 2 --steps 100
    # the demo's shapes sample, a small CNN at 64 px (about 0.05 s a step on 2 CPU cores):
    python examples/train_efficientnet.py shapes/dataset --model small --image-size 64 \\
        --epochs 30 --steps 10 --validation heldout/dataset
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import recordforge as rf
from recordforge.integrations.train import (
    MODELS,
    build_model,
    class_label_feature,
    train_classifier,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_efficientnet.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("dataset", help="a recordforge dataset directory (with dataset.json)")
    parser.add_argument(
        "--split", default=None, help="split to train on (default: train, else all)"
    )
    parser.add_argument("--validation", help="a dataset directory to evaluate on each epoch")
    parser.add_argument("--model", choices=MODELS, default="efficientnetb0")
    parser.add_argument("--image-size", type=int, default=224, help="images resized to this")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--steps", type=int, default=None, help="batches per epoch (default: one pass)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--shuffle-buffer", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", help="image feature (default: the schema's image feature)")
    parser.add_argument("--label", help="class-label feature (default: from the schema)")
    parser.add_argument("--save", help="save the trained model here (.keras)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ds = rf.open_dataset(args.dataset, split=args.split)
    validation = rf.open_dataset(args.validation) if args.validation else None
    label = args.label or class_label_feature(ds.schema)
    meaning = ds.schema[label].meaning
    if not isinstance(meaning, rf.ClassLabel):
        raise SystemExit(f"feature {label!r} has no class_label meaning")
    model = build_model(args.model, len(meaning.names), args.image_size)
    print(
        f"{args.model} ({len(meaning.names)} classes from {label!r}) on {len(ds)} records "
        f"of {args.dataset}, {args.image_size}x"
        f"{args.image_size}, batch {args.batch_size}, {args.epochs} epoch(s) of "
        f"{args.steps or 'one pass of'} steps",
        flush=True,
    )

    def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        print(f"epoch {epoch + 1}/{args.epochs}  {shown}", flush=True)

    history = train_classifier(
        ds,
        model=model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        learning_rate=args.learning_rate,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        image=args.image,
        label=label,
        validation=validation,
        on_epoch=on_epoch,
    )
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")
    print(f"final loss {history['loss'][-1]:.4f}  accuracy {history['accuracy'][-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

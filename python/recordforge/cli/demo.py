"""``recordforge demo``: convert the built-in shapes sample and show the result."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from recordforge import demo
from recordforge.cli._output import conversion_progress, print_summary

HELP = (
    "Make the built-in COCO-format shapes sample, convert it, show a decoded record, and "
    "train a small classifier on it for a few hundred steps (--no-train to skip)."
)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: a temporary directory)")
    parser.add_argument("--images", type=int, default=300, help="images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a classifier on the converted records via tf.data (needs TensorFlow)",
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps in all")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the steps are split in")
    parser.add_argument("--image-size", type=int, default=64, help="training image size (px)")
    parser.add_argument(
        "--model",
        choices=("small", "efficientnetb0"),
        default="small",
        help="small CNN (default) or the Keras example's EfficientNetB0 (slow on CPU)",
    )


def _shown(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], bytes) and len(value[0]) > 64:
        return f"[<{len(value[0]):,} bytes, starts {value[0][:4]!r}>]"
    text = repr(value).replace("\n", " ")
    return text if len(text) < 100 else text[:97] + "..."


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    with tempfile.TemporaryDirectory(prefix="recordforge-demo-") as tmp:
        with conversion_progress(args.images, "convert shapes (COCO)") as progress:
            report = demo.run(
                args.out or tmp, images=args.images, seed=args.seed, progress=progress
            )
        print_summary(report.manifest, report.out)
        schema = report.manifest.schema
        if schema is not None:
            console.print(f"schema: {len(schema)} features", markup=False)
        console.print("first record, decoded:")
        for name, value in report.first_record.items():
            console.print(
                f"  {name}: {_shown(value)}", markup=False, highlight=False, soft_wrap=True
            )
        if args.train:
            return _train(console, report, args)
    return 0


def _train(console: Any, report: demo.DemoReport, args: argparse.Namespace) -> int:
    # TensorFlow's C++ start-up notices (oneDNN, CPU flags) are noise in a demo.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras  # type: ignore[import-untyped]  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        console.print(
            "training skipped: it needs TensorFlow and Keras (pip install 'recordforge[tf]')"
        )
        return 0
    what = "a small CNN" if args.model == "small" else "EfficientNetB0 (random weights)"
    console.print(
        f"\ntraining {what} on {args.image_size}x{args.image_size} images, {args.steps} steps "
        f"on CPU, via to_tf_dataset (tf.data + parse_example): label = class of each image's "
        "first shape",
        markup=False,
        soft_wrap=True,
    )
    if args.model == "small":
        console.print(
            "(the Keras example trains EfficientNetB0 on 224x224 images: too slow for a "
            "one-minute CPU demo; examples/train_efficientnet.py runs it)",
            markup=False,
            soft_wrap=True,
        )

    def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
        console.print(
            f"  epoch {epoch + 1:>2}/{args.epochs}  loss {logs['loss']:.3f}  "
            f"accuracy {logs['accuracy']:6.1%}  | held-out loss {logs['val_loss']:.3f}  "
            f"accuracy {logs['val_accuracy']:6.1%}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    result = demo.train(
        report,
        steps=args.steps,
        epochs=args.epochs,
        image_size=args.image_size,
        model=args.model,
        seed=args.seed,
        on_epoch=on_epoch,
    )
    final = result.history["val_accuracy"][-1]
    console.print(
        f"held-out accuracy {final:.1%} on {result.heldout_images} new images; chance "
        f"(always the most frequent class) {result.chance:.1%}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0

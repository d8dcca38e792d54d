"""Training from recordforge datasets: ``train_classifier`` on per-image and
per-annotation records, the ``examples/train_efficientnet.py`` script, and
``recordforge demo`` with its training step (loss falls, accuracy above chance)."""

from __future__ import annotations

import doctest
import importlib.util
import math
import re
from pathlib import Path
from types import ModuleType

import pytest

import recordforge as rf
import recordforge.demo as demo
from recordforge.sources.coco import CocoSource

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from recordforge.cli.__main__ import main  # noqa: E402
from recordforge.integrations import train as rf_train  # noqa: E402
from recordforge.integrations.train import (  # noqa: E402
    build_model,
    class_label_feature,
    train_classifier,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoReport:
    return demo.run(tmp_path_factory.mktemp("shapes"), images=24, max_records=10)


def finite(history: dict[str, list[float]]) -> bool:
    return all(math.isfinite(v) for values in history.values() for v in values)


def test_small_model_on_per_image_shapes(shapes: demo.DemoReport) -> None:
    ds = rf.open_dataset(shapes.out)
    seen: list[tuple[int, dict[str, float]]] = []
    history = train_classifier(
        ds,
        model="small",
        image_size=24,
        batch_size=8,
        epochs=2,
        steps_per_epoch=3,
        validation=ds,
        on_epoch=lambda epoch, logs: seen.append((epoch, dict(logs))),
    )
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 2 for v in history.values()) and finite(history)
    assert [e for e, _ in seen] == [0, 1] and seen[1][1]["loss"] == history["loss"][1]
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"] + history["val_accuracy"])


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_labels_are_the_first_objects_class_as_an_index(shapes: demo.DemoReport) -> None:
    """A model that has learned nothing (all-zero weights: uniform 1/3) has loss ln 3
    whatever the label; one that always answers class index k gets exactly the share
    of first objects of class k right, which pins down the label mapping."""
    ds = rf.open_dataset(shapes.out)
    label = class_label_feature(ds.schema)
    assert label == "image/object/class/label"
    firsts = [int(r[label][0]) for r in ds if len(r[label])]
    ids = ds.schema[label].meaning.ids  # (1, 2, 3): circle, square, triangle
    for k, class_id in enumerate(ids):
        net = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax", trainable=False),
            ]
        )
        dense = net.layers[-1]
        bias = [0.0, 0.0, 0.0]
        bias[k] = 10.0
        dense.set_weights([dense.get_weights()[0] * 0, tf.constant(bias).numpy()])
        history = train_classifier(
            ds, model=net, image_size=16, batch_size=100, epochs=1, shuffle_buffer=0
        )
        assert history["accuracy"][0] == pytest.approx(firsts.count(class_id) / len(firsts))


def test_per_annotation_tiny_coco_maps_ids_to_80_classes(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "tiny_coco"
    source = CocoSource.from_files(
        root / "annotations" / "instances_val2017.json", root / "val2017", per="annotation"
    )
    rf.write_dataset(source.items(), tmp_path, to_records=source.to_records, schema=source.schema())
    ds = rf.open_dataset(tmp_path)
    assert class_label_feature(ds.schema) == "category_id"
    history = train_classifier(
        ds, model="small", image_size=16, batch_size=16, epochs=1, steps_per_epoch=2
    )
    assert finite(history) and len(history["loss"]) == 1
    # 80 classes: an untrained model's loss is about ln 80, far from ln 91.
    assert abs(history["loss"][0] - math.log(80)) < 1.0


def test_build_model_and_errors() -> None:
    net = build_model("efficientnetb0", 3, 32)  # the Keras example's model, random weights
    assert net.name == "efficientnetb0"
    assert tuple(net.input_shape) == (None, 32, 32, 3) and tuple(net.output_shape) == (None, 3)
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("resnet", 3, 32)
    with pytest.raises(rf.SchemaError, match="class_label"):
        class_label_feature(rf.Schema({"x": rf.FeatureSpec(dtype="int64")}))


def load_script() -> ModuleType:
    path = ROOT / "examples" / "train_efficientnet.py"
    spec = importlib.util.spec_from_file_location("train_efficientnet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_script_trains_and_saves(
    shapes: demo.DemoReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    saved = tmp_path / "model.keras"
    args = [str(shapes.out), "--model", "small", "--image-size", "24", "--batch-size", "8"]
    assert script.main([*args, "--epochs", "2", "--steps", "2", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "small (3 classes from 'image/object/class/label') on 24 records" in out
    assert out.count("epoch ") == 2 and "final loss" in out
    assert saved.is_file()
    reloaded = keras.models.load_model(saved)
    assert tuple(reloaded.output_shape) == (None, 3)
    assert "--model" in script.build_parser().format_help()


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(rf_train, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


EPOCH = re.compile(
    r"epoch +(\d+)/(\d+) +loss ([\d.]+) +accuracy +([\d.]+)% +\| held-out loss ([\d.]+) +"
    r"accuracy +([\d.]+)%"
)


@pytest.mark.slow
def test_demo_cli_trains_loss_falls_accuracy_above_chance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo as a user runs it (default steps), in about half a minute."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    epochs = [tuple(float(v) for v in m.groups()) for m in EPOCH.finditer(out)]
    assert len(epochs) == 10 and "small CNN on 64x64 images, 400 steps" in out
    losses = [e[2] for e in epochs]
    assert losses[-1] < losses[0] - 0.1
    final = re.search(r"held-out accuracy ([\d.]+)% on 100 new images; chance .* ([\d.]+)%", out)
    assert final is not None
    accuracy, chance = (float(v) for v in final.groups())
    assert accuracy == epochs[-1][5] and accuracy > chance + 10
    assert (tmp_path / "heldout" / "dataset.json").is_file()


def test_demo_no_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--images", "5", "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "first record" in out and "training" not in out

"""The last step of the Keras example "Creating TFRecords", reproduced: an image
classifier trained with Keras from a recordforge dataset through :func:`to_tf_dataset`.

The example's model is ``keras.applications.EfficientNetB0(weights=None, classes=...)``
on 224x224 inputs, Adam, sparse categorical cross-entropy and accuracy, trained on its
per-annotation records (``image``, ``category_id``). :func:`train_classifier` does that
from any dataset with an encoded-image feature and a class-label feature:

- per-annotation records (the label feature holds one class id): that id;
- per-image records (``image/object/class/label`` holds one id per object): the class
  of the record's **first object**; records without objects are left out.

Class ids are mapped to ``0..n-1`` in the order of the schema's
:class:`~recordforge.ClassLabel` (COCO's 80 categories with ids 1..90 become 80 classes),
and ``n`` is the model's number of classes. ``model="small"`` is a small CNN (three
convolutions) for CPU runs such as ``recordforge demo``; EfficientNetB0 at 224 px takes
seconds per step on a laptop CPU. Keras and TensorFlow are imported when called.

>>> import tempfile, recordforge as rf, recordforge.demo as demo
>>> from recordforge.integrations.train import train_classifier
>>> with tempfile.TemporaryDirectory() as d:
...     report = demo.run(d, images=16)
...     history = train_classifier(rf.open_dataset(report.out), model="small",
...                                image_size=32, batch_size=8, steps_per_epoch=2)
>>> sorted(history), len(history["loss"])
(['accuracy', 'loss'], 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from recordforge.errors import SchemaError
from recordforge.integrations.tf import _Files, image_features, to_tf_dataset
from recordforge.schema import ClassLabel, Schema

__all__ = ["MODELS", "build_model", "class_label_feature", "train_classifier"]

MODELS = ("efficientnetb0", "small")
EpochCallback = Callable[[int, Mapping[str, float]], None]


def class_label_feature(schema: Schema) -> str:
    """The feature holding class ids: the first with the :class:`~recordforge.ClassLabel`
    meaning and an ``int64`` dtype, one value (per annotation) or any number (per image).

    >>> import recordforge as rf
    >>> class_label_feature(rf.Schema({"y": rf.FeatureSpec(dtype="int64",
    ...                                 meaning=rf.ClassLabel(names=("a", "b")))}))
    'y'
    """
    for name, spec in schema.items():
        labels = isinstance(spec.meaning, ClassLabel) and spec.dtype == "int64"
        if labels and spec.shape in ((), (1,), (None,)):
            return name
    raise SchemaError(f"no int64 feature with a class_label meaning in the schema {list(schema)}")


def build_model(name: str, num_classes: int, image_size: int) -> Any:
    """A Keras classifier of ``image_size`` x ``image_size`` RGB images (float 0..255):
    ``"efficientnetb0"`` (the Keras example's, random weights) or ``"small"``."""
    import keras  # type: ignore[import-untyped]

    shape = (image_size, image_size, 3)
    if name == "efficientnetb0":
        return keras.applications.EfficientNetB0(
            weights=None, classes=num_classes, input_shape=shape
        )
    if name == "small":
        layers = keras.layers
        return keras.Sequential(
            [
                keras.Input(shape),
                layers.Rescaling(1 / 255),
                layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(num_classes, activation="softmax"),
            ],
            name="small_cnn",
        )
    raise ValueError(f"model must be one of {MODELS}, not {name!r}")


def train_classifier(
    ds: _Files,
    *,
    model: str | Any = "efficientnetb0",
    image_size: int = 224,
    batch_size: int = 32,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    learning_rate: float = 1e-3,
    shuffle_buffer: int = 1024,
    seed: int | None = 0,
    image: str | None = None,
    label: str | None = None,
    validation: _Files | None = None,
    on_epoch: EpochCallback | None = None,
    verbose: int | str = 0,
) -> dict[str, list[float]]:
    """Trains an image classifier on ``ds`` and returns Keras' history (``loss`` and
    ``accuracy`` per epoch, on the training batches).

    ``model`` is a name of :data:`MODELS` or a compiled-or-not ``keras.Model`` taking
    ``[batch, image_size, image_size, 3]`` float images (0..255). ``image`` and
    ``label`` name the features (default: the schema's only image feature and
    :func:`class_label_feature`). ``steps_per_epoch`` batches make an epoch, the data
    repeating as needed; without it an epoch is one pass. ``seed`` seeds Keras
    (``keras.utils.set_random_seed``: Python, NumPy and TensorFlow) and the shuffle.
    With ``validation`` (a dataset of the same schema), the model is evaluated on it
    after each epoch (``val_loss``, ``val_accuracy``). ``on_epoch(epoch, logs)`` is
    called after each epoch.
    """
    import keras
    import tensorflow as tf

    schema = ds.schema
    if image is None:
        found = image_features(schema)
        if len(found) != 1:
            raise SchemaError(f"name the image feature: the schema has {found or 'none'}")
        image = found[0]
    label = label or class_label_feature(schema)
    meaning = schema[label].meaning
    if not isinstance(meaning, ClassLabel):
        raise SchemaError(f"feature {label!r} has no class_label meaning")
    ids = list(meaning.ids) if meaning.ids is not None else list(range(len(meaning.names)))
    num_classes = len(ids)
    lookup = [-1] * (max(ids) + 1)
    for index, class_id in enumerate(ids):
        lookup[class_id] = index
    if seed is not None:
        keras.utils.set_random_seed(seed)

    table = tf.constant(lookup, tf.int64)
    per_image = not schema[label].fixed

    def pairs(batch: Mapping[str, Any]) -> tuple[Any, Any]:
        x, y = batch[image], batch[label]
        if per_image:  # the first object's class; records without objects left out
            y = tf.RaggedTensor.from_sparse(y)
            keep = y.row_lengths() > 0
            x = tf.boolean_mask(x, keep)
            y = tf.gather(y.values, tf.boolean_mask(y.row_starts(), keep))
        else:
            y = tf.reshape(y, [-1])
        return x, tf.gather(table, y)

    def examples(source: _Files, train: bool) -> Any:
        data = to_tf_dataset(
            source,
            batch_size,
            image_size=image_size,
            features=[image, label],
            shuffle_buffer=shuffle_buffer if train else 0,
            seed=seed,
            repeat=train and steps_per_epoch is not None,
        )
        return data.map(pairs)

    net = build_model(model, num_classes, image_size) if isinstance(model, str) else model
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    callbacks = []
    if on_epoch is not None:
        report = on_epoch
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: report(epoch, dict(logs or {}))
            )
        )
    with warnings.catch_warnings():
        # Keras warns when a validation pass reaches the end of its data: that is the end.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = net.fit(
            examples(ds, train=True),
            validation_data=None if validation is None else examples(validation, train=False),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )
    return {k: [float(v) for v in values] for k, values in history.history.items()}

"""``tf.data`` from a recordforge dataset: TensorFlow's own native reading path.

:func:`to_tf_dataset` is the Keras example's input pipeline ("Creating TFRecords") with
nothing written by hand: ``tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)``
-> shuffle -> batch -> ``tf.io.parse_example`` with the feature description generated
from the dataset's schema -> image decode and resize -> ``(inputs, label)`` pairs for
Keras -> prefetch. TensorFlow is imported when it is called, never at import time.

What each feature becomes, per batch of ``n`` records (as ``tf.io.parse_example`` gives
it for the schema's feature description):

- fixed shape ``()`` / ``(k,)``: a dense ``tf.Tensor`` of shape ``[n]`` / ``[n, k]``;
- ``(None,)`` (any number of values, e.g. the objects of a per-image COCO record): a
  ``tf.SparseTensor`` of dense shape ``[n, longest]`` (``tf.sparse.to_dense`` pads,
  ``tf.RaggedTensor.from_sparse`` gives rows);
- ``(None, None)`` (values + ``<name>/row_lengths``, e.g. polygons): a
  ``tf.RaggedTensor`` of shape ``[n, (rows), (values)]``;
- an image (a ``()`` bytes feature whose meaning is :class:`~recordforge.Image`), when
  ``decode_images``: decoded (JPEG, PNG, GIF, BMP) to 3 channels, HWC. Without
  ``image_size`` it stays ``uint8`` and, since images may differ in size, the batch is a
  ``tf.RaggedTensor`` ``[n, (height), (width), 3]`` (``.to_tensor()`` when they don't).
  With ``image_size=(height, width)`` (or one int for a square) every image is resized
  with ``tf.image.resize`` (bilinear, aspect ratio not kept, as in the Keras example)
  and the batch is a dense ``float32`` tensor ``[n, height, width, 3]`` with values in
  0..255, not rescaled: what ``tf.image.resize`` returns and what
  ``keras.applications`` models such as EfficientNet take (they rescale inside).

A dataset of ``tf.train.SequenceExample`` records (a schema with ``feature_lists``) is
parsed with ``tf.io.parse_sequence_example``: each element is a pair ``(context,
sequence)`` of dicts, the context features as above and each feature list a
``tf.RaggedTensor`` ``[n, (steps), (values)]`` (:meth:`Schema.to_tf_sequence_features
<recordforge.Schema.to_tf_sequence_features>`).

>>> import tempfile, recordforge as rf
>>> from recordforge.integrations.tf import to_tf_dataset
>>> d = tempfile.mkdtemp()
>>> _ = rf.write_dataset([{"x": [i, i + 1], "y": i % 2} for i in range(10)], d)
>>> ds = rf.open_dataset(d)
>>> x, y = next(iter(to_tf_dataset(ds, batch_size=4, features=["x"], label="y")))
>>> x.shape, y.numpy().tolist()
(TensorShape([4, 2]), [0, 1, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from recordforge import _fs
from recordforge import images as rf_images
from recordforge.errors import SchemaError
from recordforge.schema import Image, Schema

__all__ = ["image_features", "to_tf_dataset"]

_COMPRESSION_TYPE = {None: "", "gzip": "GZIP", "zlib": "ZLIB"}


class _Files(Protocol):
    """What :func:`to_tf_dataset` needs of a dataset: its schema, its shard files in
    order, and their compression (``None``, ``"gzip"`` or ``"zlib"``)."""

    @property
    def schema(self) -> Schema: ...

    @property
    def files(self) -> Sequence[str]: ...

    @property
    def compression(self) -> str | None: ...


def image_features(schema: Schema) -> list[str]:
    """The features :func:`to_tf_dataset` decodes: one encoded image per record (shape
    ``()``, bytes) with the :class:`~recordforge.Image` meaning.

    >>> import recordforge as rf
    >>> image_features(rf.Schema({"img": rf.FeatureSpec(dtype="bytes", meaning=rf.Image()),
    ...                           "name": rf.FeatureSpec(dtype="string")}))
    ['img']
    """
    return [
        name
        for name, spec in schema.items()
        if isinstance(spec.meaning, Image) and spec.kind == "bytes" and spec.shape == ()
    ]


def to_tf_dataset(
    ds: _Files,
    batch_size: int = 32,
    *,
    decode_images: bool = True,
    image_size: int | Sequence[int] | None = None,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    features: Sequence[str] | None = None,
    label: str | None = None,
    drop_remainder: bool = False,
    prefetch: bool = True,
    repeat: bool = False,
    interleave: bool = True,
) -> Any:
    """A ``tf.data.Dataset`` of batches read from ``ds.files`` by TensorFlow itself.

    ``ds`` is a recordforge ``Dataset`` (``rf.open_dataset``) or anything with
    ``.schema``, ``.files`` and ``.compression``. Each element is a dict feature name ->
    batched tensor (see the module docstring for what each kind of feature becomes), or,
    with ``label="<feature>"``, a pair ``(inputs, labels)`` for ``keras.Model.fit``:
    ``inputs`` is the one tensor when ``features`` names a single feature besides the
    label (the Keras example's ``(image, category_id)``), a dict of the others
    otherwise. Label values are passed as stored (COCO's category ids stay 1..90).
    SequenceExample records give ``(context, sequence)`` pairs (module docstring), and
    with a label ``((context, sequence), labels)``, the label out of its dict.

    - ``features``: parse only these (``tf.io.parse_example`` skips the others);
    - ``decode_images`` / ``image_size``: decode :func:`image_features` to uint8 HWC,
      resized to float32 ``image_size`` when given;
    - ``shuffle_buffer`` > 0: shuffles the order of the files and the records through a
      buffer of that many records, reshuffled each epoch, reproducible from ``seed``
      (TensorFlow's shuffle: not the order ``Dataset.shuffle`` gives with the same
      seed); a ``Dataset`` made with ``.shuffle(n, seed)`` shuffles so by default;
    - a ``Dataset`` made with ``.shard(index, count)`` gives the records of that shard
      (the same whole files, or the same every ``count``-th record);
    - ``repeat``: cycle forever (for ``fit(steps_per_epoch=...)``);
    - ``drop_remainder``: drop a last, smaller batch (static batch dimension);
    - ``interleave``: read shards in parallel (``num_parallel_reads=AUTOTUNE``), so
      records of different shards interleave; ``False`` reads them one after the other
      and keeps the dataset's own record order;
    - ``prefetch``: overlap input with training (``prefetch(AUTOTUNE)``).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if ds.compression not in _COMPRESSION_TYPE:
        raise ValueError(f"unknown compression {ds.compression!r}")
    schema = ds.schema
    lists = schema.feature_lists
    names = [*schema, *lists] if features is None else list(features)
    if label is not None and label not in names:
        names.append(label)
    unknown = [n for n in names if n not in schema and n not in lists]
    if unknown:
        have = [*schema, *lists]
        raise SchemaError(f"features {unknown} are not in the schema (it has {have})")
    full = schema.to_tf_feature_description()
    description = {name: full[name] for name in names if name in schema}
    steps = schema.to_tf_sequence_features() if lists else {}
    sequence = {name: steps[name] for name in names if name in lists}
    size = None if image_size is None else rf_images.image_size(image_size, name="image_size")
    images = [n for n in image_features(schema) if n in description] if decode_images else []
    files = [str(f) for f in ds.files]
    if not files:
        raise ValueError("the dataset has no files")
    shuffle_buffer, seed, files, record_shard = _order(ds, shuffle_buffer, seed, files)
    if record_shard is not None:
        interleave = False  # every count-th record of the files read in order, as ds does

    filenames = tf.data.Dataset.from_tensor_slices(files)
    # A shard of records takes every count-th record of the files in their stored order:
    # shuffled files would give each host (and epoch) another set of records.
    if shuffle_buffer > 0 and record_shard is None:
        filenames = filenames.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if _tf_opens(tf, files[0]):
        records = tf.data.TFRecordDataset(
            filenames,
            compression_type=_COMPRESSION_TYPE[ds.compression],
            num_parallel_reads=tf.data.AUTOTUNE if interleave and len(files) > 1 else None,
        )
    else:  # s3:// without tensorflow-io, ...: recordforge's streamed reader feeds tf.data
        records = _streamed(tf, filenames, interleave and len(files) > 1)
    if record_shard is not None:
        records = records.shard(record_shard[1], record_shard[0])
    if shuffle_buffer > 0:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size, drop_remainder=drop_remainder)

    def parse(serialized: Any) -> Any:
        if lists:
            parsed, parsed_lists, _ = tf.io.parse_sequence_example(
                serialized, context_features=description, sequence_features=sequence
            )
        else:
            parsed = tf.io.parse_example(serialized, description)
        for name in images:
            parsed[name] = _decode_batch(tf, parsed[name], size)
        return (parsed, parsed_lists) if lists else parsed

    out = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if label is not None and lists:
        out = out.map(lambda c, s: _split_label(c, s, label))
    elif label is not None:
        others = [n for n in names if n != label]
        if len(others) == 1 and features is not None:
            (only,) = others
            out = out.map(lambda p: (p[only], p[label]))
        else:
            out = out.map(lambda p: ({n: p[n] for n in others}, p[label]))
    if prefetch:
        out = out.prefetch(tf.data.AUTOTUNE)
    return out


def _tf_opens(tf: Any, path: str) -> bool:
    """Whether TensorFlow's own file systems read ``path`` (local paths, ``gs://``; an
    ``s3://`` path needs tensorflow-io; fsspec's chained URLs, ``simplecache::gs://...``,
    TensorFlow takes for local paths that do not exist)."""
    if not _fs.is_url(path):
        return True
    if "::" in path.split("://", 1)[0]:
        return False
    try:
        tf.io.gfile.exists(path)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


def _streamed(tf: Any, filenames: Any, parallel: bool) -> Any:
    """The records of ``filenames`` read by recordforge (streamed by range, read ahead
    on a thread, CRCs checked) into ``tf.data``: the files interleaved as TensorFlow's
    reader interleaves them."""
    from recordforge.records import read_records

    def one(name: Any) -> Any:
        return tf.data.Dataset.from_generator(
            lambda path: read_records(path.decode()),
            output_signature=tf.TensorSpec([], tf.string),
            args=(name,),
        )

    if not parallel:
        return filenames.flat_map(one)
    return filenames.interleave(
        one, cycle_length=tf.data.AUTOTUNE, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def _split_label(context: dict[str, Any], sequence: dict[str, Any], label: str) -> Any:
    """``((context, sequence), label)``, the label taken out of its dict."""
    value = context[label] if label in context else sequence[label]
    context = {n: v for n, v in context.items() if n != label}
    sequence = {n: v for n, v in sequence.items() if n != label}
    return (context, sequence), value


def _order(
    ds: _Files, shuffle_buffer: int, seed: int | None, files: list[str]
) -> tuple[int, int | None, list[str], tuple[int, int] | None]:
    """Applies a ``Dataset``'s own ``.shuffle()`` / ``.shard()`` settings: the shuffle
    buffer and seed unless given here; a shard's files (``count`` <= files: every
    ``count``-th file, as ``Dataset`` reads them) or ``(index, count)`` for a shard of
    records (every ``count``-th record), returned for the caller to apply.

    The settings are ``Dataset._order`` (``recordforge.dataset``, no public form yet):
    ignoring them would silently read every record of a shard's dataset.
    """
    order = getattr(ds, "_order", None)
    if order is None:
        return shuffle_buffer, seed, files, None
    if shuffle_buffer == 0 and order.shuffle_buffer:
        shuffle_buffer = order.shuffle_buffer
        seed = order.seed if seed is None else seed
    if order.shard is None:
        return shuffle_buffer, seed, files, None
    index, count = order.shard
    if len(files) >= count:
        return shuffle_buffer, seed, files[index::count], None
    return shuffle_buffer, seed, files, (index, count)


def _decode_batch(tf: Any, encoded: Any, size: tuple[int, int] | None) -> Any:
    """Decodes a ``[n]`` batch of encoded images (see the module docstring)."""

    def decode(data: Any) -> Any:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    if size is None:
        spec = tf.RaggedTensorSpec(shape=[None, None, 3], dtype=tf.uint8, ragged_rank=1)
        return tf.map_fn(
            lambda data: tf.RaggedTensor.from_tensor(decode(data), ragged_rank=1),
            encoded,
            fn_output_signature=spec,
        )
    return tf.map_fn(
        lambda data: tf.image.resize(decode(data), size),
        encoded,
        fn_output_signature=tf.TensorSpec([size[0], size[1], 3], tf.float32),
    )

"""JAX: a recordforge dataset as a Grain random-access data source, and NumPy batches.

:func:`to_grain` (``Dataset.to_grain``) gives a :class:`GrainSource`: ``len()`` records
and ``source[i]`` -> record ``i`` as a dict of NumPy values (what ``ds[i]`` gives: read
through the ``.idx`` files beside the shards, or offsets found by one walk over each
file, with the CRC checked), the ``RandomAccessDataSource`` protocol that Grain's
``DataLoader`` and ``MapDataset.source`` take. Grain does the shuffling, sharding
between hosts (``ShardOptions``), batching and multiprocessing; the source is picklable
(each worker process opens the files itself). Random access needs uncompressed shards.
Grain's default batching stacks every feature, which fails on features whose length
varies (COCO's boxes per image): pass ``batch_fn=source.collate``
(:meth:`GrainSource.collate`), which batches as :meth:`Dataset.batches
<recordforge.Dataset.batches>` does (ragged features as :class:`~recordforge.Ragged`), or
padded with ``functools.partial(source.collate, pad=True)``.
Grain's ``DataLoader(worker_count > 0)`` reads absl flags: outside ``absl.app``, call
``absl.flags.FLAGS.mark_as_parsed()`` first.

Without Grain, :meth:`Dataset.batches <recordforge.Dataset.batches>` already gives dicts
of NumPy arrays, which ``jax.numpy.asarray`` / ``jax.device_put`` take as they are;
:func:`numpy_batches` adds what a JAX training loop wants of them: fixed features only
(ragged ones padded to a fixed length, with their lengths), full batches only (static
shapes, so ``jit`` compiles once) and decoded, resized images.

>>> import tempfile, numpy as np, recordforge as rf
>>> d = tempfile.mkdtemp()
>>> _ = rf.write_dataset({"x": np.arange(10), "y": np.arange(10) % 2}, d, max_records=4)
>>> source = rf.open_dataset(d).to_grain()
>>> len(source), source[5]
(10, {'x': np.int64(5), 'y': np.int64(1)})
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recordforge import images as rf_images
from recordforge.integrations.tf import image_features
from recordforge.ragged import Ragged

if TYPE_CHECKING:
    from recordforge.dataset import Dataset

__all__ = ["GrainSource", "numpy_batches", "to_grain"]


def _fresh(ds: Dataset) -> Dataset:
    """The same dataset without its open files and caches (picklable): ``select`` of all
    features is a new ``Dataset`` with the same settings."""
    return ds.select(list(ds.schema))


class GrainSource:
    """Grain's ``RandomAccessDataSource`` over a recordforge ``Dataset``: ``len()``,
    ``source[i]`` (a dict of NumPy values, ``bytes`` for a single bytes value), picklable.

    ``decode_images`` decodes the dataset's image features
    (:func:`recordforge.integrations.tf.image_features`) to ``uint8`` height x width x 3,
    resized to ``image_size`` when given."""

    def __init__(
        self,
        ds: Dataset,
        *,
        features: Sequence[str] | None = None,
        decode_images: bool = False,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        if ds.compression is not None:
            raise ValueError(
                f"to_grain needs random access: the shards are {ds.compression}-compressed"
            )
        self._ds = _fresh(ds if features is None else ds.select(list(features)))
        self._len = len(self._ds)
        self.image_size = None if image_size is None else rf_images.image_size(image_size)
        self.images = image_features(self._ds.schema) if decode_images else []

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._ds[int(index)]
        for name in self.images:
            data = bytes(record[name])
            if self.image_size is None:
                record[name] = rf_images.decode(data)
            else:
                record[name] = rf_images.decode_batch([data], size=self.image_size)[0]
        return record

    def collate(self, records: Sequence[Mapping[str, Any]], *, pad: bool = False) -> dict[str, Any]:
        """Grain's ``batch_fn`` for this source's records, typed by the schema (so every
        batch has the same structure): fixed-shape features stacked into
        ``(batch, *shape)`` arrays (bytes as object arrays), variable-length ones as a
        :class:`~recordforge.Ragged` (values + row splits, what :meth:`Dataset.batches
        <recordforge.Dataset.batches>` gives), or with ``pad`` zero-padded (``b""`` for
        bytes) to the batch's longest, with their lengths as ``<name>/lengths``. Decoded
        images of different sizes (no ``image_size``) come as an object array of arrays.

        >>> import grain, tempfile, numpy as np, recordforge as rf
        >>> d = tempfile.mkdtemp()
        >>> _ = rf.write_dataset([{"id": i, "v": np.arange(i)} for i in range(5)], d)
        >>> source = rf.open_dataset(d).to_grain()
        >>> batch = next(iter(grain.MapDataset.source(source).batch(4, batch_fn=source.collate)))
        >>> batch["id"].tolist(), batch["v"].values.tolist(), batch["v"].row_splits.tolist()
        ([0, 1, 2, 3], [0, 0, 1, 0, 1, 2], [0, 0, 1, 3, 6])
        >>> padded = source.collate([source[i] for i in range(3)], pad=True)
        >>> padded["v"].tolist(), padded["v/lengths"].tolist()
        ([[0, 0], [0, 0], [0, 1]], [0, 1, 2])
        """
        out: dict[str, Any] = {}
        if not records:
            return out
        for name in records[0]:
            values = [r[name] for r in records]
            spec = self._ds.schema.get(name)
            if name in self.images:
                shapes = {np.shape(v) for v in values}
                out[name] = np.stack(values) if len(shapes) == 1 else _objects(values)
            elif spec is not None and spec.fixed:
                if spec.kind == "bytes":
                    out[name] = _objects(values).reshape(len(values), *spec.shape)
                else:
                    out[name] = np.stack([np.asarray(v) for v in values])
            else:  # variable length: the schema's (None, ...), or a <name>/row_lengths
                arrays = [np.asarray(v) for v in values]
                lengths = np.array([len(a) for a in arrays], dtype=np.int64)
                if pad:
                    out[name], out[f"{name}/lengths"] = _padded(arrays, lengths), lengths
                else:
                    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                    out[name] = Ragged(np.concatenate(arrays), splits)
        return out

    def _getitems(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Many records in one read (Grain's batched-read protocol): ``ds.take``, one
        Rust call, and the images decoded on the thread pool together."""
        batch = self._ds.take([int(i) for i in indices])
        n = len(indices)
        for name in self.images:
            data = [bytes(v) for v in np.asarray(batch[name]).reshape(-1)]
            decoded = rf_images.decode_batch(data, size=self.image_size)
            batch[name] = list(decoded)
        return [{name: column[i] for name, column in batch.items()} for i in range(n)]

    def __repr__(self) -> str:
        # Grain's checkpointing keys the data source by its repr.
        files = self._ds.files
        return (
            f"GrainSource(files={files[0]!r}..{len(files)}, records={self._len}, "
            f"features={list(self._ds.schema)!r}, images={self.images!r}, "
            f"image_size={self.image_size!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = _fresh(self._ds)
        return state


def _objects(values: Sequence[Any]) -> np.ndarray:
    """An object array holding each of ``values`` as it is (arrays not broadcast)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _padded(arrays: Sequence[np.ndarray], lengths: np.ndarray) -> np.ndarray:
    width = int(lengths.max()) if len(lengths) else 0
    first = arrays[0]
    fill: Any = b"" if first.dtype == object else 0
    out = np.full((len(arrays), width, *first.shape[1:]), fill, dtype=first.dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def to_grain(ds: Dataset, **kwargs: Any) -> GrainSource:
    """A Grain random-access data source of ``ds`` (see :class:`GrainSource`).

    >>> import grain, tempfile, numpy as np, recordforge as rf
    >>> d = tempfile.mkdtemp()
    >>> _ = rf.write_dataset({"x": np.arange(10)}, d, max_records=4)
    >>> batches = (grain.MapDataset.source(rf.open_dataset(d).to_grain())
    ...            .shuffle(seed=1).batch(4, drop_remainder=True))
    >>> [sorted(b["x"].tolist()) for b in batches] != [[0, 1, 2, 3], [4, 5, 6, 7]]
    True
    """
    return GrainSource(ds, **kwargs)


def numpy_batches(
    ds: Dataset,
    batch_size: int,
    *,
    drop_remainder: bool = True,
    pad_to: dict[str, int] | None = None,
    image_size: int | Sequence[int] | None = None,
    decode_threads: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``ds`` as dicts of NumPy arrays with static shapes, for ``jax.jit``.

    Fixed features come as :meth:`Dataset.batches` gives them. A ragged feature named in
    ``pad_to`` is padded with zeros (or cut) to that many values per record, with its
    lengths before padding as ``<name>/lengths``; other ragged and bytes features are
    left out. With ``image_size``, image features are decoded and resized to ``uint8``
    ``[n, height, width, 3]``. ``drop_remainder`` (default) drops a last, smaller batch.

    >>> import tempfile, numpy as np, recordforge as rf
    >>> d = tempfile.mkdtemp()
    >>> _ = rf.write_dataset([{"x": np.ones(i, np.float32), "y": i} for i in range(5)], d)
    >>> b = next(numpy_batches(rf.open_dataset(d), 4, pad_to={"x": 2}))
    >>> b["x"].tolist(), b["x/lengths"].tolist(), b["y"].tolist()
    ([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]], [0, 1, 2, 3], [0, 1, 2, 3])
    """
    pad_to = dict(pad_to or {})
    unknown = [n for n in pad_to if n not in ds.schema]
    if unknown:
        raise KeyError(f"pad_to names features not in the schema: {unknown}")
    size = None if image_size is None else rf_images.image_size(image_size)
    images = image_features(ds.schema) if size is not None else []
    for batch in ds.batches(batch_size, drop_remainder=drop_remainder):
        out: dict[str, np.ndarray] = {}
        for name, column in batch.items():
            if name in images:
                data = [bytes(v) for v in np.asarray(column).reshape(-1)]
                out[name] = rf_images.decode_batch(data, size=size, threads=decode_threads)
            elif isinstance(column, Ragged):
                if name in pad_to and np.asarray(column.values).dtype != object:
                    out[name], out[f"{name}/lengths"] = _pad(column, pad_to[name])
            elif column.dtype != object:
                out[name] = column
        yield out


def _pad(column: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(column.values)
    lengths = np.diff(column.row_splits).astype(np.int64)
    n = len(lengths)
    out = np.zeros((n, width, *values.shape[1:]), values.dtype)
    keep = np.minimum(lengths, width)
    rows = np.repeat(np.arange(n), keep)
    starts = np.asarray(column.row_splits[:-1], np.int64)
    within = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    out[rows, within] = values[np.repeat(starts, keep) + within]
    return out, lengths

"""PyTorch: a recordforge dataset as a ``torch.utils.data.IterableDataset``.

:func:`to_torch` (``Dataset.to_torch``) reads the records with recordforge's own reader
(CRC-checked, columns decoded in Rust) and hands out tensors. Its records are divided
between the ``DataLoader`` workers and the distributed ranks, so that every record is
read exactly once per epoch: part ``rank * num_workers + worker_id`` of
``world_size * num_workers`` (:meth:`Dataset.shard <recordforge.Dataset.shard>`: whole
files when there are at least that many, else every n-th record of them all). Ranks and
workers may get different numbers of records when the files do not divide evenly; with
``even=True`` every part stops at the smallest part's number of records (counted from
the manifest or index, without reading), so that every rank runs the same number of
steps and no collective waits for a rank that has finished (as ``DistributedSampler``
with ``drop_last=True``; the few records dropped are the last of the larger parts).

With ``batch_size`` each element is a batch, a dict feature name ->

- fixed shape ``()`` / ``(k, ...)``: a tensor ``[n]`` / ``[n, k, ...]`` (int64, float32);
- any number of values (shape ``(None,)``, ``(None, k)``): a :class:`RaggedTensor`,
  ``values`` (all rows end to end) and ``offsets`` (``n + 1`` int64: row ``i`` is
  ``values[offsets[i]:offsets[i + 1]]``, the layout ``nn.EmbeddingBag`` takes with
  ``include_last_offset=True``), or with ``ragged="nested"`` a jagged
  ``torch.nested`` tensor; a ``(None, None)`` feature comes as its values per record
  and ``<name>/row_lengths``, both ragged;
- bytes / strings: a list of ``bytes`` per record (a list of lists when not one value);
- an image (``decode_images``, see :func:`recordforge.integrations.tf.image_features`):
  ``uint8`` height x width x 3, decoded with :func:`recordforge.images.decode_batch` on
  ``decode_threads`` threads; a list of tensors, or one tensor ``[n, height, width, 3]``
  when resized to ``image_size`` (``channels_first``: ``[n, 3, height, width]``).

Put it in ``DataLoader(..., batch_size=None)``. Without ``batch_size`` the elements are
single records (tensors, ``bytes``, lists of ``bytes``) for a ``DataLoader`` that batches
them itself, which works when every feature has a fixed shape.

Shuffling (``shuffle_buffer``, or the dataset's own ``.shuffle(n, seed)``) uses
:meth:`Dataset.shuffle <recordforge.Dataset.shuffle>` with a seed made of ``seed`` and
the epoch: call :meth:`TorchDataset.set_epoch` before each epoch, as with
``DistributedSampler``; the same seed and epoch give the same order. The epoch is kept in
memory shared with the ``DataLoader``'s workers, so ``set_epoch`` reaches workers that
persist across epochs (``persistent_workers=True``) too.

Make it after ``torch.distributed.init_process_group``: the rank and world size are
taken when it is made (``DataLoader`` workers do not see the process group), unless
given as ``rank`` and ``world_size``.

>>> import tempfile, numpy as np, torch, recordforge as rf
>>> d = tempfile.mkdtemp()
>>> rows = [{"x": i, "tags": np.ones(i % 3, np.int64)} for i in range(10)]
>>> _ = rf.write_dataset(rows, d)
>>> loader = torch.utils.data.DataLoader(rf.open_dataset(d).to_torch(batch_size=4),
...                                      batch_size=None)
>>> batch = next(iter(loader))
>>> batch["x"]
tensor([0, 1, 2, 3])
>>> batch["tags"].values, batch["tags"].offsets
(tensor([1, 1, 1]), tensor([0, 0, 1, 3, 3]))
"""

from __future__ import annotations

import multiprocessing.context
import multiprocessing.sharedctypes
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
import torch.utils.data

from recordforge import images as rf_images
from recordforge.errors import RecordforgeWarning
from recordforge.integrations.tf import image_features
from recordforge.ragged import Ragged

if TYPE_CHECKING:
    from recordforge.dataset import Dataset

__all__ = ["RaggedTensor", "TorchDataset", "to_torch"]

RaggedLayout = Literal["offsets", "nested"]


class RaggedTensor(NamedTuple):
    """Rows of different lengths: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: torch.Tensor
    offsets: torch.Tensor


def _fresh(ds: Dataset) -> Dataset:
    """The same dataset without its open files and caches (picklable): ``select`` of all
    features is a new ``Dataset`` with the same settings."""
    return ds.select(list(ds.schema))


def _tensor(array: np.ndarray) -> torch.Tensor:
    if not array.flags.c_contiguous or not array.flags.writeable:
        array = array.copy()  # (np.ascontiguousarray would make a 0-d array 1-d)
    return torch.from_numpy(array)


def _rows_in(batch: dict[str, Any]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _head(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` records of a columnar batch."""
    if _rows_in(batch) <= n:
        return batch
    out: dict[str, Any] = {}
    for name, column in batch.items():
        if isinstance(column, Ragged):
            out[name] = Ragged(column.values[: column.row_splits[n]], column.row_splits[: n + 1])
        else:
            out[name] = column[:n]
    return out


def _distributed() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialized default process group, else ``None``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


class TorchDataset(torch.utils.data.IterableDataset[dict[str, Any]]):
    """A ``torch.utils.data.IterableDataset`` over a recordforge ``Dataset`` (made by
    :func:`to_torch`; see the module docstring).

    With ``on_corrupt="skip"``, what was skipped is listed in :attr:`skipped` (the
    given dataset's own ``skipped`` list) where the records are read in this process;
    a ``DataLoader`` worker process warns (:class:`~recordforge.RecordforgeWarning`)
    for each region it skips instead, its list being its own."""

    def __init__(
        self,
        ds: Dataset,
        *,
        batch_size: int | None = None,
        drop_remainder: bool = False,
        features: Sequence[str] | None = None,
        shuffle_buffer: int = 0,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        decode_images: bool = True,
        image_size: int | Sequence[int] | None = None,
        channels_first: bool = False,
        decode_threads: int | None = None,
        ragged: RaggedLayout = "offsets",
        even: bool = False,
    ) -> None:
        super().__init__()
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if ragged not in ("offsets", "nested"):
            raise ValueError(f"ragged must be 'offsets' or 'nested', not {ragged!r}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, not {shuffle_buffer}")
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1, not {decode_threads}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        order = getattr(ds, "_order", None)  # the dataset's own .shuffle() / .shard()
        if order is not None and order.shard is not None:
            raise ValueError(
                "to_torch divides the records between ranks and workers itself: "
                "give it the dataset without .shard()"
            )
        if shuffle_buffer == 0 and order is not None and order.shuffle_buffer:
            shuffle_buffer = order.shuffle_buffer
            seed = order.seed if seed is None else seed
        self._ds = _fresh(ds if features is None else ds.select(list(features)))
        self.skipped: list[dict[str, Any]] = ds.skipped
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.shuffle_buffer = shuffle_buffer
        self.seed = 0 if seed is None else seed
        if rank is None and (found := _distributed()) is not None:
            # Now, in the main process: DataLoader workers do not see the process group.
            rank, world_size = found
        self._rank = rank
        self._world_size = world_size
        self.image_size = None if image_size is None else rf_images.image_size(image_size)
        self.images = image_features(self._ds.schema) if decode_images else []
        self.channels_first = channels_first
        self.decode_threads = decode_threads
        self.ragged: RaggedLayout = ragged
        self.even = even
        # Shared with the DataLoader's workers (forked, or given it as they are spawned).
        self._epoch: Any = multiprocessing.sharedctypes.RawValue("q", 0)
        self._passes = 0  # regions a DataLoader worker skipped, for its warnings

    @property
    def epoch(self) -> int:
        """The epoch whose shuffle order the next iteration gives."""
        return int(self._epoch if isinstance(self._epoch, int) else self._epoch.value)

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        if isinstance(self._epoch, int):
            self._epoch = epoch
        else:
            self._epoch.value = epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffle order the next iteration gives, in this process and
        in the ``DataLoader`` workers given this dataset."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = _fresh(self._ds)
        if multiprocessing.context.get_spawning_popen() is None:
            # Pickled for anything but a process being started: the epoch as it is now
            # (a copy gets shared memory of its own when unpickled).
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("_epoch"), int):
            state["_epoch"] = multiprocessing.sharedctypes.RawValue("q", state["_epoch"])
        self.__dict__.update(state)

    def _placement(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else torch.distributed's when it was
        initialized before this dataset was made (or, outside DataLoader workers, now)."""
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        found = _distributed() if torch.utils.data.get_worker_info() is None else None
        return (0, 1) if found is None else found

    def part(self) -> tuple[int, int]:
        """``(index, count)``: the part of the records this process reads, from its rank
        and its ``DataLoader`` worker id."""
        rank, world_size = self._placement()
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return rank * workers + worker, world_size * workers

    def dataset(self) -> Dataset:
        """The recordforge ``Dataset`` this process reads in the current epoch."""
        ds = self._ds
        if self.shuffle_buffer:
            state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)
            ds = ds.shuffle(self.shuffle_buffer, seed=int(state[0] >> np.uint64(1)))
        index, count = self.part()
        return ds.shard(index, count) if count > 1 else ds

    def _threads(self) -> int:
        if self.decode_threads is not None:
            return self.decode_threads
        info = torch.utils.data.get_worker_info()
        workers = 1 if info is None else info.num_workers
        return max(1, rf_images.default_threads() // workers)

    def records_per_part(self) -> int:
        """With ``even``: the records every part reads, the smallest part's count (whole
        batches of it with ``drop_remainder``). Parts are ranks x ``DataLoader`` workers
        inside a worker, ranks outside."""
        ds = self._ds
        _, count = self.part()
        smallest = min(len(ds.shard(k, count)) for k in range(count)) if count > 1 else len(ds)
        if self.drop_remainder and self.batch_size is not None:
            smallest -= smallest % self.batch_size
        return smallest

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds = self.dataset()
        size = self.batch_size or 256
        drop = self.drop_remainder and self.batch_size is not None
        threads = self._threads()
        left = self.records_per_part() if self.even else None
        try:
            for batch in ds.batches(size, drop_remainder=drop):
                self._report_skips(ds)
                if left is not None:
                    if left <= 0:
                        return
                    batch = _head(batch, left)
                    left -= _rows_in(batch)
                if self.batch_size is not None:
                    yield self._batch(batch, threads)
                else:
                    yield from self._rows(batch, threads)
        finally:
            self._report_skips(ds)

    def _report_skips(self, ds: Dataset) -> None:
        """Moves the regions ``ds`` skipped to :attr:`skipped`, warning in a worker."""
        worker = torch.utils.data.get_worker_info() is not None
        for skip in ds.skipped:
            self.skipped.append(skip)
            if worker:  # (the epoch and pass in the words: a warning is shown once per text)
                self._passes += 1
                warnings.warn(
                    f"{skip['file']}: bytes {skip['start']}..{skip['end']} skipped "
                    f"(on_corrupt='skip') in epoch {self.epoch} (skip {self._passes} of this "
                    f"worker): {skip['reason']}",
                    RecordforgeWarning,
                    stacklevel=2,
                )
        ds.skipped.clear()

    def _images(self, column: Any, threads: int) -> Any:
        data = [bytes(v) for v in np.asarray(column).reshape(-1)]
        decoded = rf_images.decode_batch(data, size=self.image_size, threads=threads)
        if self.image_size is not None:
            out = torch.from_numpy(decoded)
            return out.permute(0, 3, 1, 2) if self.channels_first else out
        tensors = [torch.from_numpy(a) for a in decoded]
        return [t.permute(2, 0, 1) for t in tensors] if self.channels_first else tensors

    def _batch(self, batch: dict[str, Any], threads: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, column in batch.items():
            if name in self.images:
                out[name] = self._images(column, threads)
            elif isinstance(column, Ragged):
                out[name] = self._ragged(column)
            elif column.dtype == object:
                out[name] = column.tolist()
            else:
                out[name] = _tensor(column)
        return out

    def _ragged(self, column: Any) -> Any:
        if np.asarray(column.values).dtype == object:
            return [list(column[i]) for i in range(len(column))]
        values = _tensor(column.values)
        offsets = _tensor(np.asarray(column.row_splits, dtype=np.int64))
        if self.ragged == "nested":
            return torch.nested.nested_tensor_from_jagged(values, offsets)
        return RaggedTensor(values, offsets)

    def _rows(self, batch: dict[str, Any], threads: int) -> Iterator[dict[str, Any]]:
        columns: dict[str, Any] = {}
        n = 0
        for name, column in batch.items():
            n = len(column)
            if name in self.images:
                columns[name] = self._images(column, threads)
            else:
                columns[name] = column
        for i in range(n):
            row: dict[str, Any] = {}
            for name, column in columns.items():
                value = column[i]
                if name in self.images or isinstance(value, (bytes, list)):
                    row[name] = value
                else:
                    array = np.asarray(value)
                    row[name] = array.tolist() if array.dtype == object else _tensor(array.copy())
            yield row


def to_torch(
    ds: Dataset,
    batch_size: int | None = None,
    **kwargs: Any,
) -> TorchDataset:
    """A ``torch.utils.data.IterableDataset`` of ``ds``'s records (see the module
    docstring): ``batch_size`` (batches, or single records when ``None``),
    ``drop_remainder``, ``features`` (decode only these), ``shuffle_buffer`` and ``seed``
    (reshuffled per :meth:`~TorchDataset.set_epoch`), ``rank`` and ``world_size``
    (default: ``torch.distributed``'s when initialized), ``decode_images``,
    ``image_size``, ``channels_first``, ``decode_threads`` (default: the cores divided
    between the workers), ``ragged`` (``"offsets"`` or ``"nested"``), ``even`` (every
    rank and worker reads the same number of records)."""
    return TorchDataset(ds, batch_size=batch_size, **kwargs)

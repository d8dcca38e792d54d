"""``Ragged``: a column whose rows have different lengths, as values plus row splits.

The readers give one for each variable-length feature of a batch
(:meth:`Dataset.batches <recordforge.Dataset.batches>`, ``take``), and
:class:`~recordforge.RaggedSteps` one for the steps of a feature list.

>>> import numpy as np
>>> from recordforge.ragged import Ragged
>>> col = Ragged(np.arange(5), np.array([0, 2, 2, 5]))
>>> len(col), col[0].tolist(), col[2].tolist(), col.row_lengths().tolist()
(3, [0, 1], [2, 3, 4], [2, 0, 3])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Ragged"]


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Variable-length rows: row ``i`` is ``values[row_splits[i]:row_splits[i + 1]]``."""

    values: Any
    row_splits: np.ndarray

    def __len__(self) -> int:
        return len(self.row_splits) - 1

    def __getitem__(self, i: int) -> Any:
        return self.values[self.row_splits[i] : self.row_splits[i + 1]]

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.row_splits)

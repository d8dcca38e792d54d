"""Adapters from recordforge datasets to training frameworks, each importing its framework
lazily: :mod:`recordforge.integrations.tf` (``tf.data`` and Keras) and
:mod:`recordforge.integrations.train` (the Keras example's training, reproduced).

``import recordforge.integrations`` imports no framework.
"""

from __future__ import annotations

__all__: list[str] = []

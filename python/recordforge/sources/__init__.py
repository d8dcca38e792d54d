"""Dataset sources: each turns one kind of input into items and records.

A source is pure, picklable data (a frozen dataclass) with ``items()``, a
``to_records(item)`` for :func:`recordforge.write_dataset` and a ``schema()``; the same
source runs in-process, on a process pool, or on Apache Beam.
"""

"""Dataset sources: each turns one kind of input into items and records.

Each source is a :class:`recordforge.pipeline.Source`: pure, picklable data (a frozen
dataclass) with ``items()``, a ``to_records(item)`` for :func:`recordforge.write_dataset`,
a ``schema()`` and a ``describe()``, and optionally a ``report()``
(:class:`~recordforge.pipeline.ReportingSource`); the same source runs in-process, on a
process pool, or on Apache Beam.
"""

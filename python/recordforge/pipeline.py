"""What every source and every engine (the local writer, Beam) shares: the contract
of a source, what a conversion of one item returns, and the conversion's report.

A source (:class:`Source`) lists its input ``items()`` and turns each into records with
``to_records(item)``; a conversion runs :func:`attempt` on each item, which returns an
:class:`~recordforge.ItemError` instead of raising it, so that a rejection crosses
process boundaries (pool workers, Beam workers) like any other result.

>>> from recordforge.pipeline import ConversionReport, attempt, default_to_records
>>> from recordforge.errors import ItemError
>>> def to_records(item):
...     if item < 0:
...         raise ItemError(f"item {item}", "negative")
...     return default_to_records({"n": item})
>>> len(attempt(to_records, 3)), str(attempt(to_records, -1))
(1, 'item -1: negative')
>>> report = ConversionReport()
>>> report.skip("item -1", "negative"); report.count("boxes clipped", 2)
>>> report.to_json()["counters"]
{'boxes clipped': 2}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard

from recordforge.errors import ItemError
from recordforge.example import RecordBatch, encode_example
from recordforge.schema import Schema

__all__ = [
    "ConversionReport",
    "Converted",
    "CountedSource",
    "ReportingSource",
    "SchemaAfter",
    "Source",
    "TallyingSource",
    "ToRecords",
    "attempt",
    "attempt_in_worker",
    "default_to_records",
    "has_count",
    "has_report",
    "has_tally",
    "init_worker",
    "observed",
    "outcome",
]


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did: items read, records written, every skipped item with its
    reason, named counts (``counters``, e.g. boxes clipped) and ``notes`` naming items
    that were converted but changed or flagged."""

    items: int = 0
    records: int = 0
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append({"item": item, "reason": reason})

    def note(self, item: str, what: str) -> None:
        """Names an item that was converted but changed or flagged (a box clipped, ...)."""
        self.notes.append({"item": item, "reason": what})

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values; counters by name (the order they were first
        counted in may depend on how the work was divided)."""
        data = dataclasses.asdict(self)
        data["counters"] = dict(sorted(data["counters"].items()))
        return data

    def replace_with(self, other: ConversionReport) -> None:
        """Takes ``other``'s contents (a resumed conversion's report, from its journal)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(other, field.name))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversionReport:
        return cls(
            items=data.get("items", 0),
            records=data.get("records", 0),
            skipped=list(data.get("skipped", [])),
            counters=dict(data.get("counters", {})),
            notes=list(data.get("notes", [])),
        )


@dataclasses.dataclass
class Converted:
    """What ``to_records`` returns for an item that stands for several input items (a
    batch of table rows): their records, how many input items they were, and an
    :class:`ItemError` for each one rejected (raised with ``on_error="raise"``, listed
    in the report with ``"skip"``), and ``counters`` the conversion adds to the
    report's as the item is written (a table part: its missing values per column)."""

    records: Sequence[bytes]
    items: int = 1
    errors: list[ItemError] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        # A RecordBatch stays in Rust; across processes its records travel as bytes.
        return (Converted, (list(self.records), self.items, self.errors, self.counters))


# An item becomes zero or more records (or a Converted); ItemError rejects it.
ToRecords = Callable[[Any], Sequence[bytes] | Converted]


class Source(Protocol):
    """A dataset source (COCO, image folder, table, or any object with these methods):
    pure, picklable data, so that the same source runs in-process, on a process pool or
    on Apache Beam. A source that also has ``report()`` is a :class:`ReportingSource`."""

    def items(self) -> Iterable[Any]:
        """The input items, in the order their records are written."""
        ...

    def to_records(self, item: Any) -> Sequence[bytes] | Converted:
        """One item -> its serialized records; raises :class:`ItemError` to reject it."""
        ...

    def schema(self) -> Schema | None:
        """The schema of the records (None: inferred from the records written)."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """The source's description, kept in ``dataset.json`` (JSON values)."""
        ...


class ReportingSource(Source, Protocol):
    """A :class:`Source` that knows, before any item is converted, things for the report
    (e.g. COCO annotations that no image holds)."""

    def report(self) -> ConversionReport:
        """The report a conversion of this source starts from."""
        ...


def has_report(source: Source) -> TypeGuard[ReportingSource]:
    """Whether ``source`` has the optional ``report()`` of a :class:`ReportingSource`."""
    return hasattr(source, "report")


class CountedSource(Source, Protocol):
    """A :class:`Source` that knows, before any item is converted, how many records its
    items give (a table: its rows, whatever the parts its items are): ``num_shards`` then
    cuts shards at record counts instead of item counts."""

    def num_records(self) -> int:
        """The records ``to_records`` gives over all ``items()``."""
        ...


def has_count(source: Source) -> TypeGuard[CountedSource]:
    """Whether ``source`` has the optional ``num_records()`` of a :class:`CountedSource`."""
    return hasattr(source, "num_records")


# The schema of a dataset, or how to find it from the conversion's final report.
SchemaAfter = Callable[[ConversionReport], Schema | None]


class TallyingSource(Source, Protocol):
    """A :class:`Source` whose schema depends on what its conversion counts (a table
    with inferred types: whether a column has missing values makes its shape), so that
    no pass over the data is needed before converting it: ``to_records`` reports the
    counts (:attr:`Converted.counters`) and the schema is made from the final report."""

    def schema_after(self, report: ConversionReport) -> Schema | None:
        """The schema of the records written, from the conversion's ``report``."""
        ...

    def tallies(self) -> bool:
        """Whether this source's ``to_records`` counts what ``schema_after`` needs (else
        ``schema()`` is known already)."""
        ...


def has_tally(source: Source) -> TypeGuard[TallyingSource]:
    """Whether ``source`` is a :class:`TallyingSource` that counts for its schema."""
    return hasattr(source, "schema_after") and bool(source.tallies())  # type: ignore[attr-defined]


def default_to_records(item: Any) -> Sequence[bytes]:
    """The conversion when none is given: bytes are a serialized record already, anything
    else is a feature dict encoded as one ``tf.train.Example``."""
    if isinstance(item, bytes):
        return (item,)
    return (encode_example(item),)


def attempt(to_records: ToRecords, item: Any) -> Sequence[bytes] | Converted | ItemError:
    """Runs ``to_records``, returning (not raising) an ItemError so it crosses processes."""
    try:
        return to_records(item)
    except ItemError as e:
        return e


def observed(result: Sequence[bytes] | Converted | ItemError) -> dict[str, int]:
    """The counters an item's conversion adds to the report (see :class:`Converted`)."""
    return result.counters if isinstance(result, Converted) else {}


def outcome(
    result: Sequence[bytes] | Converted | ItemError,
) -> tuple[Sequence[bytes], int, Sequence[ItemError]]:
    """What :func:`attempt` returned for an item, as (records, input items it stands
    for, item errors to report or raise)."""
    if isinstance(result, ItemError):
        return (), 1, (result,)
    if isinstance(result, Converted):
        return result.records, result.items, result.errors
    return result, 1, ()


def bytes_only(records: Sequence[bytes], item: int) -> None:
    """Checks that the records of the ``item``-th item are ``bytes``, as the writer takes
    them (a NumPy array or a memoryview of wider elements has a ``len`` in elements, not
    bytes): a ``TypeError`` naming the item and the record otherwise, for any number of
    workers. A :class:`~recordforge.RecordBatch` is whole frames already."""
    if isinstance(records, RecordBatch):
        return
    for k, record in enumerate(records):
        if record.__class__ is not bytes:
            raise TypeError(
                f"item {item}: record {k} is a {type(record).__name__}, not bytes "
                "(to_records returns serialized records as bytes, or a RecordBatch)"
            )


# In a worker process: the conversion, sent once when the worker starts (not with every
# task: a source's bound method can carry a whole annotation index).
_worker_to_records: list[ToRecords] = []


def init_worker(to_records: ToRecords) -> None:
    """A pool worker's initializer: keeps the conversion for :func:`attempt_in_worker`."""
    _worker_to_records[:] = [to_records]


def attempt_in_worker(item: Any) -> Sequence[bytes] | Converted | ItemError:
    """:func:`attempt` with the conversion :func:`init_worker` gave this process."""
    return attempt(_worker_to_records[0], item)

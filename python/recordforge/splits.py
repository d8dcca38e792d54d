"""Several sources written as the splits of one dataset (COCO ``train2017`` and
``val2017``, two tables, ...): :class:`SplitSources`, for the local writer and for Beam.

Each split's items are tagged with their split's name, so that one ``to_records`` (what
``write_dataset(splits=...)`` and Beam's ``WriteDataset`` take) converts the items of
every split with their own source; the records are exactly those of each source.

>>> import tempfile, recordforge as rf
>>> from recordforge.splits import SplitSources
>>> class Numbers:
...     def __init__(self, n): self.n = n
...     def items(self): return range(self.n)
...     def to_records(self, i): return (rf.encode_example({"i": i}),)
...     def schema(self): return None
...     def describe(self): return {"type": "numbers", "n": self.n}
>>> both = SplitSources({"train": Numbers(5), "val": Numbers(2)})
>>> with tempfile.TemporaryDirectory() as d:
...     manifest = both.write(d, max_records=2)
>>> {name: [s.records for s in shards] for name, shards in manifest.splits.items()}
{'train': [2, 2, 1], 'val': [2]}
>>> manifest.source["splits"]["val"]
{'type': 'numbers', 'n': 2}
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from recordforge.manifest import Manifest
from recordforge.pipeline import (
    ConversionReport,
    Converted,
    SchemaAfter,
    Source,
    has_count,
    has_report,
    has_tally,
)
from recordforge.schema import Schema

__all__ = ["SplitSources"]


class _Tagged(Sequence[tuple[str, Any]]):
    """A split's items tagged with its name, without copying them."""

    def __init__(self, split: str, items: Sequence[Any]) -> None:
        self.split, self.items = split, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [(self.split, item) for item in self.items[i]]
        return (self.split, self.items[i])


@dataclasses.dataclass(frozen=True)
class SplitSources:
    """One :class:`~recordforge.pipeline.Source` per split, in the order the splits are
    written. The dataset's ``source`` entry is the one source's description for one
    split, ``{"type": "splits", "splits": {name: description}}`` for several; the
    report starts from every source's report (skipped items and notes in split order,
    counters summed); the schema is the sources' common schema (None, inferred from the
    records, when they differ)."""

    sources: Mapping[str, Source]

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("SplitSources needs at least one split")
        object.__setattr__(self, "sources", dict(self.sources))

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def items(self, split: str) -> Sequence[tuple[str, Any]] | Iterator[tuple[str, Any]]:
        """The items of ``split``, tagged with its name (what :meth:`to_records` takes):
        a sequence when the source's items are one (their number is known)."""
        items = self.sources[split].items()
        if isinstance(items, Sequence):
            return _Tagged(split, items)
        return ((split, item) for item in items)

    def to_records(self, tagged: tuple[str, Any]) -> Sequence[bytes] | Converted:
        """A tagged item converted by its own split's source."""
        split, item = tagged
        return self.sources[split].to_records(item)

    def schema(self) -> Schema | None:
        schemas = [source.schema() for source in self.sources.values()]
        first = schemas[0]
        return first if all(s == first for s in schemas) else None

    def tallies(self) -> bool:
        """Whether the schema is made from the conversion's report: for one split whose
        source counts for it (:class:`~recordforge.pipeline.TallyingSource`; with
        several, their counts would mix, and each source's schema is found first)."""
        (source, *more) = self.sources.values()
        return not more and has_tally(source)

    def schema_after(self, report: ConversionReport) -> Schema | None:
        """The schema, from the conversion's final ``report`` where :meth:`tallies`."""
        if not self.tallies():
            return self.schema()
        (source,) = self.sources.values()
        assert has_tally(source)
        return source.schema_after(report)

    def final_schema(self) -> Schema | SchemaAfter | None:
        """What ``write_dataset(schema=...)`` is given: :meth:`schema_after` where
        :meth:`tallies`, else :meth:`schema`."""
        return self.schema_after if self.tallies() else self.schema()

    def describe(self) -> dict[str, Any]:
        if len(self.sources) == 1:
            return dict(next(iter(self.sources.values())).describe())
        return {
            "type": "splits",
            "splits": {name: dict(s.describe()) for name, s in self.sources.items()},
        }

    def num_records(self) -> dict[str, int]:
        """The records of each split whose source knows them before converting (a
        :class:`~recordforge.pipeline.CountedSource`: a table's rows)."""
        return {name: s.num_records() for name, s in self.sources.items() if has_count(s)}

    def report(self) -> ConversionReport:
        merged = ConversionReport()
        for source in self.sources.values():
            if not has_report(source):
                continue
            part = source.report()
            merged.items += part.items
            merged.records += part.records
            merged.skipped.extend(part.skipped)
            merged.notes.extend(part.notes)
            for name, n in part.counters.items():
                merged.count(name, n)
        return merged

    def write(
        self,
        out: str | os.PathLike[str],
        *,
        splits: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Manifest:
        """Every split written locally by :func:`~recordforge.write_dataset` (whose
        keywords ``options`` are), into one dataset directory; ``splits``: each split's
        :meth:`items`, where they were taken already."""
        from recordforge.writer import write_dataset

        counts = self.num_records()
        given = options.get("options")
        num_shards = given.num_shards if given is not None else options.get("num_shards")
        if counts and num_shards:
            # Each split's record count: cut as Beam cuts them.
            options.setdefault("num_records", counts)
        return write_dataset(
            splits=splits or {name: self.items(name) for name in self.sources},
            out=out,
            to_records=self.to_records,
            schema=self.final_schema(),
            source=self.describe(),
            report=self.report(),
            **options,
        )

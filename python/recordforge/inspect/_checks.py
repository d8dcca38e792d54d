"""What a record must be to pass ``verify``: its features against the schema (what
TF's parse of the schema's feature description would reject) and its images decodable
in the format the schema names; per record (:class:`Checker`) and, from the statistics
of ``_core.verify_file``, for every record of a file at once (:func:`column_problems`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _core
from recordforge.errors import DecodeError
from recordforge.inspect._common import Problem
from recordforge.inspect._decode import RecordType, record_type
from recordforge.inspect._values import image_of
from recordforge.schema import FeatureSpec, Image, Schema, kind_of


def _fixed_size(spec: FeatureSpec) -> int | None:
    if not spec.fixed:
        return None
    return math.prod(int(d or 0) for d in spec.shape)


def _schema_problems(ex: Mapping[str, Any], schema: Schema) -> list[str]:
    """What makes a decoded Example disagree with the schema (what TF's parse of the
    schema's feature description would reject)."""
    out = []
    for name, spec in schema.items():
        value = ex.get(name)
        if value is None:
            if spec.fixed:
                out.append(f"feature {name!r} is missing (shape {spec.shape} needs it)")
            continue
        kind = kind_of(value)
        if kind is not None and kind != spec.kind:
            out.append(f"feature {name!r}: expected {spec.kind} values, found {kind}")
            continue
        n = len(value)
        size = _fixed_size(spec)
        if size is not None and n != size:
            out.append(
                f"feature {name!r}: expected {size} value(s) (shape {spec.shape}), found {n}"
            )
        elif spec.ragged:
            lengths = ex.get(f"{name}/row_lengths")
            total = int(np.sum(lengths)) if isinstance(lengths, np.ndarray) else None
            if lengths is not None and total != n:
                out.append(f"feature {name!r}: {n} values but {name}/row_lengths sums to {total}")
        elif len(spec.shape) >= 2 and spec.shape[0] is None:
            inner = math.prod(int(d or 0) for d in spec.shape[1:])
            if inner and n % inner:
                out.append(f"feature {name!r}: {n} values is not a multiple of {inner}")
    return out


_FORMAT_ALIASES = {"jpg": "jpeg"}


class Checker:
    """Parses each record of a file and checks it against the schema (and images)."""

    def __init__(self, path: str | Path, schema: Schema | None, images: bool) -> None:
        self.path, self.schema, self.images = path, schema, images
        self.type: RecordType | None = "Example" if schema is not None else None
        self.image_features = (
            {n for n, s in schema.items() if isinstance(s.meaning, Image)} if schema else None
        )
        # The format each image feature's schema names, as image_format spells it.
        self.image_formats = {
            n: _FORMAT_ALIASES.get(s.meaning.format.lower(), s.meaning.format.lower())
            for n, s in (schema.items() if schema else ())
            if isinstance(s.meaning, Image) and s.meaning.format
        }
        self.problems: list[Problem] = []

    def problem(self, kind: str, index: int, offset: int | None, message: str) -> None:
        self.problems.append(
            Problem(file=str(self.path), kind=kind, record=index, offset=offset, message=message)
        )

    def check(self, data: bytes | memoryview, index: int, offset: int | None) -> None:
        if self.type is None:
            self.type = record_type(data)
        if self.type == "Example":
            try:
                ex = _core.decode_example(data)
            except DecodeError as e:
                self.problem("parse", index, offset, f"not a tf.train.Example: {e}")
                return
            if self.schema is not None:
                for message in _schema_problems(ex, self.schema):
                    self.problem("schema", index, offset, message)
            if self.images:
                self.check_images(ex, index, offset)
        elif self.type == "SequenceExample":
            try:
                context, _ = _core.decode_sequence_example(data)
            except DecodeError as e:
                self.problem("parse", index, offset, f"not a tf.train.SequenceExample: {e}")
                return
            if self.images:
                self.check_images(context, index, offset)

    def check_images(self, ex: Mapping[str, Any], index: int, offset: int | None) -> None:
        """Every image decoded fully (:func:`recordforge.images.check`), and its format,
        taken from its bytes, compared with the schema's: PNG bytes under a feature whose
        schema says ``jpeg`` are a problem (``tf.io.decode_jpeg`` refuses them)."""
        from recordforge.images import check

        for name, value in ex.items():
            if not isinstance(value, list):
                continue
            if self.image_features is not None and name not in self.image_features:
                continue
            declared = self.image_formats.get(name)
            for k, v in enumerate(value):
                if self.image_features is None and image_of(v) is None:
                    continue
                try:
                    found = check(v)
                except DecodeError as e:
                    where = f"feature {name!r}[{k}]"
                    self.problem("image", index, offset, f"{where}: image not decodable: {e}")
                    continue
                if declared is not None and found != declared:
                    self.problem(
                        "image",
                        index,
                        offset,
                        f"feature {name!r}[{k}]: the bytes are {found.upper()}, "
                        f"but the schema says {declared}",
                    )


_KINDS = _core.VerifiedFile.KINDS
_CODES = {v: k for k, v in _KINDS.items()}
_MISSING, _NO_KIND = _core.VerifiedFile.MISSING, _core.VerifiedFile.NO_KIND


def column_problems(
    name: str,
    spec: FeatureSpec,
    j: int,
    kinds: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    column: Mapping[str, int],
    checked: np.ndarray,
) -> list[tuple[int, int, str]]:
    """What ``_schema_problems`` says of feature ``name`` (column ``j``), for every
    checked record at once: (record, j, message) for each record that disagrees."""
    kind, count = kinds[:, j], counts[:, j]
    out: list[tuple[int, int, str]] = []
    missing = checked & (kind == _MISSING)
    if spec.fixed:
        needs = f"feature {name!r} is missing (shape {spec.shape} needs it)"
        out.extend((int(i), j, needs) for i in np.flatnonzero(missing))
    present = checked & (kind != _MISSING)
    # An empty float list decodes as a kind-less feature does: it says nothing of the kind.
    kindless = (kind == _CODES["float32"]) & (count == 0)
    wrong = present & (kind != _NO_KIND) & ~kindless & (kind != _CODES[spec.kind])
    for i in np.flatnonzero(wrong):
        found = _KINDS[int(kind[i])]
        out.append((int(i), j, f"feature {name!r}: expected {spec.kind} values, found {found}"))
    present &= ~wrong
    size = _fixed_size(spec)
    if size is not None:
        for i in np.flatnonzero(present & (count != size)):
            out.append(
                (
                    int(i),
                    j,
                    f"feature {name!r}: expected {size} value(s) (shape {spec.shape}), "
                    f"found {int(count[i])}",
                )
            )
    elif spec.ragged:
        r = column[f"{name}/row_lengths"]
        has = present & (kinds[:, r] != _MISSING)
        ints = kinds[:, r] == _CODES["int64"]
        bad = has & (~ints | (totals[:, r] != count.astype(np.int64)))
        for i in np.flatnonzero(bad):
            total = int(totals[i, r]) if ints[i] else None
            out.append(
                (
                    int(i),
                    j,
                    f"feature {name!r}: {int(count[i])} values but {name}/row_lengths "
                    f"sums to {total}",
                )
            )
    elif len(spec.shape) >= 2 and spec.shape[0] is None:
        inner = math.prod(int(d or 0) for d in spec.shape[1:])
        if inner:
            for i in np.flatnonzero(present & (count % inner != 0)):
                out.append(
                    (
                        int(i),
                        j,
                        f"feature {name!r}: {int(count[i])} values is not a multiple of {inner}",
                    )
                )
    return out

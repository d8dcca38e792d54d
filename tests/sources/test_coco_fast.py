"""The plain-annotation fast path of the COCO loader (``sources/_coco_fast.py``) gives
what the full checks give: the same annotation, field by field and type by type, or it
declines and the full checks name the bad field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recordforge import SchemaError
from recordforge.sources import _coco_index
from recordforge.sources._coco_fast import plain_annotation, plain_annotation_py


def _full(entry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``_annotation`` with the fast path off: the full checks' result, or their error."""
    with monkeypatch.context() as m:
        m.setattr(_coco_index, "plain_annotation", lambda entry: None)
        return _outcome(entry)


def _outcome(entry: dict[str, Any]) -> Any:
    try:
        ann = _coco_index._annotation(entry, "w")
    except SchemaError as e:
        return "error", str(e)
    fields = [getattr(ann, f) for f in _coco_index.CocoAnnotation.__dataclass_fields__]
    return ann, [(type(v), repr(v)) for v in fields]


def test_every_tiny_coco_annotation_is_taken_by_the_fast_path_and_equal(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = json.loads(tiny["annotations"].read_text())["annotations"]
    fast = [e for e in entries if plain_annotation(e) is not None]
    crowds = [e for e in entries if e["iscrowd"]]
    assert len(fast) == len(entries) - len(crowds) and len(fast) > 300
    for entry in entries:
        assert _outcome(entry) == _full(entry, monkeypatch)


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, None, "1", 3.4028234663852886e38, 3.5e38, -(2**63), 2**63]),
)
POLYGONS = st.lists(st.lists(NUMBERS, max_size=8), max_size=3)
ENTRY = st.fixed_dictionaries(
    {
        "id": NUMBERS,
        "image_id": st.one_of(st.integers(0, 2**63 - 1), NUMBERS),
        "category_id": st.one_of(st.integers(0, 90), NUMBERS),
        "bbox": st.one_of(st.lists(NUMBERS, min_size=3, max_size=5), NUMBERS),
    },
    optional={
        "area": NUMBERS,
        "iscrowd": st.one_of(st.sampled_from([0, 1, 2, -1, 0.0, 1.0, True]), NUMBERS),
        "segmentation": st.one_of(
            POLYGONS,
            st.just({"size": [2, 2], "counts": [1, 3]}),
            st.just({"size": [2, 2], "counts": "04"}),
            NUMBERS,
        ),
    },
)


F32 = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(-3.4028234663852886e38, 3.4028234663852886e38),
)
VALID = st.fixed_dictionaries(
    {
        "id": st.integers(-(2**63), 2**63 - 1),
        "image_id": st.integers(-(2**63), 2**63 - 1),
        "category_id": st.integers(0, 90),
        "bbox": st.lists(F32, min_size=4, max_size=4),
    },
    optional={
        "area": F32,
        "iscrowd": st.sampled_from([0, 1]),
        "segmentation": st.one_of(
            st.none(), st.lists(st.lists(F32, min_size=2, max_size=8).map(lambda p: p * 2))
        ),
    },
)


@st.composite
def perturbed(draw: st.DrawFn) -> dict[str, Any]:
    """A valid entry with one field replaced by any value, or removed."""
    entry = draw(VALID)
    key = draw(st.sampled_from(["id", "image_id", "category_id", "bbox", "area", "iscrowd"]))
    if draw(st.booleans()):
        entry.pop(key, None)
    else:
        entry[key] = draw(NUMBERS)
    return entry


@settings(max_examples=1500, deadline=None)
@given(st.one_of(ENTRY, VALID, perturbed()))
def test_any_entry_gives_what_the_full_checks_give(entry: dict[str, Any]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        full = _full(entry, monkeypatch)
    assert _outcome(entry) == full
    plain = plain_annotation(entry)
    if plain is not None:  # taken: only what the full checks take
        assert full[0] != "error"
        assert all(math.isfinite(v) for v in plain[3])


def _typed(plain: Any) -> Any:
    """A result with every value's type beside it (1 == 1.0 == True otherwise)."""
    if isinstance(plain, tuple):
        return tuple(_typed(v) for v in plain)
    return type(plain), repr(plain)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(ENTRY, VALID, perturbed()))
def test_the_rust_fast_path_is_its_python_reference(entry: dict[str, Any]) -> None:
    assert _typed(plain_annotation(entry)) == _typed(plain_annotation_py(entry))


def test_the_rust_fast_path_on_edges_of_its_reference() -> None:
    base: dict[str, Any] = {"id": 1, "image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1]}
    edges: list[Any] = [
        base,
        {**base, "segmentation": None},
        {**base, "segmentation": []},
        {**base, "segmentation": [[]]},
        {**base, "segmentation": [[1, 2, 3]]},
        {**base, "area": 3.4028234663852886e38, "iscrowd": 1},
        {**base, "area": 3.4028234663852886e38 * 1.0000001},
        {**base, "bbox": [2**63 - 1, -(2**63), 0.5, -0.0]},
        {**base, "bbox": [2**63, 0, 0, 0]},
        {**base, "bbox": (0, 0, 1, 1)},
        {**base, "id": 2**63},
        {**base, "iscrowd": True},
        {**base, "iscrowd": 2**64},
        {**base, "segmentation": {"size": [1, 1], "counts": [1]}},
        {k: v for k, v in base.items() if k != "bbox"},
    ]
    for entry in edges:
        assert _typed(plain_annotation(entry)) == _typed(plain_annotation_py(entry)), entry
    # Not a plain dict (a subclass, anything else): declined, the full checks run.
    for other in (type("D", (dict,), {})(base), [("id", 1)], 0, None):
        assert plain_annotation(other) is None

"""``_core.coco_polygons``: the Rust check of COCO polygons gives exactly what the
Python check gives (types and float bits), or ``None``, and then the Python check
decides (and names the bad polygon)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recordforge as rf
from recordforge._core import coco_polygons
from recordforge.sources import _coco_index
from recordforge.sources.coco import load_coco

FLOAT32_MAX = float(struct.unpack("<f", b"\xff\xff\x7f\x7f")[0])


def python_polygons(segmentation: list[Any]) -> tuple[tuple[float, ...], ...] | str:
    """The Python path alone: its value, or its error's message."""
    try:
        return _coco_index._checked_polygons(segmentation, "here")
    except rf.SchemaError as e:
        return str(e)


def bits(polygons: tuple[tuple[float, ...], ...]) -> list[list[bytes]]:
    assert all(type(v) is float for poly in polygons for v in poly)
    return [[struct.pack("<d", v) for v in poly] for poly in polygons]


numbers = st.one_of(
    st.floats(width=64),  # NaN, infinities, beyond float32 included
    st.floats(-FLOAT32_MAX, FLOAT32_MAX),
    st.integers(-(2**70), 2**70),
    st.integers(-(2**53) - 5, 2**53 + 5),
    st.booleans(),
    st.sampled_from(
        [
            FLOAT32_MAX,
            -FLOAT32_MAX,
            math.nextafter(FLOAT32_MAX, math.inf),
            -0.0,
            2**63 - 1,
            -(2**63),
            2**63,
        ]
    ),
)
values = st.one_of(numbers, st.none(), st.text(max_size=2), st.lists(numbers, max_size=2))
segmentations = st.lists(
    st.one_of(st.lists(numbers, max_size=10), st.lists(values, max_size=6), numbers, st.none()),
    max_size=4,
)


@settings(max_examples=1500, deadline=None)
@given(segmentation=segmentations)
def test_same_as_the_python_check(segmentation: list[Any]) -> None:
    expected = python_polygons(segmentation)
    fast = coco_polygons(segmentation)
    if fast is None:
        return  # the Python check decides, as it did before
    assert not isinstance(expected, str), expected  # never accepts what Python refuses
    assert bits(fast) == bits(expected)


def test_common_cases_are_taken_here() -> None:
    for segmentation in (
        [],
        [[]],
        [[1.5, 2]],
        [[0, 0, 1, 1.25], [2**62, -(2**62)]],
        [[FLOAT32_MAX, -0.0]],
    ):
        fast = coco_polygons(segmentation)
        assert fast is not None and bits(fast) == bits(python_polygons(segmentation))  # type: ignore[arg-type]
    # declined: Python decides (and names what is wrong)
    for segmentation in (
        [[1, 2, 3]],
        [[True, 1]],
        [[2**63, 0]],
        [[math.nan, 0]],
        [[1e39, 0]],
        [(1, 2)],
        "x",
    ):
        assert coco_polygons(segmentation) is None


def test_int_to_float_rounds_as_python() -> None:
    ints = [2**53 + 1, 2**53 + 3, -(2**53) - 1, 2**62 + 2**9, 2**63 - 1, -(2**63)]
    (poly,) = coco_polygons([ints])  # type: ignore[misc]
    assert [struct.pack("<d", v) for v in poly] == [struct.pack("<d", float(i)) for i in ints]


def test_load_coco_is_the_same_either_way(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(tiny["annotations"].read_text())
    bad = dict(data["annotations"][0], id=10**9, segmentation=[[1.0, 2.0, float("nan"), 4.0]])
    data["annotations"].append(bad)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    fast = load_coco(path, tiny["images"])
    monkeypatch.setattr(_coco_index, "coco_polygons", lambda segmentation: None)
    slow = load_coco(path, tiny["images"])
    assert fast == slow
    (problem,) = [p for image in fast.images for p in image.problems]
    assert "polygon 0 of 'segmentation' must be an even count of finite numbers" in problem


plain = st.one_of(
    st.floats(-FLOAT32_MAX, FLOAT32_MAX),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(-1e4, 1e4),
)


@settings(max_examples=500, deadline=None)
@given(segmentation=st.lists(st.lists(st.tuples(plain, plain), max_size=30), max_size=4))
def test_valid_polygons_are_taken_here(segmentation: list[list[tuple[Any, Any]]]) -> None:
    polygons = [[v for pair in poly for v in pair] for poly in segmentation]
    fast = coco_polygons(polygons)
    expected = python_polygons(polygons)
    assert fast is not None and not isinstance(expected, str)
    assert bits(fast) == bits(expected)

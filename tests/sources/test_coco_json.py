"""``_core.json_loads``, the parser of COCO's annotation files: the same values as
``json.loads`` (type for type, float bit for bit, dict key order), or ``None`` where it
declines, and then ``_read_json`` gives ``json.loads``'s own result or error."""

from __future__ import annotations

import gc
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_read_json_as_json_loads, same_json
from hypothesis import given, settings
from hypothesis import strategies as st

import recordforge as rf
from recordforge._core import json_loads
from recordforge.sources.coco import load_coco


def declined(raw: bytes) -> bool:
    """Where json_loads declines standard JSON: a run of 19 or more digits (a number
    that may not fit 64 bits), or the integer -0 (json gives 0; serde_json -0.0)."""
    text = raw.decode("utf-8", "replace")
    runs = "".join(c if c.isdigit() else " " for c in text).split()
    return any(len(r) >= 19 for r in runs) or re.search(r"-0(?![0-9.eE])", text) is not None


def parsed(raw: bytes) -> Any:
    got = json_loads(raw)
    assert got is not None, raw[:200]
    return got[0]


def test_same_as_json_on_the_tiny_coco_files(tiny: dict[str, Path]) -> None:
    for name in ("annotations", "captions", "keypoints"):
        raw = tiny[name].read_bytes()
        assert same_json(parsed(raw), json.loads(raw)), name


def test_the_checker_tells_types_and_float_bits_apart() -> None:
    assert not same_json(1, 1.0) and not same_json(True, 1) and not same_json(0.0, -0.0)
    assert not same_json({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert same_json([1, {"x": [0.5, None]}], [1, {"x": [0.5, None]}])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_same_as_json_on_any_standard_json(value: Any, ascii: bool, indent: int | None) -> None:
    raw = json.dumps(value, ensure_ascii=ascii, indent=indent).encode()
    got = json_loads(raw)
    assert (got is None) == declined(raw)
    if got is not None:
        assert same_json(got[0], json.loads(raw))


@settings(max_examples=500, deadline=None)
@given(
    bits=st.integers(0, 2**64 - 1), form=st.sampled_from(["{!r}", "{:.17e}", "{:.6f}", "{:.3g}"])
)
def test_floats_round_correctly(bits: int, form: str) -> None:
    """Every finite double, written as Python writes it and as other tools do: the
    nearest double, as ``json.loads`` (correctly rounded) gives it."""
    x = struct.unpack("<d", struct.pack("<Q", bits))[0]
    if not math.isfinite(x):
        return
    raw = f"[{form.format(x)}, {form.format(-x)}]".encode()
    got = json_loads(raw)
    if got is None:
        assert declined(raw)
        return
    assert same_json(got[0], json.loads(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"[NaN]",
        b"[Infinity, -Infinity]",
        b'["\\ud800"]',  # a lone surrogate: Python keeps it
        b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
        b"[12345678901234567890]",  # beyond u64: Python keeps the int exact
        b"[-0]",  # an int 0 for Python, -0.0 for serde_json
        b'{"a": -0}',
        b"[-9223372036854775809]",
        b"[1e400]",  # beyond f64: Python gives inf
        b"{} x",
        b"",
        b"[1,]",
        b'{"a": 1,,}',
        b'["\xff"]',
        '{"a": 1}'.encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,  # deeper than serde_json's 128: no stack overflow
    ],
)
def test_declines_what_json_loads_reads_differently(raw: bytes, tmp_path: Path) -> None:
    assert json_loads(raw) is None
    assert_read_json_as_json_loads(raw, tmp_path / "a.json")


def test_longest_exact_numbers_are_read_here() -> None:
    raw = b"[123456789012345678, -123456789012345678, 0.12345678901234567, 1e308, -0.0, 5e-324]"
    assert same_json(parsed(raw), json.loads(raw))


def test_duplicate_keys_and_many_keys() -> None:
    raw = b'{"a": 1, "b": 2, "a": 3}'
    assert same_json(parsed(raw), json.loads(raw))  # the last value, at the first's place
    many = json.dumps([{f"k{i}": i, "shared": i} for i in range(10_000)]).encode()
    got = parsed(many)
    assert same_json(got, json.loads(many))
    assert got[0]["shared"] == 0 and got[-1]["k9999"] == 9999


def test_garbage_collector_state_is_kept() -> None:
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            for raw in (b'{"a": [1, 2]}', b"[NaN]", b"[" * 1000):
                json_loads(raw)
                assert gc.isenabled() is enabled, raw[:10]
    finally:
        (gc.enable if was else gc.disable)()


def test_coco_errors_are_as_before(tmp_path: Path) -> None:
    """Files that the fast parser declines still load (or fail) as ``json.loads``
    makes them: an id past int64 is named as such, a NaN polygon is an item problem."""
    images = [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}]
    cats = [{"id": 1, "name": "x"}]
    path = tmp_path / "instances.json"
    huge = {"id": 2**70, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
    path.write_text(json.dumps({"images": images, "categories": cats, "annotations": [huge]}))
    (image,) = load_coco(path, tmp_path).images
    assert any("'id' must fit in int64, found 1180591620717411303424" in p for p in image.problems)
    nan = {
        "id": 3,
        "image_id": 1,
        "category_id": 1,
        "bbox": [0, 0, 1, 1],
        "segmentation": [[0, 0, 1, float("nan"), 1, 1]],
    }
    path.write_text(json.dumps({"images": images, "categories": cats, "annotations": [nan]}))
    (image,) = load_coco(path, tmp_path).images
    assert any(
        "polygon 0 of 'segmentation' must be an even count of finite" in p for p in image.problems
    )


def test_load_coco_keeps_the_garbage_collector_state(tiny: dict[str, Path], tmp_path: Path) -> None:
    """load_coco runs with the collector off and leaves it as it found it, also when
    it raises."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,,}\n]}')
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            index = load_coco(tiny["annotations"], tiny["images"], captions=tiny["captions"])
            assert len(index.images) == 50 and gc.isenabled() is enabled
            with pytest.raises(rf.SchemaError, match="not valid JSON at line 2"):
                load_coco(bad, tmp_path)
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()

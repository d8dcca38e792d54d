"""``rf.decode_example(record, copy=False)``: bytes values as read-only memoryviews of the
record itself (no copy of a big value), equal to ``copy=True``'s values for every
feature kind, the record kept alive by its views, malformed records refused alike."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recordforge as rf
from recordforge.errors import DecodeError

feature = st.one_of(
    st.lists(st.binary(max_size=40), min_size=1, max_size=5),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=5).map(
        lambda v: np.array(v, dtype=np.int64)
    ),
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=5).map(
        lambda v: np.array(v, dtype=np.float32)
    ),
)


def _plain(decoded: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [bytes(x) for x in v] if isinstance(v, list) else v.tolist() for k, v in decoded.items()
    }


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), feature, max_size=6))
def test_views_equal_copies_for_every_kind(features: dict[str, Any]) -> None:
    record = rf.encode_example(features)
    want = rf.decode_example(record)
    got = rf.decode_example(record, copy=False)
    assert _plain(got) == _plain(want)
    for v in got.values():
        if isinstance(v, list):
            assert all(isinstance(x, memoryview) and x.readonly for x in v)


def test_a_big_value_is_a_view_of_the_record_not_a_copy() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB
    record = rf.encode_example({"image": blob, "label": 3})
    [view] = rf.decode_example(record, copy=False)["image"]
    assert view.obj is record
    assert bytes(view) == blob
    with pytest.raises(TypeError):
        view[0:1] = b"x"


def test_views_keep_the_record_alive() -> None:
    def views() -> list[Any]:
        record = rf.encode_example({"v": [b"abc", b"de"]})
        return list(rf.decode_example(record, copy=False)["v"])

    got = views()
    gc.collect()
    assert [bytes(v) for v in got] == [b"abc", b"de"]
    assert isinstance(got[0].obj, bytes) and got[0].obj is got[1].obj


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_other_buffers_are_copied_once_and_never_aliased(wrap: Any) -> None:
    record = rf.encode_example({"v": [b"hello"], "n": 5})
    data = wrap(bytearray(record))
    got = rf.decode_example(data, copy=False)
    assert bytes(got["v"][0]) == b"hello" and got["n"].tolist() == [5]
    if isinstance(data, bytearray):
        data[:] = bytes(len(data))  # the caller's buffer changed: the view did not
        assert bytes(got["v"][0]) == b"hello"


def test_duplicated_keys_and_unknown_fields_as_with_copies() -> None:
    a = rf.encode_example({"k": [b"first"]})
    b = rf.encode_example({"k": [b"second", b""]})
    record = a + b[0:0] + b  # two Features messages concatenated: the map merges, last wins
    assert _plain(rf.decode_example(record, copy=False)) == _plain(rf.decode_example(record))


@pytest.mark.parametrize(
    "bad", [b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05\x0a\x03", b"\x0a", b"\xff" * 7]
)
def test_malformed_records_raise_the_same_error(bad: bytes) -> None:
    with pytest.raises(DecodeError) as copied:
        rf.decode_example(bad)
    with pytest.raises(DecodeError) as viewed:
        rf.decode_example(bad, copy=False)
    assert str(viewed.value) == str(copied.value)

"""Adversarial checks of ``_core.json_loads`` (commit c49d8fb): where it accepts input,
its value must be ``json.loads``'s exactly (types, float bits, key order); where it
declines, ``_read_json`` must behave as ``json.loads`` did; it must never crash, leak
the garbage collector's state, or cost more memory than ``json.loads``.

The bugs it found (out of memory as a panic or an abort, deep nesting on a small
thread stack, long keys kept twice) are fixed; their tests pass."""

from __future__ import annotations

import gc
import json
import math
import struct
import sys
from decimal import ROUND_DOWN, ROUND_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_read_json_as_json_loads, run_python, same_json
from hypothesis import given, settings
from hypothesis import strategies as st

from recordforge._core import json_loads


def check(raw: bytes) -> bool:
    """json_loads agrees with json.loads (or declines); returns whether it accepted."""
    was = gc.isenabled()
    got = json_loads(raw)
    assert gc.isenabled() is was
    if got is None:
        return False
    assert isinstance(got, tuple) and len(got) == 1
    assert same_json(got[0], json.loads(raw)), raw[:200]
    return True


EDGE_CASES = [
    # signed zeros, underflow, overflow, exponent extremes
    b"-0.0",
    b"-0e0",
    b"-0E+0",
    b"[-0.0e5]",
    b"1e-400",
    b"-1e-400",
    b"0e999",
    b"-0e999",
    b"0e-999",
    b"1e000000000000000001",
    b"0e999999999999999999",
    b"-0.0e999999999999999999",
    b"1e-2147483648",
    b"1e-2147483649",
    b"0.1e2147483648",
    b"10e-2147483649",
    b"123456789012345678.123456789012345678e-2147483648",
    b"123456789012345678.123456789012345678e2147483647",
    b"0.000000000000000001e2147483647",
    b"1e2147483647",
    b"1e-9223372036854775808",
    # subnormal / max boundaries and their halfway points
    b"2.4703282292062327e-324",
    b"2.4703282292062328e-324",
    b"-2.4703282292062327e-324",
    b"4.9406564584124654e-324",
    b"2.2250738585072011e-308",
    b"2.2250738585072012e-308",
    b"1.7976931348623157e308",
    b"1.7976931348623158e308",
    b"1.7976931348623159e308",
    # ints vs floats
    b"1",
    b"1.0",
    b"1e2",
    b"1E5",
    b"1E+5",
    b"[1e-0]",
    b"[1E-00]",
    b"[-1E-0]",
    b"999999999999999999",
    b"-999999999999999999",
    b"18446744073709551615",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"[-0]",
    b"-0",
    # strings and escapes
    b'"\\u0000"',
    b'"\\u2028\\u2029"',
    b'"\\/"',
    b'"\\ud83d\\ude00"',
    b'"\\uD83D\\uDE00"',
    b'"\\ud800"',
    b'"\\udc00"',
    b'"\\ud800\\u0041"',
    b'{"\\ud800": 1}',
    b'"\\udfff\\ud800"',
    b'"\xed\xa0\x80"',
    b'"\xc0\xaf"',
    b'"\xf4\x90\x80\x80"',
    b'"\x7f"',
    b'"\xef\xbf\xbf"',
    b'"\xe2\x80\xa8"',
    b'"a\x00"',
    b'"\x1f"',
    b'"\t"',
    b'"\\u00e9"',
    b'"\\x41"',
    b"'a'",
    # whitespace, including what JSON does not allow
    b"[1,\x0c2]",
    b"\xc2\xa0[]",
    b"[]\xc2\xa0",
    b"[\r\n\t ]",
    b"[\x0b]",
    b"\xe3\x80\x80{}",
    b"  {}  ",
    b" ",
    b"",
    b"[1]\x00",
    b"\x00[1]",
    b"1 2",
    # objects
    b"{}",
    b"[]",
    b'{"a":{}}',
    b'{"a":1,"a":2,"b":3,"a":4}',
    b'{"": 1, "": [2]}',
    b"{1: 2}",
    b"{null: 2}",
    b'{"a" 1}',
    # encodings
    b"\xef\xbb\xbf{}",
    '{"a": 1}'.encode("utf-16-le"),
    '{"a": 1}'.encode("utf-32"),
    # literals Python accepts
    b"NaN",
    b"-Infinity",
    b"[Infinity]",
    b"tru",
    b"nul",
]


@pytest.mark.parametrize("raw", EDGE_CASES)
def test_edge_cases_agree_or_decline(raw: bytes) -> None:
    check(raw)


@pytest.mark.parametrize("raw", EDGE_CASES)
def test_read_json_behaves_as_json_loads(raw: bytes, tmp_path: Path) -> None:
    assert_read_json_as_json_loads(raw, tmp_path / "a.json")


@pytest.mark.parametrize("depth", [1, 24, 25, 126, 127, 128, 129, 1000])
def test_nesting_depths(depth: int) -> None:
    """Up to 24 lists and dicts deep is read here (COCO nests 5 deep); deeper declines,
    and json.loads reads it (a thread's stack may be 32 KiB)."""
    for raw in (b"[" * depth + b"]" * depth, b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)):
        accepted = check(raw)
        assert accepted is (depth <= 24)


@pytest.mark.parametrize("arg", ["{}", bytearray(b"{}"), memoryview(b"{}"), None, 1])
def test_non_bytes_raise_type_error_and_keep_gc(arg: Any) -> None:
    was = gc.isenabled()
    with pytest.raises(TypeError):
        json_loads(arg)
    assert gc.isenabled() is was


def _digits(draw: Any, low: int, high: int, nonzero_lead: bool = False) -> str:
    text = draw(st.text("0123456789", min_size=low, max_size=high))
    if nonzero_lead and text.startswith("0"):
        text = "1" + text[1:]
    return text


@st.composite
def json_numbers(draw: Any) -> bytes:
    """Standard JSON numbers with digit runs of at most 18 (what json_loads accepts)."""
    text = draw(st.sampled_from(["", "-"])) + (
        draw(st.just("0")) if draw(st.booleans()) else _digits(draw, 1, 18, nonzero_lead=True)
    )
    if draw(st.booleans()):
        text += "." + _digits(draw, 1, 18)
    if draw(st.booleans()):
        exp = draw(
            st.one_of(
                st.integers(0, 999), st.integers(280, 345).map(str), st.integers(0, 10**18 - 1)
            )
        )
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + str(exp)
    return text.encode()


@settings(max_examples=3000, deadline=None)
@given(raw=json_numbers())
def test_numbers_agree(raw: bytes) -> None:
    check(raw)


@settings(max_examples=1000, deadline=None)
@given(bits=st.integers(0, 2**63 - 1), sig=st.sampled_from([17, 20, 30, 36]), up=st.booleans())
def test_numbers_next_to_halfway_points(bits: int, sig: int, up: bool) -> None:
    """The exact midpoint between two doubles, cut to ``sig`` digits (rounded up or down):
    the hardest inputs for correct rounding, in 18 + 18 digits (no 19-digit run)."""
    x = struct.unpack("<d", struct.pack("<Q", bits))[0]
    y = math.nextafter(x, math.inf)
    if not (math.isfinite(x) and math.isfinite(y)):
        return
    with localcontext() as ctx:
        ctx.prec = 1200
        mid = (Decimal(x) + Decimal(y)) / 2
        _, digits, exp = mid.normalize().as_tuple()
        text = "".join(map(str, digits))
        if len(text) > sig:
            cut = Decimal(int(text)).scaleb(sig - len(text))
            text = str(int(cut.quantize(Decimal(1), rounding=ROUND_UP if up else ROUND_DOWN)))
            exp += len("".join(map(str, digits))) - sig
        exp = int(exp)
    if text[0] == "0":
        return
    whole, frac = text[:18], text[18:36] or "0"
    exp += len(text) - len(whole)
    raw = f"{whole}.{frac}e{exp}".encode()
    if len(text) > 36:
        return
    check(raw)


_ATOMS = [
    b"0",
    b"-0",
    b"-0.0",
    b"1",
    b"-1",
    b"1e5",
    b"1E-5",
    b"0.5",
    b"true",
    b"false",
    b"null",
    b'""',
    b'"a"',
    b'"\\u0000"',
    b'"\\ud83d\\ude00"',
    b'"\\ud800"',
    b'"\\/"',
    b'"\\b\\f\\n\\r\\t\\"\\\\"',
    b'"\xc3\xa9"',
    b'"\xe2\x80\xa8"',
    b"NaN",
    b"Infinity",
    b'"\xed\xa0\x80"',
    b'"\xff"',
    b"1.",
    b".5",
    b"+1",
    b"01",
    b'"\\u12"',
    b'"\t"',
    b"[]",
    b"{}",
]
_KEYS = [b'"a"', b'"b"', b'"\\u0061"', b'"\\ud800"', b"1", b'"\xc3\xa9"', b'"e\xcc\x81"', b'""']
_WS = st.sampled_from([b"", b" ", b"\n", b"\r", b"\t", b"\x0c", b"\xc2\xa0", b"\x00"])


def _wrap(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    member = st.tuples(_WS, inner, _WS).map(b"".join)
    pair = st.tuples(st.sampled_from(_KEYS), st.sampled_from([b":", b" : ", b"="]), member)
    return st.lists(member, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]") | st.lists(
        pair.map(b"".join), max_size=4
    ).map(lambda xs: b"{" + b",".join(xs) + b"}")


_documents = st.recursive(st.sampled_from(_ATOMS), _wrap, max_leaves=20)


@settings(max_examples=2000, deadline=None)
@given(raw=_documents, flip=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 255)))
def test_random_documents_agree_or_decline(raw: bytes, flip: tuple[int, int] | None) -> None:
    if flip is not None and raw:
        data = bytearray(raw)
        data[flip[0] % len(data)] = flip[1]
        raw = bytes(data)
    check(raw)


_LIMIT = """
    import resource
    def limit(extra_mb):
        used = int(open("/proc/self/statm").read().split()[0]) * 4096
        resource.setrlimit(resource.RLIMIT_AS, (used + extra_mb * 2**20, resource.RLIM_INFINITY))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_json_loads_out_of_memory_is_memory_error_for_json_loads_itself() -> None:
    """The baseline: json.loads under the same limit raises a catchable MemoryError."""
    out = run_python(
        _LIMIT
        + """
    import json
    raw = b'["' + b'a' * (64 * 2**20) + b'"]'
    limit(32)
    try:
        json.loads(raw)
    except MemoryError:
        print("MemoryError")
    """
    )
    assert out.returncode == 0 and out.stdout.strip() == "MemoryError", out.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_read_json_out_of_memory_raises_memory_error(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"{}")
    out = run_python(
        _LIMIT
        + f"""
    import gc
    from recordforge.sources import _coco_index
    raw = b'{{"a": "' + b'a' * (64 * 2**20) + b'"}}'
    _coco_index._fs.read_bytes = lambda path: raw
    limit(32)
    try:
        _coco_index._read_json({str(path)!r})
    except BaseException as e:
        print(type(e).__name__, gc.isenabled())
    """
    )
    assert out.returncode == 0 and out.stdout.strip() == "MemoryError True", (
        out.stdout,
        out.stderr[-1500:],
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_json_loads_out_of_memory_does_not_abort_the_process() -> None:
    out = run_python(
        _LIMIT
        + """
    import json
    from recordforge._core import json_loads
    raw = b'[' + b','.join([b'[1.5,"ab",{"k":2.5}]'] * 1_000_000) + b']'
    limit(50)
    try:
        json_loads(raw)
        print("parsed")
    except MemoryError:
        print("MemoryError")
    """
    )
    assert out.returncode == 0 and out.stdout.strip() == "MemoryError", (
        out.returncode,
        out.stderr[-1500:],
    )


def test_small_thread_stack_with_json_loads_baseline() -> None:
    """json.loads reads 126 levels of nesting on a 48 KiB thread stack."""
    out = run_python(
        """
    import json, threading
    raw = b'[{"a":' * 63 + b'1' + b'}]' * 63
    threading.stack_size(48 * 1024)
    t = threading.Thread(target=lambda: print(json.loads(raw) is not None))
    t.start(); t.join()
    """
    )
    assert out.returncode == 0 and out.stdout.strip() == "True"


@pytest.mark.parametrize("kib", [32, 48])
def test_small_thread_stack_does_not_crash(kib: int) -> None:
    """126 levels on a 32 or 48 KiB thread stack: declined (past 24 levels), no crash;
    24 levels are read there."""
    out = run_python(
        f"""
    import threading
    from recordforge._core import json_loads
    deep = b'[{{"a":' * 63 + b'1' + b'}}]' * 63
    ok = b'[{{"a":' * 12 + b'1' + b'}}]' * 12
    threading.stack_size({kib} * 1024)
    t = threading.Thread(target=lambda: print(json_loads(deep), json_loads(ok) is not None))
    t.start(); t.join()
    """
    )
    assert out.returncode == 0 and out.stdout.strip() == "None True", (out.returncode, out.stderr)


def _peak_growth_mb(parse: str, path: Path) -> float:
    """The parse's peak resident memory above what the input alone holds (VmHWM: unlike
    ru_maxrss, it starts afresh in the child, not at its parent's peak)."""
    out = run_python(
        f"""
    import json, os
    from recordforge._core import json_loads
    def hwm():
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    fd = os.open({str(path)!r}, os.O_RDONLY)
    raw = os.read(fd, os.fstat(fd).st_size)  # one buffer: no high-water mark of its own
    base = hwm()
    v = {parse}
    print(hwm() - base)
    """
    )
    assert out.returncode == 0, out.stderr[-1500:]
    return float(out.stdout.strip())


def _many_keys(letter: str, length: int) -> bytes:
    keys = ",".join(f'"{i:05d}{letter * length}": {i}' for i in range(4096))
    return ("{" + keys + "}").encode()


def _coco_shaped() -> bytes:
    entries = [{"segmentation": [[1.5, 2] * 40], "id": i} for i in range(30000)]
    return json.dumps({"annotations": entries}).encode()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _many_keys("a", 8000), id="long-ascii-keys"),
        pytest.param(lambda: _many_keys("é", 4000), id="long-non-ascii-keys"),
        pytest.param(_coco_shaped, id="coco-polygons-and-ids"),
    ],
)
def test_memory_is_json_loads_own(make: Any, tmp_path: Path) -> None:
    """The objects and nothing more: no value tree, no copy of the input, no second
    copy of long keys (at most 10% over json.loads's peak)."""
    path = tmp_path / "input.json"
    path.write_bytes(make())
    ours = _peak_growth_mb("json_loads(raw)[0]", path)
    theirs = _peak_growth_mb("json.loads(raw)", path)
    assert theirs > 20 and ours <= theirs * 1.1 + 2, (ours, theirs)

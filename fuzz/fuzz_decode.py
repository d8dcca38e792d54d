"""Atheris fuzz target for ``decode_example`` and ``decode_sequence_example``.

Every input goes through both decoders; ``DecodeError`` is the only exception allowed.
Anything else (``PanicException`` included) propagates and atheris reports it as a crash.
Oracles on top of "no unexpected exception":

* output shape: ``dict[str, ndarray[int64] | ndarray[float32] | list[bytes]]`` (and, for a
  SequenceExample, ``dict[str, list[feature]]`` for the feature lists);
* round trip: ``decode(encode(decoded))`` equals ``decoded`` (same keys in the same order,
  same dtypes, floats compared bit for bit, so NaN payloads and -0.0 count), and encoding
  that again gives the same bytes. An empty ``bytes_list`` decodes to ``[]``, which
  ``encode_example`` rejects by design ("an empty list has no kind"), so ``[]`` is given
  back as ``np.array([], np.bytes_)``;
* Example vs SequenceExample: both parse field 1 (``features`` / ``context``) the same way
  and an Example skips field 2, so when ``decode_example`` fails ``decode_sequence_example``
  must fail too, and when both succeed the Example equals the context;
* ``bytes``, ``bytearray`` and ``memoryview`` inputs decode the same.

The Rust core is not instrumented. Mitigations: a protobuf-aware mutator that parses the
input into a tree of fields, mutates one node (value, field number, wire type, varint
encoding, lengths, deep groups...) and re-serializes it with correct lengths, and
``_marks`` (``_common.Marks``), which calls one of 2048 generated, instrumented one-branch
functions picked by a hash of the outcome (error kind, or the kinds of features decoded),
so that every distinct outcome has its own Python edge and inputs reaching new ones stay
in the corpus.

Run through ``fuzz/run.py``, or directly::

    python fuzz/fuzz_decode.py CORPUS_DIR -max_total_time=60 -timeout=10
"""

from __future__ import annotations

import random
import re
import sys
from typing import Any

import numpy as np
from _common import Marks, Mismatch, atheris, fuzz

import recordforge as rf

_DECODE_ERROR = re.compile(r"cannot decode (tf\.train\.\w+): (.*) at byte (\d+)")

# ---------------------------------------------------------------------------------------
# Output checks and comparison


def _feature_sig(value: Any, where: str) -> str:
    """Validates one decoded feature; returns its kind."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype not in (np.int64, np.float32):
            raise Mismatch(f"{where}: array {value.dtype} ndim {value.ndim}")
        return "i" if value.dtype == np.int64 else "f"
    if isinstance(value, list):
        if any(type(b) is not bytes for b in value):
            raise Mismatch(f"{where}: bytes_list holds a non-bytes value")
        return "b"
    raise Mismatch(f"{where}: feature of type {type(value).__name__}")


def _features_sig(d: Any, where: str) -> str:
    if type(d) is not dict:
        raise Mismatch(f"{where}: {type(d).__name__}, expected dict")
    kinds = set()
    for k, v in d.items():
        if type(k) is not str:
            raise Mismatch(f"{where}: key of type {type(k).__name__}")
        kinds.add(_feature_sig(v, f"{where}[{k!r}]"))
    n = len(d)
    return "".join(sorted(kinds)) + ("0" if n == 0 else "1" if n == 1 else "n")


def _lists_sig(d: Any, where: str) -> str:
    if type(d) is not dict:
        raise Mismatch(f"{where}: {type(d).__name__}, expected dict")
    kinds = set()
    for k, steps in d.items():
        if type(k) is not str or type(steps) is not list:
            raise Mismatch(f"{where}: entry {type(k).__name__} -> {type(steps).__name__}")
        for i, step in enumerate(steps):
            kinds.add(_feature_sig(step, f"{where}[{k!r}][{i}]"))
        kinds.add("s" if steps else "e")
    return "".join(sorted(kinds))


def _same_feature(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    return type(a) is type(b) and a == b


def _same_features(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return list(a) == list(b) and all(_same_feature(a[k], b[k]) for k in a)


def _same_lists(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return list(a) == list(b) and all(
        len(a[k]) == len(b[k]) and all(map(_same_feature, a[k], b[k])) for k in a
    )


def _encodable(value: Any) -> Any:
    # decode gives [] for an empty bytes_list; encode refuses [] ("no kind") on purpose.
    return np.array([], dtype=np.bytes_) if isinstance(value, list) and not value else value


def _encodable_features(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _encodable(v) for k, v in d.items()}


def _encodable_lists(d: dict[str, Any]) -> dict[str, Any]:
    return {k: [_encodable(s) for s in steps] for k, steps in d.items()}


def _error_sig(e: Exception, data: bytes, message: str) -> str:
    m = _DECODE_ERROR.fullmatch(str(e))
    if m is None:
        return "other:" + re.sub(r"\[.*\]", "KEY", str(e))
    if m.group(1) != message or int(m.group(3)) > len(data):
        raise Mismatch(f"bad DecodeError message for a {len(data)}-byte input: {e}")
    return m.group(2)


# ---------------------------------------------------------------------------------------
# The target


def check_example(data: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        ex = rf.decode_example(data)
    except rf.DecodeError as e:
        return None, "err:" + _error_sig(e, data, "tf.train.Example")
    sig = _features_sig(ex, "Example")
    encoded = rf.encode_example(_encodable_features(ex))
    back = rf.decode_example(encoded)
    if not _same_features(ex, back):
        raise Mismatch(f"Example round trip changed values: {ex!r} -> {back!r}")
    if rf.encode_example(_encodable_features(back)) != encoded:
        raise Mismatch("Example re-encoding is not stable")
    return ex, "ok:" + sig


def check_sequence(data: bytes) -> tuple[tuple[dict[str, Any], dict[str, Any]] | None, str]:
    try:
        decoded = rf.decode_sequence_example(data)
    except rf.DecodeError as e:
        return None, "err:" + _error_sig(e, data, "tf.train.SequenceExample")
    if type(decoded) is not tuple or len(decoded) != 2:
        raise Mismatch(f"decode_sequence_example returned {type(decoded).__name__}")
    ctx, lists = decoded
    sig = _features_sig(ctx, "context") + "/" + _lists_sig(lists, "feature_lists")
    encoded = rf.encode_sequence_example(_encodable_features(ctx), _encodable_lists(lists))
    back_ctx, back_lists = rf.decode_sequence_example(encoded)
    if not (_same_features(ctx, back_ctx) and _same_lists(lists, back_lists)):
        raise Mismatch(
            f"SequenceExample round trip changed values: {decoded!r} -> {(back_ctx, back_lists)!r}"
        )
    again = rf.encode_sequence_example(_encodable_features(back_ctx), _encodable_lists(back_lists))
    if again != encoded:
        raise Mismatch("SequenceExample re-encoding is not stable")
    return decoded, "ok:" + sig


def check(data: bytes) -> tuple[str, str]:
    """Runs one input; raises on a bug. Returns a small outcome signature."""
    ex, ex_sig = check_example(data)
    seq, seq_sig = check_sequence(data)
    if ex is None and seq is not None:
        raise Mismatch(f"Example failed ({ex_sig}) but SequenceExample decoded")
    if ex is not None and seq is not None and not _same_features(ex, seq[0]):
        raise Mismatch(f"Example {ex!r} differs from the SequenceExample context {seq[0]!r}")
    if len(data) % 4 == 0:  # other bytes-like inputs, on a quarter of the inputs
        for other in (bytearray(data), memoryview(data)):
            try:
                again = rf.decode_example(other)
            except rf.DecodeError:
                again = None
            if (again is None) != (ex is None) or (
                ex is not None and not _same_features(ex, again)
            ):
                raise Mismatch(f"decode_example({type(other).__name__}) differs from bytes")
    return ex_sig, seq_sig


# ---------------------------------------------------------------------------------------
# Coverage proxy: one Python edge per distinct outcome signature

_marks = Marks(2048, "fuzz_decode")


def test_one_input(data: bytes) -> None:
    ex_sig, seq_sig = check(data)
    _marks.hit("ex", ex_sig)
    _marks.hit("seq", seq_sig)
    _marks.hit("both", ex_sig, seq_sig)


# ---------------------------------------------------------------------------------------
# Protobuf-aware mutator
#
# A message is a list of nodes [field, wire_type, value, raw_tag]: value is an int
# (varint), bytes (fixed32/fixed64/unparsed length-delimited), or a list of nodes
# (length-delimited payload that parses as a message, or a group's contents). raw_tag,
# when set, replaces the tag's encoding (non-minimal varints, invalid tags).

_MAX_PARSE_DEPTH = 8


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(buf) and shift < 70:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos
    return None


def _parse(buf: bytes, depth: int = 0) -> Any:
    """Parses buf into nodes; None when it is not a well-formed message."""
    parsed = _parse_at(buf, 0, depth, None)
    return None if parsed is None else parsed[0]


def _parse_at(buf: bytes, pos: int, depth: int, group: int | None) -> Any:
    nodes: list[Any] = []
    while pos < len(buf):
        tag = _varint(buf, pos)
        if tag is None:
            return None
        key, pos = tag
        field, wt = key >> 3, key & 7
        if field == 0 or wt > 5:
            return None
        if wt == 4:  # end of the enclosing group
            return (nodes, pos) if field == group else None
        if wt == 0:
            v = _varint(buf, pos)
            if v is None:
                return None
            value, pos = v
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            if pos + n > len(buf):
                return None
            value, pos = buf[pos : pos + n], pos + n
        elif wt == 2:
            v = _varint(buf, pos)
            if v is None or v[1] + v[0] > len(buf):
                return None
            length, pos = v
            payload = buf[pos : pos + length]
            pos += length
            sub = _parse(payload, depth + 1) if depth < _MAX_PARSE_DEPTH and payload else None
            value = sub if sub is not None else payload
        else:  # a group: its fields up to the matching end tag
            if depth > 200:
                return None
            inner = _parse_at(buf, pos, depth + 1, field)
            if inner is None:
                return None
            value, pos = inner
        nodes.append([field, wt, value, None])
    return (nodes, pos) if group is None else None


def _put_varint(out: bytearray, v: int) -> None:
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _serialize(nodes: list[Any], out: bytearray) -> None:
    for node in nodes:
        field, wt, value, raw_tag = node[:4]
        if raw_tag is not None:
            out += raw_tag
        else:
            _put_varint(out, (field << 3) | wt)
        if wt == 3:  # group: children then the end tag
            _serialize(value, out)
            _put_varint(out, (field << 3) | 4)
        elif isinstance(value, int):
            _put_varint(out, value)
        elif isinstance(value, list):
            body = bytearray()
            _serialize(value, body)
            _put_varint(out, len(body) + (node[4] if len(node) > 4 else 0))
            out += body
        elif wt == 2:
            _put_varint(out, len(value) + (node[4] if len(node) > 4 else 0))
            out += value
        else:
            out += value


def _walk(nodes: list[Any], acc: list[tuple[list[Any], int]]) -> None:
    for i, node in enumerate(nodes):
        acc.append((nodes, i))
        if isinstance(node[2], list):
            _walk(node[2], acc)


_INTERESTING = (0, 1, 2, 127, 128, 255, 1 << 31, 1 << 32, 1 << 63, (1 << 64) - 1, (1 << 63) - 1)


def _random_node(rng: random.Random) -> list[Any]:
    field = rng.choice((1, 1, 2, 3, 4, 5, 15, 16, 2047, (1 << 29) - 1))
    kind = rng.randrange(7)
    if kind == 0:
        return [field, 0, rng.choice(_INTERESTING), None]
    if kind == 1:
        return [field, 5, bytes(rng.randrange(256) for _ in range(4)), None]
    if kind == 2:
        return [field, 1, bytes(rng.randrange(256) for _ in range(8)), None]
    if kind == 3:  # nested unknown groups, sometimes past the 100-level limit
        node: list[Any] = [field, 3, [], None]
        inner = node
        for _ in range(rng.choice((1, 2, 99, 100, 101, 150))):
            child: list[Any] = [rng.choice((field, field + 1)), 3, [], None]
            inner[2].append(child)
            inner = child
        return node
    if kind == 4:  # packed varints, sometimes with a truncated last one
        body = bytearray()
        for _ in range(rng.randrange(1, 6)):
            _put_varint(body, rng.choice(_INTERESTING))
        if rng.random() < 0.3:
            body.append(0x80)
        return [field, 2, bytes(body), None]
    if kind == 5:  # packed floats, sometimes not a multiple of 4
        n = rng.choice((0, 3, 4, 8, 9))
        return [field, 2, bytes(rng.randrange(256) for _ in range(n)), None]
    return [field, 2, [[1, 2, bytes(rng.randrange(97, 123) for _ in range(3)), None]], None]


def _mutate_tree(nodes: list[Any], rng: random.Random, donor: list[Any] | None) -> None:
    spots: list[tuple[list[Any], int]] = []
    _walk(nodes, spots)
    if not spots:
        nodes.append(_random_node(rng))
        return
    parent, i = rng.choice(spots)
    node = parent[i]
    op = rng.randrange(11)
    if op <= 2:  # change the value
        if isinstance(node[2], int):
            node[2] = rng.choice((*_INTERESTING, node[2] + 1, node[2] - 1, rng.getrandbits(64)))
        elif isinstance(node[2], bytes):
            node[2] = atheris.Mutate(node[2], max(16, 2 * len(node[2])))
        else:
            node[2].append(_random_node(rng))
    elif op == 3:
        del parent[i]
    elif op == 4:
        parent.insert(rng.randrange(len(parent) + 1), _clone(node))
    elif op == 5:
        parent.insert(rng.randrange(len(parent) + 1), _random_node(rng))
    elif op == 6:  # change the field number
        node[0] = rng.choice((1, 2, 3, 4, node[0] + 1, rng.randrange(1, 1 << 29)))
        node[3] = None
    elif op == 7:  # change the wire type (the value's encoding stays)
        node[3] = bytes(_tag(node[0], rng.randrange(8)))
    elif op == 8:  # odd tag encodings: non-minimal varints, field 0, 10/11-byte varints
        tag = (node[0] << 3) | node[1]
        pad = rng.choice((1, 2, 9))
        raw = bytearray()
        for _ in range(pad):
            raw.append((tag & 0x7F) | 0x80)
            tag >>= 7
        raw.append(tag & 0x7F)
        node[3] = bytes(rng.choice((raw, b"\x00", b"\x02", b"\xff" * 9 + b"\x01", b"\x80" * 10)))
    elif op == 9 and len(node) == 4 and node[1] == 2:  # a length that is off by a little
        node.append(rng.choice((-2, -1, 1, 2, 1 << 20)))
    elif donor:  # splice a node from another input
        d_spots: list[tuple[list[Any], int]] = []
        _walk(donor, d_spots)
        d_parent, j = rng.choice(d_spots)
        parent.insert(rng.randrange(len(parent) + 1), _clone(d_parent[j]))


def _tag(field: int, wt: int) -> bytearray:
    out = bytearray()
    _put_varint(out, (field << 3) | wt)
    return out


def _clone(node: list[Any]) -> list[Any]:
    """A deep copy of one node, without recursing (trees can be hundreds of levels deep)."""
    root = list(node)
    stack = [root]
    while stack:
        n = stack.pop()
        if isinstance(n[2], list):
            n[2] = [list(child) for child in n[2]]
            stack.extend(n[2])
    return root


# _walk and _serialize recurse once per level. Parsed trees are at most ~210 levels deep
# and one mutation adds at most 151 (a deep group), so mutating stops once a tree is this
# deep; main() also raises the recursion limit. (CI once hit RecursionError in the
# mutator, cloning a node of a ~500-level tree recursively.)
_MAX_MUTATE_DEPTH = 256


def _depth(nodes: list[Any]) -> int:
    """Levels of nesting in a tree, without recursing."""
    deepest, stack = 0, [(nodes, 1)]
    while stack:
        level, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((node[2], d + 1) for node in level if isinstance(node[2], list))
    return deepest


def _structured(data: bytes, max_size: int, rng: random.Random, donor: bytes | None) -> bytes:
    tree = _parse(data)
    if tree is None:
        return atheris.Mutate(data, max_size)
    donor_tree = _parse(donor) if donor else None
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if _depth(tree) > _MAX_MUTATE_DEPTH:
            break
        _mutate_tree(tree, rng, donor_tree)
    out = bytearray()
    _serialize(tree, out)
    return bytes(out) if len(out) <= max_size else atheris.Mutate(data, max_size)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.3:
        return atheris.Mutate(data, max_size)
    return _structured(data, max_size, rng, None)


def custom_crossover(data1: bytes, data2: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return _structured(data1, max_size, rng, data2)


def main() -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    fuzz(
        test_one_input,
        (check, check_example, check_sequence, _error_sig),
        _marks,
        custom_mutator=custom_mutator,
        custom_crossover=custom_crossover,
    )


if __name__ == "__main__":
    main()

"""Replays fuzz regressions and hand-made nasty inputs through both fuzz targets' checks.

Every file in ``fuzz/regressions/`` (inputs that once failed a fuzz target, ``*.md``
excepted) and every hand-made input below goes through ``fuzz_read_records.check`` and
``fuzz_decode.check``: only the documented errors may escape recordforge, and the targets'
oracles (reference reader, round trip, ...) must hold. Nothing here needs atheris.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest
from helpers import FUZZ_DIR, U64_MAX, entry, example, ld, load_fuzz_target, tag, varint

import recordforge as rf

REGRESSIONS = FUZZ_DIR / "regressions"

frr = load_fuzz_target("fuzz_read_records")
fdec = load_fuzz_target("fuzz_decode")


def run_both(data: bytes) -> None:
    frr.check(data)
    fdec.check(data)


# ---------------------------------------------------------------------------------------
# Builders


def int64_feature(list_body: bytes) -> bytes:
    return ld(3, list_body)


def float_feature(list_body: bytes) -> bytes:
    return ld(2, list_body)


def bytes_feature(list_body: bytes) -> bytes:
    return ld(1, list_body)


def groups(depth: int, field: int = 5) -> bytes:
    return tag(field, 3) * depth + tag(field, 4) * depth


def header(length: int, good_crc: bool = True) -> bytes:
    h = length.to_bytes(8, "little")
    crc = rf.masked_crc32c(h) ^ (0 if good_crc else 1)
    return h + crc.to_bytes(4, "little")


def gzip_member(data: bytes, flags: int = 0, extra: bytes = b"") -> bytes:
    """A GZIP member with a hand-written header (FEXTRA/FNAME/FCOMMENT/FHCRC as asked)."""
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = raw.compress(data) + raw.flush()
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\x03" + extra
    if flags & 2:
        head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little")
    crc, size = zlib.crc32(data), len(data) & 0xFFFFFFFF
    return head + body + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


# ---------------------------------------------------------------------------------------
# Hand-made inputs for read_records: (name, body); each runs under all 16 selectors.

F = frr.frame
REC = F(b"foo") + F(b"") + F(b"hello world")
GZ = gzip.compress(REC, mtime=0)
ZL = zlib.compress(REC)

READ_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("records", REC),
    *[
        (f"huge length {n:#x} valid CRC", header(n) + b"abcd")
        for n in (U64_MAX, U64_MAX - 15, U64_MAX - 16, 1 << 63, 1 << 40, 1 << 32, 1 << 31)
    ],
    ("huge length, valid CRC, after a record", F(b"x") + header(U64_MAX)),
    ("huge length, bad CRC", header(1 << 62, good_crc=False) + b"\0" * 20),
    ("length one short", header(2) + b"abc" + F(b"abc")[-4:]),
    ("length one long", header(4) + b"abc" + F(b"abc")[-4:]),
    *[(f"cut at {i}", REC[:i]) for i in (1, 11, 12, 13, 18, 19, 20, len(REC) - 1)],
    *[(f"trailing {n} bytes", REC + b"\0" * n) for n in (1, 11, 12, 16)],
    ("bad data CRC", F(b"foo")[:-1] + b"\0"),
    # A TFRecord whose length bytes look like GZIP / ZLIB magic: the valid header must win.
    ("length looks like gzip magic", F(b"g" * 0x8B1F)),
    ("length looks like zlib header", F(b"z" * 0x9C78)),
    ("gzip", GZ),
    ("gzip, two members", GZ + gzip.compress(F(b"second"), mtime=0)),
    ("gzip, empty member after", GZ + gzip.compress(b"", mtime=0)),
    ("gzip, only an empty member", gzip.compress(b"", mtime=0)),
    ("gzip, member split inside a record", gzip.compress(REC[:7]) + gzip.compress(REC[7:])),
    # Member boundary past the first 256 bytes of input (exercises the reference inflate).
    (
        "gzip, long first member",
        gzip.compress(F(bytes(range(256)) * 4), compresslevel=0) + gzip.compress(F(b"tail")),
    ),
    ("gzip, trailing zeros", GZ + b"\0" * 8),
    ("gzip, trailing garbage", GZ + b"garbage"),
    ("gzip, cut short", GZ[:-1]),
    ("gzip, header only", GZ[:10]),
    ("gzip, magic only", b"\x1f\x8b"),
    ("gzip, bad CRC32", GZ[:-8] + b"\0\0\0\0" + GZ[-4:]),
    ("gzip, bad ISIZE", GZ[:-4] + b"\xff\xff\xff\xff"),
    ("gzip, FNAME+FCOMMENT+FHCRC", gzip_member(REC, 0x08 | 0x10 | 0x02, b"name\0comment\0")),
    ("gzip, FEXTRA", gzip_member(REC, 0x04, b"\x04\x00abcd")),
    ("gzip, reserved flag", gzip_member(REC, 0x20)),
    ("gzip bomb: length 2^40, 4 MB of zeros", gzip.compress(header(1 << 40) + bytes(1 << 22))),
    ("zlib", ZL),
    ("zlib, level 0", zlib.compress(REC, 0)),
    ("zlib, trailing byte", ZL + b"\0"),
    ("zlib, two streams", ZL + ZL),
    ("zlib, cut short", ZL[:-1]),
    ("zlib, bad adler32", ZL[:-1] + bytes([ZL[-1] ^ 1])),
    ("zlib, header only", ZL[:2]),
    ("zlib, FDICT set", b"\x78\xbb" + ZL[2:]),
    ("zlib, 32K window header", b"\x78\x01" + ZL[2:]),
    ("raw deflate", zlib.compress(REC)[2:-4]),
    ("all 0xff", b"\xff" * 64),
]


@pytest.mark.parametrize("name,body", READ_BODIES, ids=[n for n, _ in READ_BODIES])
def test_read_records_nasty(name: str, body: bytes) -> None:
    for sel in range(16):
        run_both(bytes([sel]) + body)


# ---------------------------------------------------------------------------------------
# Hand-made inputs for the decoders

STEPS = ld(1, int64_feature(b"\x08\x01")) + ld(1, b"") + ld(1, bytes_feature(b""))
KEY_INT = entry(b"i", int64_feature(ld(1, varint(5) + varint(U64_MAX))))
NASTY_MESSAGES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("empty features", example(b"")),
    ("groups depth 99", groups(99)),
    ("groups depth 100", groups(100)),
    ("groups depth 101", groups(101)),
    ("groups depth 100000", groups(100_000)),
    ("groups unterminated", tag(5, 3) * 200),
    ("groups mismatched end", tag(5, 3) + tag(6, 4)),
    ("end group at top level", tag(5, 4)),
    ("deep groups inside a Feature", example(entry(b"k", groups(150) + int64_feature(b"")))),
    ("deep groups inside an Int64List", example(entry(b"k", int64_feature(groups(101, 2))))),
    ("group in FeatureLists", ld(2, groups(101, 1))),
    ("10-byte varint max", tag(7, 0) + b"\xff" * 9 + b"\x01"),
    ("10-byte varint overflow", tag(7, 0) + b"\xff" * 9 + b"\x02"),
    ("11-byte varint", tag(7, 0) + b"\xff" * 10 + b"\x01"),
    ("non-minimal varint zero", tag(7, 0) + b"\x80" * 9 + b"\x00"),
    ("varint past the end", tag(7, 0) + b"\xff\xff"),
    ("field number 0 varint", b"\x00\x01"),
    ("field number 0 length", b"\x02\x00"),
    ("field number 0 in a Feature", example(entry(b"k", b"\x02\x00"))),
    ("largest field number", varint(((1 << 29) - 1) << 3) + b"\x01"),
    ("field number 2^29", varint(1 << 32) + b"\x01"),
    ("tag 10 bytes", b"\xff" * 9 + b"\x01"),
    ("non-minimal tag for features", b"\x8a\x80\x00" + varint(len(KEY_INT)) + KEY_INT),
    *[(f"wire type {wt} at top", tag(1, wt) + b"\0" * 8) for wt in (6, 7)],
    *[(f"wire type {wt} in a Feature", example(entry(b"k", tag(1, wt)))) for wt in (6, 7)],
    *[
        (f"wire type {wt} in an Int64List", example(entry(b"k", int64_feature(tag(1, wt)))))
        for wt in (6, 7)
    ],
    ("truncated packed varint", example(entry(b"k", int64_feature(ld(1, b"\x05\x80"))))),
    ("packed varint 11 bytes", example(entry(b"k", int64_feature(ld(1, b"\xff" * 10 + b"\x01"))))),
    ("packed negative int64", example(KEY_INT)),
    ("unpacked int64", example(entry(b"k", int64_feature(tag(1, 0) + varint(3) + tag(1, 0))))),
    *[
        (f"float list {n} bytes", example(entry(b"k", float_feature(ld(1, b"\0" * n)))))
        for n in (1, 2, 3, 5, 7)
    ],
    ("unpacked floats", example(entry(b"k", float_feature(tag(1, 5) + b"\0\0\xc0\x7f" * 2)))),
    ("unpacked float cut", example(entry(b"k", float_feature(tag(1, 5) + b"\0\0")))),
    (
        "signalling NaN and -0.0",
        example(entry(b"k", float_feature(ld(1, b"\x01\x00\x80\x7f" + b"\0\0\0\x80")))),
    ),
    (
        "kind switch: int then float",
        example(entry(b"k", int64_feature(ld(1, b"\x01")) + float_feature(b""))),
    ),
    ("feature without kind", example(entry(b"k", b""))),
    ("entry without value", example(ld(1, ld(1, b"k")))),
    ("entry without key", example(ld(1, ld(2, int64_feature(b""))))),
    ("empty bytes_list", example(entry(b"k", bytes_feature(b"")))),
    ("duplicate keys", example(KEY_INT + entry(b"i", bytes_feature(ld(1, b"x"))))),
    ("key not UTF-8", example(entry(b"\xff\xfe", int64_feature(b"")))),
    ("key is a lone surrogate", example(entry(b"\xed\xa0\x80", int64_feature(b"")))),
    ("key with NUL", example(entry(b"a\0b", int64_feature(b"")))),
    ("length 2^64-1", tag(1, 2) + varint(U64_MAX)),
    ("length 2^63", tag(1, 2) + varint(1 << 63)),
    ("length one past the end", tag(1, 2) + varint(3) + b"ab"),
    ("inner length past the outer one", example(entry(b"k", int64_feature(b"")))[:-1]),
    ("100k empty bytes values", example(entry(b"k", bytes_feature(b"\x0a\x00" * 100_000)))),
    ("50k features", example(b"".join(entry(b"%d" % i, b"") for i in range(50_000)))),
    ("sequence: empty step list", ld(2, ld(1, ld(1, b"s")))),
    (
        "sequence: steps of each kind",
        ld(2, ld(1, ld(1, b"s") + ld(2, STEPS))),
    ),
    ("sequence: list key not UTF-8", ld(2, ld(1, ld(1, b"\xc3")))),
    ("sequence: field 2 not a message", example(KEY_INT) + ld(2, b"\x07")),
    ("sequence: field 2 as varint", example(KEY_INT) + tag(2, 0) + b"\x01"),
]


@pytest.mark.parametrize("name,data", NASTY_MESSAGES, ids=[n for n, _ in NASTY_MESSAGES])
def test_decode_nasty(name: str, data: bytes) -> None:
    run_both(data)
    # The message as a record of a TFRecord file, through read_records too.
    run_both(bytes([frr.selector("auto")]) + frr.frame(data))


def test_depth_limit_is_100() -> None:
    assert rf.decode_example(groups(100)) == {}
    with pytest.raises(rf.DecodeError, match="nested too deeply"):
        rf.decode_example(groups(101))


# ---------------------------------------------------------------------------------------
# Saved regressions


def _regression_files() -> list[Path]:
    if not REGRESSIONS.is_dir():
        return []
    return sorted(p for p in REGRESSIONS.iterdir() if p.is_file() and p.suffix != ".md")


@pytest.mark.parametrize("path", _regression_files(), ids=lambda p: p.name)
def test_regression_file(path: Path) -> None:
    run_both(path.read_bytes())


def test_checks_reject_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracles do fire: an encoder that drops a feature breaks the round trip."""
    real = rf.encode_example

    def lossy(features: dict[str, object]) -> bytes:
        return real(dict(list(features.items())[:-1]))

    monkeypatch.setattr(rf, "encode_example", lossy)
    with pytest.raises(AssertionError, match="round trip"):
        fdec.check(example(KEY_INT))


def _stub_libfuzzer_mutate(monkeypatch: pytest.MonkeyPatch) -> None:
    """atheris.Mutate exits the process outside atheris.Fuzz(); this stands in for it."""

    def grow(data: bytes, max_size: int) -> bytes:
        return (data + b"\x08\x01")[:max_size]

    monkeypatch.setattr(fdec, "atheris", type("A", (), {"Mutate": staticmethod(grow)}))


def _deep_groups(levels: int) -> bytes:
    return b"".join(tag(1, 3) for _ in range(levels)) + b"".join(tag(1, 4) for _ in range(levels))


def test_decode_mutator_bounds_tree_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The structured mutator never works on a tree deep enough to overflow the stack.

    CI once failed with RecursionError inside the mutator, not in recordforge: one call
    mutates up to 3 times, each mutation can nest a 150-level group, and cloning a node of
    the ~500-level result took over 1,000 frames. Here every mutation does that worst
    case (nest 150 more levels at the deepest point, then clone the tree), starting from
    an input nested as deep as the parser accepts, under the default recursion limit.
    """

    def worst(nodes: list[object], rng: object, donor: object) -> None:
        level: list = nodes  # type: ignore[type-arg]
        while level and isinstance(level[-1][2], list):
            level = level[-1][2]
        inner: list = [1, 3, [], None]  # type: ignore[type-arg]
        level.append(inner)
        for _ in range(150):
            child: list = [1, 3, [], None]  # type: ignore[type-arg]
            inner[2].append(child)
            inner = child
        nodes[:] = [fdec._clone(node) for node in nodes]

    _stub_libfuzzer_mutate(monkeypatch)
    monkeypatch.setattr(fdec, "_mutate_tree", worst)
    deep = _deep_groups(200)
    assert fdec._parse(deep) is not None  # a tree, so the structured path runs
    for seed in range(40):  # covers 1, 2 and 3 mutations per call
        out = fdec.custom_mutator(deep, 1 << 20, seed)
        assert out.startswith(_deep_groups(1)[:1])


def test_decode_mutator_survives_deep_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    """The structured mutator keeps working on inputs nested as deep as it will parse.

    CI once failed with RecursionError inside the mutator (cloning a node of a tree that
    earlier mutations had nested ~500 levels deep), not in recordforge. Inputs nested 200
    groups deep are mutated over and over, each output fed back in, under the default
    recursion limit.
    """
    import random

    _stub_libfuzzer_mutate(monkeypatch)
    deep = _deep_groups(200)
    assert fdec._parse(deep) is not None  # a tree, so the structured path runs
    rng = random.Random(0)
    pool = [deep, example(entry(b"k", int64_feature(ld(1, varint(7)))))]
    deepest = 0
    for seed in range(1500):
        a, b = rng.choice(pool), rng.choice(pool)
        out = (
            fdec.custom_mutator(a, 1 << 15, seed)
            if seed % 3
            else fdec.custom_crossover(a, b, 1 << 15, seed)
        )
        assert len(out) <= 1 << 15
        tree = fdec._parse(out)
        if tree is not None:
            deepest = max(deepest, fdec._depth(tree))
        pool.append(out)
        if len(pool) > 64:
            pool.pop(rng.randrange(len(pool)))
    assert deepest > 200  # the deep inputs really were mutated as trees

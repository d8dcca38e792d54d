"""Atheris fuzz target for ``rf.inspect.salvage`` (and the walk that ``count`` and
``verify`` share with it) on mutated whole files, plain, GZIP or ZLIB.

Input layout: ``fuzz_read_records``' (a selector byte, then the file's bytes; only the
bytes matter here: salvage detects the compression itself).

``salvage`` must succeed on any input (it is the tool for damaged files). Oracles:

* the output reads back cleanly (``read_records``: every CRC checks), in the input's
  compression, and holds ``result.records`` records;
* nothing is made up: the kept records appear, framed and in order, in what Python's
  ``zlib`` decompresses of the input (the bytes themselves for a plain file);
* nothing intact is lost: when the input is a whole stream (plain, or compressed and
  decompressing cleanly), the records a sequential reader gets before the first damage
  are the first ones kept, and every record whose frame is intact and isolated (see
  ``_isolated``) is kept;
* every byte is accounted for: for a whole stream, kept records and lost regions add up
  to the stream's length;
* ``count`` and ``verify`` see the same records: intact ones plus those lost to a data
  CRC alone.

Run through ``fuzz/run.py``, or directly::

    python fuzz/fuzz_salvage.py CORPUS_DIR -max_total_time=60 -timeout=10
"""

from __future__ import annotations

import os
import random
import zlib
from typing import Any

import fuzz_read_records as frr
from _common import Marks, Mismatch, atheris, count_bucket, fuzz, scratch_base

import recordforge as rf


def _paths() -> tuple[str, str]:
    # One pair per process, removed after each input.
    stem = os.path.join(scratch_base(), f"rf-fuzz-salvage-{os.getpid()}")
    return f"{stem}.in", f"{stem}.out"


def _isolated(stream: bytes) -> list[tuple[int, bytes]]:
    """Records whose whole frame checks (both CRCs) and that no other such frame
    overlaps: any resynchronising walk keeps them. ``(offset, payload)``, in order."""
    found: list[tuple[int, int, bytes]] = []
    n = len(stream)
    for pos in range(max(0, n - 15)):
        header = stream[pos : pos + 8]
        if rf.masked_crc32c(header) != int.from_bytes(stream[pos + 8 : pos + 12], "little"):
            continue
        length = int.from_bytes(header, "little")
        end = pos + 16 + length
        if end > n:
            continue
        data = stream[pos + 12 : end - 4]
        if rf.masked_crc32c(data) == int.from_bytes(stream[end - 4 : end], "little"):
            found.append((pos, end, data))
    out = []
    for i, (start, end, data) in enumerate(found):
        before = found[i - 1][1] if i else 0
        after = found[i + 1][0] if i + 1 < len(found) else n
        if before <= start and end <= after:
            out.append((start, data))
    return out


def _in_order(kept: list[bytes], stream: bytes) -> bool:
    pos = 0
    for r in kept:
        at = stream.find(frr.frame(r), pos)
        if at < 0:
            return False
        pos = at + len(r) + 16
    return True


def check(data: bytes) -> tuple[str, ...]:
    _, _, _, body = frr.split_input(data)
    src, out = _paths()
    try:
        with open(src, "wb") as f:
            f.write(body)
        return _check(body, src, out)
    finally:
        for p in (src, out):
            if os.path.exists(p):
                os.unlink(p)


def _check(body: bytes, src: str, out: str) -> tuple[str, ...]:
    result = rf.inspect.salvage(src, out, overwrite=True)
    kind = frr.detect(body)
    if result.compression != kind:
        raise Mismatch(f"output compression {result.compression}, input {kind}")
    kept = list(rf.read_records(out))  # raises on any bad CRC: nothing corrupt copied
    if len(kept) != result.records:
        raise Mismatch(f"{result.records} records reported, {len(kept)} written")
    stream, whole = (body, True) if kind is None else frr.inflate(body, kind)
    if not _in_order(kept, stream):
        raise Mismatch("a kept record is not in the input, or out of order")
    if whole:
        ref_records, _ = frr.ref_read(stream, True)
        if kept[: len(ref_records)] != ref_records:
            raise Mismatch(f"{len(ref_records)} records read before the damage, not all kept")
        isolated = [r for _, r in _isolated(stream)]
        if not _in_order(isolated, b"".join(frr.frame(r) for r in kept)):
            raise Mismatch("an intact, isolated record was lost")
        lost = sum(r.end - r.start for r in result.lost if r.end is not None)
        if sum(len(r) + 16 for r in kept) + lost != len(stream):
            raise Mismatch("kept records and lost regions do not cover the stream")
        if any(r.end is None for r in result.lost):
            raise Mismatch("a whole stream reported as broken off")
    framed = result.records + result.lost_records
    counted = rf.inspect.count(src, scan=True, verify=True).records
    verified = rf.inspect.verify(src).records
    if not counted == verified == framed:
        raise Mismatch(f"count {counted}, verify {verified}, salvage {framed} framed records")
    reasons = sorted({frr._NUMBERS.sub("#", r.reason)[:60] for r in result.lost})
    return (str(kind), str(whole), count_bucket(result.records), *reasons)


# ---------------------------------------------------------------------------------------
# Coverage proxy and mutator (as in fuzz_read_records)

_marks = Marks(1024, "fuzz_salvage")


def test_one_input(data: bytes) -> None:
    _marks.hit(*check(data))


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """``fuzz_read_records``' structure-aware mutator (frames kept, payloads, CRCs,
    lengths, cuts and the compressed layer damaged), with torn writes added: a frame cut
    short with the rest of the stream written after it."""
    rng = random.Random(seed)
    if len(data) < 2 or rng.random() < 0.2:
        return bytes(atheris.Mutate(data, max_size))
    if rng.random() < 0.15:
        _, _, _, body = frr.split_input(data)
        kind = frr.detect(body)
        stream = body if kind is None else frr.inflate(body, kind)[0]
        if len(stream) > 17:
            at = rng.randrange(len(stream) - 16)
            cut = rng.randrange(12, 17 + rng.randrange(len(stream) - at - 16 + 1))
            stream = stream[: at + cut] + stream[at:]
        out = bytes([frr.selector("auto")]) + frr._compress(stream, kind, rng)
        return out if len(out) <= max_size else bytes(atheris.Mutate(data, max_size))
    return bytes(frr.custom_mutator(data, max_size, seed))


def seeds(golden: list[Any]) -> list[bytes]:
    """The golden files and hand-made damage (torn writes, a 2^40 length, flips), each
    plain, GZIP and ZLIB."""
    import gzip

    records = [rf.encode_example({"id": i, "pad": [b"p" * (20 + 7 * i)]}) for i in range(8)]
    framed = [frr.frame(r) for r in records]
    clean = b"".join(framed)
    big = (1 << 40).to_bytes(8, "little")
    streams = [
        clean,
        clean[: len(clean) - 5],
        b"".join(framed[:3]) + framed[3][:20] + b"".join(framed[4:]),  # torn write
        framed[0] + big + rf.masked_crc32c(big).to_bytes(4, "little") + b"".join(framed[1:]),
        bytes(b ^ (i == 100) for i, b in enumerate(clean)),  # one flipped bit
        b"".join(framed[:2]) + bytes(50) + b"".join(framed[2:]),
        b"",
    ]
    for path in golden:
        streams.append(path.read_bytes())
    sel = bytes([frr.selector("auto")])
    out = []
    for s in streams:
        out += [sel + s, sel + gzip.compress(s, mtime=0), sel + zlib.compress(s)]
    gz = gzip.compress(clean * 4, mtime=0)
    out.append(sel + gz[: len(gz) // 2] + bytes([gz[len(gz) // 2] ^ 0xFF]) + gz[len(gz) // 2 + 1 :])
    return out


def main() -> None:
    fuzz(
        test_one_input,
        (check, _check, _isolated, _in_order),
        _marks,
        custom_mutator=custom_mutator,
    )


if __name__ == "__main__":
    main()

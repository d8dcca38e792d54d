"""Atheris fuzz target for ``rf.open_dataset`` on mutated whole files: schema inference,
``batches()``, ``len`` and ``ds[i]``.

Input layout: the first byte is a selector, the rest is a TFRecord file's bytes.

* ``selector & 1``: ``on_corrupt="skip"`` (else ``"raise"``);
* ``selector & 2``: the file is the one shard of a dataset directory whose
  ``dataset.json`` (schema, count, size, compression: that of the file it was written
  as) is kept, so the manifest may no longer describe the bytes; else a bare file whose
  schema is inferred;
* ``selector & 4``: a stale ``.idx`` (of the file it was written as) lies beside it.

Allowed outcomes: success, a :class:`~recordforge.RecordforgeError`, or the
``TypeError`` that says random access needs uncompressed shards. Anything else
(``PanicException`` included) is a crash. Oracles on top, when reading with
``on_corrupt="raise"`` completes:

* the records of ``batches()`` are as many as :func:`recordforge.read_records` gives;
* ``len(ds)`` (when it answers) is that number;
* ``ds[i]`` (when it answers) equals row ``i`` of the sequential read, value for value,
  for the first, a middle and the last record.

As for the other targets, the Rust core is not instrumented: a structure-aware mutator
(framing kept valid, payloads mutated as protobuf by ``fuzz_decode``'s mutator when it
applies) and one Python edge per outcome signature stand in for coverage.

Run through ``fuzz/run.py``, or directly::

    python fuzz/fuzz_dataset.py CORPUS_DIR -max_total_time=60 -timeout=10
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import fuzz_read_records as frr
import numpy as np
from _common import Fixture, Marks, Mismatch, atheris, fuzz, probe_indices

import recordforge as rf

SKIP, MANIFEST, STALE_INDEX = 1, 2, 4
SHARD = "train-00000-of-00001.tfrecord"

# ---------------------------------------------------------------------------------------
# Fixture: the dataset whose shard is replaced by each input


def sample_rows(n: int = 12) -> list[dict[str, Any]]:
    """Records with a feature of every shape the reader decodes differently."""
    return [
        {
            "id": i,
            "xy": np.array([i, -i], np.float32),
            "v": np.arange(i % 4, dtype=np.int64),
            "name": f"n{i}",
            "tags": np.array([f"t{j}".encode() for j in range(i % 3)], dtype=np.bytes_),
            # A (None, None) feature: its values and its row lengths.
            "poly": np.arange((i % 3 + 1) * (i % 3 + 2) // 2, dtype=np.float32),
            "poly/row_lengths": np.arange(1, i % 3 + 2, dtype=np.int64),
        }
        for i in range(n)
    ]


def _build(root: Path) -> None:
    schema = rf.Schema(
        {
            "id": rf.FeatureSpec(dtype="int64"),
            "xy": rf.FeatureSpec(dtype="float32", shape=(2,)),
            "v": rf.FeatureSpec(dtype="int64", shape=(None,)),
            "name": rf.FeatureSpec(dtype="string"),
            "tags": rf.FeatureSpec(dtype="bytes", shape=(None,)),
            "poly": rf.FeatureSpec(dtype="float32", shape=(None, None)),
        }
    )
    rf.write_dataset(sample_rows(), root / "pristine", schema=schema, index=True)
    (root / "bare").mkdir()


_fixture = Fixture("dataset", _build)
cleanup = _fixture.cleanup


def fixture() -> Path:
    """``<tmp>/rf-fuzz-dataset-<pid>`` (see ``_common.Fixture``): ``ds/`` (the dataset,
    one indexed shard), ``pristine/`` (its files as written) and ``bare/`` (where bare
    files are read)."""
    return _fixture.root()


def pristine_shard() -> bytes:
    return (fixture() / "pristine" / SHARD).read_bytes()


# ---------------------------------------------------------------------------------------
# The target

ALLOWED = (rf.RecordforgeError,)


def _allowed(e: BaseException) -> str:
    if isinstance(e, ALLOWED):
        return type(e).__name__
    if isinstance(e, TypeError) and "random access" in str(e):
        return "TypeError:random-access"
    raise e


def _norm(value: Any) -> list[Any]:
    """A value of ``ds[i]`` or of a row of the sequential read, as a flat list (floats
    by their bits, so NaN equals itself)."""
    if isinstance(value, rf.Ragged):
        value = value.values
    if isinstance(value, bytes):
        return [value]
    array = np.asarray(value)
    if array.dtype == np.float32:
        array = array.view(np.uint32)
    return list(array.ravel().tolist())


def _place(data: bytes, sel: int) -> Path:
    """Writes the input where the selector says; returns what to open."""
    root = fixture()
    if sel & MANIFEST:
        target_dir = root / "ds"
        shutil.rmtree(target_dir, ignore_errors=True)
        shutil.copytree(root / "pristine", target_dir)
        (target_dir / SHARD).write_bytes(data)
        if not sel & STALE_INDEX:
            (target_dir / f"{SHARD}.idx").unlink()
            manifest = json.loads((target_dir / "dataset.json").read_text())
            manifest["index"] = False
            (target_dir / "dataset.json").write_text(json.dumps(manifest))
        return target_dir
    bare = root / "bare"
    for f in bare.iterdir():
        f.unlink()
    (bare / SHARD).write_bytes(data)
    if sel & STALE_INDEX:
        shutil.copy(root / "pristine" / f"{SHARD}.idx", bare / f"{SHARD}.idx")
    return bare / SHARD


def check(data: bytes) -> tuple[str, ...]:
    """Runs one input; raises on a bug. Returns a small outcome signature."""
    sel, body = (data[0], data[1:]) if data else (0, b"")
    target = _place(body, sel)
    on_corrupt = "skip" if sel & SKIP else "raise"
    signature = [str(sel & 7)]
    try:
        ds = rf.open_dataset(target, on_corrupt=on_corrupt)
    except BaseException as e:
        signature.append(_allowed(e))
        return tuple(signature)
    signature.append(f"features={len(ds.schema)}")
    rows: list[dict[str, Any]] | None = []
    try:
        rows = list(ds)
        signature.append("read")
    except BaseException as e:
        signature.append(_allowed(e))
        rows = None
    if rows is not None and on_corrupt == "raise":
        try:
            reference = sum(1 for _ in rf.read_records(str(ds.files[0])))
        except rf.CorruptRecordError as e:
            raise Mismatch(f"batches() read a file that read_records refuses: {e}") from None
        if reference != len(rows):
            raise Mismatch(f"batches() gave {len(rows)} records, read_records {reference}")
    try:
        n = len(ds)
        signature.append("len")
    except BaseException as e:
        signature.append(_allowed(e))
        return tuple(signature)
    if rows is not None and on_corrupt == "raise" and n != len(rows):
        raise Mismatch(f"len(ds) is {n}, the sequential read gave {len(rows)} records")
    for i in probe_indices(n):
        try:
            record = ds[i]
        except BaseException as e:
            signature.append(_allowed(e))
            continue
        signature.append("get")
        if rows is None or on_corrupt != "raise":
            continue
        expected = rows[i]
        for name in expected:
            if name.endswith("/row_lengths") and name not in record:
                continue
            if _norm(record[name]) != _norm(expected[name]):
                raise Mismatch(
                    f"ds[{i}][{name!r}] = {record[name]!r}, the read has {expected[name]!r}"
                )
    return tuple(signature)


# ---------------------------------------------------------------------------------------
# Coverage proxy and mutator

_marks = Marks(512, "fuzz_dataset")


def test_one_input(data: bytes) -> None:
    _marks.hit(*check(data))


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """``fuzz_read_records``' structure-aware mutator on the file (its selector byte
    maps ``auto``/``gzip``/``zlib`` framing); the selector's own bits flipped at times."""
    rng = random.Random(seed)
    if len(data) < 2 or rng.random() < 0.2:
        return bytes(atheris.Mutate(data, max_size))
    sel, body = data[0], data[1:]
    if rng.random() < 0.1:
        return bytes([sel ^ (1 << rng.randrange(3))]) + body
    mutated = frr._mutate_structured(bytes([frr.selector("auto")]) + body, max_size - 1, rng)
    return bytes([sel]) + mutated[1:]


def seeds(golden: list[Path] | None = None) -> list[bytes]:
    """The fixture's shard (plain, GZIP, ZLIB) under every selector, other schemas'
    files, and the golden files (bare)."""
    import gzip

    raw = pristine_shard()
    out = [bytes([sel]) + raw for sel in range(8)]
    out += [bytes([sel]) + gzip.compress(raw, mtime=0) for sel in (0, 1, 2)]
    out += [bytes([sel]) + zlib.compress(raw) for sel in (0, 3)]
    with tempfile.TemporaryDirectory() as d:
        for k, data in enumerate(
            [
                {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "b": [b"", b"x", b"yy"]},
                [{"img": b"\xff\xd8\xff" + bytes(20), "label": 3}],
                [{"only": np.zeros(0, np.int64)}, {"only": np.arange(3)}],
            ]
        ):
            rf.write_dataset(data, Path(d) / str(k))
            shard = next((Path(d) / str(k)).glob("*.tfrecord"))
            out += [bytes([0]) + shard.read_bytes(), bytes([1]) + shard.read_bytes()]
    for path in golden or []:
        out.append(bytes([0]) + path.read_bytes())
    out += [b"\x00", b"\x02", b"\x01" + frr.frame(b"") + frr.frame(b"\x0a\x00")]
    return out


def main() -> None:
    fixture()
    fuzz(test_one_input, (check, _allowed, _norm), _marks, custom_mutator=custom_mutator)


if __name__ == "__main__":
    main()

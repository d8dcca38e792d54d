"""Atheris fuzz target for the manifest loader: a mutated ``dataset.json`` in a real
dataset directory, read by ``Manifest.load``, ``rf.open_dataset`` (``len``, ``ds[i]``,
``batches``) and ``rf.inspect.count``.

The input is the bytes of ``dataset.json``. The directory around it (made once per
process, see :func:`fixture`) holds the shards it was written with, with and without
``.idx`` files, two splits, and bait: a link to a shard inside the directory, a link out
of it, a FIFO, a subdirectory, and beside the directory another dataset whose records
have ids of 1000 and more.

Allowed outcomes: success, or a :class:`~recordforge.RecordforgeError` (a bad field is
a ``SchemaError`` naming it) or a ``FileNotFoundError`` (a listed shard that is not
there). Anything else, a traceback type such as ``TypeError``, ``KeyError`` or
``OverflowError``, is a crash. Oracles on top:

* nothing outside the directory is read: no record with an id of 1000 or more comes out;
* counts are never trusted blindly: ``ds[i]`` (when it answers) is the i-th record of the
  sequential read ``batches()`` (when that completes), for the first, last and a middle
  index, and ``len(ds)`` equals the records read when both complete without error.

The Rust core is not instrumented; a JSON-aware mutator (``custom_mutator``) changes one
node of the parsed manifest (types, huge and negative numbers, deleted keys, duplicated
shards, hostile file names) and writes it back, and ``_marks`` (``_common.Marks``) gives
every distinct outcome its own Python edge.

Run through ``fuzz/run.py``, or directly::

    python fuzz/fuzz_manifest.py CORPUS_DIR -max_total_time=60 -timeout=10
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from _common import Fixture, Marks, Mismatch, atheris, fuzz, probe_indices

import recordforge as rf

ALLOWED = (rf.RecordforgeError, FileNotFoundError)
OUTSIDE_IDS = 1000

# ---------------------------------------------------------------------------------------
# The directory around the fuzzed dataset.json


def _rows(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "v": np.arange(i % 4, dtype=np.float32),
            "name": f"n{i}",
            "xy": np.array([i, -i], np.float32),
        }
        for i in range(start, start + n)
    ]


def _build(root: Path) -> None:
    ds, outside, tmp = root / "ds", root / "outside", root / "tmp"
    rf.write_dataset(
        splits={"train": _rows(0, 30), "test": _rows(30, 5)},
        out=tmp,
        max_records=10,
        index=True,
        name_template="{split}-{index:05d}-of-{count:05d}.tfrecord",
    )
    tmp.rename(ds)
    (ds / "train-00002-of-00003.tfrecord.idx").unlink()
    rf.write_dataset(_rows(OUTSIDE_IDS, 10), outside, index=True)
    (ds / "pristine.json").write_bytes((ds / "dataset.json").read_bytes())
    (ds / "link-inside.tfrecord").symlink_to("train-00000-of-00003.tfrecord")
    (ds / "link-outside.tfrecord").symlink_to(next(outside.glob("*.tfrecord")))
    (ds / "zero.tfrecord").symlink_to("/dev/zero")
    os.mkfifo(ds / "pipe.tfrecord")
    (ds / "sub").mkdir()


_fixture = Fixture("manifest", _build)
cleanup = _fixture.cleanup


def fixture() -> Path:
    """``<tmp>/rf-fuzz-manifest-<pid>/ds`` (see ``_common.Fixture``): the dataset
    directory. Train: 3 shards of 10 (ids 0-29), the first two with ``.idx``; test: 1
    shard (ids 30-34); bait files; ``../outside``: ids 1000-1009. ``ds/pristine.json`` is
    the manifest as written."""
    return _fixture.root() / "ds"


def pristine() -> bytes:
    return (fixture() / "pristine.json").read_bytes()


# ---------------------------------------------------------------------------------------
# The target


def _ids(column: Any) -> list[int]:
    return [int(x) for x in np.asarray(column).reshape(-1)]


def _outcome(e: BaseException | None) -> str:
    if e is None:
        return "ok"
    if not isinstance(e, ALLOWED):
        raise e
    return type(e).__name__


def check(data: bytes) -> tuple[str, ...]:
    """Runs one input; raises on a bug. Returns a small outcome signature."""
    ds_dir = fixture()
    (ds_dir / "dataset.json").write_bytes(data)
    signature = []
    try:
        rf.Manifest.load(ds_dir)
        loaded = None
    except BaseException as e:
        loaded = e
    signature.append(_outcome(loaded))
    try:
        ds = rf.open_dataset(ds_dir)
    except BaseException as e:
        signature.append(_outcome(e))
        return tuple(signature)
    if loaded is not None:
        raise Mismatch(f"Manifest.load failed ({loaded!r}) but open_dataset opened it")
    sequential: list[int] | None = []
    try:
        for batch in ds.batches(7):
            if "id" in batch and not isinstance(batch["id"], rf.Ragged):
                sequential += _ids(batch["id"])
            else:
                sequential = None
                break
        signature.append("read")
    except BaseException as e:
        signature.append(_outcome(e))
        sequential = None
    if sequential is not None and any(i >= OUTSIDE_IDS for i in sequential):
        raise Mismatch(f"records of the dataset outside were read: {sequential}")
    try:
        n = len(ds)
        signature.append("len")
    except BaseException as e:
        signature.append(_outcome(e))
        return tuple(signature)
    if sequential is not None and n != len(sequential) and ds.on_corrupt == "raise":
        # len() trusted cheap checks only; random access must then refuse the count.
        with contextlib.suppress(*ALLOWED):
            ds[n - 1]
            raise Mismatch(f"len {n}, {len(sequential)} records read, and ds[{n - 1}] answers")
        signature.append("len-refused")
    for i in probe_indices(n):
        try:
            record = ds[i]
        except BaseException as e:
            signature.append(_outcome(e))
            continue
        if "id" in record and np.ndim(record["id"]) == 0:
            got = int(record["id"])
            if got >= OUTSIDE_IDS:
                raise Mismatch(f"ds[{i}] read the dataset outside: id {got}")
            if sequential is not None and i < len(sequential) and got != sequential[i]:
                raise Mismatch(
                    f"ds[{i}] is record id {got}, the sequential read has {sequential[i]}"
                )
        signature.append("get")
    try:
        result = rf.inspect.count(ds_dir)
        signature.append("count-ok" if result.ok else "count-problems")
    except BaseException as e:
        signature.append(_outcome(e))
    return tuple(signature)


# ---------------------------------------------------------------------------------------
# Coverage proxy: one Python edge per distinct outcome signature

_marks = Marks(512, "fuzz_manifest")


def test_one_input(data: bytes) -> None:
    _marks.hit(*check(data))


# ---------------------------------------------------------------------------------------
# JSON-aware mutator

_NAMES = (
    "../outside/train-00000-of-00001.tfrecord",
    "/dev/zero",
    "link-inside.tfrecord",
    "link-outside.tfrecord",
    "zero.tfrecord",
    "pipe.tfrecord",
    "sub",
    "dataset.json",
    "missing.tfrecord",
    "train-00001-of-00003.tfrecord",
    "test-00000-of-00001.tfrecord",
    "",
    ".",
    "..",
    "a\x00b",
    "x" * 300,
)
_NUMBERS = (0, 1, -1, 5, 9, 10, 11, 20, 35, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30, 1.5)


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node of a JSON tree (iteratively: trees may be deep)."""
    out, stack = [], [(tree, path)]
    while stack and len(out) < 10_000:
        node, at = stack.pop()
        out.append(at)
        if isinstance(node, dict):
            stack.extend((v, (*at, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _new_value(old: Any, rng: random.Random) -> Any:
    choice = rng.randrange(10)
    if choice == 0:
        return rng.choice(_NUMBERS)
    if choice == 1:
        return rng.choice(_NAMES)
    if choice == 2:
        return rng.choice((None, True, False, [], {}, "", [None], {"a": 1}))
    if choice == 3 and isinstance(old, int) and not isinstance(old, bool):
        return old + rng.choice((-1, 1, -5, 5, old))
    if choice == 4 and isinstance(old, str):
        return rng.choice((old + "x", old.upper(), old[:-1], "int32", "gzip", "zlib", "none"))
    if choice == 5:
        return [old] if rng.random() < 0.5 else {"x": old}
    if choice == 6 and isinstance(old, list) and old:
        return old[::-1]
    if choice == 7:
        return rng.choice(("int64", "float32", "bytes", "string", "image", "bbox", "class_label"))
    return copy.deepcopy(old)


def mutate_json(data: bytes, rng: random.Random) -> bytes | None:
    """One structural change of the manifest in ``data`` (``None`` if not JSON)."""
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError):
        return None
    paths = _nodes(tree)
    path = rng.choice(paths)
    op = rng.randrange(5)
    if not path:
        tree = _new_value(tree, rng) if op == 0 else tree
    else:
        parent, key = _get(tree, path[:-1]), path[-1]
        if op == 1 and isinstance(parent, dict):
            del parent[key]
        elif op == 2 and isinstance(parent, list):  # a shard (or any item) listed twice
            parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(parent[key]))
        elif op == 3 and isinstance(parent, list) and len(parent) > 1:
            rng.shuffle(parent)
        else:
            parent[key] = _new_value(parent[key], rng)
    text = json.dumps(tree, indent=rng.choice((None, 2)))
    return text.encode("utf-8", "surrogatepass")


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.8:
        out = mutate_json(data, rng)
        if out is None or rng.random() < 0.1:
            out = mutate_json(pristine(), rng)
        if out is not None and len(out) <= max_size:
            return out
    return bytes(atheris.Mutate(data, max_size))


def seeds() -> list[bytes]:
    """The pristine manifest and a few hand-made hostile ones."""
    m = json.loads(pristine())
    out = [json.dumps(m).encode()]
    for change in (
        lambda t: t["splits"]["train"]["shards"][0].update(records=5),
        lambda t: t["splits"]["train"]["shards"][0].update(file="link-outside.tfrecord"),
        lambda t: t["splits"]["train"]["shards"].append(t["splits"]["train"]["shards"][0]),
        lambda t: t.update(compression="gzip"),
        lambda t: t["schema"]["features"]["xy"].update(shape=[3]),
        lambda t: t.pop("schema"),
    ):
        tree = copy.deepcopy(m)
        change(tree)
        out.append(json.dumps(tree).encode())
    return out


def main() -> None:
    fixture()
    fuzz(test_one_input, (check, _outcome), _marks, custom_mutator=custom_mutator)


if __name__ == "__main__":
    main()

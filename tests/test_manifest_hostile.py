"""Issue 13, a hostile or damaged ``dataset.json``: malformed fields are a ``SchemaError``
naming the field; shard paths stay inside the dataset directory; counts are checked
before ``len``, ``ds[i]``, ``count`` and ``verify`` trust them. The command line answers
every case with a one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import FUZZ_DIR, load_fuzz_target

import recordforge as rf
from recordforge import manifest as rf_manifest
from recordforge.cli.__main__ import main as cli_main

N = 100


def make(out: Path, *, index: bool = False, **kwargs: Any) -> Path:
    """100 records (``id`` 0..99) in 4 shards of 25."""
    rf.write_dataset({"id": np.arange(N)}, out, max_records=25, index=index, **kwargs)
    return out


def edit(d: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    path = d / "dataset.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return d


def shard0(m: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = m["splits"]["train"]["shards"][0]
    return entry


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Runs the command line in this process: (exit status, stdout + stderr)."""
    code = cli_main(list(argv))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


# --------------------------------------------------------------------------------------
# Item 11: a malformed dataset.json is a SchemaError naming the field


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Sets a field given as ``a.b[0].c`` (``value`` is ``_DELETE`` to remove it)."""

    def change(m: dict[str, Any]) -> None:
        keys: list[str | int] = []
        for part in path.split("."):
            name, _, rest = part.partition("[")
            keys.append(name)
            if rest:
                keys.append(int(rest.rstrip("]")))
        target: Any = m
        for key in keys[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return change


_DELETE = object()
S0 = "splits.train.shards[0]"
FEATURE = "schema.features.id"

MALFORMED: list[tuple[str, Any, str]] = [
    # (field, new value, what the message says after the field)
    ("format_version", _DELETE, "format_version: None is not supported"),
    ("format_version", "1", "format_version: '1' is not supported"),
    ("format_version", True, "format_version: True is not supported"),
    ("splits", _DELETE, "has no 'splits'"),
    ("splits", [], "splits: expected a JSON object, got list"),
    ("splits.train", "x", "splits.train: expected a JSON object, got 'x'"),
    ("splits.train.shards", _DELETE, "splits.train: has no 'shards'"),
    ("splits.train.shards", {"a": 1}, "splits.train.shards: expected a list, got dict"),
    ("splits.train.records", "4", "splits.train.records: expected a non-negative integer"),
    (S0, "x", f"{S0}: expected a JSON object, got 'x'"),
    (f"{S0}.records", "x", f"{S0}.records: expected a non-negative integer, got 'x'"),
    (f"{S0}.records", -5, f"{S0}.records: expected a non-negative integer, got -5"),
    (f"{S0}.records", 2.5, f"{S0}.records: expected a non-negative integer, got 2.5"),
    (f"{S0}.records", True, f"{S0}.records: expected a non-negative integer, got True"),
    (f"{S0}.records", 10**30, f"{S0}.records: expected a non-negative integer, got 1000"),
    (f"{S0}.records", None, f"{S0}.records: expected a non-negative integer, got None"),
    (f"{S0}.records", _DELETE, f"{S0}: has no 'records'"),
    (f"{S0}.bytes", -1, f"{S0}.bytes: expected a non-negative integer, got -1"),
    (f"{S0}.file", _DELETE, f"{S0}: has no 'file'"),
    (f"{S0}.file", 3, f"{S0}.file: expected a string, got 3"),
    (f"{S0}.file", ["a"], f"{S0}.file: expected a string, got list"),
    (f"{S0}.checksum", 5, f"{S0}.checksum: expected a string, got 5"),
    ("compression", "lz4", 'compression: expected "gzip", "zlib" or null, got \'lz4\''),
    ("compression", 1, "compression: expected"),
    ("index", "yes", "index: expected true or false, got 'yes'"),
    ("tool", "x", "tool: expected a JSON object, got 'x'"),
    ("tool.version", 3, "tool.version: expected a string, got 3"),
    ("source", [1], "source: expected a JSON object, got list"),
    ("report", 5, "report: expected a JSON object, got 5"),
    ("schema", [1], "schema: expected a JSON object, got list"),
    ("schema.format_version", 3, "schema.format_version: 3 is not supported"),
    ("schema.features", _DELETE, "schema: has no 'features'"),
    ("schema.features", [], "schema.features: expected a JSON object, got list"),
    (FEATURE, "int64", f"{FEATURE}: expected a JSON object, got 'int64'"),
    (f"{FEATURE}.dtype", _DELETE, f"{FEATURE}: has no 'dtype'"),
    (f"{FEATURE}.dtype", 5, f"{FEATURE}.dtype: expected a string, got 5"),
    (f"{FEATURE}.dtype", "int32", f"{FEATURE}: unknown dtype 'int32'"),
    (f"{FEATURE}.shape", 3, f"{FEATURE}.shape: expected a list, got 3"),
    (f"{FEATURE}.shape", [1.5], f"{FEATURE}.shape[0]: expected an integer in 0.."),
    (f"{FEATURE}.shape", [-1], f"{FEATURE}.shape[0]: expected an integer in 0.."),
    (f"{FEATURE}.shape", [True], f"{FEATURE}.shape[0]: expected an integer in 0.."),
    (f"{FEATURE}.shape", [2**40], f"{FEATURE}.shape[0]: expected an integer in 0.."),
    (f"{FEATURE}.shape", [2**20, 2**20], f"{FEATURE}.shape: expected at most"),
    (f"{FEATURE}.shape", [None, 2, None], f"{FEATURE}: shape (None, 2, None)"),
    (f"{FEATURE}.meaning", "x", f"{FEATURE}.meaning: expected a JSON object, got 'x'"),
    (f"{FEATURE}.meaning", {"type": "nope"}, f"{FEATURE}.meaning.type: unknown meaning 'nope'"),
    (
        f"{FEATURE}.meaning",
        {"type": "bbox", "layout": "xywh", "extra": 1},
        f"{FEATURE}.meaning.extra: not a field of a 'bbox' meaning",
    ),
    (f"{FEATURE}.meaning", {"type": "bbox"}, f"{FEATURE}.meaning: incomplete 'bbox' meaning"),
    (
        f"{FEATURE}.meaning",
        {"type": "class_label", "names": "ab"},
        f"{FEATURE}.meaning.names: expected a list, got 'ab'",
    ),
    (
        f"{FEATURE}.meaning",
        {"type": "class_label", "names": ["a"], "ids": [1, "2"]},
        f"{FEATURE}.meaning.ids[1]: expected an integer",
    ),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("pristine") / "ds")


def _copy(pristine: Path, tmp_path: Path) -> Path:
    d = tmp_path / "ds"
    shutil.copytree(pristine, d)
    return d


@pytest.mark.parametrize(("field", "value", "message"), MALFORMED)
def test_malformed_manifest_is_a_schema_error_naming_the_field(
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: Any,
    message: str,
) -> None:
    d = edit(_copy(pristine, tmp_path), _set(field, value))
    where = f"{d / 'dataset.json'}: {message}"
    with pytest.raises(rf.SchemaError) as e:
        rf.open_dataset(d)
    assert str(e.value).startswith(where), str(e.value)
    with pytest.raises(rf.SchemaError):
        rf.Manifest.load(d)
    for command in ("info", "count", "verify", "index", "head"):
        code, text = cli(capsys, command, str(d))
        assert code == 1 and message in text, (command, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[]", "expected a JSON object, got list"),
        (b'"dataset"', "expected a JSON object, got 'dataset'"),
        (b"null", "expected a JSON object, got None"),
        (b"7", "expected a JSON object, got 7"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"format_version": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_manifest_that_is_not_a_json_object(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes, message: str
) -> None:
    d = _copy(pristine, tmp_path)
    (d / "dataset.json").write_bytes(text)
    with pytest.raises(rf.SchemaError, match=r"dataset\.json: ") as e:
        rf.open_dataset(d)
    assert message in str(e.value)
    code, out = cli(capsys, "verify", str(d))
    assert code == 1 and message in out


def test_oversized_manifest_is_not_read(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _copy(pristine, tmp_path)
    monkeypatch.setattr(rf_manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(rf.SchemaError, match=r"dataset.json: larger than 100 bytes"):
        rf.open_dataset(d)


def test_schema_json_checked_on_its_own() -> None:
    with pytest.raises(rf.SchemaError, match=r"^schema: features.x.shape: expected a list"):
        rf.Schema.from_json(
            {"format_version": 1, "features": {"x": {"dtype": "int64", "shape": 5}}}
        )
    with pytest.raises(rf.SchemaError, match=r"^schema: expected a JSON object, got list"):
        rf.Schema.from_json([])
    # What write_dataset writes still loads.
    schema = rf.Schema(
        {
            "label": rf.FeatureSpec(dtype="int64", meaning=rf.ClassLabel(names=("a",), ids=(3,))),
            "box": rf.FeatureSpec(dtype="float32", shape=(None, 4), meaning=rf.BBox(layout="xywh")),
            "img": rf.FeatureSpec(dtype="bytes", meaning=rf.Image(format=None)),
            "t": rf.FeatureSpec(dtype="string", shape=(None,), meaning=rf.Text()),
            "r": rf.FeatureSpec(dtype="int64", shape=(None, None)),
        }
    )
    assert rf.Schema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


def test_legacy_sha256_key_still_loads(pristine: Path, tmp_path: Path) -> None:
    def legacy(m: dict[str, Any]) -> None:
        entry = shard0(m)
        entry.pop("checksum")
        entry["sha256"] = "0" * 64

    d = edit(_copy(pristine, tmp_path), legacy)
    assert rf.Manifest.load(d).splits["train"][0].checksum == "sha256:" + "0" * 64
    assert os.path.isdir(d)


# --------------------------------------------------------------------------------------
# Item 9: shard paths stay inside the dataset directory


def _point_shard0(d: Path, name: str) -> Path:
    return edit(d, lambda m: shard0(m).update(file=name))


@pytest.mark.parametrize(
    "name",
    ["../elsewhere/train-00000-of-00004.tfrecord", "/dev/zero", "/etc/passwd", "a/b", ".x", ""],
)
def test_shard_path_that_is_not_a_plain_name(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    elsewhere = make(tmp_path / "elsewhere")
    d = _point_shard0(_copy(pristine, tmp_path), name)
    message = f"{S0}.file: expected a plain file name in the dataset's directory, got {name!r}"
    with pytest.raises(rf.SchemaError) as e:
        rf.open_dataset(d)
    assert message in str(e.value)
    for command in ("count", "verify", "index", "info"):
        code, text = cli(capsys, command, str(d))
        assert code == 1 and message in text, (command, text)
    assert not list(elsewhere.glob("*.idx"))  # index wrote nothing in the other dataset


@pytest.mark.parametrize("target", ["other_dataset", "dev_zero", "directory", "fifo"])
def test_shard_that_resolves_outside_or_is_not_a_regular_file(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    elsewhere = make(tmp_path / "elsewhere")
    d = _copy(pristine, tmp_path)
    link = d / "train-00000-of-00004.tfrecord"
    link.unlink()
    if target == "other_dataset":
        link.symlink_to(elsewhere / "train-00000-of-00004.tfrecord")
        message = "resolves to"
    elif target == "dev_zero":
        link.symlink_to("/dev/zero")
        message = "resolves to /dev/zero, outside the dataset directory"
    elif target == "directory":
        link.mkdir()
        message = "is not a regular file"
    else:
        os.mkfifo(link)
        message = "is not a regular file"
    with pytest.raises(rf.SchemaError) as e:
        rf.open_dataset(d)
    assert str(e.value).startswith(f"{S0}.file: {link}") or f"{S0}.file: {link}" in str(e.value)
    assert message in str(e.value)
    for command in ("count", "verify", "index", "head"):
        code, text = cli(capsys, command, str(d))
        assert code == 1 and message in text, (command, text)
    assert not list(elsewhere.glob("*.idx"))


def test_shard_link_inside_the_directory_is_fine(pristine: Path, tmp_path: Path) -> None:
    d = _copy(pristine, tmp_path)
    (d / "data").mkdir()
    name = "train-00000-of-00004.tfrecord"
    (d / name).rename(d / "data" / name)
    (d / name).symlink_to(Path("data") / name)
    ds = rf.open_dataset(d)
    assert len(ds) == N and int(ds[3]["id"]) == 3


def test_manifest_and_index_links_outside_are_refused(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = make(tmp_path / "elsewhere", index=True)
    d = _copy(pristine, tmp_path)
    (d / "dataset.json").unlink()
    (d / "dataset.json").symlink_to("/dev/zero")
    with pytest.raises(rf.SchemaError, match="outside the dataset directory"):
        rf.open_dataset(d)
    # An .idx that is a link out of the directory is not read (nor its target written).
    d = make(tmp_path / "indexed", index=True)
    idx = d / "train-00001-of-00004.tfrecord.idx"
    idx.unlink()
    idx.symlink_to(elsewhere / "train-00001-of-00004.tfrecord.idx")
    with pytest.raises(rf.SchemaError, match="outside the dataset directory"):
        rf.open_dataset(d)[30]
    code, text = cli(capsys, "verify", str(d))
    assert code == 1 and "outside the dataset directory" in text
    before = (elsewhere / "train-00001-of-00004.tfrecord.idx").read_bytes()
    idx.unlink()
    idx.symlink_to(elsewhere / "train-00001-of-00004.tfrecord.idx")
    planted = d / ".train-00002-of-00004.tfrecord.idx.tmp"
    planted.symlink_to(elsewhere / "planted")
    code, _ = cli(capsys, "index", str(d))
    assert (elsewhere / "train-00001-of-00004.tfrecord.idx").read_bytes() == before
    assert not (elsewhere / "planted").exists()


def test_remote_manifest_shard_names_are_plain(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    local = make(tmp_path / "ds")
    for f in local.iterdir():
        fs.pipe_file(f"/hostile/{f.name}", f.read_bytes())
    fs.pipe_file("/secret/x.tfrecord", (local / "train-00000-of-00004.tfrecord").read_bytes())
    data = json.loads((local / "dataset.json").read_text())
    shard0(data)["file"] = "../secret/x.tfrecord"
    fs.pipe_file("/hostile/dataset.json", json.dumps(data).encode())
    with pytest.raises(rf.SchemaError, match=r"shards\[0\]\.file: expected a plain file name"):
        rf.open_dataset("memory://hostile")
    with pytest.raises(rf.SchemaError, match=r"shards\[0\]\.file: expected a plain file name"):
        rf.inspect.count("memory://hostile")


# --------------------------------------------------------------------------------------
# Item 10: counts are checked before they are trusted


def _tamper_count(m: dict[str, Any]) -> None:
    """Shard 0 says 20 records (it has 25), and the split total agrees with the lie."""
    shard0(m)["records"] = 20
    m["splits"]["train"]["records"] = 95


def test_tampered_count_never_gives_one_record_for_another(pristine: Path, tmp_path: Path) -> None:
    d = edit(_copy(pristine, tmp_path), _tamper_count)
    ds = rf.open_dataset(d)
    where = f"{d / 'dataset.json'}: {S0}.records: 20, but {d / 'train-00000-of-00004.tfrecord'}"
    for access in (lambda: ds[20], lambda: ds[0], lambda: ds.take([20]), lambda: ds[-1]):
        with pytest.raises(rf.SchemaError) as e:
            access()
        assert str(e.value) == f"{where} holds 25 records"
    # The sequential read gives every record, then says that the count was wrong.
    batches = ds.batches(7)
    assert sum(len(next(batches)["id"]) for _ in range(N // 7 + 1)) == N
    for _ in range(2):  # and again on the next call: the end is not taken for success
        with pytest.raises(rf.SchemaError) as e:
            next(batches)
        assert str(e.value) == f"{where} holds 25 records"


def test_tampered_count_with_an_index_is_caught_by_len(pristine: Path, tmp_path: Path) -> None:
    d = edit(make(tmp_path / "ds", index=True), _tamper_count)
    with pytest.raises(rf.SchemaError, match=r"shards\[0\]\.records: 20, but .* holds 25"):
        len(rf.open_dataset(d))


def test_changed_shard_size_makes_len_count_the_records(pristine: Path, tmp_path: Path) -> None:
    d = _copy(pristine, tmp_path)
    with open(d / "train-00002-of-00004.tfrecord", "r+b") as f:
        f.truncate(31 * 20)  # 5 whole records cut off
    with pytest.raises(rf.SchemaError, match=r"shards\[2\]\.records: 25, but .* holds 20"):
        len(rf.open_dataset(d))


def test_index_that_does_not_cover_its_shard_is_not_believed(tmp_path: Path) -> None:
    d = make(tmp_path / "ds", index=True)
    idx = d / "train-00001-of-00004.tfrecord.idx"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:-3]) + "\n")  # 22 lines for 25 records
    ds = rf.open_dataset(d)
    assert len(ds) == N
    assert [int(ds[i]["id"]) for i in (24, 25, 49, 50, 99)] == [24, 25, 49, 50, 99]
    idx.write_text("garbage\n" * 10)
    ds = rf.open_dataset(d)
    assert int(ds[47]["id"]) == 47


def _merge_first_two_lines(idx: Path) -> None:
    """An index that still covers its shard exactly, but calls records 0 and 1 one."""
    lines = [line.split() for line in idx.read_text().splitlines()]
    merged = [lines[0][0], str(int(lines[0][1]) + int(lines[1][1]))]
    idx.write_text("\n".join(" ".join(line) for line in [merged, *lines[2:]]) + "\n")


def test_stale_index_of_a_bare_file_is_named_by_a_whole_read(tmp_path: Path) -> None:
    d = make(tmp_path / "ds", index=True)
    shard = d / "train-00001-of-00004.tfrecord"
    _merge_first_two_lines(Path(f"{shard}.idx"))
    stale = f"{shard}.idx lists 24 records, but {shard} holds 25"
    ds = rf.open_dataset(shard)
    rows = iter(ds)
    assert [int(next(rows)["id"]) for _ in range(25)] == list(range(25, 50))
    with pytest.raises(rf.SchemaError, match=re.escape(stale)):
        next(rows)
    with pytest.raises(rf.SchemaError, match=re.escape(stale)):
        len(ds)  # the count that the read contradicted is not given either
    ds = rf.open_dataset(shard)
    assert len(ds) == 24  # believed until a whole read (or a random access) says otherwise
    with pytest.raises(rf.SchemaError, match=re.escape(stale)):
        sum(len(b["id"]) for b in ds.batches(5, drop_remainder=True))
    assert [int(r["id"]) for r in rf.open_dataset(shard, on_corrupt="skip")] == list(range(25, 50))


def test_count_and_index_that_agree_on_a_lie_are_named(pristine: Path, tmp_path: Path) -> None:
    d = edit(make(tmp_path / "ds", index=True), _tamper_count)
    _merge_first_two_lines(d / "train-00000-of-00004.tfrecord.idx")
    edit(d, lambda m: (shard0(m).update(records=24), m["splits"]["train"].update(records=99)))
    ds = rf.open_dataset(d)
    assert len(ds) == 99  # the shard's size and its .idx agree with dataset.json
    with pytest.raises(rf.SchemaError, match=r"shards\[0\]\.records: 24, but .* holds 25 records"):
        list(ds)


def test_negative_and_huge_counts(pristine: Path, tmp_path: Path, capsys: Any) -> None:
    for value in (-5, 2**64, 10**30):
        d = edit(
            _copy(pristine, tmp_path / str(value)), lambda m, v=value: shard0(m).update(records=v)
        )
        with pytest.raises(rf.SchemaError, match=r"records: expected a non-negative integer"):
            rf.open_dataset(d)
        code, text = cli(capsys, "count", str(d))
        assert code == 1 and "expected a non-negative integer" in text
    # More records than the bytes can frame: refused without reading a record.
    d = edit(_copy(pristine, tmp_path / "many"), lambda m: shard0(m).update(records=10**6))
    with pytest.raises(rf.SchemaError):
        rf.open_dataset(d)


TAMPERED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("count", _tamper_count, "25 records, dataset.json says 20"),
    (
        "listed twice",
        lambda m: m["splits"]["train"]["shards"].append(dict(shard0(m))),
        "is listed twice",
    ),
    ("split total", lambda m: m["splits"]["train"].update(records=7), "splits.train.records: 7"),
    (
        "compression",
        lambda m: m.update(compression="gzip"),
        "not compressed (from its first bytes), dataset.json says compression 'gzip'",
    ),
    ("too many", lambda m: shard0(m).update(records=500), "cannot fit in 775 bytes"),
]


@pytest.mark.parametrize(("what", "change", "message"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_verify_and_count_flag_tampered_manifests(
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    change: Callable[[dict[str, Any]], Any],
    message: str,
) -> None:
    d = edit(_copy(pristine, tmp_path), change)
    result = rf.inspect.verify(d)
    assert not result.ok and any(message in str(p) for p in result.problems), result.problems
    code, text = cli(capsys, "verify", str(d))
    assert code == 1 and message in text
    code, text = cli(capsys, "count", str(d))
    assert code == 1 and message in text, text
    with pytest.raises((rf.SchemaError, rf.CorruptRecordError)):
        ds = rf.open_dataset(d)
        len(ds), ds[len(ds) - 1]


def test_compression_claim_that_the_bytes_contradict(tmp_path: Path) -> None:
    d = make(tmp_path / "gz", compression="gzip")
    edit(d, lambda m: m.update(compression=None))
    with pytest.raises(rf.SchemaError, match=r"compression: null, but .* is gzip-compressed"):
        rf.open_dataset(d)
    result = rf.inspect.verify(d)
    assert not result.ok
    message = "gzip compressed (from its first bytes), dataset.json says compression null"
    assert any(message in str(p) for p in result.problems)


# --------------------------------------------------------------------------------------
# The manifest fuzz target (fuzz/fuzz_manifest.py), replayed without atheris


def test_manifest_fuzz_target_on_its_seeds_and_mutations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import random

    monkeypatch.setenv("RF_FUZZ_TMP", str(tmp_path))
    fm = load_fuzz_target("fuzz_manifest")
    try:
        seeds = fm.seeds()
        for data in [*seeds, *(p.read_bytes() for p in FUZZ_DIR.glob("regressions/manifest-*"))]:
            fm.check(data)
        rng = random.Random(7)
        data = seeds[0]
        for _ in range(400):  # the target's JSON mutator, fixed seed
            data = fm.mutate_json(data if rng.random() < 0.7 else seeds[0], rng) or seeds[0]
            fm.check(data)
    finally:
        fm.cleanup()

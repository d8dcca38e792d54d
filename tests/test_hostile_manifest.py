"""Issue 13, a hostile or damaged ``dataset.json``: malformed fields are a ``SchemaError``
naming the field; shard paths stay inside the dataset directory; counts are checked
before ``len``, ``ds[i]``, ``count`` and ``verify`` trust them. The command line answers
every case with a one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
    ("schema.format_version", 2, "schema.format_version: 2 is not supported"),
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

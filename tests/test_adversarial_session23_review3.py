"""Third adversarial review of session 23's changes, after
tests/test_adversarial_session23.py, tests/test_adversarial_session23_sigbus.py,
tests/test_adversarial_session23_sigbus2.py and tests/test_cut_while_mapped.py: the search
of a JSON Lines file for keys a given schema names that its first 4 MiB lack
(``late_fields``), the walk of image folders that cannot be listed, and a map of a shard
cut short then grown again while it is read.

The two bugs it found (a gzip file's compressed bytes searched; a non-ASCII key as
``json.dumps`` escapes it by default not found) were fixed in the same session. The map
cases run in their own interpreter: an unhandled SIGBUS kills it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env

import recordforge as rf
from recordforge.sources.images import ImageFolderSource
from recordforge.sources.table import TableSource

# -- JSON Lines keys first met past the first block -----------------------------------------

# Lines of 9 bytes ({"a":N} and a newline) past the 4 MiB the schema is read from.
_N = (4 << 20) // 9 + 5000
_SCHEMA = rf.Schema(
    {
        "a": rf.FeatureSpec(dtype="int64", shape=()),
        "b": rf.FeatureSpec(dtype="float32", shape=(None,)),
    }
)


def _head(newline: bytes = b"\n") -> bytes:
    return b"".join(b'{"a":%d}' % i + newline for i in range(_N))


def _last_row(path: Path, out: Path, schema: rf.Schema = _SCHEMA) -> dict[str, Any]:
    src = TableSource(str(path), schema=schema)
    manifest = rf.write_dataset(
        src.items(), out, to_records=src.to_records, schema=src.schema(), source=src.describe()
    )
    last = manifest.splits["train"][-1].file
    return rf.decode_example(list(rf.read_records(out / last))[-1])


@pytest.mark.parametrize(
    ("name", "data"),
    [
        # Windows line ends: the \r stays on the line json.loads and pyarrow read.
        ("crlf.jsonl", _head(b"\r\n") + b'{"a":-1,"b":[1.5]}\r\n'),
        # No newline after the last line: the rest kept from the last block is searched.
        ("last.jsonl", _head() + b'{"a":-1,"b":[1.5]}'),
        # The key's text inside a string (escaped quotes) of an earlier line: not its key.
        ("instr.jsonl", _head() + b'{"a":-2,"n":"x \\"b\\": [2]"}\n{"a":-1,"b":[1.5]}\n'),
    ],
)
def test_a_late_key_is_found_whatever_the_line_ends_and_strings_around_it(
    tmp_path: Path, name: str, data: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    row = _last_row(path, tmp_path / "o")
    assert int(row["a"][0]) == -1 and [float(v) for v in row["b"]] == [1.5]


def test_a_late_key_of_a_gzip_jsonl_is_found(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl.gz"
    path.write_bytes(gzip.compress(_head() + b'{"a":-1,"b":[1.5]}\n', 1))
    row = _last_row(path, tmp_path / "o")
    assert [float(v) for v in row["b"]] == [1.5]


def test_a_late_non_ascii_key_written_by_json_dumps_is_found(tmp_path: Path) -> None:
    path = tmp_path / "esc.jsonl"
    path.write_bytes(_head() + (json.dumps({"a": -1, "größe": [1.5]}) + "\n").encode())
    schema = rf.Schema(
        {
            "a": rf.FeatureSpec(dtype="int64", shape=()),
            "größe": rf.FeatureSpec(dtype="float32", shape=(None,)),
        }
    )
    row = _last_row(path, tmp_path / "o", schema)
    assert [float(v) for v in row["größe"]] == [1.5]


# -- image folders that cannot be listed ----------------------------------------------------


def test_an_unlistable_folder_reached_through_a_link_is_named_under_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder followed through a link (inside the root) that cannot be listed is an
    item named by its path through the link, under the root; its sibling's images are
    still listed. (Refusal simulated: root may list anything.)"""
    root = tmp_path / "root"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"x")
    (root / "store" / "deep").mkdir(parents=True)
    (root / "store" / "deep" / "b.png").write_bytes(b"x")
    (root / "cat" / "via").symlink_to(root / "store" / "deep")
    scandir = os.scandir
    locked = str(root / "cat" / "via")

    def refusing(path: Any = ".") -> Any:
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    items = {i.path: i.problem for i in ImageFolderSource(root).items()}
    assert items == {
        "cat/a.png": None,
        "cat/via": "cannot list this folder: Permission denied",
        "store/deep/b.png": None,
    }


# -- a shard cut short, then grown again, under its map --------------------------------------

_REGROWN = """
import os, sys, numpy as np, recordforge as rf
from recordforge import _core
out, how = sys.argv[1], sys.argv[2]
rf.write_dataset({"id": np.arange(2000), "pad": [b"x" * 200] * 2000}, out, index=True)
path = rf.open_dataset(out).files[0]
whole = open(path, "rb").read()
f = _core.RecordFile(path)
offsets = f.offsets()
late = int(offsets[1500])  # a record far past the first pages
os.truncate(path, 0)  # cp over it: the file is emptied first...
try:
    f.read(late)  # ...its page faults: zeros mapped from there to the map's end
    print("read")
except rf.CorruptRecordError as e:
    print("read: CorruptRecordError", "cut short" in e.reason)
# ...then written again: the first half only, or all of it, as it was.
with open(path, "r+b") as g:
    g.write(whole[: len(whole) // 2] if how == "half" else whole)
for name, call in (("offsets", lambda: f.offsets()), ("read", lambda: f.read(late))):
    try:
        got = call()
        print(name, "ok", len(got))
    except rf.CorruptRecordError as e:
        print(name, "CorruptRecordError")
    except Exception as e:
        print(name, type(e).__name__, e)
"""


@pytest.mark.parametrize("how", ["half", "full"])
def test_a_shard_cut_then_regrown_under_its_map_is_a_corrupt_record_error(
    tmp_path: Path, how: str
) -> None:
    """Half regrown: the walk of record headers past the zero pages (length 0: 16 bytes a
    step) ends and reports the file. Wholly regrown: the zero pages the map kept fail
    their CRCs. No hang, no other error, no zeros handed out."""
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_REGROWN), str(tmp_path / "d"), how],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr[-800:]
    assert p.stdout.splitlines() == [
        "read: CorruptRecordError True",
        "offsets CorruptRecordError",
        "read CorruptRecordError",
    ]

"""`import recordforge` needs NumPy only: no framework or optional extra is imported."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = [
    "tensorflow",
    "torch",
    "jax",
    "grain",
    "pyarrow",
    "PIL",
    "apache_beam",
    "rich",
    "google.protobuf",
]


def test_import_pulls_in_no_optional_dependency() -> None:
    code = (
        "import sys, recordforge as rf\n"
        "rf.decode_example(rf.encode_example({'a': 1}))\n"
        f"print([m for m in {OPTIONAL!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Code the atheris fuzz targets share: the optional atheris import, the oracle failure,
scratch space, the coverage proxy and the entry point.

The targets import it as ``_common`` with ``fuzz/`` on ``sys.path``: a target run as a
script has its own directory there, ``run.py`` and the tests' loader put it there.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

try:  # Importable without atheris, for the tests.
    import atheris
except ImportError:  # pragma: no cover
    atheris = None


class Mismatch(AssertionError):
    """recordforge broke an oracle of a fuzz target (a bug, not an allowed error)."""


def scratch_base() -> str:
    """Where a target writes the files it reads back for each input: ``/dev/shm`` (memory)
    when there is one. libFuzzer exits without Python's atexit handlers, so a target
    removes such files itself after each input."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class Fixture:
    """A directory that ``build(root)`` makes once per process, on first use:
    ``<base>/rf-fuzz-<name>-<pid>``, where ``base`` is ``$RF_FUZZ_TMP`` (``run.py`` sets
    it and removes the directory once the target has stopped) or :func:`scratch_base`."""

    def __init__(self, name: str, build: Callable[[Path], None]) -> None:
        self._name = name
        self._build = build
        self._root: Path | None = None

    def root(self) -> Path:
        if self._root is None:
            base = os.environ.get("RF_FUZZ_TMP") or scratch_base()
            root = Path(base) / f"rf-fuzz-{self._name}-{os.getpid()}"
            shutil.rmtree(root, ignore_errors=True)
            self._build(root)
            self._root = root
        return self._root

    def cleanup(self) -> None:
        """Removes the directory (the tests and ``run.py``'s seed builders call it)."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


class Marks:
    """The coverage proxy. The Rust core is not instrumented, so libFuzzer sees little
    coverage of its own: :meth:`hit` calls one of ``leaves`` generated, instrumented
    one-branch functions, picked by a hash of an outcome signature, so that every
    distinct outcome has its own Python edge and inputs reaching new outcomes are kept in
    the corpus."""

    def __init__(self, leaves: int, name: str) -> None:
        # Many small functions rather than one big decision tree: atheris instruments a
        # function in time quadratic in its size (a 1024-leaf tree takes ~12 s).
        src = "\n".join(
            f"def _m{i}(hit):\n    if hit:\n        return {i}\n    return -1"
            for i in range(leaves)
        )
        namespace: dict[str, Any] = {}
        exec(compile(src, f"<{name}._marks>", "exec"), namespace)
        self.leaves = leaves
        self.functions = [namespace[f"_m{i}"] for i in range(leaves)]

    def hit(self, *signature: str) -> None:
        self.functions[zlib.crc32("|".join(signature).encode()) % self.leaves](True)


def probe_indices(n: int) -> list[int]:
    """The indices a target reads with ``ds[i]``: the first, a middle and the last of
    ``n`` (none when ``n`` is 0 or negative)."""
    return [i for i in sorted({0, n // 2, n - 1}) if 0 <= i < n]


def count_bucket(n: int) -> str:
    """A record count as an outcome: 0, 1, 2, 3-4 or 5+."""
    return str(n) if n < 3 else ("3-4" if n < 5 else "5+")


def fuzz(
    test_one_input: Callable[[bytes], None],
    instrumented: Iterable[Callable[..., Any]],
    marks: Marks,
    **hooks: Callable[..., bytes],
) -> None:
    """Instruments ``instrumented`` and the marks, then runs libFuzzer on ``sys.argv``
    (``hooks``: ``custom_mutator``, ``custom_crossover``)."""
    for fn in (*instrumented, *marks.functions):
        atheris.instrument_func(fn)
    atheris.Setup(sys.argv, test_one_input, **hooks)
    atheris.Fuzz()

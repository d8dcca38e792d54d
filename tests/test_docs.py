"""Every public name's docstring examples run and pass (Rust-defined ones included)."""

from __future__ import annotations

import doctest
import importlib

import pytest

import recordforge as rf

MODULES = [
    "recordforge",
    "recordforge._ranged",
    "recordforge.demo",
    "recordforge.errors",
    "recordforge.example",
    "recordforge.imageformat",
    "recordforge.pipeline",
    "recordforge.records",
    "recordforge.schema",
    "recordforge.sequence",
    "recordforge.sharding",
    "recordforge.sources._table_schema",
    "recordforge.sources.coco",
    "recordforge.sources.samples",
    "recordforge.splits",
    "recordforge.writer",
]


def _docstrings() -> list[tuple[str, str]]:
    out = []
    for name in rf.__all__:
        doc = getattr(getattr(rf, name), "__doc__", None)
        if doc and ">>>" in doc:
            out.append((name, doc))
    for module in MODULES:
        doc = importlib.import_module(module).__doc__
        if doc and ">>>" in doc:
            out.append((module, doc))
    return out


def test_every_public_name_is_documented() -> None:
    undocumented = [n for n in rf.__all__ if n != "__version__" and not getattr(rf, n).__doc__]
    assert undocumented == []


@pytest.mark.parametrize(("name", "doc"), _docstrings(), ids=lambda v: v if "\n" not in v else "")
def test_docstring_examples(name: str, doc: str) -> None:
    test = doctest.DocTestParser().get_doctest(doc, {}, name, None, 0)
    assert test.examples, name
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} doctest example(s) failed"

"""Every third-party module the package imports (at module level or inside a function) is
declared by each extra whose feature imports it, with one version range per package
across extras, and ``make dev`` installs every extra. Each extra alone in a fresh venv,
running its main path, is the other half: tests/extras/run.sh (``make extras``)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "python" / "recordforge"

# Module -> where its distribution must be declared ("core": the dependencies).
NEEDED_BY = {
    "numpy": ("core",),
    "rich": ("core",),
    # rf.images decodes for to_torch / to_grain / numpy_batches; the image folder and
    # COCO sources run on Beam.
    "PIL": ("images", "torch", "jax", "beam"),
    "simplejpeg": ("images", "torch", "jax"),
    # The table source runs on Beam.
    "pyarrow": ("table", "beam"),
    "apache_beam": ("beam",),
    "cloudpickle": ("beam",),
    # fsspec finds s3fs / gcsfs by protocol, never by import: run.sh checks those.
    "fsspec": ("cloud",),
    "tensorflow": ("tf",),
    "keras": ("tf",),
    "torch": ("torch",),
}


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the package files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "recordforge" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _declared() -> dict[str, dict[str, str]]:
    """``core`` and each extra -> {canonical distribution name: its version range}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {
        group: {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, reqs)}
        for group, reqs in groups.items()
    }


def test_every_third_party_import_has_its_extras() -> None:
    unknown = {m: sorted(files) for m, files in _imports().items() if m not in NEEDED_BY}
    assert unknown == {}, "add these modules to NEEDED_BY and declare them in those extras"


def test_each_extra_declares_what_its_feature_imports() -> None:
    declared = _declared()
    distributions = packages_distributions()
    missing = []
    for module, groups in NEEDED_BY.items():
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} is not installed in the dev venv (make dev installs it)"
        missing += [f"{g}: {module}" for g in groups if not names & set(declared[g])]
    assert missing == []


def test_one_version_range_per_package() -> None:
    ranges: dict[str, dict[str, str]] = {}
    for group, reqs in _declared().items():
        for name, spec in reqs.items():
            ranges.setdefault(name, {})[group] = spec
    differ = {name: by for name, by in ranges.items() if len(set(by.values())) > 1}
    assert differ == {}


def test_make_dev_installs_every_extra() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^dev:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "no dev target in the Makefile"
    listed = re.search(r'-e "\.\[([^]]+)\]"', recipe.group(1))
    assert listed, recipe.group(1)
    assert set(listed.group(1).split(",")) == set(_declared()) - {"core"}

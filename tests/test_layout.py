"""The package's layout rules (README, Layout), checked on the source: arrows point down
(no import cycle), no room over 600 lines, the engines and sources use public names only,
and each byte-level rule has one home."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "recordforge"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or in a function, except those under
    ``if TYPE_CHECKING:`` (which never run)."""

    def visit(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (n for n in child.orelse for n in visit_one(n))
                continue
            yield from visit_one(child)

    def visit_one(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from visit(node)

    return visit(tree)


def _imports(name: str) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for each recordforge import of module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "recordforge":
                    yield alias.name, None
            continue
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(up) + (f".{base}" if base else "")
        if base.split(".")[0] != "recordforge":
            continue
        for alias in node.names:
            yield base, alias.name


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for base, imported in _imports(name):
            full = f"{base}.{imported}" if imported else base
            if full == "recordforge._core":
                continue  # the compiled core: imports nothing of the package
            target = full if full in MODULES else base
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    # The package's __init__ imports its rooms to export their names; a room that
    # imports the package itself would close a loop through it.
    assert _cycles(_graph()) == []


def test_no_module_over_the_limit() -> None:
    sizes = {name: len(p.read_text().splitlines()) for name, p in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_engines_and_sources_use_public_names_only() -> None:
    users = [n for n in MODULES if n == "recordforge.beam" or n.startswith("recordforge.sources")]
    assert "recordforge.beam" in users and "recordforge.sources.coco" in users
    private = []
    for name in users:
        for base, imported in _imports(name):
            # The package's internal rooms (_fs, _outdir, sources._read) are modules
            # whose names start with "_"; what is private is a name inside a module.
            # _core is the compiled core's module name (maturin's convention).
            if not imported or not imported.startswith("_") or imported == "_core":
                continue
            if f"{base}.{imported}" not in MODULES:
                private.append(f"{name}: {imported} from {base}")
    assert private == []


def _modules_matching(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [n for n, p in MODULES.items() if rx.search(p.read_text())]


def test_one_image_format_sniffer() -> None:
    # The magic numbers of JPEG and PNG are written in one module.
    assert _modules_matching(r"\\xff\\xd8|\\x89PNG") == ["recordforge.imageformat"]


def test_one_compression_table() -> None:
    # File suffixes of the compressions are written in one module.
    assert _modules_matching(r"[\"']\.zlib[\"']") == ["recordforge.records"]

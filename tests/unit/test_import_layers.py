"""Dependencies point one way, and no module imports another that imports it back.

The layers (docs/architecture.md § Dependency direction): ``catalog`` imports nothing of this
project; ``derivers`` import only ``catalog``, and never a database driver; ``cdc`` reaches the
derivers through the protocols of ``derivers/base.py`` and a registry it is handed — only the
composition roots (the command line and the demo) build the registry. Every import counts,
also one inside a function; only ``if TYPE_CHECKING:`` blocks do not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cdc", "catalog", "derivers")
#: Modules that build the deriver registry and hand it to the engine.
COMPOSITION_ROOTS = frozenset({"cdc.cli", "cdc.catalog_cli", "cdc.demo"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for body in node.orelse for n in ast.walk(body))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (a package import counts as its ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def third_party(path: Path) -> set[str]:
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_catalog_imports_nothing_of_the_project() -> None:
    bad = {
        m: sorted(d)
        for m, d in graph().items()
        if m.startswith("catalog") and not all(x.startswith("catalog") for x in d)
    }
    assert bad == {}


def test_derivers_import_only_the_catalog_and_no_driver() -> None:
    g = graph()
    bad = {m: sorted(x for x in d if x.startswith("cdc")) for m, d in g.items() if m.startswith("derivers")}
    assert {m: d for m, d in bad.items() if d} == {}
    drivers = {
        m: third_party(p) & {"psycopg", "redis", "nats"}
        for m, p in modules().items()
        if m.startswith("derivers")
    }
    assert {m: d for m, d in drivers.items() if d} == {}


def test_the_engine_reaches_derivers_only_through_their_protocols() -> None:
    bad = {
        m: sorted(x for x in d if x.startswith("derivers") and x != "derivers.base")
        for m, d in graph().items()
        if m.startswith("cdc") and m not in COMPOSITION_ROOTS
    }
    assert {m: d for m, d in bad.items() if d} == {}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    g = graph()
    # A package's __init__ re-exporting its modules is not a cycle with them.
    for name in list(g):
        if name in PACKAGES or (
            name.count(".") == 1 and (ROOT / name.replace(".", "/") / "__init__.py").exists()
        ):
            g[name] = {d for d in g[name] if not d.startswith(name + ".")}
    assert cycles(g) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import cdc.stream\n", {"cdc.stream"}),
        ("from . import queries\n", {"cdc.queries"}),
        ("from .sinks.base import Batch\n", {"cdc.sinks.base"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .state import X\n", set()),
        ("def f():\n    from derivers import default_derivers\n", {"derivers"}),
    ],
)
def test_the_import_reader(tmp_path: Path, source: str, expected: set[str]) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"cdc", "cdc.stream", "cdc.queries", "cdc.sinks", "cdc.sinks.base", "cdc.state", "derivers"}
    assert imports_of("cdc.watch", path, known) == expected


def test_the_cycle_finder() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []

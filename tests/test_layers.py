"""The import graph of mrisr: no arrow runs up the layers of :mod:`mrisr.layers`, no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mrisr.layers import FACES, LAYERS, layer_of, unit_of

PACKAGE = Path(__file__).resolve().parents[1] / "mrisr"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _reexports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """For each package: name -> the submodule its ``__init__`` imports it from."""
    out: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        names: dict[str, str] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                source = _resolve(name, True, node)
                for alias in node.names:
                    names[alias.asname or alias.name] = source
        out[name] = names
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the mrisr modules it imports (at any depth of the file: lazy imports count)."""
    modules = _modules()
    reexports = _reexports(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "mrisr")
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, path.name == "__init__.py", node)
                if source.split(".")[0] != "mrisr":
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        targets.add(f"{source}.{alias.name}")  # a submodule
                    elif source != name and alias.name in reexports.get(source, {}):
                        targets.add(reexports[source][alias.name])  # a name the package re-exports
                    else:
                        targets.add(source)
        graph[name] = {t for t in targets if t != name and t in modules}
    return graph


def test_every_module_has_a_layer():
    missing = []
    for name in _modules():
        try:
            unit_of(name)
        except KeyError:
            missing.append(name)
    assert not missing, f"modules in no layer of mrisr.layers.LAYERS: {missing}"


def test_no_import_runs_up_the_layers():
    upward = sorted(f"{src} (layer {layer_of(src)}) -> {dst} (layer {layer_of(dst)})"
                    for src, targets in import_graph().items() for dst in targets
                    if layer_of(dst) > layer_of(src))
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_faces_do_not_import_each_other():
    crossing = sorted(f"{src} -> {dst}" for src, targets in import_graph().items() for dst in targets
                      if unit_of(src) in FACES and unit_of(dst) in FACES and unit_of(src) != unit_of(dst))
    assert not crossing, crossing


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    circles = _cycles(import_graph())
    assert not circles, "modules that import each other (directly or in a chain):\n" + "\n".join(
        " <-> ".join(c) for c in circles)


def test_the_checks_catch_an_upward_arrow_and_a_circle():
    graph = {"mrisr.io.load": {"mrisr.reconstruct.keyhole"}, "mrisr.reconstruct.keyhole": {"mrisr.io.load"}}
    assert layer_of("mrisr.reconstruct.keyhole") > layer_of("mrisr.io.load")
    assert _cycles(graph) == [["mrisr.io.load", "mrisr.reconstruct.keyhole"]]
    with pytest.raises(KeyError, match="not in any layer"):
        unit_of("mrisr.unlisted_module")


def test_layers_list_each_unit_once():
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))

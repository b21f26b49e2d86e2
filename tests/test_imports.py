"""The package's import graph: no cycle between prunesearch modules, and every import points to
the importer's own layer or one below it (the layers of docs/architecture.md). Every import
statement counts, including those inside functions and under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "prunesearch"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                if not target.startswith("prunesearch"):
                    continue
                while target not in modules:  # `import prunesearch.x.y as z` forms
                    target = target.rpartition(".")[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer
                # already lives inside that package
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# Bottom to top. A module belongs to the first entry that is its name or a package above it.
LAYERS = [
    ["errors", "options", "fileio", "metrics", "plugins", "allocator", "pareto", "figures"],
    ["data", "spaces", "scoring"],
    ["models", "task"],
    ["objective", "evaluators", "latency", "front"],
    ["runs"],
    ["training"],
    ["strategies"],
    ["scaleout"],
    ["config"],
    ["app"],
    ["cli", "_entry", "__main__", "configs", ""],  # "": the package's __init__, the public API
]


def _layer(module: str) -> int:
    name = module.removeprefix("prunesearch").removeprefix(".")
    for level, parts in enumerate(LAYERS):
        if any(name == p or (p and name.startswith(p + ".")) for p in parts):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the architecture doc)")


def test_every_import_points_down_the_layers():
    graph = _graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if _layer(d) > _layer(m))
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    assert _layer("prunesearch.strategies.emo") > _layer("prunesearch.runs.rundir")
    assert _layer("prunesearch.spaces.space") < _layer("prunesearch.app.run")


def test_strategies_never_touch_run_storage_and_config_composes_no_registry():
    graph = _graph()
    search = {m: deps for m, deps in graph.items() if m.startswith("prunesearch.strategies")}
    assert not sorted(f"{m} -> {d}" for m, deps in search.items() for d in deps
                      if d.startswith(("prunesearch.runs", "prunesearch.config",
                                       "prunesearch.scaleout", "prunesearch.app")))
    direct = _direct_imports(PACKAGE / "config.py")
    assert direct and not [d for d in direct if d.endswith(".registry") or d.startswith(
        ("prunesearch.strategies", "prunesearch.evaluators", "prunesearch.data"))]


def _direct_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prunesearch"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("prunesearch")]
    return found

"""The package reads as floors: every import of locmoe_ms (inside functions too) goes to the importer's own package or
a floor below it, so neither the package graph nor any module's has a circle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "locmoe_ms"

# Bottom up, as locmoe_ms/__init__.py lists them; a top-level module is a floor of its own.
FLOORS = ("errors", "paths", "capacity", "config", "cluster", "parallel", "data", "layers", "moe", "model", "train",
          "autoparallel", "job", "ckpt", "planning", "experiments", "cli", "__main__")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(module of locmoe_ms, line) for every import statement in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("locmoe_ms"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("locmoe_ms")]
        else:
            continue
        found += [(name, node.lineno) for name in names if name in known]
    return found


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "locmoe_ms"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _ in imports(p, known) if t != m} for m, p in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt])
        done.add(node)

    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    return found


def test_every_package_and_top_level_module_has_a_floor():
    floors = {floor(m) for m in modules()} - {"locmoe_ms"}
    assert floors == set(FLOORS)


def test_no_import_climbs_to_a_higher_floor():
    known = modules()
    climbs = []
    for module, path in known.items():
        here = floor(module)
        for target, line in imports(path, known):
            there = floor(target)
            if "locmoe_ms" in (here, there) or here == there:
                continue
            if FLOORS.index(there) > FLOORS.index(here):
                climbs.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    assert climbs == []


def test_no_module_circle():
    assert circles(graph()) == []


def test_no_package_circle():
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        packages.setdefault(floor(module), set()).update(floor(t) for t in targets if floor(t) != floor(module))
    assert circles(packages) == []


def test_the_walk_sees_imports_inside_functions():
    """job.py imports auto mode's builder inside a function (it needs Ascend): the walk counts it."""
    known = modules()
    assert "locmoe_ms.autoparallel.build" in {t for t, _ in imports(known["locmoe_ms.job"], known)}

"""The house's layering, checked on the code itself: no import cycles, no import that runs back up.

Every module of the package sits on a floor (below); an import must go to a lower floor, or stay
inside the module's own package (`normscope.sources.*`, `normscope.render.*`...), and no set of
modules may import each other in a circle. Imports inside functions count (they are the lazy
imports that keep `--help` fast, and they are still dependencies). A new module fails this test
until it is given a floor: deciding where it lives is part of adding it (ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "normscope"

# Floor of each module or package (by longest dotted prefix), bottom first: ARCHITECTURE.md.
FLOORS: dict[str, int] = {
    "normscope.errors": 0,
    "normscope.enums": 0,
    "normscope.naming": 0,
    "normscope.frames": 0,
    "normscope.numeric": 0,
    "normscope.version": 0,
    "normscope.exitcodes": 0,  # the exit-code contract
    "normscope.scope": 1,
    "normscope.notebook": 1,  # a report's repr, notebook card and to_json (the schema's mixin)
    "normscope.schema": 2,
    "normscope.sources": 3,
    "normscope.arch": 3,
    "normscope.analysis": 3,
    "normscope.peers": 3,
    "normscope.advice": 3,
    "normscope.scanner": 4,
    "normscope.compare": 5,
    "normscope.trends": 5,
    "normscope.discovery": 5,
    "normscope.policy": 5,
    "normscope.faults": 5,  # checks of values never healthy (zero channels, offset, copies)
    "normscope.series": 6,
    "normscope.events": 6,  # TensorBoard event files: losses in (series --events), scalars out
    "normscope.fold": 6,
    "normscope.executors": 5,
    "normscope.gates": 7,
    "normscope.settings": 7,  # the one options builder: flags + [tool.normscope] -> options
    "normscope.progress": 7,  # the series' progress bar, for the CLI and the Python API
    "normscope.api": 8,  # the Python API: one function per command (gates for check)
    "normscope.render": 8,
    "normscope.cli": 9,
    "normscope.integrations": 9,  # training callbacks (transformers, Lightning): not the CLI's
    "normscope.__main__": 10,
    "normscope": 10,  # the package face: lazy re-exports of the public API
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(name: str) -> tuple[str, int]:
    best = max((p for p in FLOORS if name == p or name.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{name} has no floor in tests/test_layout.py FLOORS"
    return best, FLOORS[best]


def imports(path: Path) -> set[str]:
    """normscope modules imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("normscope")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*root, base] if base else root)
            if not base.startswith("normscope"):
                continue
            for alias in node.names:  # `from normscope import cli` imports a module
                candidate = f"{base}.{alias.name}"
                out.add(candidate if _exists(candidate) else base)
    return out


def _exists(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {i for i in imports(path) if i != name} for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_import_goes_down_or_stays_in_its_package(name: str) -> None:
    room, floor = floor_of(name)
    for target in sorted(GRAPH[name]):
        target_room, target_floor = floor_of(target)
        if target_room == room:
            continue
        assert target_floor < floor, (
            f"{name} (floor {floor}) imports {target} (floor {target_floor}): an arrow back up"
        )


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components over module-level and lazy imports alike.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in MODULES or w == "normscope":
                continue
            if w not in index:
                visit(w)
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
                cycles.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert cycles == []


def test_nothing_imports_a_private_name_of_another_module() -> None:
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("normscope"):
                if node.module == name:
                    continue
                offenders += [
                    f"{name}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= 500, f"{name} has {lines} lines: split it (ARCHITECTURE.md says where)"


MAX_FUNCTION_LINES = 60

# Allowed while their owner moves them: none now. Each entry must still break the rule, so the
# lists only shrink; an entry that no longer does fails below and is dropped.
LONG_ALLOWED: set[str] = set()
FMT_SKIP_ALLOWED: set[str] = set()


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _long_functions() -> dict[str, int]:
    out = {}
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out[f"{_relative(path)}:{node.name}"] = length
    return out


def test_no_function_is_over_60_lines() -> None:
    # A long function becomes a short sequence of steps, each named for what it does.
    found = _long_functions()
    long = [
        f"{where} ({n} lines)" for where, n in sorted(found.items()) if where not in LONG_ALLOWED
    ]
    assert long == []
    cleaned = sorted(LONG_ALLOWED - set(found))
    assert cleaned == [], f"no longer over {MAX_FUNCTION_LINES} lines: drop from LONG_ALLOWED"


def test_no_formatter_is_switched_off() -> None:
    # `# fmt: skip` packed code under the caps; the formatter decides the layout everywhere.
    marked = {
        _relative(path)
        for path in MODULES.values()
        if re.search(r"#\s*fmt:\s*(skip|off)", path.read_text(encoding="utf-8"))
    }
    assert sorted(marked - FMT_SKIP_ALLOWED) == []
    cleaned = sorted(FMT_SKIP_ALLOWED - marked)
    assert cleaned == [], "no `# fmt: skip` left: drop from FMT_SKIP_ALLOWED"


# The package face (`normscope/__init__.py`, lazy re-exports) is not a subpackage. The CLI's
# main() is house-core's (issue 22): allowed until it moves.
INIT_LOGIC_ALLOWED = {"normscope.cli"}


@pytest.mark.parametrize(
    "name", sorted(n for n, p in MODULES.items() if p.name == "__init__.py" and n != "normscope")
)
def test_a_subpackage_init_only_hands_names_on(name: str) -> None:
    body = ast.parse(MODULES[name].read_text(encoding="utf-8")).body
    logic = [
        f"line {node.lineno}: {type(node).__name__}"
        for node in body
        if not isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
        )
    ]
    if name in INIT_LOGIC_ALLOWED:  # the list only shrinks: a cleaned file leaves it
        assert logic, f"{name}/__init__.py holds no logic now: drop it from INIT_LOGIC_ALLOWED"
    else:
        assert logic == [], f"{name}/__init__.py holds logic: move it into a module named for it"

"""The layering rules, checked on the source: no import loops (every import counts: module
level, inside functions, under TYPE_CHECKING), no imports of another package's underscore
names, the contract at the bottom, drivers on the contract and the leaves only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "hexa_event"
LEAVES = {"hexa_event.errors", "hexa_event.ids", "hexa_event.numbers"}
FOUNDATION = "hexa_event._sql"
"""The private SQL foundation under the SQL driver, the outbox and the inbox."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str) -> Iterator[tuple[int, list[str]]]:
    """(line, dotted target parts incl. the imported name) for every import in ``module``."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = base + (node.module.split(".") if node.module else [])
            else:
                stem = (node.module or "").split(".")
            for alias in node.names:
                yield node.lineno, [*stem, alias.name]


def _target(parts: list[str]) -> str | None:
    """The deepest module of ours that an import names."""
    while parts:
        name = ".".join(parts)
        if name in MODULES:
            return name
        parts = parts[:-1]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for _, parts in _imports(module):
            target = _target(parts)
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                head = min(component)
                if len(component) > 1 and not all(
                    m == head or m.startswith(head + ".") for m in component
                ):
                    found.append(sorted(component))
    return found


def test_no_import_loops() -> None:
    assert _loops(_graph()) == []


def test_loop_detection_finds_a_loop() -> None:
    """The checker itself can fail."""
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_private_names_of_other_packages() -> None:
    bad = []
    for module, path in MODULES.items():
        own = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for line, parts in _imports(module):
            if parts[0] != PACKAGE:
                continue
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    if own[:i] != parts[:i]:
                        bad.append(f"{module}:{line} imports {'.'.join(parts)}")
                    break
    assert bad == []


def test_the_contract_is_the_bottom_layer() -> None:
    assert _graph()["hexa_event.driver"] <= LEAVES


def test_the_sql_foundation_stands_on_the_leaves_only() -> None:
    for module, targets in _graph().items():
        if module.startswith(FOUNDATION):
            assert {t for t in targets if not t.startswith(FOUNDATION)} <= LEAVES, module


def test_drivers_stand_on_the_contract_and_the_leaves_only() -> None:
    allowed = {"hexa_event.driver", "hexa_event.drivers"} | LEAVES
    bad = {}
    for module, targets in _graph().items():
        if not module.startswith("hexa_event.drivers."):
            continue
        driver_package = ".".join(module.split(".")[:3])
        outside = {
            t
            for t in targets
            if t not in allowed
            and not t.startswith(driver_package + ".")
            and not t.startswith(FOUNDATION)
        }
        if outside and module != driver_package:
            bad[module] = sorted(outside)
    assert bad == {}

"""The layering rules, checked on the source: no import loops (every import counts: module
level, inside functions, under TYPE_CHECKING), no imports of another package's underscore
names, the contract at the bottom, drivers on the contract and the leaves only."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "hexa_event"
LEAVES = {"hexa_event.errors", "hexa_event.ids", "hexa_event.numbers", "hexa_event.redaction"}
FOUNDATION = "hexa_event._sql"
"""The private SQL foundation under the SQL driver, the outbox and the inbox."""
KIT = "hexa_event.drivers.kit"
"""What every driver shares (typed URL query options, wire codecs): on the contract and
the leaves only, like a driver."""
BROKER_CLIENTS = {"confluent_kafka", "aiokafka", "pulsar", "nats", "asyncpg", "aiosqlite"}
BROKER_CLIENTS |= {"psycopg", "psycopg2", "sqlite3"}
"""Client libraries of the engines: only a driver talks to its engine."""
SQL_LAYERS = ("hexa_event._sql", "hexa_event.drivers.sql", "hexa_event.outbox")
SQL_LAYERS += ("hexa_event.inbox", "hexa_event.commands")
"""Where SQLAlchemy may be used: the SQL foundation and what stands on it (the SQL driver,
the outbox and inbox tables, the operator commands reading them)."""


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
    for module, targets in _graph().items():
        if module == KIT or module.startswith(KIT + "."):
            assert {t for t in targets if not t.startswith(KIT)} <= allowed, module
    allowed |= {t for t in MODULES if t == KIT or t.startswith(KIT + ".")}
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


def _external_imports() -> Iterator[tuple[str, int, str]]:
    """(module, line, top-level package) for every import of a package not ours."""
    for module in MODULES:
        for line, parts in _imports(module):
            if parts and parts[0] != PACKAGE:
                yield module, line, parts[0]


def _under(module: str, packages: tuple[str, ...] | str) -> bool:
    packages = (packages,) if isinstance(packages, str) else packages
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_only_drivers_import_broker_clients() -> None:
    found = [
        f"{module}:{line} imports {top}"
        for module, line, top in _external_imports()
        if top in BROKER_CLIENTS and not _under(module, "hexa_event.drivers")
    ]
    assert found == []


def test_nothing_outside_the_drivers_imports_a_driver() -> None:
    """Drivers are picked by URL scheme through connect's registry (module names as text,
    imported on first use); their diagnosis reaches ``doctor`` through Driver.diagnose()."""
    bad = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not _under(module, "hexa_event.drivers")
        for target in targets
        if _under(target, "hexa_event.drivers")
    ]
    assert bad == []


def test_only_the_sql_layers_import_sqlalchemy() -> None:
    bad = [
        f"{module}:{line}"
        for module, line, top in _external_imports()
        if top == "sqlalchemy" and not _under(module, SQL_LAYERS)
    ]
    assert bad == []


_REDACTION_NAMES = re.compile(r"(^|_)(redact|secret|secrets|scrub|scrubber|mask)(_|$)", re.I)
_QUERY_PARSERS = {"parse_qs", "parse_qsl"}


def _own_secret_and_query_code(module: str) -> list[str]:
    """Redaction helpers and URL query parsing that ``module`` defines for itself."""
    path = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if _REDACTION_NAMES.search(node.name):
                found.append(f"{module}:{node.lineno} defines {node.name}()")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                name = target.id if isinstance(target, ast.Name) else ""
                if "SECRET" in name.upper() or (
                    isinstance(node.value, ast.Constant) and node.value.value == "***"
                ):
                    found.append(f"{module}:{node.lineno} defines {name or 'a mask'}")
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in _QUERY_PARSERS:
                found.append(f"{module}:{node.lineno} parses a URL query ({name})")
        elif isinstance(node, ast.ImportFrom) and node.module == "urllib.parse":
            for alias in node.names:
                if alias.name in _QUERY_PARSERS:
                    found.append(f"{module}:{node.lineno} imports {alias.name}")
    return found


def test_drivers_use_the_shared_redaction_and_query_parsing() -> None:
    bad = [
        finding
        for module in MODULES
        if _under(module, "hexa_event.drivers") and not _under(module, KIT)
        for finding in _own_secret_and_query_code(module)
    ]
    assert bad == []


def test_the_redaction_check_can_fail() -> None:
    """The checker finds what it looks for (on a module that does it on purpose)."""
    assert any("parse_qsl" in f for f in _own_secret_and_query_code(KIT + ".query"))
    assert any("is_secret" in f for f in _own_secret_and_query_code("hexa_event.redaction"))

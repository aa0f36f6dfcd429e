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


def _consume_side_findings(source: str, where: str) -> list[str]:
    """Where ``source`` strays from the one consume path: a ``fetch`` that is not
    ``return await self.<buffer>.fetch(max_count)`` over a ``DeliveryBuffer`` it makes
    (:mod:`hexa_event.drivers.kit.buffer`), or an ``on_settle`` hook (settlements reach a
    driver through ``Subscription.settle`` only; ``ack``/``nack`` just record them)."""
    tree = ast.parse(source, where)
    buffers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            makes_buffer = any(
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "DeliveryBuffer"
                for call in ast.walk(node.value)
            )
            for target in targets:
                if makes_buffer and isinstance(target, ast.Attribute):
                    buffers.add(target.attr)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "on_settle":
            found.append(f"{where}:{node.lineno} defines on_settle()")
        elif isinstance(node, ast.Attribute) and node.attr == "on_settle":
            found.append(f"{where}:{node.lineno} uses on_settle")
        if not (isinstance(node, ast.AsyncFunctionDef) and node.name == "fetch"):
            continue
        if any(ast.unparse(d).endswith("abstractmethod") for d in node.decorator_list):
            continue  # the contract's own declaration
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        value = body[0].value if len(body) == 1 and isinstance(body[0], ast.Return) else None
        call = value.value if isinstance(value, ast.Await) else None
        func = call.func if isinstance(call, ast.Call) else None
        delegates = (
            isinstance(call, ast.Call)
            and isinstance(func, ast.Attribute)
            and func.attr == "fetch"
            and isinstance(func.value, ast.Attribute)
            and isinstance(func.value.value, ast.Name)
            and func.value.value.id == "self"
            and func.value.attr in buffers
            and [a.id if isinstance(a, ast.Name) else "" for a in call.args] == ["max_count"]
        )
        if not delegates:
            found.append(f"{where}:{node.lineno} fetch is not the kit's DeliveryBuffer.fetch")
    return found


def test_every_driver_fetches_through_the_kit_buffer_and_settles_through_one_door() -> None:
    bad = [
        finding
        for module, path in MODULES.items()
        if module == "hexa_event.driver"
        or (_under(module, "hexa_event.drivers") and not _under(module, KIT))
        for finding in _consume_side_findings(path.read_text(), module)
    ]
    fetchers = [
        module
        for module, path in MODULES.items()
        if _under(module, "hexa_event.drivers") and "async def fetch(" in path.read_text()
    ]
    assert bad == []
    assert len(fetchers) >= 7, fetchers  # the check looked at every driver's fetch


def test_the_consume_side_check_can_fail() -> None:
    """A hand-written fetch loop and an ``on_settle`` hook (main before the kit) are found."""
    source = '''
class Sub:
    def __init__(self):
        self._buffer = DeliveryBuffer(self._take)
        self._queue = deque()

    async def fetch(self, max_count):
        while not self._queue:
            await self._ready.wait()
        return [self._queue.popleft()]

class Other:
    async def fetch(self, max_count):
        return await self._queue.fetch(max_count)

class Good:
    def __init__(self):
        self._buffer = DeliveryBuffer(self._take)

    async def fetch(self, max_count):
        """Docstring."""
        return await self._buffer.fetch(max_count)

class D:
    def on_settle(self):
        self._sub._on_settle(self)
'''
    found = _consume_side_findings(source, "x")
    assert found == [
        "x:7 fetch is not the kit's DeliveryBuffer.fetch",
        "x:13 fetch is not the kit's DeliveryBuffer.fetch",
        "x:25 defines on_settle()",
    ]


_URL_PARSERS = {"urlsplit", "urlparse", "urlunsplit", "parse_qs", "parse_qsl", "urlencode"}
_URL_PARSERS |= {"unquote", "split_url", "parse_query", "check_keywords"}
"""What reads a URL or its query: urllib's and the kit's own low-level parsers."""
_KIT_OPTIONS = {"DriverOptions", "Redacted"}


def _options_findings(source: str, where: str, *, options_module: bool) -> list[str]:
    """Where ``source`` (a driver's module) strays from the kit's options: its own
    ``from_url``, or reading a URL itself (:data:`_URL_PARSERS`); in an options module, an
    ``*Options`` class not built on the kit's ``DriverOptions`` (from_url, redacted repr)
    or ``Redacted``, or its own ``__str__``."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "from_url":
            found.append(f"{where}:{node.lineno} defines from_url()")
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names if a.name in _URL_PARSERS]
            found += [f"{where}:{node.lineno} imports {name}" for name in names]
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in _URL_PARSERS:
                found.append(f"{where}:{node.lineno} reads a URL itself ({name})")
        elif options_module and isinstance(node, ast.ClassDef) and node.name.endswith("Options"):
            bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
            if not bases & _KIT_OPTIONS:
                found.append(f"{where}:{node.lineno} {node.name} is not a kit DriverOptions")
            for item in node.body:
                targets = item.targets if isinstance(item, ast.Assign) else []
                if any(isinstance(t, ast.Name) and t.id == "__str__" for t in targets):
                    found.append(f"{where}:{item.lineno} {node.name} defines __str__")
    return found


def test_driver_options_read_urls_through_the_kit() -> None:
    """One ``from_url`` (the kit's ``DriverOptions``): no driver splits a URL, parses its
    query or checks keyword options itself, and every options class shows a redacted repr."""
    bad = [
        finding
        for module, path in MODULES.items()
        if _under(module, "hexa_event.drivers") and not _under(module, KIT)
        for finding in _options_findings(
            path.read_text(), module, options_module=module.endswith(".options")
        )
    ]
    options_modules = [
        m for m in MODULES if _under(m, "hexa_event.drivers") and m.endswith(".options")
    ]
    assert bad == []
    assert len(options_modules) >= 7, options_modules  # every driver's (and the kit's)


def test_the_options_check_can_fail() -> None:
    """A hand-written from_url, query parsing and an options class of its own are found."""
    source = """
from urllib.parse import parse_qsl, quote, urlsplit

@dataclass
class FooOptions:
    __str__ = __repr__

    @classmethod
    def from_url(cls, url):
        return cls(**dict(parse_qsl(urlsplit(url).query)))

@dataclass
class GoodOptions(kit.DriverOptions):
    pass
"""
    assert sorted(_options_findings(source, "x", options_module=True)) == [
        "x:10 reads a URL itself (parse_qsl)",
        "x:10 reads a URL itself (urlsplit)",
        "x:2 imports parse_qsl",
        "x:2 imports urlsplit",
        "x:5 FooOptions is not a kit DriverOptions",
        "x:6 FooOptions defines __str__",
        "x:9 defines from_url()",
    ]

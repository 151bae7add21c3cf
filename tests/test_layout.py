"""The package's arrows point one way, and it leans on nothing outside itself.

Read from the source (module-level imports, as Python runs them when the package is
imported; imports inside functions and under TYPE_CHECKING do not count), so a cycle or
an import of the service's own `config.py` fails here before it confuses anyone.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jobservice"
#: What the installed package must never import: the standalone service's files, the
#: repository's other folders, and the user's Flask-SQLAlchemy/Flask-Migrate slots.
FORBIDDEN = ("config", "jobs", "tests", "bench", "run", "flask_sqlalchemy", "flask_migrate")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, everywhere: bool = False) -> list[str]:
    """Every module this one imports when it is itself imported (absolute names); with
    `everywhere`, also those imported inside functions or for type checking."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    names: list[str] = []
    for node in ast.parse(path.read_text()).body:
        if not everywhere:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names += [alias.name for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom):
                if inner.level:
                    base = package.split(".")[: len(package.split(".")) - inner.level + 1]
                    target = ".".join(base + ([inner.module] if inner.module else []))
                else:
                    target = inner.module or ""
                names += [target] + [f"{target}.{alias.name}" for alias in inner.names]
    return names


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports. `from . import x` depends on x, not on
    the package's __init__ (which is already being imported by then)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {target for target in imports(name, path) if target in known and target != name}
        # `from . import metrics` lists both "jobservice" and "jobservice.metrics": keep the module.
        edges[name] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_imports_itself_round_a_circle() -> None:
    edges = graph()
    assert len(edges) > 30
    assert cycles(edges) == []


def test_the_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_imports_nothing_of_the_repository_or_the_users_slots() -> None:
    offending = {
        name: sorted(t for t in imports(name, path, everywhere=True) if t.split(".")[0] in FORBIDDEN)
        for name, path in modules().items()
    }
    assert {name: found for name, found in offending.items() if found} == {}

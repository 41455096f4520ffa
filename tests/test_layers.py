"""The house's one-way flow, read from the source: paydial -> api -> ivr -> payments -> gateways.

Every import is counted, function-local and `TYPE_CHECKING` ones too, since a late import hides a
dependency rather than removing it. Flask lives only in `api/`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["gateways", "payments", "ivr", "api", "paydial"]  # each may import only those before it
RANK = {package: rank for rank, package in enumerate(LAYERS)}
RANK["migrations"] = RANK["payments"]  # Alembic reads the models, nothing more
FLASK_PACKAGES = ("flask", "flask_wtf")


def modules() -> dict[str, Path]:
    found = {}
    for package in [*LAYERS, "migrations"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file, resolved to our module when it is ours."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield node.lineno, candidate if candidate in known else node.module


def edges() -> Iterator[tuple[str, int, str]]:
    known = modules()
    for name, path in known.items():
        for line, target in imports_of(path, known):
            yield name, line, target


def test_flask_is_imported_only_by_the_api() -> None:
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in edges()
        if target.split(".")[0] in FLASK_PACKAGES and module.split(".")[0] != "api"
    ]
    assert offenders == []


def test_nothing_imports_a_layer_above_its_own() -> None:
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in edges()
        if target.split(".")[0] in RANK and RANK[target.split(".")[0]] > RANK[module.split(".")[0]]
    ]
    assert offenders == []


def test_no_import_cycle_between_our_modules() -> None:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, _, target in edges():
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module and not module.startswith(target + "."):
            graph[module].add(target)
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("rule", ["flask", "layers", "cycles"])
def test_the_checks_see_a_planted_violation(rule: str, tmp_path: Path) -> None:
    """The walker itself works: each kind of violation, planted in a parsed file, is found."""
    source = {
        "flask": "from flask import g\n",
        "layers": "def late():\n    from api.voice import bp\n",
        "cycles": "from payments.store import Base\n",
    }[rule]
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    found = [target for _, target in imports_of(planted, modules())]
    expected = {"flask": "flask", "layers": "api.voice", "cycles": "payments.store"}[rule]
    assert expected in found


def exception_classes() -> dict[str, list[tuple[Path, str]]]:
    """Per package, (file, name) of each class derived from an exception, by name, to a fixpoint."""
    classes = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {ast.unparse(base).split(".")[-1] for base in node.bases}
                    classes.append((package, path, node.name, bases))
    exceptions = {"BaseException", "Exception", "ValueError", "RuntimeError", "KeyError"}
    while True:
        grown = exceptions | {name for _, _, name, bases in classes if bases & exceptions}
        if grown == exceptions:
            break
        exceptions = grown
    found: dict[str, list[tuple[Path, str]]] = {package: [] for package in LAYERS}
    for package, path, name, bases in classes:
        if bases & exceptions:
            found[package].append((path, name))
    return found


def docstring_of(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def test_every_exception_class_is_drawn_in_its_packages_error_tree() -> None:
    """A package's docstring (or its errors' module's) draws its error tree; each class is in it."""
    missing = []
    for package, found in exception_classes().items():
        trees = [ROOT / package / "__init__.py", ROOT / package / "errors.py"]
        tree = "".join(
            ast.get_docstring(ast.parse(p.read_text())) or "" for p in trees if p.exists()
        )
        for path, name in found:
            if not re.search(rf"\b{name}\b", tree + docstring_of(path)):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []
    assert any(name == "CallerLockedOut" for _, name in exception_classes()["payments"])

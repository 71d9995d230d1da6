"""Arrows point down: every import the code makes, parsed with ``ast`` (lazy imports inside
functions count too), keeps to the layering of the design.

``fopro`` (the CLI root) sits above ``app`` and ``workers``; ``app`` never loads torch; the engine
``foprokd`` imports nothing from the service; ``app.core`` imports nothing above it (no domain);
nothing but the CLI root and ``python -m foprokd`` imports a command line.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("app", "workers", "fopro", "foprokd", "bench", "migrations")
TORCH = ("torch", "torchvision", "timm")
CLI_MODULES = ("fopro", "foprokd.cli")
# The CLI root composes the commands, and `python -m foprokd` is the engine's own entry point.
CLI_IMPORTERS = ("fopro/", "foprokd/__main__.py")


@dataclass(frozen=True)
class Import:
    """One imported module: ``from a import b`` names ``a.b`` when that is a module, else ``a``."""

    path: str
    line: int
    module: str
    statement: str
    at_import_time: bool  # False inside a function body or an ``if TYPE_CHECKING:`` block

    def __str__(self) -> str:
        return f"{self.path}:{self.line} `{self.statement}`"


@dataclass(frozen=True)
class SourceTree:
    """The first-party modules under a root (dotted name -> relative path) and their imports."""

    modules: dict[str, str]
    imports: dict[str, list[Import]]

    @classmethod
    def parse(cls, root: Path) -> SourceTree:
        """Index every ``.py`` file of ``SOURCE_PACKAGES`` under ``root`` and parse its imports."""
        files = sorted(
            path
            for package in SOURCE_PACKAGES
            if (root / package).is_dir()
            for path in (root / package).rglob("*.py")
            if "__pycache__" not in path.parts
        )
        modules = {_module_name(path.relative_to(root)): path.relative_to(root) for path in files}
        imports = {
            rel.as_posix(): sorted(
                set(_imports_in(ast.parse((root / rel).read_text()), rel, modules, True)),
                key=lambda imp: (imp.line, imp.module),
            )
            for rel in modules.values()
        }
        return cls({name: rel.as_posix() for name, rel in modules.items()}, imports)

    def imports_under(self, prefix: str) -> Iterator[Import]:
        """Every import made by a file whose path starts with ``prefix`` (``"app/core/"``)."""
        for path, imports in self.imports.items():
            if path.startswith(prefix):
                yield from imports

    def loaded_by(self, module: str) -> list[str]:
        """First-party modules Python runs to import ``module``: each package on its path too."""
        parts = module.split(".")
        return [
            name
            for name in (".".join(parts[: i + 1]) for i in range(len(parts)))
            if name in self.modules
        ]


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_in(
    node: ast.AST, rel: Path, modules: dict[str, Path], at_import_time: bool
) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(
                    rel.as_posix(), child.lineno, alias.name, ast.unparse(child), at_import_time
                )
        elif isinstance(child, ast.ImportFrom):
            base = _absolute_base(child, rel)
            for alias in child.names:
                submodule = f"{base}.{alias.name}"
                yield Import(
                    rel.as_posix(),
                    child.lineno,
                    submodule if submodule in modules else base,
                    ast.unparse(child),
                    at_import_time,
                )
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _imports_in(statement, rel, modules, False)
            for statement in child.orelse:
                yield from _imports_in(statement, rel, modules, at_import_time)
        else:
            deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _imports_in(child, rel, modules, at_import_time and not deferred)


def _absolute_base(node: ast.ImportFrom, rel: Path) -> str:
    if not node.level:
        return node.module or ""
    package = list(rel.parent.parts)[: len(rel.parent.parts) - node.level + 1]
    return ".".join([*package, *([node.module] if node.module else [])])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


Violation = tuple[Import, str]


def app_reaches_upward_or_torch(tree: SourceTree) -> list[Violation]:
    """app/ imports neither the workers, the CLI root nor torch/torchvision/timm."""
    return [
        (imp, f"{imp}: app/ must not import {imp.module} (workers, fopro and torch sit above it)")
        for imp in tree.imports_under("app/")
        if _within(imp.module, ("workers", "fopro", *TORCH))
    ]


def api_engine_modules_loading_torch(tree: SourceTree) -> list[Violation]:
    """Each foprokd module app/ imports loads no torch at import time, through foprokd."""
    found = []
    for imp in tree.imports_under("app/"):
        if not _within(imp.module, ("foprokd",)):
            continue
        chain = {name: [name] for name in tree.loaded_by(imp.module)}
        pending = list(chain)
        while pending:
            module = pending.pop()
            for inner in tree.imports[tree.modules[module]]:
                if not inner.at_import_time:
                    continue
                if _within(inner.module, TORCH):
                    route = " -> ".join(chain[module])
                    found.append(
                        (imp, f"{imp} loads {inner.module} at import time via {route}: {inner}")
                    )
                for loaded in tree.loaded_by(inner.module):
                    if _within(loaded, ("foprokd",)) and loaded not in chain:
                        chain[loaded] = [*chain[module], loaded]
                        pending.append(loaded)
    return found


def engine_reaches_the_service(tree: SourceTree) -> list[Violation]:
    """foprokd/ imports neither app, workers nor the CLI root."""
    return [
        (imp, f"{imp}: the engine must not import {imp.module} (it is usable on its own)")
        for imp in tree.imports_under("foprokd/")
        if _within(imp.module, ("app", "workers", "fopro"))
    ]


def workers_reach_the_cli_root(tree: SourceTree) -> list[Violation]:
    """workers/ does not import the CLI root."""
    return [
        (imp, f"{imp}: workers must not import the CLI root {imp.module}")
        for imp in tree.imports_under("workers/")
        if _within(imp.module, ("fopro",))
    ]


def core_reaches_above_itself(tree: SourceTree) -> list[Violation]:
    """app/core/ imports nothing from app outside app.core (no domain, no deps, no main)."""
    return [
        (
            imp,
            f"{imp}: app.core must not import {imp.module}; move it up or the primitive down",
        )
        for imp in tree.imports_under("app/core/")
        if _within(imp.module, ("app",)) and not _within(imp.module, ("app.core",))
    ]


def non_cli_modules_importing_a_cli(tree: SourceTree) -> list[Violation]:
    """Only the CLI root and ``foprokd/__main__.py`` import a CLI module."""
    return [
        (imp, f"{imp}: only the CLI root may import the command line {imp.module}")
        for path, imports in tree.imports.items()
        if not path.startswith(CLI_IMPORTERS)
        for imp in imports
        if _within(imp.module, CLI_MODULES)
    ]


RULES: list[Callable[[SourceTree], list[Violation]]] = [
    app_reaches_upward_or_torch,
    api_engine_modules_loading_torch,
    engine_reaches_the_service,
    workers_reach_the_cli_root,
    core_reaches_above_itself,
    non_cli_modules_importing_a_cli,
]


@pytest.fixture(scope="module")
def tree() -> SourceTree:
    return SourceTree.parse(ROOT)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_imports_point_down(
    tree: SourceTree, rule: Callable[[SourceTree], list[Violation]]
) -> None:
    unexpected = [message for _imp, message in rule(tree)]
    assert not unexpected, f"{rule.__doc__}\n" + "\n".join(unexpected)


PLANTED = {
    "app_reaches_upward_or_torch": (
        "app/jobs/tasks.py",
        "def send():\n    import workers.ingest\n",
    ),
    "api_engine_modules_loading_torch": (
        "app/jobs/schemas.py",
        "from foprokd.catalog import STUDENTS\n",
    ),
    "engine_reaches_the_service": ("foprokd/trainer.py", "from app.core.config import Settings\n"),
    "workers_reach_the_cli_root": ("workers/ingest.py", "from fopro.cli import cli\n"),
    "core_reaches_above_itself": ("app/core/db.py", "from app.teams import service\n"),
    "non_cli_modules_importing_a_cli": ("bench/fashion_lt.py", "from foprokd import cli\n"),
}


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_each_rule_names_a_planted_bad_import(
    tmp_path: Path, rule: Callable[[SourceTree], list[Violation]]
) -> None:
    # Deferred imports (the lazy torch in cli.py, timm under TYPE_CHECKING) must not count.
    engine = {
        "foprokd/__init__.py": '"""The engine."""\n',
        "foprokd/catalog.py": "from foprokd import zoo\n",
        "foprokd/zoo.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import timm\n"
        "import torch\n",
        "foprokd/cli.py": "def main():\n    import torch\n",
    }
    path, source = PLANTED[rule.__name__]
    for rel, text in {**engine, path: source}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    messages = [message for _, message in rule(SourceTree.parse(tmp_path))]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{path}:"), messages
    assert source.strip().splitlines()[-1].strip() in messages[0]

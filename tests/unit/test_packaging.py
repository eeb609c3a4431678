"""One import package, ``taskward``: every product folder is in it, and the repository's folder names
are not importable packages of their own."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

import taskward

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"taskward": REPO / "node", "taskward.coordinator": REPO / "coordinator"}


def package_folders() -> set[str]:
    found = set()
    for prefix, root in ROOTS.items():
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            if prefix == "taskward" and init.parent.is_relative_to(ROOTS["taskward.coordinator"]):
                continue
            found.add(".".join([prefix, *parts]))
    return found


def test_every_package_folder_is_shipped() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"taskward": "node", "taskward.coordinator": "coordinator"}
    assert set(setuptools["packages"]) == package_folders()
    assert project["project"]["scripts"] == {"taskward": "taskward.cli:main"}
    assert project["project"]["entry-points"]["taskward.tasks"] == {"builtin": "taskward.builtin_tasks"}


def test_the_public_api() -> None:
    for name in ("task_type", "TaskContext", "TaskMiddleware", "task_middleware", "TaskAborted"):
        assert name in taskward.__all__ and hasattr(taskward, name)
    assert taskward.__file__ is not None and Path(taskward.__file__).parent == ROOTS["taskward"]


@pytest.mark.parametrize(("folder", "name"), [("node", "node"), ("coordinator", "coordinator")])
def test_a_folder_name_import_fails_loudly(folder: str, name: str) -> None:
    """``import node`` from the repository root would load a second copy of every module: refused."""
    spec = importlib.util.spec_from_file_location(name, REPO / folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=f"import taskward.*not {name}"):
        spec.loader.exec_module(module)


def test_every_product_module_imports() -> None:
    """Annotations and base classes are evaluated at import: a type that exists only for the checker
    fails here, in seconds, not in the first process a slow test starts."""
    from tests.unit.test_layering import modules

    for name in sorted(set(modules()) - {"taskward.__main__"}):  # __main__ runs the CLI
        importlib.import_module(name)

"""Dependencies point one way: scripts -> experiments -> research."""

import ast
import pathlib

from conftest import REPO_ROOT


def _imported_top_level_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_research_never_imports_experiments_or_scripts():
    files = list((pathlib.Path(REPO_ROOT) / "research").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        assert not _imported_top_level_packages(path) & {"experiments", "scripts"}, path


def test_experiments_never_import_scripts():
    for path in (pathlib.Path(REPO_ROOT) / "experiments").rglob("*.py"):
        assert "scripts" not in _imported_top_level_packages(path), path

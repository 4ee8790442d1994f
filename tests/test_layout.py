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


def test_experiments_never_import_other_experiments():
    """Each experiment is a composition of research/; what two experiments share belongs in research/."""
    files = list((pathlib.Path(REPO_ROOT) / "experiments").rglob("*.py"))
    assert len(files) > 3
    for path in files:
        assert "experiments" not in _imported_top_level_packages(path), path


def test_every_experiment_has_the_common_entry_points():
    """get_config, setup (for lr_find, lr_grid, the benchmarks), train_and_evaluate, predict, and a docstring
    that gives the command that runs it."""
    for path in (pathlib.Path(REPO_ROOT) / "experiments").glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {"get_config", "setup", "train_and_evaluate"} <= functions, (path, functions)
        assert "scripts/train.py --config experiments/" in (ast.get_docstring(tree) or ""), path

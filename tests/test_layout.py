"""The layout's rules, checked on the source (no imports run):
- dependencies point one way, scripts -> experiments -> research; no experiment imports another;
- research/core imports no area package, and an area imports only research.core;
- no module reaches another module's underscore names;
- every experiment keeps the contract (research/core/experiment.py) and stays a short composition;
- research/ has a handful of top-level entries and the README stays a front door."""

import ast
import importlib
import inspect
import pathlib
import types

import pytest

from conftest import REPO_ROOT
from research.core.experiment import Capabilities

ROOT = pathlib.Path(REPO_ROOT)
AREAS = ("vision", "text", "tabular", "collab")
PROJECT_PACKAGES = ("research", "experiments", "scripts")


def _python_files(*folders: str) -> list[pathlib.Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def imported_modules(tree: ast.AST) -> set[str]:
    """Dotted names of every module an absolute import in `tree` reaches (`from a.b import c` gives a.b and
    a.b.c, since c may be a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _parse(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def dependency_errors(path: pathlib.Path, tree: ast.AST) -> list[str]:
    """The import rules broken by one file (its place in the tree says which rules apply)."""
    relative = path.relative_to(ROOT).parts
    imported = imported_modules(tree)
    tops = {name.split(".")[0] for name in imported}
    errors = []
    if relative[0] == "research":
        errors += [f"research imports {top}" for top in tops & {"experiments", "scripts"}]
        packages = {name.split(".")[1] for name in imported if name.startswith("research.") and name.count(".") >= 1}
        own = relative[1] if len(relative) > 2 else None  # research/<package>/file.py
        allowed = {"core"} if own == "core" else {"core", own}
        errors += [f"research/{own} imports research.{p}" for p in sorted(packages - allowed) if p in AREAS + ("core",)]
    elif relative[0] == "experiments":
        errors += [f"an experiment imports {name}" for name in sorted(imported)
                   if name.split(".")[0] in ("experiments", "scripts")]
    return errors


def _is_ours(module: str) -> bool:
    """A module of the project's packages, or another test module (tests import helpers from each other)."""
    return module.split(".")[0] in PROJECT_PACKAGES or module.startswith(("test_", "conftest"))


def private_name_errors(tree: ast.AST) -> list[str]:
    """Underscore names of the project's other modules used here: `from m import _x` or `m._x` where `m` was
    imported from research, experiments or scripts."""
    errors, project_aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _is_ours(node.module):
            for alias in node.names:
                if alias.name.startswith("_"):
                    errors.append(f"from {node.module} import {alias.name}")
                project_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_ours(alias.name):
                    project_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in project_aliases):
            errors.append(f"{node.value.id}.{node.attr}")
    return errors


def contract_errors(path: pathlib.Path, module) -> list[str]:
    """An experiment module's contract: the four entry points (functions, or a recipe's bound methods),
    setup(config, mesh), CAPABILITIES declaring the optional ones it has (and only those), a docstring with its
    command, at most 200 lines."""
    errors = []
    for name in ("get_config", "setup", "train_and_evaluate", "predict"):
        if not callable(getattr(module, name, None)):
            errors.append(f"no {name}")
    if callable(getattr(module, "setup", None)):
        if list(inspect.signature(module.setup).parameters) != ["config", "mesh"]:
            errors.append("setup's arguments are not (config, mesh)")
    capabilities = getattr(module, "CAPABILITIES", None)
    if not isinstance(capabilities, Capabilities):
        errors.append("no CAPABILITIES")
    else:
        for capability, function in (("seeds", "train_and_evaluate_seeds"), ("generate", "generate")):
            defined = callable(getattr(module, function, None))
            if getattr(capabilities, capability) != defined:
                errors.append(f"CAPABILITIES.{capability}={getattr(capabilities, capability)} but {function} "
                              f"{'is' if defined else 'is not'} defined")
    if "scripts/train.py --config experiments/" not in (module.__doc__ or ""):
        errors.append("the docstring gives no `scripts/train.py --config experiments/...` command")
    lines = len(path.read_text().splitlines())
    if lines > 200:
        errors.append(f"{lines} lines (at most 200: move the recipe into research/<area>/)")
    return errors


def experiment_files() -> list[pathlib.Path]:
    return [p for p in _python_files("experiments") if p.name != "__init__.py"]


@pytest.mark.parametrize("path", _python_files(*PROJECT_PACKAGES, "tests"), ids=lambda p: str(p.relative_to(ROOT)))
def test_dependencies_point_one_way_and_private_names_stay_private(path):
    tree = _parse(path)
    assert dependency_errors(path, tree) + private_name_errors(tree) == []


@pytest.mark.parametrize("path", experiment_files(), ids=lambda p: p.name)
def test_every_experiment_keeps_the_contract(path):
    module = importlib.import_module(f"experiments.{path.stem}")
    assert contract_errors(path, module) == []


def test_the_tree_has_the_shape_the_readme_describes():
    entries = sorted(p.name for p in (ROOT / "research").iterdir() if p.name not in ("__init__.py", "__pycache__"))
    assert entries == ["collab", "core", "tabular", "text", "vision"]
    assert len(experiment_files()) >= 10
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    for area in AREAS:
        assert (ROOT / "docs" / f"{area}.md").is_file(), area


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each rule, broken on purpose in a small source, is reported."""
    core_file, vision_file = ROOT / "research/core/x.py", ROOT / "research/vision/x.py"
    assert dependency_errors(core_file, ast.parse("from research.vision import resnet")) != []
    assert dependency_errors(vision_file, ast.parse("from research.text import tokens")) != []
    assert dependency_errors(vision_file, ast.parse("import experiments.fashion_mnist")) != []
    assert dependency_errors(ROOT / "experiments/x.py", ast.parse("from experiments import pets")) != []
    assert dependency_errors(vision_file, ast.parse("from research.core import trainer")) == []
    assert private_name_errors(ast.parse("from research.core import trainer\ntrainer._step()")) != []
    assert private_name_errors(ast.parse("from research.core.trainer import _step")) != []
    assert private_name_errors(ast.parse("from test_pretrained import _torch_model")) != []
    assert private_name_errors(ast.parse("import numpy as np\nnp._x")) == []
    source = tmp_path / "bad.py"
    source.write_text('"""No command here."""\ndef get_config():\n    pass\ndef setup(config, mesh, data):\n    pass\n')
    module = types.ModuleType("bad", "No command here.")
    exec(source.read_text(), module.__dict__)
    errors = contract_errors(source, module)
    assert {"no train_and_evaluate", "no predict", "no CAPABILITIES", "setup's arguments are not (config, mesh)"} \
        <= set(errors)


def subprocess_timeout_errors(tree: ast.AST) -> list[str]:
    """Calls that can hang forever: `subprocess.run/call/check_call/check_output` without `timeout=`, and a
    process's `.wait()` or `.communicate()` without one (Popen itself takes none: its wait does)."""
    errors = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        keywords = {k.arg for k in node.keywords}
        name = node.func.attr
        if isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess" and name in (
                "run", "call", "check_call", "check_output"):
            if "timeout" not in keywords:
                errors.append(f"line {node.lineno}: subprocess.{name} without timeout")
        elif name == "communicate" and "timeout" not in keywords and not node.args:
            errors.append(f"line {node.lineno}: .communicate() without timeout")
        elif name == "wait" and "timeout" not in keywords and not node.args and isinstance(
                node.func.value, ast.Name) and node.func.value.id in ("proc", "process", "p"):
            errors.append(f"line {node.lineno}: {node.func.value.id}.wait() without timeout")
    return errors


def test_every_subprocess_in_the_tests_and_scripts_has_a_timeout():
    errors = [f"{path.relative_to(ROOT)} {error}" for path in _python_files("tests", "scripts")
              for error in subprocess_timeout_errors(ast.parse(path.read_text()))]
    assert errors == []


def test_the_timeout_check_catches_a_call_without_one():
    assert subprocess_timeout_errors(ast.parse("import subprocess\nsubprocess.run(['x'], check=True)")) != []
    assert subprocess_timeout_errors(ast.parse("proc = subprocess.Popen(['x'])\nproc.communicate()")) != []
    assert subprocess_timeout_errors(ast.parse("proc.wait()")) != []
    assert subprocess_timeout_errors(ast.parse("subprocess.run(['x'], timeout=5)\nproc.wait(timeout=5)")) == []

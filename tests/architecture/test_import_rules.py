"""The package's layering, enforced on the source (an AST walk), so that it cannot rot.

- ``lightning_info/functional/`` and ``lightning_info/_internal/`` (the math and the shared utilities) import only the
  standard library, torch, einops and each other: no Lightning, no torchmetrics, no other part of the package.
- Only the Lightning glue imports ``lightning``: ``callbacks/``, the precision plugin, the distillation callback and
  module, the demo and the command line.
- Across subpackages a module imports only public names: nothing private (``_name`` or a ``_module``) except from
  ``lightning_info._internal``, and only names the imported module lists in its ``__all__``. The one exception is
  torchmetrics' convention: a Metric calls its functional twin's ``_<name>_update`` / ``_<name>_compute``.
- ``import lightning_info`` and ``import lightning_info.functional`` load neither Lightning, matplotlib nor wandb.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_info"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
PURE_THIRD_PARTY = {"torch", "einops", "typing_extensions"}
PURE_TREES = ("functional", "_internal")
METRIC_STEPS = re.compile(r"_\w+_(update|compute)")  # torchmetrics: a Metric calls its functional's steps
LIGHTNING_GLUE = (
    "callbacks/",
    "optim/precision.py",
    "distill/mcmi_callback.py",
    "distill/module.py",
    "demo/",
    "cli.py",
)


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), filename=str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import in the file, function-level ones included."""
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _exported(module: str) -> set[str] | None:
    """The ``__all__`` of a ``lightning_info`` module read from its source (``None``: it has none)."""
    relative = Path(*module.split(".")[1:])
    path = PACKAGE / relative / "__init__.py" if (PACKAGE / relative).is_dir() else PACKAGE / f"{relative}.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


MODULES = _modules()


PURE = [m for m in MODULES if m[0].startswith(PURE_TREES)]


@pytest.mark.parametrize(("path", "tree"), PURE, ids=[m[0] for m in PURE])
def test_math_and_internal_import_only_torch(path: str, tree: ast.Module) -> None:
    for module, _, line in _imports(tree):
        root = module.split(".")[0]
        if root == "lightning_info":
            assert _subpackage(module) in PURE_TREES, f"{path}:{line} imports {module} (math imports only math)"
        else:
            assert root in STDLIB | PURE_THIRD_PARTY, f"{path}:{line} imports {module} (math imports only torch)"


@pytest.mark.parametrize(("path", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_only_the_glue_imports_lightning(path: str, tree: ast.Module) -> None:
    if path.startswith(LIGHTNING_GLUE):
        return
    for module, _, line in _imports(tree):
        assert module.split(".")[0] not in {"lightning", "pytorch_lightning"}, f"{path}:{line} imports {module}"


@pytest.mark.parametrize(("path", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_no_private_imports_across_subpackages(path: str, tree: ast.Module) -> None:
    own = path.split("/")[0] if "/" in path else ""
    for module, names, line in _imports(tree):
        if not module.startswith("lightning_info.") or _subpackage(module) in (own, "_internal"):
            continue
        where = f"{path}:{line} imports from {module}"
        assert not any(part.startswith("_") for part in module.split(".")[1:]), f"{where}: a private module"
        exported = _exported(module)
        for name in names:
            if name in ("*", "__all__") or (_subpackage(module) == "functional" and METRIC_STEPS.fullmatch(name)):
                continue  # a re-export shim takes exactly the public names; a Metric calls its functional's steps
            assert not name.startswith("_"), f"{where} the private name {name}"
            assert exported is None or name in exported, f"{where} {name}, which is not in its __all__"


@pytest.mark.parametrize("module", ["lightning_info", "lightning_info.functional"])
def test_light_imports(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('lightning', 'matplotlib', 'wandb') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"import {module} loaded {loaded}"

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_info
from tests.helpers.lightning import REPO_ROOT
from tests.helpers.wandb_reader import read_history, series

_WANDB_MODE_AT_IMPORT = os.environ.get("WANDB_MODE")


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(lightning_info.__path__, "lightning_info.")]


def test_every_module_imports() -> None:
    for name in _all_modules():
        importlib.import_module(name)


def test_public_api_is_declared() -> None:
    for name in ["lightning_info", *_all_modules()]:
        module = importlib.import_module(name)
        if "._" in name or not hasattr(module, "__path__"):
            continue  # private modules, and plain modules (only packages re-export)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for symbol in module.__all__:
            assert hasattr(module, symbol), f"{name}.__all__ lists missing {symbol}"


def test_imports_without_wandb() -> None:
    """``import lightning_info`` (every module) must work where wandb is not installed."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wandb' or name.startswith('wandb.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, lightning_info\n"
        "for m in pkgutil.walk_packages(lightning_info.__path__, 'lightning_info.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'wandb' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_wandb_logger_imports() -> None:
    """The wandb extra's upper bound: Lightning's WandbLogger must import with the installed wandb."""
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    assert WandbLogger is not None


@pytest.mark.wandb
def test_wandb_harness_round_trip(wandb_offline, tmp_path: Path) -> None:
    before = os.environ.get("WANDB_MODE")
    logger = wandb_offline()
    for step in range(5):
        logger.log_metrics({"a": float(step), "b": 2.0 * step, "c/d": -1.5 * step}, step=step)
    rows = wandb_offline.history()
    assert series(rows, "a") == [(s, s) for s in range(5)]
    assert series(rows, "b") == [(s, 2 * s) for s in range(5)]
    assert series(rows, "c/d") == [(s, -1.5 * s) for s in range(5)]
    assert read_history(tmp_path) == rows
    assert os.environ.get("WANDB_MODE") in ("dryrun", "offline")  # the logger set it process-wide ...
    assert before == _WANDB_MODE_AT_IMPORT


def test_wandb_mode_does_not_leak() -> None:
    """... and the autouse fixture removed it again before this test."""
    assert os.environ.get("WANDB_MODE") == _WANDB_MODE_AT_IMPORT

"""Shared fixtures: W&B offline runs with their history read back, environment hygiene, seeded RNG."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_isolate_env() -> Iterator[None]:
    """Seed torch and undo process-wide changes (``WandbLogger(offline=True)`` sets ``WANDB_MODE``)."""
    torch.manual_seed(0)
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture
def wandb_offline(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory for a real ``WandbLogger(offline=True)`` writing under ``tmp_path``.

    Call ``logger = wandb_offline()`` to get a logger; after training, ``wandb_offline.history()`` finishes the run
    and returns its logged rows (see ``tests/helpers/wandb_reader.py``).
    """
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    from tests.helpers.wandb_reader import read_history

    loggers: list[WandbLogger] = []

    def make(**kwargs: Any) -> WandbLogger:
        logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="lightning-info-tests", **kwargs)
        loggers.append(logger)
        return logger

    def history() -> list[dict[str, Any]]:
        for logger in loggers:
            logger.experiment.finish()
        return read_history(tmp_path / "wandb")

    make.history = history  # type: ignore[attr-defined]
    os.environ["WANDB_SILENT"] = "true"
    yield make
    for logger in loggers:
        if logger._experiment is not None:
            logger.experiment.finish()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread: small matmuls gain nothing from threads, and on a busy machine intra-op
    threads only spin and slow the test down. The previous thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

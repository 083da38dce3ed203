"""Demo part ``csib``: registered as a default extra stage; trains on diabetes and logs both CS-IB terms."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightning_info.demo import PARTS, DemoContext
from lightning_info.demo.report import MetricsHistory
from tests.helpers.wandb_reader import series


@pytest.mark.wandb
def test_csib_stage_trains_and_logs_into_the_demo_loggers(tmp_path: Path, wandb_offline: Callable[..., Any]) -> None:
    part = PARTS["csib"]
    assert part.default
    ctx = DemoContext(fast=True, seed=0, out=tmp_path)
    part.configure(ctx)
    assert len(ctx.extra_stages) == 1 and not ctx.callbacks and ctx.optimizer_factory is None
    history = MetricsHistory()
    ctx.loggers[:] = [wandb_offline(), history]
    summary = ctx.extra_stages[0](ctx)
    assert set(summary) == {f"diabetes_{m}_test_{k}" for m in ("csib", "mse") for k in ("rmse", "r2")}
    assert all(math.isfinite(v) for v in summary.values())
    assert 20 < summary["diabetes_csib_test_rmse"] < 200  # target units (diabetes progression, std ~77)
    rows = wandb_offline.history()
    steps = [step for step, _ in series(rows, "csib/compression")]
    assert steps == [step for step, _ in series(rows, "csib/prediction")] and len(steps) == 10  # 2 epochs x 5
    assert all(math.isfinite(v) for _, v in series(rows, "csib/prediction"))
    assert len(history.series("csib/compression")[1]) == 10
    # two stages, the MSE baseline logged too
    assert [stage.name for stage in ctx.stages] == ["CS-IB regressor (diabetes)", "MSE regressor (diabetes)"]
    assert len(series(rows, "diabetes/test_rmse")) == 2

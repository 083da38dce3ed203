"""Run the demo: build the context from the chosen parts, train, test, report."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_info.demo.data import load_digits_tokens
from lightning_info.demo.model import DigitsTransformer
from lightning_info.demo.parts import PARTS, DemoContext
from lightning_info.demo.report import MetricsHistory, format_table, write_report


@dataclass
class DemoConfig:
    """Demo options (the command line's flags)."""

    parts: list[str]
    out: Path = Path("runs")
    seed: int = 0
    fast: bool = False
    wandb: bool = True
    max_epochs: int = 25

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown demo parts {unknown}; available: {sorted(PARTS)}")


def _logger(config: DemoConfig) -> tuple[Logger, str]:
    if config.wandb and importlib.util.find_spec("wandb") is not None:
        from lightning.pytorch.loggers import WandbLogger

        wandb_logger = WandbLogger(offline=True, save_dir=str(config.out), project="lightning-info-demo")
        run_dir = Path(wandb_logger.experiment.dir).parent  # .../wandb/offline-run-*/files -> the run folder
        return wandb_logger, str(run_dir)
    if config.wandb:
        print("[demo] wandb is not installed: logging to CSV instead (pip install 'lightning-info[wandb]')")
    csv_logger = CSVLogger(str(config.out), name="lightning-info-demo")
    return csv_logger, csv_logger.log_dir


def run_demo(config: DemoConfig) -> dict[str, float]:
    """Train the digits transformer with the chosen parts; print and return the summary (metric -> value)."""
    started = time.perf_counter()
    seed_everything(config.seed, workers=True, verbose=False)
    config.out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(fast=config.fast, seed=config.seed, out=config.out)
    for name in config.parts:
        PARTS[name].configure(ctx)

    data = load_digits_tokens(seed=config.seed)
    model = DigitsTransformer(optimizer_factory=ctx.optimizer_factory)
    logger, run_location = _logger(config)
    history = MetricsHistory()
    ctx.loggers[:] = [logger, history]
    trainer_kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1 if config.fast else config.max_epochs,
        "limit_train_batches": 4 if config.fast else 1.0,
        "limit_val_batches": 2 if config.fast else 1.0,
        "limit_test_batches": 2 if config.fast else 1.0,
        "logger": [logger, history],
        "log_every_n_steps": 1 if config.fast else 5,
        "callbacks": ctx.callbacks,
        "default_root_dir": str(config.out),
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "enable_model_summary": not config.fast,
        **ctx.trainer_kwargs,
    }
    trainer = Trainer(**trainer_kwargs)
    batch_size = 64
    trainer.fit(model, data.loader("train", batch_size, shuffle=True, seed=config.seed), data.loader("val", 256))
    # what callbacks logged straight to the loggers (monitors) is in the history; ``self.log`` values are also in
    # ``callback_metrics`` (epoch aggregates included), which take precedence
    metrics = history.latest()
    metrics.update(
        {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
    )
    tested = trainer.test(model, data.loader("test", 256), verbose=False)[0]

    summary: dict[str, float] = {"test_acc": tested["test_acc"], "test_loss": tested["test_loss"]}
    summary.update({k: metrics[k] for k in ("val_acc", "val_loss", "train_loss") if k in metrics})
    summary.update({k: metrics[k] for k in ctx.summary_keys if k in metrics})
    for stage in ctx.extra_stages:
        summary.update(stage(ctx))
    summary["wall_time_s"] = time.perf_counter() - started

    files = write_report(config.out, summary, history, run_location)
    if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
        logger.experiment.finish()
    print("\n" + format_table(summary))
    print(f"\n[demo] parts: {', '.join(config.parts) or 'baseline only'}")
    print(f"[demo] run logged at {run_location}")
    if "wandb" in run_location:
        print(f"[demo] view it online with:  wandb sync {run_location}")
    print(f"[demo] report and figures: {', '.join(str(f) for f in files)}")
    return summary

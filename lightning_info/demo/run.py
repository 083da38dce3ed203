"""Run the demo: build the context from the chosen parts, train stage by stage, test, report."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_info._internal.validation import check_int
from lightning_info.demo.data import load_digits_tokens
from lightning_info.demo.model import DigitsTransformer
from lightning_info.demo.parts import PARTS, DemoContext, Stage
from lightning_info.demo.report import SETTINGS, MetricsHistory, format_stages, format_table, write_report

MAIN_STAGE = "digits transformer"
_MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything accepts


def default_threads() -> int:
    """Torch threads for the demo: 1 on machines with up to 2 usable cores, else half of them, at most 8.

    The demo's models are tiny: on a busy 2-core machine torch's default (one thread per core) trained 15x slower than
    one thread (576 s vs 37.5 s), and more than a few threads never help models this small.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if cores <= 2 else min(cores // 2, 8)


@dataclass
class DemoConfig:
    """Demo options (the command line's flags); invalid values raise ``ValueError`` naming the option.

    Each run writes into its own timestamped folder under ``out`` (``out/latest`` links to the newest).
    """

    parts: list[str]
    out: Path = Path("runs")
    seed: int = 0
    fast: bool = False
    wandb: bool = True
    max_epochs: int = 25
    threads: int = field(default_factory=default_threads)

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown demo parts {unknown}; available: {sorted(PARTS)}")
        groups: dict[str, list[str]] = {}
        for name in dict.fromkeys(self.parts):
            if PARTS[name].group is not None:
                groups.setdefault(PARTS[name].group or "", []).append(name)
        for group, names in groups.items():
            if len(names) > 1:
                choices = sorted(p.name for p in PARTS.values() if p.group == group)
                raise ValueError(f"parts {names} each set the {group}: use one of {choices}")
        if not 0 <= check_int("seed", self.seed) <= _MAX_SEED:
            raise ValueError(f"seed must be in [0, {_MAX_SEED}], got {self.seed}")
        check_int("max_epochs", self.max_epochs, min_value=1)
        check_int("threads", self.threads, min_value=1)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(
                f"out must be a folder (runs go into timestamped folders inside it), got the file {self.out}"
            )

    @property
    def optimizer(self) -> str:
        """The optimizer part among ``parts``, else ``"adamw"`` (the model's own)."""
        return next((p for p in self.parts if PARTS[p].group == "optimizer"), "adamw")

    def settings(self) -> dict[str, Any]:
        """The settings logged as every stage's hyper-parameters and listed at the top of ``summary.md``."""
        values = {key: getattr(self, key) for key in SETTINGS}
        values["parts"] = list(self.parts)
        return values


def new_run_dir(out: Path) -> Path:
    """Create ``out/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when taken) and point ``out/latest`` at it."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, attempt = out / stamp, 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:  # two runs in the same second
            attempt += 1
            run_dir = out / f"{stamp}-{attempt}"
    latest = out / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # no symlinks (Windows without developer mode): the printed path is enough
            latest.symlink_to(run_dir.name, target_is_directory=True)
    return run_dir


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class _StageLoggers:
    """One logger per stage: a W&B offline run named after the stage in the run's group, else a CSV folder."""

    def __init__(self, config: DemoConfig, run_dir: Path, history: MetricsHistory) -> None:
        self.run_dir, self.history = run_dir, history
        self.wandb = config.wandb and importlib.util.find_spec("wandb") is not None
        if config.wandb and not self.wandb:
            print("[demo] wandb is not installed: logging to CSV instead (pip install 'lightning-info[wandb]')")
        self.location = str(run_dir / ("wandb" if self.wandb else "csv"))

    def open(self, name: str) -> list[Logger]:
        logger: Logger
        if self.wandb:
            import wandb
            from lightning.pytorch.loggers import WandbLogger

            group = f"demo-{self.run_dir.name}"
            logger = WandbLogger(
                offline=True,
                save_dir=str(self.run_dir),
                project="lightning-info-demo",
                name=name,
                group=group,
                settings=wandb.Settings(silent=True),  # the demo prints where the runs are, once, at the end
            )
            # Lightning always passes anonymous=None, which wandb >= 0.31 warns about on every run
            logger._wandb_init.pop("anonymous", None)
        else:
            logger = CSVLogger(str(self.run_dir), name="csv", version=_slug(name))
        return [logger, self.history] if name == MAIN_STAGE else [logger]

    def close(self, stage: Stage) -> None:
        logger = stage.loggers[0]
        experiment = getattr(logger, "experiment", None)
        if self.wandb and experiment is not None:
            experiment.summary.update(
                {
                    "demo_summary": stage.summary,
                    "demo_stage": {
                        "index": stage.index,
                        "name": stage.name,
                        "epochs": stage.epochs,
                        "seconds": stage.seconds,
                    },
                }
            )
            experiment.finish()
        else:
            logger.save()


def run_demo(config: DemoConfig) -> dict[str, float]:
    """Train the digits transformer with the chosen parts; print and return the summary (metric -> value).

    The process is left as it was found: environment variables the run sets (``PL_GLOBAL_SEED`` from
    ``seed_everything``, ``WANDB_MODE`` from the offline W&B logger, ...), torch's thread count and the level of
    Lightning's info logger are restored when the demo returns or raises.
    """
    environ = dict(os.environ)
    threads = torch.get_num_threads()
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero_logger.level
    try:
        return _run_demo(config)
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        rank_zero_logger.setLevel(level)


def _run_demo(config: DemoConfig) -> dict[str, float]:
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    run_dir = new_run_dir(config.out)
    print(
        f"[demo] parts: {', '.join(config.parts) or 'baseline only'}; optimizer: {config.optimizer}; "
        f"seed {config.seed}; torch threads: {config.threads} (--threads); output: {run_dir}"
    )
    # Lightning's per-Trainer info lines (GPU/TPU available, `Trainer.fit` stopped) would bury the stage headers
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    history = MetricsHistory()
    stage_loggers = _StageLoggers(config, run_dir, history)
    settings = config.settings()
    ctx = DemoContext(fast=config.fast, seed=config.seed, out=run_dir, settings=settings)
    ctx.open_stage, ctx.close_stage = stage_loggers.open, stage_loggers.close
    ctx.plan(MAIN_STAGE)
    seed_everything(config.seed, workers=True, verbose=False)
    for name in config.parts:
        PARTS[name].configure(ctx)

    data = load_digits_tokens(seed=config.seed)
    model = DigitsTransformer(optimizer_factory=ctx.optimizer_factory)
    epochs = 1 if config.fast else config.max_epochs
    with ctx.stage(MAIN_STAGE, epochs) as stage:
        trainer_kwargs: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": epochs,
            "limit_train_batches": 4 if config.fast else None,
            "limit_val_batches": 2 if config.fast else None,
            "limit_test_batches": 2 if config.fast else None,
            "logger": stage.loggers,
            "log_every_n_steps": 1 if config.fast else 5,
            "callbacks": [*ctx.callbacks, stage.progress_bar()],
            "default_root_dir": str(run_dir),
            "enable_checkpointing": False,
            "num_sanity_val_steps": 0,
            "enable_model_summary": not config.fast,
            **ctx.trainer_kwargs,
        }
        trainer = Trainer(**trainer_kwargs)
        trainer.fit(model, data.loader("train", 64, shuffle=True, seed=config.seed), data.loader("val", 256))
        # what callbacks logged straight to the loggers (monitors) is in the history; ``self.log`` values are also in
        # ``callback_metrics`` (epoch aggregates included), which take precedence
        metrics = history.latest()
        metrics.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        )
        tested = trainer.test(model, data.loader("test", 256), verbose=False)[0]
        stage.summary.update({"test_acc": tested["test_acc"], "test_loss": tested["test_loss"]})
        stage.summary.update({k: metrics[k] for k in ("val_acc", "val_loss", "train_loss") if k in metrics})
        stage.summary.update({k: metrics[k] for k in ctx.summary_keys if k in metrics})
    summary = dict(stage.summary)
    for extra in ctx.extra_stages:
        summary.update(extra(ctx))

    times = [(s.name, s.epochs, s.seconds) for s in ctx.stages]
    files = write_report(run_dir, summary, history, stage_loggers.location, settings, times)
    print("\n" + format_table(summary))
    print("\n" + format_stages(times))
    print(f"\n[demo] total wall time {time.perf_counter() - started:.1f}s; torch threads: {config.threads}")
    print(f"[demo] runs logged at {stage_loggers.location} (one per stage)")
    if stage_loggers.wandb:
        print(f"[demo] read them back here:  lightning-info report {run_dir}")
        print(f"[demo] view them online with:  wandb sync {run_dir / 'wandb'}/offline-run-*")
    print(f"[demo] report and figures: {', '.join(str(f) for f in files)}")
    return summary

"""The registry of demo parts: each part configures the shared :class:`DemoContext` before training."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import Logger

from lightning_info.demo.model import OptimizerFactory


@dataclass
class Stage:
    """One ``Trainer.fit`` of the demo: its place in the run, its loggers, what it adds to the summary, its time."""

    name: str
    index: int
    total: int
    epochs: int
    loggers: list[Logger]
    summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, values: Mapping[str, float]) -> None:
        """Add ``values`` to the stage's summary and log them (one row, no step) to the stage's loggers."""
        self.summary.update(values)
        for logger in self.loggers:
            logger.log_metrics(dict(values))

    @staticmethod
    def progress_bar() -> ProgressBar:
        """A fresh progress bar for the stage's Trainer: Rich's when ``rich`` is installed, else TQDM's."""
        return RichProgressBar() if importlib.util.find_spec("rich") is not None else TQDMProgressBar()


@dataclass
class DemoContext:
    """What parts may change: the classifier's callbacks and optimizer, extra stages, and the summary keys.

    ``out`` is the run's output folder. Every ``Trainer.fit`` runs inside :meth:`stage`, which prints the stage's
    header, gets the stage's loggers from ``open_stage`` (the demo opens one W&B run per stage in one group) or, when
    that is not set, uses ``loggers``; logs ``settings`` and the stage's own hyper-parameters to them, times the stage
    and hands it to ``close_stage``. ``plan`` names the stages up front so the headers can count them.
    """

    fast: bool
    seed: int
    out: Path = Path("runs")
    loggers: list[Logger] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    optimizer_factory: OptimizerFactory | None = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    summary_keys: list[str] = field(default_factory=list)
    extra_stages: list[Callable[[DemoContext], dict[str, float]]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    planned: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    open_stage: Callable[[str], list[Logger]] | None = None
    close_stage: Callable[[Stage], None] | None = None
    echo: Callable[[str], None] = print

    def plan(self, *names: str) -> None:
        """Announce stages that will run (in order), so each header can say ``[demo i/n]``."""
        self.planned.extend(names)

    @contextmanager
    def stage(self, name: str, epochs: int, **hparams: Any) -> Iterator[Stage]:
        """Run one stage: header, loggers with the settings and ``hparams`` logged, timing, then ``close_stage``."""
        if name not in self.planned:
            self.planned.append(name)
        index = self.planned.index(name) + 1
        self.echo(f"\n[demo {index}/{len(self.planned)}] {name}, {epochs} epoch{'s' if epochs != 1 else ''}")
        started = time.perf_counter()
        loggers = self.open_stage(name) if self.open_stage is not None else list(self.loggers)
        for logger in loggers:
            logger.log_hyperparams({**self.settings, "stage": name, "stage_epochs": epochs, **hparams})
        current = Stage(name, index, len(self.planned), epochs, loggers)
        try:
            yield current
        finally:
            current.seconds = time.perf_counter() - started
            self.stages.append(current)
            if self.close_stage is not None:
                self.close_stage(current)


@dataclass(frozen=True)
class Part:
    """One demo flag: ``configure`` edits the context; ``default`` parts run when ``--parts`` is not given.

    Parts sharing a ``group`` exclude each other (e.g. ``"optimizer"``: each replaces the model's optimizer).
    """

    name: str
    help: str
    configure: Callable[[DemoContext], None]
    default: bool = True
    group: str | None = None


PARTS: dict[str, Part] = {}


def register_part(
    name: str, help: str, default: bool = True, group: str | None = None
) -> Callable[[Callable[[DemoContext], None]], Part]:
    """Decorator registering ``configure(ctx)`` as the demo part ``name`` (``group``: see :class:`Part`)."""

    def wrap(configure: Callable[[DemoContext], None]) -> Part:
        if name in PARTS:
            raise ValueError(f"demo part {name!r} is registered twice")
        PARTS[name] = Part(name, help, configure, default, group)
        return PARTS[name]

    return wrap

"""The registry of demo parts: each part configures the shared :class:`DemoContext` before training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger

from lightning_info.demo.model import OptimizerFactory


@dataclass
class DemoContext:
    """What parts may change: the classifier's callbacks and optimizer, extra stages, and the summary keys.

    ``out`` is the demo's output folder and ``loggers`` the run's loggers (filled in before training starts, so extra
    stages can log into the same W&B run and write their figures next to the report).
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


@dataclass(frozen=True)
class Part:
    """One demo flag: ``configure`` edits the context; ``default`` parts run when ``--parts`` is not given."""

    name: str
    help: str
    configure: Callable[[DemoContext], None]
    default: bool = True


PARTS: dict[str, Part] = {}


def register_part(name: str, help: str, default: bool = True) -> Callable[[Callable[[DemoContext], None]], Part]:
    """Decorator registering ``configure(ctx)`` as the demo part ``name``."""

    def wrap(configure: Callable[[DemoContext], None]) -> Part:
        if name in PARTS:
            raise ValueError(f"demo part {name!r} is registered twice")
        PARTS[name] = Part(name, help, configure, default)
        return PARTS[name]

    return wrap

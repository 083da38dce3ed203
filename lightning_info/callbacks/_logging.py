"""Log scalars and figures to every logger of a ``Trainer``: the one place the callbacks' logging loop is written.

``wandb``, ``numpy`` and ``matplotlib`` are imported inside the functions, only when a figure goes to a logger that
needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_path", "log_figure", "log_scalars"]


def log_scalars(trainer: Trainer, metrics: Mapping[str, Any], step: int) -> None:
    """``logger.log_metrics(metrics, step=step)`` on every logger of ``trainer`` (none: nothing happens).

    Each logger decides on which ranks it writes (Lightning's loggers: rank 0 only).
    """
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)


def figure_path(log_dir: str | Path, key: str, step: int) -> Path:
    """Where :func:`log_figure` saves ``key``'s figure for a logger that takes no figures.

    ``<log_dir>/figures/<key, "/" replaced by "_">_step<step>.png``.
    """
    return Path(log_dir) / "figures" / f"{key.replace('/', '_')}_step{step}.png"


def log_figure(
    trainer: Trainer, key: str, figure: Figure, step: int, *, wandb_extra: Mapping[str, Any] | None = None
) -> None:
    """Log a matplotlib ``Figure`` under ``key`` at ``step`` to every logger of ``trainer``, on rank 0.

    - ``WandbLogger``: ``[wandb.Image]`` under ``key`` (as ``WandbLogger.log_image`` does), with ``wandb_extra``
      (W&B-only values: tables, plots) in the same row;
    - ``TensorBoardLogger``: an image summary (what ``SummaryWriter.add_figure`` writes), tag ``key``;
    - ``MLFlowLogger``: the artifact ``<key>_step<step>.png`` (``MlflowClient.log_figure``);
    - any other logger with a ``log_dir`` (``CSVLogger``, ...): a PNG file at :func:`figure_path`; a logger
      without one (``log_dir`` is ``None``) gets nothing.

    The figure is drawn once (no ``pyplot``: a ``matplotlib.figure.Figure`` built directly works) and not closed.
    """
    if not trainer.is_global_zero:
        return
    pixels = None
    for logger in trainer.loggers:
        if isinstance(logger, (WandbLogger, TensorBoardLogger)) and pixels is None:
            pixels = _pixels(figure)
        if isinstance(logger, WandbLogger):
            import wandb

            row: dict[str, Any] = {key: [wandb.Image(pixels)], **(wandb_extra or {})}  # as WandbLogger.log_image
            logger.log_metrics(row, step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, pixels, global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, figure, f"{key}_step{step}.png")
        elif logger.log_dir is not None:
            path = figure_path(logger.log_dir, key, step)
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path)


def _pixels(figure: Figure) -> Any:
    """The figure drawn by Agg as an ``(H, W, 3)`` uint8 array (``wandb.Image`` needs pyplot for a bare Figure)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()

"""Figures of :class:`~lightning_info.callbacks.InformationMonitor`: layer-by-metric heatmap, information plane.

``wandb`` and ``matplotlib`` are imported here only, when a figure is logged. Without matplotlib the heatmap
image is skipped (the same numbers still go to W&B's ``info/metrics_table`` table).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger

from lightning_info.callbacks._logging import log_figure


def metric_grid(latest: Mapping[str, float], layers: Sequence[str]) -> tuple[list[str], list[str], list[list[float]]]:
    """``(layers, metric names, values)`` of the ``info/<layer>/<metric>`` keys; missing pairs are NaN.

    Layers keep the order of ``layers`` (then any other layer found in the keys); metric names are sorted.
    """
    found = [key.split("/")[1] for key in latest]
    rows = [layer for layer in layers if layer in found] + sorted(set(found) - set(layers))
    names = sorted({key.rsplit("/", 1)[1] for key in latest})
    return rows, names, [[latest.get(f"info/{layer}/{name}", math.nan) for name in names] for layer in rows]


_MIN_SPAN = 1.0  # the smallest colour range of a metric, in its own unit (nats, samples, ...)


def column_ranges(grid: list[list[float]]) -> list[tuple[float, float]]:
    """The colour range ``(low, high)`` of each metric (column) of the heatmap.

    ``low = min(0, column min)`` and ``high = max(column max, low + 1)``: every metric is coloured on its own
    scale, starting at 0, and spans at least one of its units, so a column of tiny values (a DSMI of 1e-5) stays
    dark instead of being stretched to full colour. All-NaN columns get ``(0, 1)``.
    """
    ranges = []
    for column in zip(*grid, strict=True) if grid else []:
        finite = [v for v in column if math.isfinite(v)]
        low = min([0.0, *finite])
        ranges.append((low, max([*finite, low + _MIN_SPAN])))
    return ranges


def heatmap_figure(rows: list[str], names: list[str], grid: list[list[float]], step: int) -> Any:
    """The layer x metric heatmap as a ``matplotlib.figure.Figure`` (no pyplot: no global figure state).

    Each metric is coloured on its own range (:func:`column_ranges`), written under its name; every cell shows its
    value, in black on light colours and white on dark ones (NaN: an empty grey cell marked "n/a").
    """
    import numpy as np
    from matplotlib.figure import Figure

    values = np.array(grid, dtype=float).reshape(len(rows), len(names))
    ranges = column_ranges(grid)
    low = np.array([r[0] for r in ranges]).reshape(1, -1)
    high = np.array([r[1] for r in ranges]).reshape(1, -1)
    shown = np.clip((values - low) / (high - low), 0.0, 1.0)
    fig = Figure(figsize=(1.5 * len(names) + 2.5, 0.5 * len(rows) + 2.0))
    ax = fig.add_subplot()
    ax.set_facecolor("lightgrey")
    ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    labels = [f"{name}\n[{lo:.3g}, {hi:.3g}]" for name, (lo, hi) in zip(names, ranges, strict=True)]
    ax.set_xticks(range(len(names)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(names)):
            if not math.isfinite(values[i, j]):
                ax.text(j, i, "n/a", ha="center", va="center", color="black", fontsize=8)
                continue
            colour = "black" if shown[i, j] > 0.6 else "white"  # viridis is light above ~0.6
            ax.text(j, i, f"{values[i, j]:.3g}", ha="center", va="center", color=colour, fontsize=8)
    ax.set_title(
        f"information metrics, step {step}\n(colour: each metric on its own range [low, high], shown under it)"
    )
    fig.tight_layout()
    return fig


def log_information_figures(
    trainer: Trainer,
    latest: Mapping[str, float],
    plane: Mapping[str, Sequence[Sequence[float]]],
    layers: Sequence[str],
    step: int,
) -> None:
    """Log ``info/heatmap`` (with matplotlib) to every logger; to W&B also ``info/metrics_table`` and ``info/plane``.

    The W&B values share one row with the heatmap (:func:`~lightning_info.callbacks._logging.log_figure`'s
    ``wandb_extra``); ``info/plane`` is logged when ``plane`` has points. ``plane`` maps a layer to its
    ``[step, I(X;T), I(T;Y)]`` points; the scatter shows every layer's trajectory.
    """
    rows, names, grid = metric_grid(latest, layers)
    wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    extra: dict[str, Any] = {}
    if wandb_loggers:
        import wandb

        table = [[row, *values] for row, values in zip(rows, grid, strict=True)]
        extra["info/metrics_table"] = wandb.Table(columns=["layer", *names], data=table)
        points = [[layer, int(s), ixt, ity] for layer, layer_points in plane.items() for s, ixt, ity in layer_points]
        if points:
            trajectory = wandb.Table(columns=["layer", "step", "I(X;T)", "I(T;Y)"], data=points)
            extra["info/plane"] = wandb.plot.scatter(trajectory, "I(X;T)", "I(T;Y)", title="information plane (nats)")
    if importlib.util.find_spec("matplotlib") is not None:
        log_figure(trainer, "info/heatmap", heatmap_figure(rows, names, grid, step), step, wandb_extra=extra)
    elif trainer.is_global_zero:
        for logger in wandb_loggers:
            logger.log_metrics(extra, step=step)

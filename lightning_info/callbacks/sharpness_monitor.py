"""``SharpnessMonitor``: log the statistics of sharpness-aware optimizers after their steps."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_info._internal.validation import check_int
from lightning_info.callbacks._logging import log_scalars
from lightning_info.optim.sharpness_aware import SharpnessAwareOptimizer


class SharpnessMonitor(Callback):
    """Log ``<prefix>/<statistic>`` of every sharpness-aware optimizer after its sharpness-aware steps.

    The statistics are :attr:`SAM.statistics <lightning_info.optim.SAM>` / :attr:`GAM.statistics
    <lightning_info.optim.GAM>`: ``grad_norm``, ``perturbation_norm`` and ``sharpness`` (SAM, GAM + SAM) or
    ``first_order_flatness`` (GAM). They go straight to ``trainer.loggers`` at the step index of the update (the
    x-axis of Lightning's own step metrics), so plain steps of every-k SAM log nothing instead of repeating the last
    value. With several sharpness-aware optimizers the keys end in ``/<index>``. Any logger works (W&B, CSV, ...).

    Args:
        prefix: key prefix (default ``"sam"``: ``sam/perturbation_norm``, ...).
        every_n_steps: log only when the step index is a multiple of it.

    Raises:
        TypeError: ``prefix`` is not a non-empty string or ``every_n_steps`` not an int.
        ValueError: ``every_n_steps < 1``.
    """

    def __init__(self, prefix: str = "sam", every_n_steps: int = 1) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"prefix must be a non-empty str, got {prefix!r}")
        self.prefix = prefix
        self.every_n_steps = check_int("every_n_steps", every_n_steps, min_value=1)
        #: the values logged last, by key
        self.latest: dict[str, float] = {}

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step - 1  # the update this batch made
        if step < 0 or step % self.every_n_steps:
            return
        optimizers = [o for o in trainer.optimizers if isinstance(o, SharpnessAwareOptimizer)]
        metrics: dict[str, float] = {}
        for index, optimizer in enumerate(optimizers):
            suffix = f"/{index}" if len(optimizers) > 1 else ""
            metrics.update({f"{self.prefix}/{k}{suffix}": float(v) for k, v in optimizer.statistics.items()})
        self.latest.update(metrics)
        if metrics:
            log_scalars(trainer, metrics, step)

"""``SharpnessAwarePrecision``: Lightning's mixed precision whose GradScaler path keeps the closure for SAM/GAM."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer import call
from typing_extensions import override

from lightning_info.optim._passes import Closure
from lightning_info.optim.sharpness_aware import SharpnessAwareOptimizer


class SharpnessAwarePrecision(MixedPrecision):
    """Drop-in for Lightning's ``MixedPrecision`` that makes ``precision="16-mixed"`` work with SAM and GAM.

    With a GradScaler, Lightning's ``MixedPrecision.optimizer_step`` runs the closure itself and then calls
    ``scaler.step(optimizer)``, which calls ``optimizer.step()`` *without* the closure: a sharpness-aware optimizer
    cannot evaluate its extra passes (it raises a ``TypeError`` pointing here). This plugin hands the closure to
    :meth:`~lightning_info.optim.SharpnessAwareOptimizer.scaled_step` instead: every pass's gradients are unscaled
    exactly, a non-finite gradient skips the step and lowers the scale (GradScaler's semantics). As with the other
    precisions, ``on_before_optimizer_step`` runs after every pass (on unscaled gradients: a ``FisherMask`` masks the
    gradient that defines the perturbation too) and gradient clipping once, on the unscaled final direction. Other
    optimizers, and ``"bf16-mixed"`` (no scaler), take the unchanged ``MixedPrecision`` path.

    Args:
        precision: ``"16-mixed"`` or ``"bf16-mixed"``.
        device: the autocast device (``"cuda"``, ``"cpu"``).
        scaler: an optional ``torch.amp.GradScaler`` (created for ``"16-mixed"`` when omitted).

    Raises:
        TypeError: ``device`` is not a str.
        ValueError: ``precision`` is not ``"16-mixed"``/``"bf16-mixed"``, or ``device`` is not a device type
            ``torch.autocast`` supports (e.g. ``"tpu"``: TPUs are the ``"xla"`` device type, and Lightning trains on
            them with its own ``XLAPrecision``).

    Example:
        ``Trainer(accelerator="gpu", plugins=[SharpnessAwarePrecision("16-mixed", "cuda")])``.
    """

    def __init__(self, precision: str, device: str, scaler: torch.amp.GradScaler | None = None) -> None:
        if not isinstance(device, str):
            raise TypeError(f"device must be a str such as 'cuda' or 'cpu', got {type(device).__name__} ({device!r})")
        try:
            kind: str | None = torch.device(device).type
        except RuntimeError:  # not a torch device string at all, e.g. "tpu"
            kind = None
        if kind is None or not torch.amp.is_autocast_available(kind):
            raise ValueError(
                f"device must be a device type torch.autocast supports ('cuda', 'cpu', 'xpu', 'mps', ...), got "
                f"{device!r}. TPUs are torch's 'xla' device, and Lightning's XLAPrecision trains on them."
            )
        super().__init__(precision, device, scaler)  # type: ignore[arg-type]  # validates precision

    @override
    def optimizer_step(  # type: ignore[override]
        self,
        optimizer: Any,
        model: LightningModule,
        closure: Closure,
        **kwargs: Any,
    ) -> Any:
        if self.scaler is None or not isinstance(optimizer, SharpnessAwareOptimizer):
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        if kwargs:
            raise TypeError(f"{type(optimizer).__name__}.scaled_step() takes no step kwargs, got {sorted(kwargs)}")
        trainer = model.trainer

        def after_pass() -> None:  # Lightning's plain path runs it after every closure call too (``_wrap_closure``)
            call._call_callback_hooks(trainer, "on_before_optimizer_step", optimizer)
            call._call_lightning_module_hook(trainer, "on_before_optimizer_step", optimizer)

        def clip() -> None:  # once, on the final direction, as ``SharpnessAwareOptimizer.step`` defers it
            self._clip_gradients(
                model, optimizer, trainer.gradient_clip_val, gradient_clip_algorithm=trainer.gradient_clip_algorithm
            )

        return optimizer.scaled_step(closure, self.scaler, before_step=clip, after_pass=after_pass)

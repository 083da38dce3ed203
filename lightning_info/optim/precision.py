"""``SharpnessAwarePrecision``: Lightning's mixed precision whose GradScaler path keeps the closure for SAM/GAM."""

from __future__ import annotations

from typing import Any

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

    Example:
        ``Trainer(accelerator="gpu", plugins=[SharpnessAwarePrecision("16-mixed", "cuda")])``.
    """

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

"""Demo parts ``sam`` (on by default), ``asam`` and ``gam``: a sharpness-aware optimizer around the model's AdamW.

Same learning rate and weight decay as the demo's AdamW; ``sam/*`` is logged every step. One part at a time
(``lightning-info demo --optimizer sam|asam|gam|base`` swaps it), since each replaces the model's optimizer. The
summary shows the last ``sam/perturbation_norm``, ``sam/grad_norm`` and ``sam/sharpness`` (SAM, ASAM) or
``sam/first_order_flatness`` (GAM). SAM and ASAM cost two forward/backward passes per step, GAM four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lightning_info.callbacks import SharpnessMonitor
from lightning_info.demo.parts import DemoContext, register_part
from lightning_info.optim import GAM, SAM

OPTIMIZER_PARTS = ("sam", "asam", "gam")
_ADAMW: dict[str, Any] = {"lr": 3e-3, "weight_decay": 1e-4}  # the demo model's own optimizer settings


def _use(ctx: DemoContext, name: str, factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]) -> None:
    if ctx.optimizer_factory is not None:
        raise ValueError(f"demo part {name!r} sets the optimizer, which another part already set: use one of "
                         f"{list(OPTIMIZER_PARTS)} (or --optimizer)")  # fmt: skip
    ctx.optimizer_factory = factory
    ctx.callbacks.append(SharpnessMonitor())
    statistics = ("grad_norm", "perturbation_norm", "first_order_flatness" if name == "gam" else "sharpness")
    ctx.summary_keys.extend(f"sam/{key}" for key in statistics)


@register_part("sam", help="SAM (rho=0.05) around the model's AdamW: two passes per step", group="optimizer")
def configure_sam(ctx: DemoContext) -> None:
    """Swap in ``SAM(AdamW, rho=0.05)``."""
    _use(ctx, "sam", lambda p: SAM(p, torch.optim.AdamW, rho=0.05, **_ADAMW))


@register_part("asam", help="ASAM (adaptive SAM, rho=0.5, eta=0.01) around AdamW", default=False, group="optimizer")
def configure_asam(ctx: DemoContext) -> None:
    """Swap in ``SAM(AdamW, adaptive=True, rho=0.5)`` (ASAM's radius range is 0.5-2)."""
    _use(ctx, "asam", lambda p: SAM(p, torch.optim.AdamW, rho=0.5, adaptive=True, eta=0.01, **_ADAMW))


@register_part(
    "gam", help="GAM (rho=0.05, alpha=0.1) around AdamW: four passes per step", default=False, group="optimizer"
)
def configure_gam(ctx: DemoContext) -> None:
    """Swap in ``GAM(AdamW, rho=0.05, alpha=0.1)``."""
    _use(ctx, "gam", lambda p: GAM(p, torch.optim.AdamW, rho=0.05, alpha=0.1, **_ADAMW))

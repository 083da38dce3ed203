r"""GSAM: Surrogate Gap Guided SAM (Zhuang et al., ICLR 2022), from the paper's algorithm."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from lightning_info._internal.validation import check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._tensor_lists import all_reduce_mean
from lightning_info.optim._two_pass import TwoPassOptimizer, global_dot, split


class GSAM(TwoPassOptimizer):
    r"""Surrogate Gap Guided Sharpness-Aware Minimization around any base optimizer.

    With :math:`g = \nabla L(w)` and :math:`g_p = \nabla L(w + \rho_t g / \lVert g \rVert)` (SAM's perturbed
    gradient), the gradient is split into its part along :math:`g_p` and the orthogonal rest

    .. math::
        g_\perp = g - \frac{g \cdot g_p}{\lVert g_p \rVert^2}\, g_p, \qquad
        w \leftarrow \mathrm{base\_step}\big(w,\ g_p - \alpha\, g_\perp\big):

    descending along :math:`g_p` minimises the perturbed loss as SAM does, and ascending along :math:`g_\perp` lowers
    the surrogate gap :math:`L(w + \epsilon) - L(w)` without changing the perturbed loss to first order. Norms and the
    dot product are global (all parameters of all groups); ``rho``, ``alpha`` and the schedule may differ per group.
    ``alpha = 0`` is SAM. A zero gradient gives :math:`\epsilon = 0`; :math:`g_p = 0` gives :math:`g_\perp = g`.

    **The paper's** :math:`\rho` **schedule.** The paper anneals the radius with the learning rate,
    :math:`\rho_t = \rho_{min} + (\rho_{max} - \rho_{min}) (\eta_t - \eta_{min}) / (\eta_{max} - \eta_{min})`.
    Pass ``rho_min`` to get it: :math:`\rho_{max}` is ``rho``, :math:`\eta_t` the group's current ``lr`` (whatever
    LR scheduler drives it), :math:`\eta_{max}` ``lr_max`` (default: the group's ``lr`` when the optimizer is
    created) and :math:`\eta_{min}` ``lr_min`` (default 0); an ``lr`` outside ``[lr_min, lr_max]`` (e.g. a warm-up
    overshoot) is clipped into it, so :math:`\rho_t` stays in ``[rho_min, rho]``. Without ``rho_min``,
    :math:`\rho_t = \rho` throughout.

    Cost: 2 forward/backward passes per step (``interval=k``: 1 + 1/k), one extra weight-sized buffer (the clean
    gradient) over SAM's, one more host sync (the projection coefficient). The Lightning behaviour (what runs once
    per pass, logging, BatchNorm, clipping once on the final direction, 16-mixed with ``SharpnessAwarePrecision``,
    accumulation refused) is :class:`~lightning_info.optim.SAM`'s.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class (``torch.optim.SGD``, ``torch.optim.AdamW``, ...).
        rho: :math:`\rho` (:math:`\rho_{max}` with the schedule) > 0. Paper: 0.04 – 0.6 depending on the model.
        alpha: :math:`\alpha` >= 0, weight of the ascent along :math:`g_\perp` (paper: 0.01 – 0.3).
        rho_min: :math:`\rho_{min}` in ``[0, rho]``: turns the learning-rate-proportional schedule on.
        lr_min: :math:`\eta_{min}` >= 0 of the schedule.
        lr_max: :math:`\eta_{max}` > ``lr_min`` of the schedule (``None``: the group's initial ``lr``).
        interval: GSAM step every ``interval`` steps, plain base steps in between.
        reuse_rng: same random state (dropout masks) in both passes.
        sync_perturbation: DDP: all-reduce both passes' gradients (global-batch GSAM). Default ``False``: both
            passes stay on their rank (m-sharpness) and each rank's direction :math:`g_p - \alpha g_\perp` is averaged
            with one all-reduce, so the weights stay identical across ranks.
        base_kwargs: the base optimizer's arguments (``lr``, ...).

    Attributes:
        statistics: after a GSAM step: ``grad_norm`` :math:`\lVert g \rVert`, ``perturbation_norm``
            :math:`\lVert \epsilon \rVert` (:math:`\rho_t`), ``sharpness`` :math:`L(w + \epsilon) - L(w)` (the
            surrogate gap on the batch).

    Raises:
        ValueError: ``rho <= 0``, ``alpha < 0``, ``rho_min`` outside ``[0, rho]``, ``lr_min < 0``,
            ``lr_max <= lr_min``, ``interval < 1``.
        TypeError: ``base_optimizer`` is not an optimizer class; ``step()`` without a closure.
        NonFiniteGradientError: the clean gradient's norm or the final direction is NaN/Inf (the weights are
            restored, the base optimizer does not step).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.05, alpha=0.1, rho_min=0.01, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = optimizer.step(closure)
        >>> round(float(optimizer.statistics["perturbation_norm"]), 6)  # lr = lr_max: rho_t = rho
        0.05
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        alpha: float = 0.1,
        *,
        rho_min: float | None = None,
        lr_min: float = 0.0,
        lr_max: float | None = None,
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        defaults = {"rho": rho, "alpha": alpha, "rho_min": rho_min, "lr_min": lr_min, "lr_max": lr_max}
        super().__init__(
            params,
            base_optimizer,
            defaults,
            interval=interval,
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )
        for group in self.param_groups:
            self._complete_schedule(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "base_optimizer", None) is not None:  # the base optimizer filled in ``lr``
            self._complete_schedule(self.param_groups[-1])

    def _complete_schedule(self, group: dict[str, Any]) -> None:
        if group["rho_min"] is None:
            return
        if group["lr_max"] is None:
            if not isinstance(group.get("lr"), (int, float)):
                raise TypeError(f"GSAM's rho schedule needs a float 'lr' in every group, got {group.get('lr')!r}")
            group["lr_max"] = float(group["lr"])
        check_range(f"lr_max (> lr_min = {group['lr_min']:g})", group["lr_max"], group["lr_min"], low_inclusive=False)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("alpha", group["alpha"], 0)
        check_range("lr_min", group["lr_min"], 0)
        if group["rho_min"] is not None:
            check_range(f"rho_min (<= rho = {group['rho']:g})", group["rho_min"], 0, group["rho"])
        elif group["lr_max"] is not None:
            raise ValueError(f"lr_max ({group['lr_max']!r}) is only used by the rho schedule: pass rho_min as well")

    def rho_t(self, group: dict[str, Any]) -> float:
        r""":math:`\rho_t` of ``group`` at its current ``lr`` (``rho`` without the schedule)."""
        if group["rho_min"] is None:
            return float(group["rho"])
        fraction = (float(group["lr"]) - group["lr_min"]) / (group["lr_max"] - group["lr_min"])
        return group["rho_min"] + (group["rho"] - group["rho_min"]) * min(max(fraction, 0.0), 1.0)

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:
            return
        local = not self.sync_perturbation
        g = self._snapshot("clean_grad", [t for _, _, grads in groups for t in grads])
        hyper = [group for group, _, _ in groups]
        g_p, grad_norm = self._perturbed_pass(passes, loss, groups, g, [self.rho_t(h) for h in hyper], local)
        shards = self._run.get("shard_group")
        # g_p - alpha g_perp = (1 + alpha c) g_p - alpha g with c = g.g_p / ||g_p||^2 (global), in place in .grad
        dot, squared = torch.stack([global_dot(g, g_p, shards), global_dot(g_p, g_p, shards)]).tolist()
        c = dot / squared if squared > 0 else 0.0
        sizes = [len(ps) for _, ps, _ in groups]
        for group, gp_g, g_g in zip(hyper, split(g_p, sizes), split(g, sizes), strict=True):
            if group["alpha"]:
                torch._foreach_mul_(gp_g, 1.0 + group["alpha"] * c)
                torch._foreach_add_(gp_g, g_g, alpha=-group["alpha"])
        if local and passes.ddp_seen:
            all_reduce_mean(g_p, passes.ddp_seen[0].process_group)
        self.statistics["grad_norm"] = grad_norm

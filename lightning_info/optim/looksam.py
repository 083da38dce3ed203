r"""LookSAM (Liu, Mai, Chen, Hsieh & You, CVPR 2022): SAM every k-th step, its sharpness direction reused between."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import Optimizer

from lightning_info._internal.validation import check_int, check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._tensor_lists import all_reduce_mean
from lightning_info.optim._two_pass import Groups, TwoPassOptimizer, global_dot
from lightning_info.optim.sharpness_aware import finite_norm_value

_G_V = "looksam_g_v"  # the per-parameter state key of the stored direction


class LookSAM(TwoPassOptimizer):
    r"""LookSAM: a SAM step every ``k``-th step; the other steps reuse its sharpness direction at one pass's cost.

    Every ``k``-th step (the first included), with :math:`g = \nabla L(w)`, a SAM step with
    :math:`g_s = \nabla L(w + \rho g / \lVert g \rVert)` that also stores the part of :math:`g_s` orthogonal to
    :math:`g`,

    .. math::
        g_v = g_s - \frac{g \cdot g_s}{\lVert g \rVert^2}\, g;

    the other steps evaluate the closure once and step the base optimizer with

    .. math::
        g + \alpha \frac{\lVert g \rVert}{\lVert g_v \rVert}\, g_v.

    Norms and dot products are global (all parameters of all groups), the paper's LookSAM (not its layer-wise
    Look-LayerSAM); ``rho`` and ``alpha`` may differ per group. :math:`g = 0` gives :math:`\epsilon = 0` and
    :math:`g_v = g_s`; :math:`g_v = 0` (or a parameter without a stored :math:`g_v`) adds nothing.

    Cost: :math:`1 + 1/k` forward/backward passes per step on average (``k = 5``: 1.2). :math:`g_v` is optimizer
    state (``state[p]["looksam_g_v"]``, one weight-sized tensor, in the ``state_dict``; the step counter is the
    ``"sharpness_aware"`` entry), stored only once the base optimizer has stepped: a step that fails or that a
    ``GradScaler`` skips keeps the previous :math:`g_v`. On the reusing steps ``statistics`` is empty (a
    ``SharpnessMonitor`` logs the SAM steps only), and gradient clipping, ``16-mixed`` and accumulation behave as in
    the SAM steps: clipping once on the final direction, the closure through ``SharpnessAwarePrecision``,
    accumulation refused.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class (``torch.optim.SGD``, ``torch.optim.AdamW``, ...).
        rho: :math:`\rho` > 0.
        k: SAM step every ``k`` steps (>= 1; ``k = 1`` is SAM). Paper: 5.
        alpha: :math:`\alpha` >= 0, weight of the reused direction (paper: 0.7). Per parameter group.
        reuse_rng: same random state (dropout masks) in both passes of a SAM step.
        sync_perturbation: DDP: all-reduce every pass's gradient. Default ``False``: on SAM steps both passes stay
            on their rank (m-sharpness) and :math:`g_s` and :math:`g_v` are averaged with one all-reduce; on the
            reusing steps :math:`g` is averaged first (the global batch's gradient, what DDP would do). The weights
            and :math:`g_v` stay identical across ranks.
        base_kwargs: the base optimizer's arguments.

    Attributes:
        statistics: after a SAM step: ``grad_norm``, ``perturbation_norm``, ``sharpness`` (as SAM's).

    Raises:
        ValueError: ``rho <= 0``, ``alpha < 0``, ``k < 1``.
        TypeError: ``k`` not an int, ``base_optimizer`` not an optimizer class; ``step()`` without a closure.
        NonFiniteGradientError: a gradient norm or the final direction is NaN/Inf (the weights are restored, the base
            optimizer does not step, :math:`g_v` is kept).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = LookSAM(model.parameters(), torch.optim.SGD, rho=0.05, k=5, alpha=0.7, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> calls = []
        >>> def closure():
        ...     calls.append(1)
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(5):
        ...     loss = optimizer.step(closure)
        >>> len(calls)  # 2 + 1 + 1 + 1 + 1
        6
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        k: int = 5,
        alpha: float = 0.7,
        *,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        self.k = check_int("k", k, min_value=1)
        super().__init__(
            params,
            base_optimizer,
            {"rho": rho, "alpha": alpha},
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("alpha", group["alpha"], 0)

    def _unchecked_passes(self) -> str:
        return "the perturbed pass (pass 2 of 2 of a SAM step, at w + e)"

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:
            return
        if int(self._run["step"]) % self.k == 0:
            self._sam_step(passes, loss, groups)
        else:
            self._reuse(passes, groups)

    def _sam_step(self, passes: ClosurePasses, loss: Any, groups: Groups) -> None:
        local = not self.sync_perturbation
        params = [p for _, ps, _ in groups for p in ps]
        g = self._snapshot("clean_grad", [t for _, _, grads in groups for t in grads])
        g_s, grad_norm = self._perturbed_pass(passes, loss, groups, g, [h["rho"] for h, _, _ in groups], local)
        self.statistics["grad_norm"] = grad_norm
        g_v = self._snapshot("g_v", g_s)
        squared = float(grad_norm) ** 2  # synced already by the perturbation
        if squared > 0:
            torch._foreach_add_(g_v, g, alpha=-float(global_dot(g, g_s, self._run.get("shard_group"))) / squared)
        if local and passes.ddp_seen:
            all_reduce_mean(g_s + g_v, passes.ddp_seen[0].process_group)
        self._after_base_step(lambda: self._store_state(_G_V, params, g_v))

    def _reuse(self, passes: ClosurePasses, groups: Groups) -> None:
        grads = [t for _, _, gs in groups for t in gs]
        if not self.sync_perturbation and passes.ddp_seen:  # the clean pass stayed local: the global batch's g
            all_reduce_mean(grads, passes.ddp_seen[0].process_group)
        stored = [[(g, self.state[p][_G_V]) for p, g in zip(ps, gs, strict=True) if _G_V in self.state[p]]
                  for _, ps, gs in groups]  # fmt: skip
        norms = torch.stack(
            [self._global_norm([grads]), self._global_norm([[v for pairs in stored for _, v in pairs]])]
        )
        grad_norm, v_norm = norms.tolist()  # one host sync
        if not math.isfinite(grad_norm):
            finite_norm_value("the gradient norm ||g||", norms[0], type(self).__name__)  # raises
        if v_norm == 0:
            return
        for (group, _, _), pairs in zip(groups, stored, strict=True):
            if pairs and group["alpha"]:
                torch._foreach_add_([g for g, _ in pairs], [v for _, v in pairs],
                                    alpha=group["alpha"] * grad_norm / v_norm)  # fmt: skip

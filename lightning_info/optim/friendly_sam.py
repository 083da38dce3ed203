r"""Friendly-SAM (Li, Zhou, He, Cheng & Huang, CVPR 2024): perturb without the full-gradient component."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from lightning_info._internal.validation import check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._two_pass import TwoPassOptimizer, split

_EMA = "friendly_sam_ema"  # the per-parameter state key of the gradient EMA


class FriendlySAM(TwoPassOptimizer):
    r"""Friendly Sharpness-Aware Minimization (F-SAM): SAM perturbed along the batch gradient's stochastic part.

    The full-gradient component of SAM's perturbation does not help generalization (the paper's finding); F-SAM
    estimates it by an exponential moving average of the batch gradients and removes it. With
    :math:`g_t = \nabla L_B(w_t)`:

    .. math::
        m_t = \lambda\, m_{t-1} + (1 - \lambda)\, g_t, \quad m_0 = 0, \qquad
        d_t = g_t - \sigma\, m_t, \qquad
        w \leftarrow \mathrm{base\_step}\big(w,\ \nabla L_B(w_t + \rho\, d_t / \lVert d_t \rVert)\big).

    The norm is global (all parameters of all groups); ``rho``, ``sigma`` and ``lmbda`` may differ per group.
    :math:`d_t = 0` gives no perturbation. :math:`m` is optimizer state (``state[p]["friendly_sam_ema"]``, one
    weight-sized tensor, in the ``state_dict``), updated on the sharpness-aware steps only (every ``interval``-th)
    and only once the base optimizer has stepped: a step that fails or that a ``GradScaler`` skips leaves it as it
    was. Under DDP with ``sync_perturbation=False`` each rank averages its own gradients (m-sharpness) and a
    checkpoint saves rank 0's :math:`m`; with ``True`` :math:`m` is the global batch's and identical on all ranks.

    Cost: 2 forward/backward passes per step, one weight-sized buffer over SAM's plus the EMA state. The Lightning
    behaviour is :class:`~lightning_info.optim.SAM`'s.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class (``torch.optim.SGD``, ``torch.optim.AdamW``, ...).
        rho: :math:`\rho` > 0.
        sigma: :math:`\sigma` >= 0, how much of the estimated full gradient is removed (paper: 1; 0 is SAM).
        lmbda: :math:`\lambda` in ``[0, 1)``, the EMA's momentum (paper: 0.9 – 0.95).
        interval: F-SAM step every ``interval`` steps, plain base steps in between.
        reuse_rng: same random state (dropout masks) in both passes.
        sync_perturbation: DDP: all-reduce the clean pass's gradient (see above). The update is always averaged.
        base_kwargs: the base optimizer's arguments.

    Attributes:
        statistics: after an F-SAM step: ``grad_norm`` :math:`\lVert g_t \rVert`, ``perturbation_norm``,
            ``sharpness`` (as SAM's).

    Raises:
        ValueError: ``rho <= 0``, ``sigma < 0``, ``lmbda`` outside ``[0, 1)``, ``interval < 1``.
        TypeError: ``base_optimizer`` is not an optimizer class; ``step()`` without a closure.
        NonFiniteGradientError: the perturbation direction's norm or the final direction is NaN/Inf (the weights are
            restored, the base optimizer does not step, :math:`m` is kept).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = FriendlySAM(model.parameters(), torch.optim.SGD, rho=0.05, sigma=1.0, lmbda=0.9, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = optimizer.step(closure)
        >>> sorted(optimizer.state[model.weight])
        ['friendly_sam_ema']
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        sigma: float = 1.0,
        lmbda: float = 0.9,
        *,
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            base_optimizer,
            {"rho": rho, "sigma": sigma, "lmbda": lmbda},
            interval=interval,
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("sigma", group["sigma"], 0)
        check_range("lmbda", group["lmbda"], 0, 1, high_inclusive=False)

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:
            return
        params = [p for _, ps, _ in groups for p in ps]
        grads = [t for _, _, gs in groups for t in gs]
        sizes = [len(ps) for _, ps, _ in groups]
        self.statistics["grad_norm"] = self._global_norm([grads])
        ema = self._snapshot("ema", grads)  # m_t = lambda m_{t-1} + (1 - lambda) g_t
        direction = self._snapshot("direction", grads)  # d_t = g_t - sigma m_t
        for (group, ps, _), m_g, d_g in zip(groups, split(ema, sizes), split(direction, sizes), strict=True):
            torch._foreach_mul_(m_g, 1.0 - group["lmbda"])
            previous = [(m, self.state[p][_EMA]) for p, m in zip(ps, m_g, strict=True) if _EMA in self.state[p]]
            if previous and group["lmbda"]:
                torch._foreach_add_([m for m, _ in previous], [old for _, old in previous], alpha=group["lmbda"])
            if group["sigma"]:
                torch._foreach_add_(d_g, m_g, alpha=-group["sigma"])
        rhos = [group["rho"] for group, _, _ in groups]
        self._perturbed_pass(passes, loss, groups, direction, rhos, local=False,
                             what="the perturbation direction's norm ||g - sigma m||")  # fmt: skip
        self._after_base_step(lambda: self._store_state(_EMA, params, ema))

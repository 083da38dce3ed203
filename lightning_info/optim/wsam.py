r"""WSAM: sharpness as a weighted regularization term (Yue et al., KDD 2023), with the paper's decoupled update."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_info._internal.validation import check_bool, check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._tensor_lists import all_reduce_mean
from lightning_info.optim._two_pass import TwoPassOptimizer, split
from lightning_info.optim.sharpness_aware import copy_tensors, finite_norm_value, finiteness_norm


class WSAM(TwoPassOptimizer):
    r"""Weighted Sharpness-Aware Minimization: sharpness as a regularization term of weight gamma / (1 - gamma).

    WSAM minimises :math:`L(w) + \frac{\gamma}{1-\gamma} \big(\max_{\lVert \epsilon \rVert \le \rho}
    L(w + \epsilon) - L(w)\big)` with any base optimizer.

    With :math:`g = \nabla L(w)`, :math:`\tilde g = \nabla L(w + \rho g / \lVert g \rVert)` (global norm) and
    :math:`\kappa = \gamma / (1 - \gamma)`, the gradient of the weighted loss is
    :math:`g + \kappa (\tilde g - g)`. ``gamma = 0.5`` (:math:`\kappa = 1`) is SAM, ``gamma = 0`` the base optimizer.

    ``decouple=True`` (default, the paper's Algorithm 1, "weight decouple"): the base optimizer steps with the clean
    gradient :math:`g` only (its momentum and adaptive statistics see :math:`g`), and the sharpness term is applied
    after it as a plain gradient step with the group's learning rate :math:`\eta`:

    .. math::
        w \leftarrow \mathrm{base\_step}(w, g) - \eta\, \kappa\, (\tilde g - g).

    ``decouple=False``: the base optimizer steps with :math:`g + \kappa (\tilde g - g)`.

    Lightning's gradient clipping applies once, to what the base optimizer receives (:math:`g` when decoupled). The
    decoupled term is applied only when the base optimizer steps (not when a ``GradScaler`` skips the step) and is
    checked for NaN/Inf first. Cost: 2 forward/backward passes per step (``interval=k``: 1 + 1/k), two weight-sized
    buffers over SAM's (the clean gradient and the sharpness term), one more host sync when decoupled. The Lightning
    behaviour is otherwise :class:`~lightning_info.optim.SAM`'s.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class (``torch.optim.SGD``, ``torch.optim.AdamW``, ...).
        rho: :math:`\rho` > 0.
        gamma: :math:`\gamma` in ``[0, 1)`` (the paper finds 0.8 – 0.95 stable; 0.9 default). Per parameter group.
        decouple: apply the sharpness term after the base step (the paper's algorithm) instead of through it.
        interval: WSAM step every ``interval`` steps, plain base steps in between.
        reuse_rng: same random state (dropout masks) in both passes.
        sync_perturbation: DDP: all-reduce both passes' gradients. Default ``False``: both passes stay on their rank
            (m-sharpness) and the update (the base gradient and the sharpness term) is averaged with one
            all-reduce.
        base_kwargs: the base optimizer's arguments (``lr``, ...; decoupled WSAM needs ``lr`` in every group).

    Attributes:
        statistics: after a WSAM step: ``grad_norm``, ``perturbation_norm``, ``sharpness`` (as SAM's).

    Raises:
        ValueError: ``rho <= 0``, ``gamma`` outside ``[0, 1)``, ``interval < 1``.
        TypeError: ``decouple`` is not a bool; decoupled WSAM and a group without a float ``lr``.
        NonFiniteGradientError: the clean gradient's norm, the final direction or the sharpness term is NaN/Inf
            (the weights are restored, the base optimizer does not step).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = WSAM(model.parameters(), torch.optim.SGD, rho=0.05, gamma=0.9, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = optimizer.step(closure)
        >>> sorted(optimizer.statistics)
        ['grad_norm', 'perturbation_norm', 'sharpness']
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        gamma: float = 0.9,
        *,
        decouple: bool = True,
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        self.decouple = check_bool("decouple", decouple)
        super().__init__(
            params,
            base_optimizer,
            {"rho": rho, "gamma": gamma},
            interval=interval,
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )
        for group in self.param_groups:
            self._check_lr(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "base_optimizer", None) is not None:
            self._check_lr(self.param_groups[-1])

    def _check_lr(self, group: dict[str, Any]) -> None:
        lr = group.get("lr")
        if self.decouple and (not isinstance(lr, (int, float)) or isinstance(lr, bool)):
            raise TypeError(f"WSAM(decouple=True) steps the sharpness term with the group's float 'lr', got {lr!r}")

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("gamma", group["gamma"], 0, 1, high_inclusive=False)

    def _unchecked_passes(self) -> str:
        return "the perturbed pass (pass 2 of 2, at w + e)" + (" (in the sharpness term)" if self.decouple else "")

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:
            return
        local = not self.sync_perturbation
        hyper = [group for group, _, _ in groups]
        sizes = [len(ps) for _, ps, _ in groups]
        g = self._snapshot("clean_grad", [t for _, _, grads in groups for t in grads])
        g_tilde, grad_norm = self._perturbed_pass(passes, loss, groups, g, [h["rho"] for h in hyper], local)
        self.statistics["grad_norm"] = grad_norm
        kappas = [h["gamma"] / (1.0 - h["gamma"]) for h in hyper]
        if not self.decouple:  # g + kappa (g~ - g) = kappa g~ + (1 - kappa) g, in place in .grad
            for gt_g, g_g, kappa in zip(split(g_tilde, sizes), split(g, sizes), kappas, strict=True):
                torch._foreach_mul_(gt_g, kappa)
                torch._foreach_add_(gt_g, g_g, alpha=1.0 - kappa)
            if local and passes.ddp_seen:
                all_reduce_mean(g_tilde, passes.ddp_seen[0].process_group)
            return
        term = self._snapshot("sharpness_term", g_tilde)  # g~ - g, then .grad = g for the base optimizer
        torch._foreach_sub_(term, g)
        copy_tensors(g_tilde, g)
        if local and passes.ddp_seen:
            all_reduce_mean(g_tilde + term, passes.ddp_seen[0].process_group)
        term_norm = finiteness_norm([term], group=self._run.get("shard_group"))
        finite_norm_value("the sharpness term g~ - g (largest entry)", term_norm, "WSAM")
        params = [p for _, ps, _ in groups for p in ps]
        steps = [(p_g, t_g, kappa, h) for p_g, t_g, kappa, h in zip(split(params, sizes), split(term, sizes),
                                                                     kappas, hyper, strict=True)]  # fmt: skip
        self._after_base_step(lambda: _descend(steps))


def _descend(steps: list[tuple[list[Tensor], list[Tensor], float, dict[str, Any]]]) -> None:
    """``w -= lr kappa (g~ - g)`` per group, with the group's learning rate at the base step."""
    with torch.no_grad():
        for params, term, kappa, group in steps:
            if kappa:
                torch._foreach_add_(params, term, alpha=-float(group["lr"]) * kappa)

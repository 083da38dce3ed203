r"""GAM: Gradient norm Aware Minimization (Zhang, Xu, Yu, Zou & Cui, CVPR 2023), from the paper's Algorithm 1."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_info._internal.validation import check_choice, check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._tensor_lists import all_reduce_mean, gradients, split
from lightning_info.optim.sharpness_aware import (
    SharpnessAwareOptimizer,
    copy_tensors,
    detached,
    finite_norm_value,
    global_norm,
)


def _hessian_vector(params: list[Tensor], vector: list[Tensor]) -> list[Tensor]:
    """``H v`` by double backward through the gradients in ``.grad`` (built with ``create_graph=True``)."""
    grads = [p.grad for p in params]
    if not all(g is not None and g.requires_grad for g in grads):
        raise RuntimeError(
            "GAM(hvp='exact') needs gradients with a graph: the closure must call loss.backward(create_graph=True)"
        )
    with torch.enable_grad():
        products = torch.autograd.grad(grads, params, grad_outputs=vector, allow_unused=True)  # type: ignore[arg-type]
    for p in params:
        p.grad = None  # drop the graph that .grad holds (create_graph's reference cycle)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(products, params, strict=True)]


class _Directions(NamedTuple):
    h_loss: list[Tensor]
    h_norm: list[Tensor]  # H(theta_adv) u_adv / h_norm_scale (scaled by alpha * rho * h_norm_scale afterwards)
    h_norm_scale: float
    radius: Tensor  # ||theta_adv - theta||
    grad_norm: Tensor
    adv_grad_norm: Tensor
    perturbed_loss: Any


class GAM(SharpnessAwareOptimizer):
    r"""Gradient norm Aware Minimization: minimise :math:`L(\theta) + \alpha R^{(1)}_\rho(\theta)` with any optimizer.

    First-order flatness :math:`R^{(1)}_\rho(\theta) = \rho \max_{\theta' \in B(\theta, \rho)} \lVert \nabla
    L(\theta') \rVert` bounds the top Hessian eigenvalue at a minimum. One GAM step (Algorithm 1 of the paper), with
    :math:`g = \nabla L(\theta)` and :math:`H` the Hessian:

    .. math::
        f = H(\theta) \frac{g}{\lVert g \rVert + \xi}, \qquad
        \theta^{adv} = \theta + \rho \frac{f}{\lVert f \rVert + \xi}, \qquad
        h^{norm} = \rho\, H(\theta^{adv}) \frac{\nabla L(\theta^{adv})}{\lVert \nabla L(\theta^{adv}) \rVert + \xi}

    and the base optimizer steps with :math:`h^{loss} + \alpha h^{norm}`, where :math:`h^{loss} = g` (GAM) or, with
    ``sam_rho`` (:math:`\rho'`, GAM + SAM), SAM's gradient :math:`\nabla L(\theta + \rho' g / \lVert g \rVert)`.

    Hessian-vector products are finite differences of gradients, :math:`H(x) u \approx (\nabla L(x + r u) -
    \nabla L(x)) / r` with :math:`\lVert u \rVert \le 1`, so a step costs **4 forward/backward passes**:
    :math:`\nabla L` at :math:`\theta`, :math:`\theta + r_1 u`, :math:`\theta^{adv}` and :math:`\theta^{adv} + r
    u^{adv}` (:math:`r_1 = \rho'` with ``sam_rho``, which makes the second pass SAM's, else :math:`r_1 = r`).
    ``hvp="exact"`` computes them by double backward instead (2 passes, 3 with ``sam_rho``; the closure must call
    ``loss.backward(create_graph=True)``): meant for tests and tiny models. The Lightning behaviour (what runs once
    per pass, logging, BatchNorm, clipping, 16-mixed, accumulation) is :class:`~lightning_info.optim.SAM`'s.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class (``torch.optim.SGD``, ``torch.optim.AdamW``, ...).
        rho: :math:`\rho` (Algorithm 1's :math:`\rho_t`) > 0, radius of the ball in which the gradient norm is
            maximised. The paper tunes :math:`\rho` and :math:`\alpha` per dataset and network and fixes no
            default; 0.05 (SAM's CIFAR-10 radius) is this library's choice. Per parameter group.
        alpha: :math:`\alpha` >= 0, weight of the first-order flatness term (library default 0.1, see ``rho``). Per
            parameter group.
        sam_rho: :math:`\rho'` > 0, SAM's radius for GAM + SAM (``None``: plain GAM).
        fd_step: :math:`r` > 0, finite-difference step of the Hessian-vector products (not a paper symbol: the
            paper writes the products exactly and approximates them by differences of gradients).
        xi: :math:`\xi` > 0, the small constant of the paper's normalisations :math:`v / (\lVert v \rVert + \xi)`,
            which keeps them finite (``xi = 0`` would divide a zero or denormal direction by its norm).
        hvp: ``"finite_difference"`` or ``"exact"`` (double backward).
        interval: GAM step every ``interval`` steps, plain base steps in between.
        reuse_rng: the clean pass's random state (dropout masks) in every pass.
        sync_perturbation: DDP: all-reduce every pass's gradient (global-batch GAM). Default ``False``: every pass
            stays on its rank (m-sharpness) and only the final direction is averaged, with one all-reduce.
        base_kwargs: the base optimizer's arguments.

    Attributes:
        statistics: after a GAM step: ``grad_norm`` :math:`\lVert g \rVert`, ``perturbation_norm``
            :math:`\lVert \theta^{adv} - \theta \rVert`, ``first_order_flatness``
            :math:`\lVert \theta^{adv} - \theta \rVert \lVert \nabla L(\theta^{adv}) \rVert` (the estimate of
            :math:`R^{(1)}_\rho`) and, with ``sam_rho``, ``sharpness`` :math:`L(\theta + \epsilon) - L(\theta)`.

    Raises:
        ValueError: ``rho``, ``sam_rho``, ``fd_step`` or ``xi`` <= 0, ``alpha`` < 0, unknown ``hvp``.
        NonFiniteGradientError: a gradient or Hessian-vector norm, or the final update direction, is NaN/Inf (the
            weights are restored, the base optimizer does not step).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> optimizer = GAM(model.parameters(), torch.optim.SGD, rho=0.05, alpha=0.1, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> calls = []
        >>> def closure():
        ...     calls.append(1)
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = optimizer.step(closure)
        >>> len(calls), optimizer.passes
        (4, 4)
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        alpha: float = 0.1,
        *,
        sam_rho: float | None = None,
        fd_step: float = 0.01,
        xi: float = 1e-12,
        hvp: str = "finite_difference",
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        self.sam_rho = None if sam_rho is None else check_range("sam_rho", sam_rho, 0, low_inclusive=False)
        self.fd_step = check_range("fd_step", fd_step, 0, low_inclusive=False)
        self.xi = check_range("xi", xi, 0, low_inclusive=False)
        self.hvp = check_choice("hvp", hvp, ("finite_difference", "exact"))
        self.passes = 4 if self.hvp == "finite_difference" else 2 + (self.sam_rho is not None)
        super().__init__(
            params,
            base_optimizer,
            {"rho": rho, "alpha": alpha},
            interval=interval,
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("alpha", group["alpha"], 0)

    def _unchecked_passes(self) -> str:
        if self.hvp == "finite_difference":
            return "the last pass (pass 4 of 4, at theta_adv + r u_adv)"
        if self.sam_rho is None:
            return "the Hessian-vector product at theta_adv (double backward of pass 2 of 2)"
        return "SAM's pass (pass 2 of 3, at theta + e) or the Hessian-vector product at theta_adv (pass 3 of 3)"

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:
            return
        hyper = [group for group, _, _ in groups]
        params = [p for _, ps, _ in groups for p in ps]
        sizes = [len(ps) for _, ps, _ in groups]
        local = not self.sync_perturbation
        theta = self._snapshot("theta", params)
        try:
            run = self._exact if self.hvp == "exact" else self._finite_difference
            d = run(passes, params, hyper, sizes, theta, local)
        finally:
            copy_tensors(params, theta)
        for group, h_g in zip(hyper, split(d.h_norm, sizes), strict=True):
            torch._foreach_mul_(h_g, group["alpha"] * group["rho"] * d.h_norm_scale)
        torch._foreach_add_(d.h_norm, d.h_loss)
        if local and passes.ddp_seen:
            all_reduce_mean(d.h_norm, passes.ddp_seen[0].process_group)
        copy_tensors(gradients(params), d.h_norm)
        self.statistics.update(
            grad_norm=d.grad_norm, perturbation_norm=d.radius, first_order_flatness=d.radius * d.adv_grad_norm
        )
        clean, worst = detached(loss), detached(d.perturbed_loss)
        if self.sam_rho is not None and clean is not None and worst is not None:
            self.statistics["sharpness"] = worst - clean

    def _unit_step(self, params: list[Tensor], direction: list[Tensor], radius: float, norm: float) -> None:
        """``params += radius * direction / (||direction|| + xi)``."""
        torch._foreach_add_(params, direction, alpha=radius / (norm + self.xi))

    def _ascend(
        self, params: list[Tensor], f: list[Tensor], hyper: list[dict[str, Any]], sizes: list[int], scale: float
    ) -> Tensor:
        """Go to ``theta_adv = theta + rho F / (||F|| + xi)``, ``F = scale * f``; return ``||theta_adv - theta||``."""
        norm = self._global_norm([f])
        value = scale * finite_norm_value("the Hessian-gradient product norm ||f||", norm, type(self).__name__)
        factors = [group["rho"] * scale / (value + self.xi) for group in hyper]
        for p_g, f_g, factor in zip(split(params, sizes), split(f, sizes), factors, strict=True):
            torch._foreach_add_(p_g, f_g, alpha=factor)
        if len(hyper) == 1:
            return norm * factors[0]
        return global_norm([[self._global_norm([f_g]) * c for f_g, c in zip(split(f, sizes), factors, strict=True)]])

    def _norm(self, tensors: list[Tensor], what: str) -> tuple[Tensor, float]:
        norm = self._global_norm([tensors])
        return norm, finite_norm_value(what, norm, type(self).__name__)

    def _finite_difference(
        self,
        passes: ClosurePasses,
        params: list[Tensor],
        hyper: list[dict[str, Any]],
        sizes: list[int],
        theta: list[Tensor],
        local: bool,
    ) -> _Directions:
        g0 = self._snapshot("g0", gradients(params))
        n0, n0_value = self._norm(g0, "the gradient norm ||g||")
        r1 = self.sam_rho if self.sam_rho is not None else self.fd_step
        self._unit_step(params, g0, r1, n0_value)  # theta + r1 u
        perturbed = passes.auxiliary(local)
        g1 = self._snapshot("g1", gradients(params)) if self.sam_rho is not None else gradients(params)
        f = list(torch._foreach_sub(g1, g0))  # r1 * H(theta) u
        copy_tensors(params, theta)
        radius = self._ascend(params, f, hyper, sizes, 1.0 / r1)  # theta_adv
        passes.auxiliary(local)
        g2 = self._snapshot("g2", gradients(params))
        n2, n2_value = self._norm(g2, "the gradient norm at theta_adv")
        self._unit_step(params, g2, self.fd_step, n2_value)  # theta_adv + r u_adv
        passes.auxiliary(local)
        h_norm = list(torch._foreach_sub(gradients(params), g2))  # r * H(theta_adv) u_adv
        h_loss = g1 if self.sam_rho is not None else g0
        return _Directions(h_loss, h_norm, 1.0 / self.fd_step, radius, n0, n2, perturbed)

    def _exact(
        self,
        passes: ClosurePasses,
        params: list[Tensor],
        hyper: list[dict[str, Any]],
        sizes: list[int],
        theta: list[Tensor],
        local: bool,
    ) -> _Directions:
        g0 = [g.detach().clone() for g in gradients(params)]
        n0, n0_value = self._norm(g0, "the gradient norm ||g||")
        f = _hessian_vector(params, list(torch._foreach_div(g0, n0_value + self.xi)))
        h_loss, perturbed = g0, None
        if self.sam_rho is not None:
            self._unit_step(params, g0, self.sam_rho, n0_value)
            perturbed = passes.auxiliary(local)
            h_loss = [g.detach().clone() for g in gradients(params)]
            copy_tensors(params, theta)
        radius = self._ascend(params, f, hyper, sizes, 1.0)
        passes.auxiliary(local)
        g2 = [g.detach() for g in gradients(params)]
        n2, n2_value = self._norm(g2, "the gradient norm at theta_adv")
        h_norm = _hessian_vector(params, list(torch._foreach_div(g2, n2_value + self.xi)))
        return _Directions(h_loss, h_norm, 1.0, radius, n0, n2, perturbed)

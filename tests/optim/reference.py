"""Independent float64 references for the sharpness-aware optimizers: hand-written updates, autograd only for gradients.

Nothing here imports ``lightning_info.optim``: SAM/ASAM perturbations, SGD with momentum/Nesterov/weight decay and
gradient clipping are written out per tensor from the papers' and PyTorch's documented formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]


def params_of(model: nn.Module) -> Params:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def loss_and_grad(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], params: Params, batch: Batch):
    """L(params) on ``batch`` and its gradient (autograd through ``model``'s structure with ``params`` swapped in)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    x, y = batch
    loss = loss_fn(functional_call(model, leaves, (x,)), y)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach(), dict(zip(leaves, grads, strict=True))


def global_norm(tensors: dict[str, Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors.values()))


def sam_perturbation(params: Params, grads: Params, rho: float, adaptive: bool = False, eta: float = 0.01) -> Params:
    """e = rho g / ||g|| (SAM) or rho T^2 g / ||T g||, T = |w| + eta (ASAM); zero gradient -> zero perturbation."""
    t = {k: (params[k].abs() + eta) if adaptive else torch.ones_like(params[k]) for k in params}
    norm = global_norm({k: t[k] * grads[k] for k in params})
    if norm == 0:
        return {k: torch.zeros_like(v) for k, v in params.items()}
    return {k: rho * t[k] * t[k] * grads[k] / norm for k in params}


def clip(grads: Params, value: float | None, algorithm: str = "norm") -> Params:
    """Lightning's clipping: torch.nn.utils.clip_grad_norm_ (eps 1e-6) or clip_grad_value_."""
    if value is None:
        return grads
    if algorithm == "value":
        return {k: g.clamp(-value, value) for k, g in grads.items()}
    coef = value / (global_norm(grads) + 1e-6)
    return {k: g * min(coef, 1.0) for k, g in grads.items()}


class SGDReference:
    """torch.optim.SGD's documented update: weight decay, momentum buffer (first step: b = g), Nesterov."""

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay
        self.buffers: Params = {}

    def step(self, params: Params, grads: Params) -> Params:
        out = {}
        for k, w in params.items():
            g = grads[k] + self.weight_decay * w
            if self.momentum:
                b = g.clone() if k not in self.buffers else self.momentum * self.buffers[k] + g
                self.buffers[k] = b
                g = g + self.momentum * b if self.nesterov else b
            out[k] = w - self.lr * g
        return out


def sam_trajectory(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[Batch],
    base: SGDReference,
    rho: float,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    interval: int = 1,
    clip_value: float | None = None,
    clip_algorithm: str = "norm",
) -> tuple[list[Params], list[float]]:
    """Parameters after every step and the clean loss of every step, for (every-k) SAM/ASAM around ``base``."""
    params, trajectory, losses = params_of(model), [], []
    for step, batch in enumerate(batches):
        loss, grads = loss_and_grad(model, loss_fn, params, batch)
        losses.append(float(loss))
        if step % interval == 0:
            e = sam_perturbation(params, grads, rho, adaptive, eta)
            _, grads = loss_and_grad(model, loss_fn, {k: params[k] + e[k] for k in params}, batch)
        params = base.step(params, clip(grads, clip_value, clip_algorithm))
        trajectory.append(params)
    return trajectory, losses


def gam_direction(
    grad: Callable[[Tensor], Tensor], theta: Tensor, rho: float, alpha: float, r: float, xi: float = 1e-12
) -> Tensor:
    """GAM's finite-difference update direction on a flat parameter vector (``xi`` in every normalisation)."""
    g0 = grad(theta)
    f = (grad(theta + r * g0 / (g0.norm() + xi)) - g0) / r
    adv = theta + rho * f / (f.norm() + xi)
    g2 = grad(adv)
    return g0 + alpha * rho * (grad(adv + r * g2 / (g2.norm() + xi)) - g2) / r

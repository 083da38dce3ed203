"""Independent float64 references for GSAM, LookSAM, WSAM and Friendly-SAM, written from the papers' algorithms.

Nothing here imports ``lightning_info.optim``: each step is written out per tensor (dicts of float64 tensors) from the
paper's equations, with autograd only for gradients (``reference.loss_and_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tests.optim.reference import Batch, Params, SGDReference, clip, global_norm, loss_and_grad, params_of


def dot(a: Params, b: Params) -> float:
    return sum(float((a[k].double() * b[k].double()).sum()) for k in a)


def ascent(params: Params, direction: Params, rho: float) -> Params:
    """w + rho d / ||d|| (d = 0: w)."""
    norm = global_norm(direction)
    if norm == 0:
        return dict(params)
    return {k: params[k] + rho * direction[k] / norm for k in params}


def variant_trajectory(
    method: str,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[Batch],
    base: SGDReference,
    *,
    lrs: Sequence[float] | None = None,
    clip_value: float | None = None,
    clip_algorithm: str = "norm",
    **hp: Any,
) -> tuple[list[Params], list[float], dict[str, Any]]:
    """Parameters after every step, the clean losses and the final state (``g_v``, ``m``) of ``method``.

    ``method``: ``"gsam"`` (rho, alpha, optional rho_min/lr_min/lr_max), ``"looksam"`` (rho, k, alpha), ``"wsam"``
    (rho, gamma, decouple), ``"fsam"`` (rho, sigma, lmbda). ``lrs``: the base learning rate of every step.
    """
    params, trajectory, losses = params_of(model), [], []
    state: dict[str, Any] = {}
    for t, batch in enumerate(batches):
        if lrs is not None:
            base.lr = lrs[t]
        loss, g = loss_and_grad(model, loss_fn, params, batch)
        losses.append(float(loss))

        def grad_at(point: Params, batch: Batch = batch) -> Params:
            return loss_and_grad(model, loss_fn, point, batch)[1]

        decoupled: Params | None = None
        if method == "gsam":
            rho = hp["rho"]
            if hp.get("rho_min") is not None:  # rho_t = rho_min + (rho_max - rho_min)(lr - lr_min)/(lr_max - lr_min)
                fraction = (base.lr - hp["lr_min"]) / (hp["lr_max"] - hp["lr_min"])
                rho = hp["rho_min"] + (hp["rho"] - hp["rho_min"]) * fraction
            g_p = grad_at(ascent(params, g, rho))
            coefficient = dot(g, g_p) / dot(g_p, g_p)
            g_perp = {k: g[k] - coefficient * g_p[k] for k in g}
            direction = {k: g_p[k] - hp["alpha"] * g_perp[k] for k in g}
        elif method == "looksam":
            if t % hp["k"] == 0:
                g_s = grad_at(ascent(params, g, hp["rho"]))
                coefficient = dot(g, g_s) / dot(g, g)
                state["g_v"] = {k: g_s[k] - coefficient * g[k] for k in g}
                direction = g_s
            else:
                g_v = state["g_v"]
                scale = hp["alpha"] * global_norm(g) / global_norm(g_v)
                direction = {k: g[k] + scale * g_v[k] for k in g}
        elif method == "wsam":
            kappa = hp["gamma"] / (1 - hp["gamma"])
            g_tilde = grad_at(ascent(params, g, hp["rho"]))
            if hp.get("decouple", True):
                direction, decoupled = g, {k: kappa * (g_tilde[k] - g[k]) for k in g}
            else:
                direction = {k: g[k] + kappa * (g_tilde[k] - g[k]) for k in g}
        elif method == "fsam":
            previous = state.get("m", {k: torch.zeros_like(v) for k, v in g.items()})
            state["m"] = {k: hp["lmbda"] * previous[k] + (1 - hp["lmbda"]) * g[k] for k in g}
            d = {k: g[k] - hp["sigma"] * state["m"][k] for k in g}
            direction = grad_at(ascent(params, d, hp["rho"]))
        else:
            raise ValueError(method)
        params = base.step(params, clip(direction, clip_value, clip_algorithm))
        if decoupled is not None:  # the paper's weight-decoupled sharpness step, at the step's learning rate
            params = {k: params[k] - base.lr * decoupled[k] for k in params}
        trajectory.append(params)
    return trajectory, losses, state

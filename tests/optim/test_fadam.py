"""pytorch-optimizer's FAdam against Algorithm 1 of Hwang (2024), "FAdam: Adam is a natural gradient optimizer using
diagonal empirical Fisher information", written out here per tensor in float64.

Algorithm 1, for each parameter tensor at step t = 1, 2, ...:
    beta2_t = beta2 (1 - beta2^(t-1)) / (1 - beta2^t)          (bias correction folded into the EMA rate)
    F_t     = beta2_t F_(t-1) + (1 - beta2_t) g^2                (diagonal empirical Fisher)
    eps_t   = min(eps, eps2 RMS(g)) if RMS(g) > 0 else eps      (adaptive epsilon), used as eps_t^(2p)
    gbar    = g / (F_t^p + eps_t^(2p));  gbar /= max(1, RMS(gbar) / c)        (natural gradient, clipped)
    m_t     = beta1 m_(t-1) + (1 - beta1) gbar                                  (momentum of the natural gradient)
    wbar    = theta / (F_t^p + eps_t^(2p));  wbar /= max(1, RMS(wbar) / c)   (weight decay on the Fisher scale)
    theta  -= lr (m_t + lambda wbar)
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

pytest.importorskip("pytorch_optimizer")


def _rms(x: Tensor) -> Tensor:
    return x.square().mean().sqrt()


def _fadam_reference(params, grads_per_step, lr, betas, weight_decay, clip, p, eps, eps2):
    beta1, beta2 = betas
    theta = [w.clone() for w in params]
    fisher = [torch.zeros_like(w) for w in params]
    momentum = [torch.zeros_like(w) for w in params]
    for t, grads in enumerate(grads_per_step, start=1):
        beta2_t = beta2 * (1 - beta2 ** (t - 1)) / (1 - beta2**t)
        for i, g in enumerate(grads):
            fisher[i] = beta2_t * fisher[i] + (1 - beta2_t) * g * g
            rms_g = float(_rms(g))
            eps_t = min(eps, eps2 * rms_g) if rms_g > 0 else eps
            denominator = fisher[i] ** p + eps_t ** (2 * p)
            natural = g / denominator
            natural = natural / max(1.0, float(_rms(natural)) / clip)
            momentum[i] = beta1 * momentum[i] + (1 - beta1) * natural
            decay = theta[i] / denominator
            decay = decay / max(1.0, float(_rms(decay)) / clip)
            theta[i] = theta[i] - lr * (momentum[i] + weight_decay * decay)
    return theta


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("eps", [0.0, 1e-8], ids=["core", "adaptive-eps"])
def test_pytorch_optimizer_fadam_follows_algorithm_1(foreach: bool, eps: float) -> None:
    from lightning_info.optim import FAdam

    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,), (5,), ()]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    steps = []
    for _ in range(4):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        grads[2] = grads[2] * 1e-7  # RMS(g) * eps2 < eps: the adaptive epsilon is active
        if eps > 0:
            grads[3] = grads[3] * 0  # a zero gradient: RMS 0 falls back to eps (with eps = 0 it is 0 / 0)
        steps.append(grads)
    hyper = {"lr": 0.01, "betas": (0.9, 0.999), "weight_decay": 0.1, "clip": 1.0, "p": 0.5, "eps": eps}
    expected = _fadam_reference(params, steps, eps2=0.01, **hyper)

    tensors = [torch.nn.Parameter(w.clone()) for w in params]
    optimizer = FAdam(
        tensors, eps_2=0.01, foreach=foreach, momentum_dtype=torch.float64, fim_dtype=torch.float64, **hyper
    )
    for grads in steps:
        for w, grad in zip(tensors, grads, strict=True):
            w.grad = grad.clone()
        optimizer.step()
    for got, want in zip(tensors, expected, strict=True):
        torch.testing.assert_close(got.detach(), want, atol=1e-12, rtol=0)


def test_fadam_is_lazy_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import lightning_info.optim as optim

    assert optim.FAdam.__name__ == "FAdam"
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)  # simulate the extra not being installed
    with pytest.raises(ImportError, match=r"pip install 'lightning-info\[fadam\]'"):
        optim.FAdam
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        optim.Nope

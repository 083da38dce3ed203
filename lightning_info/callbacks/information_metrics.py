"""The metrics :class:`~lightning_info.callbacks.InformationMonitor` computes, by name (``metrics=[...]``).

Each entry is a function ``fn(z, targets) -> scalar tensor`` on a layer's flattened ``(N, d)`` activations;
``targets`` is the ``(N,)`` tensor of batch targets for class-conditional metrics (``needs_targets=True``) and
``None`` otherwise. :func:`register_information_metric` adds user metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_info.functional import (
    conditional_mutual_information,
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
    matrix_entropy,
    matrix_nuclear_norm,
    shannon_entropy,
    vendi_score,
)

MetricFn = Callable[[Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class InformationMetric:
    """A monitored metric: ``fn(z, targets)`` on ``(N, d)`` activations; ``targets`` is ``None`` unless needed."""

    fn: MetricFn
    needs_targets: bool = False


INFORMATION_METRICS: dict[str, InformationMetric] = {
    "matrix_entropy": InformationMetric(lambda z, _: matrix_entropy(z)),
    "matrix_nuclear_norm": InformationMetric(lambda z, _: matrix_nuclear_norm(z)),
    "vendi": InformationMetric(lambda z, _: vendi_score(z)),
    "dse": InformationMetric(lambda z, _: diffusion_spectral_entropy(z)),
    "dsmi": InformationMetric(
        lambda z, y: diffusion_spectral_mutual_information(z, torch.as_tensor(y)), needs_targets=True
    ),
    # mean Shannon entropy (nats) of softmax(z): for a layer that outputs logits
    "prediction_entropy": InformationMetric(lambda z, _: shannon_entropy(z, from_logits=True).mean()),
    # CMI I(X; Yhat | Y) of softmax(z) given the targets (MCMI): for a layer that outputs (N, num_classes) logits
    "cmi": InformationMetric(
        lambda z, y: conditional_mutual_information(torch.softmax(z.float(), 1), torch.as_tensor(y), z.shape[1]),
        needs_targets=True,
    ),
}


def register_information_metric(name: str, fn: MetricFn, *, needs_targets: bool = False) -> None:
    """Make ``name`` usable in ``InformationMonitor(metrics=[...])``; ``fn(z, targets) -> scalar tensor``.

    Raises:
        ValueError: if ``name`` is empty or contains ``"/"`` (it becomes a part of the ``info/<layer>/<name>`` key).
        TypeError: if ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty str without '/', got {name!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    INFORMATION_METRICS[name] = InformationMetric(fn, needs_targets)

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

from lightning_info._internal.validation import check_bool
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


BUILTIN_METRICS = frozenset(INFORMATION_METRICS)


def register_information_metric(
    name: str, fn: MetricFn, *, needs_targets: bool = False, overwrite: bool = False
) -> None:
    """Make ``name`` usable in ``InformationMonitor(metrics=[...])``; ``fn(z, targets) -> scalar tensor``.

    Args:
        name: the metric's name, the last part of its ``info/<layer>/<name>`` key.
        fn: ``fn(z, targets) -> scalar tensor`` on a layer's ``(N, d)`` activations.
        needs_targets: ``fn`` needs the batch's ``(N,)`` targets (otherwise it gets ``None``).
        overwrite: replace a metric registered earlier under ``name`` (built-in metrics are never replaced).

    Raises:
        ValueError: if ``name`` is empty, contains ``"/"`` (it becomes a part of the ``info/<layer>/<name>`` key),
            names a built-in metric, or is registered already and ``overwrite`` is ``False``.
        TypeError: if ``fn`` is not callable or ``needs_targets`` / ``overwrite`` is not a bool.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty str without '/', got {name!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_bool("needs_targets", needs_targets)
    if name in BUILTIN_METRICS:
        raise ValueError(f"name {name!r} is a built-in information metric and cannot be replaced; choose another name")
    if name in INFORMATION_METRICS and not check_bool("overwrite", overwrite):
        raise ValueError(f"name {name!r} is registered already; pass overwrite=True to replace it")
    INFORMATION_METRICS[name] = InformationMetric(fn, needs_targets)

"""CauchySchwarzDivergence: the kernel CS divergence between two sets of samples."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info.functional.kernels import KernelWidth, check_width, cs_divergence
from lightning_info.metrics._samples import SampleMetric


class CauchySchwarzDivergence(SampleMetric):
    r"""Cauchy–Schwarz divergence between all samples ``a`` and all samples ``b`` seen (Yu et al., ICLR 2024).

    .. math:: \hat D_{CS}(a, b) = \log\frac{1}{m^2}\sum_{ij}\kappa(a_i,a_j) + \log\frac{1}{n^2}\sum_{ij}\kappa(b_i,b_j)
              - 2\log\frac{1}{mn}\sum_{ij}\kappa(a_i,b_j),

    :math:`\kappa` a Gaussian kernel of width :math:`\sigma` (the CS-IB loss's
    :func:`~lightning_info.functional.cs_divergence`, computed in log space). Non-negative, 0 for identical
    sample sets. ``a`` and ``b`` are stored separately (``"cat"`` states, each capped at ``max_samples`` per
    process), so each ``update`` may bring different numbers of each; ``compute`` is :math:`O((m + n)^2 d)`.

    Args:
        sigma: kernel width: a float > 0, ``"median"`` or ``"silverman"`` (computed on the pooled samples).
        max_samples: cap on the rows of ``a`` and of ``b`` kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError / ValueError: a bad ``sigma`` or ``max_samples``; ``update`` raises on ranks other than 1 or 2,
            NaN/Inf or a change in the number of features, ``compute`` like the functional (fewer than 2 samples
            in ``a`` or ``b``, different feature counts).

    Example:
        >>> import torch
        >>> metric = CauchySchwarzDivergence(sigma=1.0)
        >>> metric.update(torch.tensor([0.0, 1.0]), torch.tensor([0.0]))
        >>> metric.update(torch.tensor([2.0]), torch.tensor([1.0, 2.0]))
        >>> round(float(metric.compute()), 6)  # the same three points on both sides
        0.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, sigma: KernelWidth = 1.0, max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, states=("a", "b"), **kwargs)
        self.sigma = check_width("sigma", sigma)

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add samples of both sets: ``(m,)`` / ``(m, d)`` and ``(n,)`` / ``(n, d)`` (``m``, ``n`` may differ)."""
        a, b = self._features("a", a, "a", vector_ok=True), self._features("b", b, "b", vector_ok=True)
        self._store(a=a)
        self._store(b=b)

    def compute(self) -> Tensor:
        return cs_divergence(self._gathered("a"), self._gathered("b"), sigma=self.sigma)

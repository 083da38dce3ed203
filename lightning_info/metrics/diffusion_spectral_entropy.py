"""DiffusionSpectralEntropy: DSE of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info.metrics._samples import SampleMetric
from lightning_info.metrics.functional._utils import log_base
from lightning_info.metrics.functional.diffusion_spectral import (
    DEFAULT_SIGMA,
    DEFAULT_T,
    _check_dse_args,
    diffusion_spectral_entropy,
)

DEFAULT_MAX_SAMPLES = 2048


class DiffusionSpectralEntropy(SampleMetric):
    r"""Diffusion Spectral Entropy (Liao, Liu et al. 2023) of all representations seen.

    :math:`S_D(P,t) = -\sum_i \alpha_{i,t}\log\alpha_{i,t}`, :math:`\alpha_{i,t}\propto|\lambda_i(P)|^t`, with
    :math:`P` the Gaussian-kernel diffusion operator (see
    :func:`~lightning_info.metrics.functional.diffusion_spectral_entropy`). ``compute`` costs :math:`O(N^3)`, so
    rows are capped at ``max_samples`` per process (default 2048: about 1-2 s per ``compute`` on a CPU core).

    Args:
        sigma: Gaussian kernel bandwidth (paper default 10).
        t: diffusion time (paper default 1).
        base: logarithm base (2: bits, as the paper).
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on bad arguments; ``update``/``compute`` raise like the functional.

    Example:
        >>> import torch
        >>> metric = DiffusionSpectralEntropy()
        >>> metric.update(100.0 * torch.eye(4))  # 4 points far apart relative to sigma
        >>> round(float(metric.compute()), 4)  # log2(3)
        1.585
    """

    higher_is_better = None

    def __init__(
        self,
        sigma: float = DEFAULT_SIGMA,
        t: float = DEFAULT_T,
        base: float | str = 2,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.sigma, self.t, _ = _check_dse_args(sigma, t, None, 0)
        log_base(base)
        self.base = base

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(z)

    def compute(self) -> Tensor:
        return diffusion_spectral_entropy(self._gathered(), sigma=self.sigma, t=self.t, base=self.base)

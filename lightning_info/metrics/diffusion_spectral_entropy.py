"""DiffusionSpectralEntropy: DSE of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_int
from lightning_info.functional.diffusion_spectral import (
    DEFAULT_SIGMA,
    DEFAULT_T,
    check_dse_args,
    diffusion_spectral_entropy,
)
from lightning_info.metrics._samples import SampleMetric

DEFAULT_STORED_SAMPLES = 2048
"""Rows kept per process by the DSE/DSMI metrics: ``compute`` is an O(N^3) eigen-solve (about 1-2 s at 2048)."""


class DiffusionSpectralEntropy(SampleMetric):
    r"""Diffusion Spectral Entropy (Liao, Liu et al. 2023) of all representations seen (bits by default).

    .. math:: S_D(P,t) = -\sum_{i=1}^{N}\alpha_{i,t}\log\alpha_{i,t},\qquad
              \alpha_{i,t} = \frac{|\lambda_i(P)|^t}{\sum_j|\lambda_j(P)|^t},

    with :math:`P` the Gaussian-kernel diffusion operator (see
    :func:`~lightning_info.functional.diffusion_spectral_entropy`). ``compute`` costs :math:`O(N^3)`, so
    rows are capped at ``max_samples`` per process (default 2048); after a DDP gather the paper's cap of a random
    10 000 rows still applies.

    Args:
        sigma: Gaussian kernel bandwidth (paper default 10).
        t: diffusion time (paper default 1).
        base: logarithm base (2: bits, as the paper).
        seed: seed of the random subset taken when more than 10 000 rows are gathered.
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError / ValueError: on bad arguments; ``update`` raises on a wrong rank, NaN/Inf or a change in the
            number of features, ``compute`` with fewer than 2 rows.

    Example:
        >>> import torch
        >>> metric = DiffusionSpectralEntropy()
        >>> metric.update(100.0 * torch.eye(4))  # 4 points far apart relative to sigma
        >>> float(metric.compute())  # log2(4)
        2.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        sigma: float = DEFAULT_SIGMA,
        t: float = DEFAULT_T,
        base: float | str = 2,
        seed: int = 0,
        max_samples: int | None = DEFAULT_STORED_SAMPLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.sigma, self.t, _ = check_dse_args(sigma, t, base)
        self.base = base
        self.seed = check_int("seed", seed)

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(samples=self._features("z", z))

    def compute(self) -> Tensor:
        return diffusion_spectral_entropy(self._gathered(), sigma=self.sigma, t=self.t, base=self.base, seed=self.seed)

"""VendiScore: effective number of distinct samples."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_bool, check_order
from lightning_info.functional.spectral import vendi_score
from lightning_info.metrics._samples import SampleMetric


class VendiScore(SampleMetric):
    r"""Vendi Score (Friedman & Dieng 2023) of order ``q`` of all samples seen, with the cosine kernel.

    .. math:: \mathrm{VS}_q = \exp\Big(\frac{1}{1-q}\log\sum_i\lambda_i^q\Big),\qquad \lambda = \mathrm{eig}(K/N),

    :math:`K_{ij}` the cosine similarity of samples ``i`` and ``j`` (see
    :func:`~lightning_info.functional.spectral_score`). Rows are stored (``"cat"`` state, at most
    ``max_samples`` per process); the score is computed on all of them through the d x d dual when ``d < N``.

    Args:
        q: order in ``(0, inf]``.
        normalize: L2-normalise the rows (cosine kernel); ``False`` requires unit-norm rows.
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: if ``normalize`` is not a bool.
        ValueError: on a bad ``q`` or ``max_samples``; ``update`` raises on a wrong rank, NaN/Inf or a change in the
            number of features, ``compute`` like the functional (fewer than 2 rows, a zero row).

    Example:
        >>> import torch
        >>> metric = VendiScore()
        >>> metric.update(torch.eye(3))
        >>> metric.update(torch.eye(3))  # duplicates add no diversity
        >>> round(float(metric.compute()), 4)
        3.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, q: float = 1.0, normalize: bool = True, max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.q = check_order("q", q)
        self.normalize = check_bool("normalize", normalize)

    def update(self, x: Tensor) -> None:
        """Add a batch of ``(N, d)`` features."""
        self._store(samples=self._features("x", x))

    def compute(self) -> Tensor:
        return vendi_score(self._gathered(), q=self.q, normalize=self.normalize)

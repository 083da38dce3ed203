"""MatrixEntropy: matrix-based Rényi-alpha entropy of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info.metrics._samples import SampleMetric
from lightning_info.metrics.functional._utils import check_order
from lightning_info.metrics.functional.matrix_entropy import matrix_entropy


class MatrixEntropy(SampleMetric):
    r"""Matrix-based Rényi :math:`\alpha`-entropy (Giraldo et al. 2014) of all representations seen.

    :math:`S_\alpha(A) = \frac{1}{1-\alpha}\log\sum_i\lambda_i(A)^\alpha`, :math:`A = K/\mathrm{tr}K`, :math:`K` the
    cosine kernel of the rows (see :func:`~lightning_info.metrics.functional.matrix_entropy`). Rows are stored
    (``"cat"`` state, at most ``max_samples`` per process) and the entropy is computed once on all of them.

    Args:
        alpha: Rényi order in ``(0, inf]`` (1: von Neumann entropy).
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on a bad ``alpha`` or ``max_samples``; ``update``/``compute`` raise like the functional.

    Example:
        >>> import torch
        >>> metric = MatrixEntropy()
        >>> metric.update(torch.eye(4)[:2])
        >>> metric.update(torch.eye(4)[2:])
        >>> round(float(metric.compute()), 4)  # log(4)
        1.3863
    """

    higher_is_better = None

    def __init__(self, alpha: float = 1.0, max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.alpha = check_order("alpha", alpha)

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(z)

    def compute(self) -> Tensor:
        return matrix_entropy(self._gathered(), alpha=self.alpha)

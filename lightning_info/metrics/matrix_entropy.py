"""MatrixEntropy: matrix-based Rényi-alpha entropy of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_bool, check_order
from lightning_info.functional.spectral import matrix_entropy
from lightning_info.metrics._samples import SampleMetric


class MatrixEntropy(SampleMetric):
    r"""Matrix-based Rényi :math:`\alpha`-entropy (Giraldo et al. 2015) of all representations seen (nats).

    .. math:: S_\alpha(A) = \frac{1}{1-\alpha}\log\sum_i\lambda_i(A)^\alpha,\qquad A = \frac{K}{\mathrm{tr}K},

    :math:`K` the cosine kernel of the rows (see :func:`~lightning_info.functional.spectral`; the
    eigenvalues come from the smaller of the N x N and d x d matrices). Rows are stored (``"cat"`` state, at most
    ``max_samples`` per process) and the entropy is computed once on all of them.

    Args:
        alpha: Rényi order in ``(0, inf]`` (1: von Neumann entropy).
        center: subtract the mean representation first (Wei et al. 2024's matrix entropy).
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: if ``center`` is not a bool.
        ValueError: on a bad ``alpha`` or ``max_samples``; ``update`` raises on a wrong rank, NaN/Inf or a change in
            the number of features, ``compute`` like the functional (fewer than 2 rows, all rows zero).

    Example:
        >>> import torch
        >>> metric = MatrixEntropy()
        >>> metric.update(torch.eye(4)[:2])
        >>> metric.update(torch.eye(4)[2:])
        >>> round(float(metric.compute()), 4)  # log(4)
        1.3863
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, alpha: float = 1.0, center: bool = False, max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.alpha = check_order("alpha", alpha)
        self.center = check_bool("center", center)

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(samples=self._features("z", z))

    def compute(self) -> Tensor:
        return matrix_entropy(self._gathered(), alpha=self.alpha, center=self.center)

"""MatrixNuclearNorm: the Matrix Nuclear-Norm score of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_choice
from lightning_info.functional.spectral import MODES, matrix_nuclear_norm
from lightning_info.metrics._samples import SampleMetric


class MatrixNuclearNorm(SampleMetric):
    r"""Matrix Nuclear-Norm (Li et al. 2024) of all representations seen.

    .. math:: \mathrm{exact}: \frac{1}{N}\sum_{i=1}^{D}\sigma_i(\hat Z),\qquad
              \mathrm{fast}: \frac{1}{N}\sum_{j=1}^{D}\|\hat Z_{:,(j)}\|_2,\qquad D = \min(N, d),

    :math:`\hat Z` the centred, row-normalised representations and :math:`\hat Z_{:,(j)}` its ``j``-th largest
    column (the paper's :math:`L_{1,2}` approximation, no SVD); see
    :func:`~lightning_info.functional.matrix_nuclear_norm` for how the two differ. Rows are stored
    (``"cat"`` state, at most ``max_samples`` per process).

    Args:
        mode: ``"fast"`` or ``"exact"``.
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on an unknown ``mode`` or a bad ``max_samples``; ``update`` raises on a wrong rank, NaN/Inf or a
            change in the number of features, ``compute`` with fewer than 2 rows.

    Example:
        >>> import torch
        >>> metric = MatrixNuclearNorm(mode="exact")
        >>> metric.update(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        >>> metric.update(torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
        >>> round(float(metric.compute()), 4)  # 2 * sqrt(2) / 4
        0.7071
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, mode: str = "fast", max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.mode = check_choice("mode", mode, MODES)

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(samples=self._features("z", z))

    def compute(self) -> Tensor:
        return matrix_nuclear_norm(self._gathered(), mode=self.mode)

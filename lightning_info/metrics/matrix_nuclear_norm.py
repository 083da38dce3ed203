"""MatrixNuclearNorm: the Matrix Nuclear-Norm score of representations."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_choice
from lightning_info.metrics._samples import SampleMetric
from lightning_info.metrics.functional.nuclear_norm import matrix_nuclear_norm


class MatrixNuclearNorm(SampleMetric):
    r"""Matrix Nuclear-Norm (Li et al. 2024) of all representations seen: :math:`\|\hat Z\|_*/N`.

    ``mode="fast"`` uses the paper's :math:`L_{1,2}` approximation (sum of the ``min(N, d)`` largest column norms of
    the centred, row-normalised :math:`\hat Z`), ``mode="exact"`` the singular values; see
    :func:`~lightning_info.metrics.functional.matrix_nuclear_norm` for how they differ.

    Args:
        mode: ``"fast"`` or ``"exact"``.
        max_samples: cap on the rows kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on an unknown ``mode`` or a bad ``max_samples``; ``update``/``compute`` raise like the functional.

    Example:
        >>> import torch
        >>> metric = MatrixNuclearNorm(mode="exact")
        >>> metric.update(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        >>> metric.update(torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
        >>> round(float(metric.compute()), 4)  # 2 * sqrt(2) / 4
        0.7071
    """

    higher_is_better = None

    def __init__(self, mode: str = "fast", max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.mode = check_choice("mode", mode, ("fast", "exact"))

    def update(self, z: Tensor) -> None:
        """Add a batch of ``(N, d)`` representations."""
        self._store(z)

    def compute(self) -> Tensor:
        return matrix_nuclear_norm(self._gathered(), mode=self.mode)

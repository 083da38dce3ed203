"""CauchySchwarzQMI: the kernel Cauchy–Schwarz quadratic mutual information of paired samples."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info.functional.kernels import KernelWidth, check_width, cs_qmi
from lightning_info.metrics._samples import SampleMetric


class CauchySchwarzQMI(SampleMetric):
    r"""Cauchy–Schwarz quadratic mutual information of all pairs :math:`(x_i, z_i)` seen (Yu et al., ICLR 2024).

    With :math:`K_{ij} = \kappa_{\sigma_x}(x_i, x_j)` and :math:`L_{ij} = \kappa_{\sigma_z}(z_i, z_j)`,

    .. math:: \hat I_{CS}(x; z) = \log\frac{1}{N^2}\sum_{ij}K_{ij}L_{ij}
              + \log\frac{1}{N^4}\sum_{ij}K_{ij}\sum_{ij}L_{ij}
              - 2\log\frac{1}{N^3}\sum_i\Big(\sum_jK_{ij}\Big)\Big(\sum_jL_{ij}\Big)

    (the CS-IB compression term, :func:`~lightning_info.functional.cs_qmi`): the CS divergence between the
    kernel estimates of :math:`p(x, z)` and :math:`p(x)p(z)`, near 0 for independent samples. Pairs are stored
    (``"cat"`` states, at most ``max_samples`` per process); ``compute`` is :math:`O(N^2 (d_x + d_z))`.

    Args:
        sigma_x: kernel width on ``x``: a float > 0, ``"median"`` or ``"silverman"``.
        sigma_z: kernel width on ``z``.
        max_samples: cap on the pairs kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError / ValueError: a bad width or ``max_samples``; ``update`` raises on ranks other than 1 or 2,
            NaN/Inf, different numbers of ``x`` and ``z`` rows or a change in the number of features; ``compute``
            with fewer than 2 pairs.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(300, 2)
        >>> dependent, independent = CauchySchwarzQMI(), CauchySchwarzQMI()
        >>> dependent.update(x, x[:, :1] ** 2)
        >>> independent.update(x, torch.randn(300, 1))
        >>> bool(dependent.compute() > independent.compute())
        True
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self, sigma_x: KernelWidth = 1.0, sigma_z: KernelWidth = 1.0, max_samples: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(max_samples=max_samples, states=("x", "z"), **kwargs)
        self.sigma_x = check_width("sigma_x", sigma_x)
        self.sigma_z = check_width("sigma_z", sigma_z)

    def update(self, x: Tensor, z: Tensor) -> None:
        """Add paired samples ``(N,)`` / ``(N, d_x)`` and ``(N,)`` / ``(N, d_z)``."""
        x, z = self._features("x", x, "x", vector_ok=True), self._features("z", z, "z", vector_ok=True)
        if x.shape[0] != z.shape[0]:
            raise ValueError(f"x and z must have the same number of rows, got {x.shape[0]} and {z.shape[0]}")
        self._store(x=x, z=z)

    def compute(self) -> Tensor:
        return cs_qmi(self._gathered("x"), self._gathered("z"), sigma_x=self.sigma_x, sigma_z=self.sigma_z)

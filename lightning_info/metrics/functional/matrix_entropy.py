"""Matrix-based Rényi-alpha entropy of a batch of representations (Giraldo, Rao & Príncipe, 2014)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_info.metrics.functional._utils import (
    check_bool,
    check_order,
    check_samples,
    renyi_entropy,
    spectrum_distribution,
)

__all__ = ["matrix_entropy"]


def gram_spectrum(z: Tensor) -> Tensor:
    r"""Eigenvalues of :math:`A = ZZ^\top / \mathrm{tr}(ZZ^\top)` (nonzero part), through the smaller Gram matrix.

    :math:`ZZ^\top` (N x N) and :math:`Z^\top Z` (d x d) share their nonzero eigenvalues, so ``eigvalsh`` runs on
    the ``min(N, d)``-sized one. Returned as a probability vector (round-off clipped, sums to 1).
    """
    gram = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
    return spectrum_distribution(torch.linalg.eigvalsh(gram))


def matrix_entropy(z: Tensor, alpha: float = 1.0, center: bool = False) -> Tensor:
    r"""Matrix-based Rényi :math:`\alpha`-entropy of ``N`` representations (nats).

    Giraldo, Rao & Príncipe, "Measures of Entropy from Data Using Infinitely Divisible Kernels" (IEEE Trans. Inf.
    Theory, 2015), the matrix-based Rényi :math:`\alpha`-entropy: with the rows of :math:`Z` L2-normalised (so
    :math:`K = ZZ^\top` is the cosine kernel, :math:`K_{ii}=1`) and :math:`A = K / \mathrm{tr}(K)` (trace 1),

    .. math:: S_\alpha(A) = \frac{1}{1-\alpha} \log \mathrm{tr}(A^\alpha)
              = \frac{1}{1-\alpha} \log \sum_i \lambda_i(A)^\alpha,

    with the limit :math:`S_1(A) = -\sum_i \lambda_i \log \lambda_i` (von Neumann entropy) and
    :math:`S_\infty(A) = -\log \max_i \lambda_i`. The N x N Gram :math:`ZZ^\top` and the d x d covariance
    :math:`Z^\top Z` have the same nonzero eigenvalues, so ``eigvalsh`` runs on the smaller one: the value does not
    depend on the choice. Rank-1 representations give 0; ``r`` orthonormal directions used equally give
    :math:`\log r`. ``center=True`` first removes the column means: the "matrix entropy" of LLM representations
    of Wei et al. (2024), which the Matrix Nuclear-Norm paper compares against (they also report it divided by
    :math:`\log d`). Giraldo et al. use bits; divide by :math:`\log 2` for them. Cost:
    :math:`O(N d \min(N, d) + \min(N, d)^3)`.

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; any float dtype (computed in float64). All-zero rows are
            ignored (they have no direction).
        alpha: Rényi order :math:`\alpha \in (0, \infty]`; 1 is the von Neumann (Shannon) limit.
        center: subtract the mean representation before normalising the rows.

    Returns:
        0-dim float64 tensor in :math:`[0, \log \min(N, d)]`.

    Raises:
        TypeError: if ``z`` is not a floating tensor or ``center`` not a bool.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, all rows zero, or ``alpha`` outside ``(0, inf]``.

    Example:
        >>> import torch
        >>> round(float(matrix_entropy(torch.eye(4))), 4)  # log(4)
        1.3863
        >>> float(matrix_entropy(torch.tensor([[1.0, 2.0], [2.0, 4.0], [-3.0, -6.0]])))  # rank 1
        0.0
    """
    z = check_samples("z", z)
    order = check_order("alpha", alpha)
    if check_bool("center", center):
        z = z - z.mean(dim=0, keepdim=True)
    z = F.normalize(z, dim=1)
    if not bool(z.any()):
        raise ValueError("z has only all-zero rows: the matrix entropy is undefined")
    return renyi_entropy(gram_spectrum(z), order)

"""Vendi Score: the effective number of distinct samples (Friedman & Dieng, 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.validation import check_tensor
from lightning_info.metrics.functional._utils import (
    check_bool,
    check_finite,
    check_order,
    renyi_entropy,
    spectrum_distribution,
)

__all__ = ["vendi_score"]

_UNIT_NORM_TOLERANCE = 1e-4


def _row_norms(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, ||x_i||)`` for finite float64 ``x``; NaN/Inf raise, rows too large to square are rescaled first.

    The norms are one pass over ``x`` and a NaN/Inf anywhere in ``x`` makes its row norm non-finite, so the full
    check runs only then (the cosine kernel does not change when all rows are scaled by the same factor).
    """
    norms = torch.linalg.vector_norm(x, dim=1)
    if not bool(torch.isfinite(norms).all()):
        check_finite("x", x)  # raises on NaN/Inf; otherwise a norm overflowed
        x = x / x.abs().amax()
        norms = torch.linalg.vector_norm(x, dim=1)
    return x, norms


def vendi_score(x: Tensor, q: float = 1.0, normalize: bool = True) -> Tensor:
    r"""Vendi Score of order ``q`` of ``N`` samples with the cosine-similarity (linear) kernel.

    Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning" (TMLR 2023), and its
    order-q family (Pasarkar & Dieng, 2023): for a kernel matrix :math:`K` with :math:`K_{ii}=1` and
    :math:`\lambda_i` the eigenvalues of :math:`K/N`,

    .. math:: \mathrm{VS}_q = \exp\Big(\frac{1}{1-q}\log\sum_i \lambda_i^q\Big),\qquad
              \mathrm{VS}_1 = \exp\Big(-\sum_i \lambda_i\log\lambda_i\Big),\qquad
              \mathrm{VS}_\infty = 1/\max_i \lambda_i.

    Here :math:`K = \hat X\hat X^\top` with the rows of :math:`\hat X` the L2-normalised samples, so the nonzero
    :math:`\lambda_i` are those of the d x d :math:`\hat X^\top \hat X / N` (the "dual" of the ``vendi-score``
    package's ``score_dual``): the d x d matrix is decomposed when ``d < N``, the N x N one otherwise, in float64
    (agrees with ``score_dual`` to ~1e-15). ``N`` identical samples score 1, ``N`` orthogonal ones ``N``.

    Args:
        x: ``(N, d)`` features, ``N >= 2``; any float dtype (computed in float64).
        q: order :math:`q \in (0, \infty]` (``float("inf")`` allowed).
        normalize: L2-normalise the rows (cosine kernel). With ``False`` the rows must already have unit norm,
            as the score is only defined for :math:`K_{ii} = 1`.

    Returns:
        0-dim float64 tensor in :math:`[1, \min(N, d)]`.

    Raises:
        TypeError: if ``x`` is not a floating tensor or ``normalize`` not a bool.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, a zero row, rows without unit norm when
            ``normalize=False``, or ``q`` outside ``(0, inf]``.

    Example:
        >>> import torch
        >>> float(vendi_score(torch.eye(4)))
        4.0
        >>> round(float(vendi_score(torch.ones(5, 3), q=2.0)), 4)
        1.0
    """
    x = check_tensor("x", x, ndim=2, min_rows=2, finite=False)
    if x.shape[1] < 1:
        raise ValueError(f"x must have at least one feature column, got shape {tuple(x.shape)}")
    order = check_order("q", q)
    check_bool("normalize", normalize)
    x, norms = _row_norms(x.to(torch.float64))
    if normalize:
        if not bool((norms > 0).all()):
            raise ValueError("x has an all-zero row: its cosine similarity is undefined")
        x = x / norms[:, None]
    elif not bool(torch.allclose(norms, torch.ones_like(norms), rtol=0.0, atol=_UNIT_NORM_TOLERANCE)):
        raise ValueError("with normalize=False the rows of x must have unit L2 norm (the kernel needs K_ii = 1)")
    gram = x.T @ x if x.shape[1] < x.shape[0] else x @ x.T  # same nonzero eigenvalues; eigvalsh reads one triangle
    return torch.exp(renyi_entropy(spectrum_distribution(torch.linalg.eigvalsh(gram)), order))

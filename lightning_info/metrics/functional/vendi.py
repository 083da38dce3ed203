"""Vendi Score: the effective number of distinct samples (Friedman & Dieng, 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info.metrics.functional._utils import check_order, check_samples, renyi_entropy, spectrum_distribution

__all__ = ["vendi_score"]

_UNIT_NORM_TOLERANCE = 1e-4


def vendi_score(x: Tensor, q: float = 1.0, normalize: bool = True) -> Tensor:
    r"""Vendi Score of order ``q`` of ``N`` samples with the cosine-similarity (linear) kernel.

    Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning" (TMLR 2023), Eq. (1)
    and its order-q generalisation (Pasarkar & Dieng, 2023): for a kernel matrix :math:`K` with :math:`K_{ii}=1` and
    :math:`\lambda_i` the eigenvalues of :math:`K/N`,

    .. math:: \mathrm{VS}_q = \exp\Big(\frac{1}{1-q}\log\sum_i \lambda_i^q\Big),\qquad
              \mathrm{VS}_1 = \exp\Big(-\sum_i \lambda_i\log\lambda_i\Big),\qquad
              \mathrm{VS}_\infty = 1/\max_i \lambda_i.

    Here :math:`K = XX^\top` with L2-normalised rows, so the nonzero :math:`\lambda_i` are those of the d x d
    :math:`X^\top X / N` (the "dual" of the ``vendi-score`` package's ``score_dual``): the d x d matrix is
    decomposed when ``d < N``, the N x N one otherwise. ``N`` identical samples score 1, ``N`` orthogonal ones ``N``.

    Args:
        x: ``(N, d)`` features, ``N >= 2``; any float dtype (computed in float64).
        q: order :math:`q \in (0, \infty]` (``float("inf")`` allowed).
        normalize: L2-normalise the rows (cosine kernel). With ``False`` the rows must already have unit norm,
            as the score is only defined for :math:`K_{ii} = 1`.

    Returns:
        0-dim float64 tensor in :math:`[1, \min(N, d)]`.

    Raises:
        TypeError: if ``x`` is not a floating tensor.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, a zero row, rows without unit norm when
            ``normalize=False``, or ``q`` outside ``(0, inf]``.

    Example:
        >>> import torch
        >>> float(vendi_score(torch.eye(4)))
        4.0
        >>> round(float(vendi_score(torch.ones(5, 3), q=2.0)), 4)
        1.0
    """
    x = check_samples("x", x)
    order = check_order("q", q)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    sq_norms = (x * x).sum(dim=1)
    if normalize and not bool((sq_norms > 0).all()):
        raise ValueError("x has an all-zero row: its cosine similarity is undefined")
    if not normalize and not bool(
        torch.allclose(sq_norms, torch.ones_like(sq_norms), rtol=0.0, atol=_UNIT_NORM_TOLERANCE)
    ):
        raise ValueError("with normalize=False the rows of x must have unit L2 norm (the kernel needs K_ii = 1)")
    if x.shape[1] < x.shape[0]:
        # dual: X^T diag(1/|x_i|^2) X has the nonzero eigenvalues of the cosine kernel K (eigvalsh reads one triangle)
        gram = (x / sq_norms[:, None]).T @ x if normalize else x.T @ x
    else:
        rows = x * sq_norms.rsqrt()[:, None] if normalize else x
        gram = rows @ rows.T
    spectrum = spectrum_distribution(torch.linalg.eigvalsh(gram))
    return torch.exp(renyi_entropy(spectrum, order))

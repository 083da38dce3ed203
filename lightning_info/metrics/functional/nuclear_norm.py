"""Matrix Nuclear-Norm score of a batch of representations (Li et al., 2024), fast L1,2 and exact SVD modes."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_info._internal.validation import check_choice, check_tensor
from lightning_info.metrics.functional._utils import check_finite, upcast

__all__ = ["matrix_nuclear_norm"]

MODES = ("fast", "exact")
_EPS = 1e-12  # the row-norm floor of ``F.normalize``


def matrix_nuclear_norm(z: Tensor, mode: str = "fast") -> Tensor:
    r"""Matrix Nuclear-Norm of ``N`` representations, normalised by ``N``.

    Li, Xia, Chang & Wu, "Large Language Model Evaluation via Matrix Nuclear-Norm" (2024). The representation matrix
    is centred (column means removed) and its rows L2-normalised, :math:`\hat Z`, as in the authors' reference
    implementation; then, with :math:`D = \min(N, d)`,

    - ``mode="exact"``: :math:`\|\hat Z\|_* / N = \sum_{i=1}^{D} \sigma_i(\hat Z) / N` (SVD, :math:`O(ND^2)`).
    - ``mode="fast"``: the paper's :math:`L_{1,2}`-norm approximation (its Eq. for "Matrix Nuclear-Norm"),
      :math:`\sum_{j=1}^{D} \|\hat Z_{:,(j)}\|_2 / N`, the sum of the ``D`` largest column L2 norms
      (:math:`O(Nd)`, no SVD).

    How the two differ: when :math:`N \ge d` all ``d`` columns are kept and the triangle inequality gives
    ``fast >= exact`` (:math:`\|\hat Z\|_* \le \sum_j \|\hat Z_{:,j}\|_2`), with equality iff the columns are
    mutually orthogonal (then the column norms are the singular values). Both are at least
    :math:`\|\hat Z\|_F / N = \sqrt{N'}/N` (:math:`N'` nonzero rows) and at most :math:`\sqrt{D N'}/N`. When
    :math:`N < d` the top-``D`` truncation drops columns and the approximation may fall on either side of the
    exact value. Correlated (redundant) features inflate ``fast`` relative to ``exact``.

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; float16/bfloat16 are computed in float32 ("fast") or float64
            ("exact").
        mode: ``"fast"`` (L1,2 approximation) or ``"exact"`` (singular values).

    Returns:
        0-dim tensor (float32/float64 for "fast", float64 for "exact").

    Raises:
        TypeError: if ``z`` is not a floating tensor.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, or an unknown ``mode``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # orthogonal columns
        >>> round(float(matrix_nuclear_norm(z)), 4), round(float(matrix_nuclear_norm(z, mode="exact")), 4)
        (0.7071, 0.7071)
    """
    check_tensor("z", z, ndim=2, min_rows=2, finite=False)
    check_choice("mode", mode, MODES)
    n, d = z.shape
    if mode == "exact":
        return torch.linalg.svdvals(_centred_unit_rows(check_finite("z", z).to(torch.float64))).sum() / n
    # column norms of the centred, row-normalised matrix without forming it: ||Z_j||^2 = sum_i c_ij^2 / ||c_i||^2
    zf = upcast(z)
    squares = (zf - zf.mean(dim=0, keepdim=True)).square_()
    inverse_sq_row_norms = squares.sum(dim=1).clamp_min_(_EPS**2).reciprocal_()  # F.normalize's eps: zero rows stay 0
    column_norms = (inverse_sq_row_norms @ squares).sqrt_()
    if n < d:
        column_norms = torch.topk(column_norms, n, sorted=False).values
    value = column_norms.sum() / n
    if not bool(torch.isfinite(value)):  # a NaN/Inf in z reaches the value: no extra pass over z when it is finite
        check_finite("z", z)
    return value


def _centred_unit_rows(z: Tensor) -> Tensor:
    """Remove the column means, then L2-normalise the rows (zero rows stay zero)."""
    return F.normalize(z - z.mean(dim=0, keepdim=True), dim=1, eps=_EPS)

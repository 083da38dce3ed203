r"""Spectral information measures of a batch of representations, all from one Gram spectrum.

- :func:`matrix_entropy`: matrix-based Rényi-alpha entropy (Giraldo, Rao & Príncipe, 2015).
- :func:`vendi_score`: the effective number of distinct samples (Friedman & Dieng, 2023).
- :func:`matrix_nuclear_norm`: the Matrix Nuclear-Norm score (Li et al., 2024), fast L1,2 and exact SVD modes.

Matrix entropy and the Vendi Score share :func:`gram_spectrum`, the normalised nonzero eigenvalues of
:math:`ZZ^\top` computed through the smaller of the two Gram matrices.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import (
    check_bool,
    check_choice,
    check_finite,
    check_order,
    check_tensor,
)
from lightning_info.functional.entropy import renyi_entropy

__all__ = ["MODES", "gram_spectrum", "matrix_entropy", "matrix_nuclear_norm", "spectrum_distribution", "vendi_score"]

MODES = ("fast", "exact")
_EPS = 1e-12  # the row-norm floor of ``F.normalize``
_UNIT_NORM_TOLERANCE = 1e-4


def spectrum_distribution(eigenvalues: Tensor) -> Tensor:
    """Clip round-off (eigenvalues below ``n * eps * max``, negatives included) to 0 and normalise to sum 1."""
    tol = eigenvalues.shape[-1] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    kept = torch.where(eigenvalues > tol, eigenvalues, 0.0)
    return kept / kept.sum()


def _smaller_gram(y: Tensor) -> Tensor:
    """``y @ y.T`` (N x N) when ``N <= d``, else ``y.T @ y`` (d x d): the smaller of the two Gram matrices.

    For a CPU tensor outside autograd the product runs in numpy's BLAS on the shared memory (``Tensor.numpy()``, no
    copy; numpy is not imported here): numpy's matmul recognises a C-contiguous matrix times its own transpose and
    calls SYRK, half the flops of the GEMM that torch runs for it (measured about 2x faster in float64 on one
    thread; ``benchmarks/metrics.py``).
    """
    transposed = y.shape[0] > y.shape[1]
    if y.device.type == "cpu" and not y.requires_grad:
        a = y.numpy()
        return torch.from_numpy(a.T @ a if transposed else a @ a.T)
    return y.T @ y if transposed else y @ y.T


def gram_spectrum(z: Tensor, row_scale: Tensor | None = None) -> Tensor:
    r"""Eigenvalues of :math:`A = YY^\top / \mathrm{tr}(YY^\top)` (nonzero part), :math:`Y = \mathrm{diag}(s) Z`.

    ``row_scale`` (float64, one factor per row, e.g. the inverse row norms) is applied while ``z`` is cast to
    float64, in one pass; ``None`` leaves the rows as they are. :math:`YY^\top` (N x N) and :math:`Y^\top Y`
    (d x d) share their nonzero eigenvalues, so ``eigvalsh`` runs in float64 on the ``min(N, d)``-sized one.
    Returned as a probability vector (round-off clipped, sums to 1).
    """
    y = z.to(torch.float64) if row_scale is None else torch.mul(z, row_scale[:, None])  # float64 by promotion
    return spectrum_distribution(torch.linalg.eigvalsh(_smaller_gram(y.contiguous())))


def _check_features(name: str, x: object) -> Tensor:
    """Check a floating-point ``(N, d)`` matrix with ``N >= 2`` and ``d >= 1`` (finiteness is checked later)."""
    x = check_tensor(name, x, ndim=2, min_rows=2, finite=False)
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(x.shape)}")
    return x


def _row_norms(name: str, x: Tensor) -> tuple[Tensor, Tensor, float, float]:
    """``(x, norms, min norm, max norm)``: float64 row norms; NaN/Inf raise, rows too large to square are rescaled.

    The norms are one pass over ``x`` (no float64 copy of it) and a NaN/Inf anywhere in ``x`` makes the largest
    norm non-finite, so the full check runs only then (the cosine kernel does not change when all rows are scaled
    by the same factor). One ``aminmax`` gives the callers every check they need.
    """
    norms = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)
    low, high = torch.aminmax(norms.detach())
    if not float(high) < math.inf:
        check_finite(name, x)  # raises on NaN/Inf; otherwise a norm overflowed
        x = x / x.abs().amax()
        norms = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)
        low, high = torch.aminmax(norms.detach())
    return x, norms, float(low), float(high)


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
    z = _check_features("z", z)
    order = check_order("alpha", alpha)
    if check_bool("center", center):
        z = z.to(torch.float64)
        z = z - z.mean(dim=0, keepdim=True)
    z, norms, _, largest = _row_norms("z", z)
    if not largest > 0:
        raise ValueError("z has only all-zero rows: the matrix entropy is undefined")
    inverse_norms = torch.where(norms > 0, norms.reciprocal(), 0.0)  # all-zero rows stay zero
    return renyi_entropy(gram_spectrum(z, inverse_norms), order)


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
    x = _check_features("x", x)
    order = check_order("q", q)
    check_bool("normalize", normalize)
    x, norms, smallest, largest = _row_norms("x", x)
    if not normalize:
        if not (abs(smallest - 1.0) <= _UNIT_NORM_TOLERANCE and abs(largest - 1.0) <= _UNIT_NORM_TOLERANCE):
            raise ValueError("with normalize=False the rows of x must have unit L2 norm (the kernel needs K_ii = 1)")
        return torch.exp(renyi_entropy(gram_spectrum(x), order))
    if not smallest > 0:
        raise ValueError("x has an all-zero row: its cosine similarity is undefined")
    return torch.exp(renyi_entropy(gram_spectrum(x, norms.reciprocal()), order))


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
    zf = upcast(z)
    value = _l12_column_norms(zf, n, d)
    if not bool(torch.isfinite(value)):  # a NaN/Inf in z reaches the value: no extra pass over z when it is finite
        check_finite("z", z)
        # finite z whose squares overflow: the score does not change when every row is scaled by the same factor
        value = _l12_column_norms(zf / zf.abs().amax(), n, d)
    return value


def _l12_column_norms(zf: Tensor, n: int, d: int) -> Tensor:
    """Sum of the ``min(n, d)`` largest column norms of the centred, row-normalised ``zf``, divided by ``n``."""
    # column norms without forming the matrix: ||Z_j||^2 = sum_i c_ij^2 / ||c_i||^2
    squares = (zf - zf.mean(dim=0, keepdim=True)).square_()
    inverse_sq_row_norms = squares.sum(dim=1).clamp_min_(_EPS**2).reciprocal_()  # F.normalize's eps: zero rows stay 0
    column_norms = (inverse_sq_row_norms @ squares).sqrt_()
    if n < d:
        column_norms = torch.topk(column_norms, n, sorted=False).values
    return column_norms.sum() / n


def _centred_unit_rows(z: Tensor) -> Tensor:
    """Remove the column means, then L2-normalise the rows (zero rows stay zero)."""
    return F.normalize(z - z.mean(dim=0, keepdim=True), dim=1, eps=_EPS)

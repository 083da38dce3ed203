r"""Cauchy–Schwarz (CS) divergence, CS quadratic mutual information and the conditional CS divergence.

Kernel estimators from Yu, Yu, Løkse, Jenssen and Principe, "Cauchy-Schwarz Divergence Information Bottleneck for
Regression" (ICLR 2024), with the Gaussian kernel :math:`\kappa_\sigma(u, v) = \exp(-\lVert u - v\rVert^2 / 2\sigma^2)`.

Every quantity is a combination of logarithms of kernel sums, computed in log space: sums that involve two
different sample sets (``a`` vs ``b``, ``y_pred`` vs ``y``) are ``logsumexp`` over the kernel exponents
:math:`-\lVert u - v\rVert^2 / 2\sigma^2`; sums of a kernel of a sample set with itself contain its unit diagonal,
so they are >= 1 and are summed directly (same result, fewer passes). Samples that are far apart relative to
:math:`\sigma` therefore give large *finite* values and finite gradients in float32, where
``log(sum(exp(...)))`` would give ``log(0) = -inf``. The normalising constants
(:math:`1/N^2`, :math:`1/N^3`, ...) cancel exactly in each formula and are left out.

Squared distances are computed once per pair of sample sets with a matrix product (``addmm``; exact differences
for one feature), in O(N·M) memory: never an ``(N, M, d)`` tensor. Inputs of shape ``(N,)`` are ``N`` samples with
one feature each (never broadcast across samples); inputs with more than two dimensions are flattened to
``(N, -1)``. Half-precision inputs are computed in float32.

Kernel widths (``sigma``) are a positive float or one of (computed without gradient, from the samples the kernel
is applied to):

- ``"median"``: the median Euclidean distance between distinct samples (lower median over the pairs ``i < j``).
- ``"silverman"``: Silverman's rule of thumb :math:`\bar s \, (4 / ((d + 2) N))^{1/(d + 4)}`, with :math:`\bar s`
  the root mean per-feature variance and ``d`` the number of features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_info._internal.validation import check_choice, check_range, check_tensor

KernelWidth = float | Literal["median", "silverman"]
"""A Gaussian kernel width: a positive float, ``"median"`` or ``"silverman"``."""

Estimator = Literal["proposition", "official"]

_WIDTH_RULES = ("median", "silverman")
_MIN_WIDTH = 1e-6


def as_samples(name: str, value: object, min_rows: int = 2) -> Tensor:
    """Validate a batch of samples and return it as ``(N, d)`` (float32 when given in half precision).

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: a 0-d tensor, fewer than ``min_rows`` samples, or NaN/Inf values.
    """
    tensor = check_tensor(name, value, min_rows=min_rows)
    if tensor.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension (samples), got a 0-d tensor")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.reshape(tensor.shape[0], -1)


def check_width(name: str, sigma: object) -> KernelWidth:
    """Validate a kernel width: a float > 0 or one of ``"median"``, ``"silverman"``.

    Raises:
        TypeError: neither a real number nor a string.
        ValueError: a number <= 0 or not finite, or an unknown rule name.
    """
    if isinstance(sigma, str):
        return check_choice(name, sigma, _WIDTH_RULES)  # type: ignore[return-value]
    return check_range(name, sigma, 0.0, low_inclusive=False)


def squared_distances(a: Tensor, b: Tensor | None = None) -> Tensor:
    r"""Pairwise squared Euclidean distances :math:`\lVert a_i - b_j\rVert^2` of ``(N, d)`` and ``(M, d)`` samples.

    ``b=None`` means ``b = a`` (the diagonal is then exactly zero). One feature: exact differences; more features:
    ``|a|^2 + |b|^2 - 2 a b^T`` after centring both sets on the mean of ``a`` (the distances do not change, the
    cancellation error does), clamped at zero. Memory O(N·M).
    """
    same = b is None
    other = a if b is None else b
    if a.shape[1] == 1:
        return (a - other.reshape(1, -1)).square()
    center = a.detach().mean(dim=0, keepdim=True)
    a_c = a - center
    b_c = a_c if same else other - center
    norms_a = a_c.square().sum(dim=1, keepdim=True)
    norms_b = norms_a if same else b_c.square().sum(dim=1, keepdim=True)
    dist = torch.addmm(norms_a + norms_b.T, a_c, b_c.T, beta=1.0, alpha=-2.0).clamp_min(0.0)
    if same:
        dist.fill_diagonal_(0.0)
    return dist


def median_width(samples: Tensor) -> Tensor:
    """Median heuristic: the median Euclidean distance between distinct samples of ``(N,)``/``(N, d)`` ``samples``.

    The lower median over the pairs ``i < j``; the mean distance when that median is zero (many duplicates) and
    ``1e-6`` when all samples coincide. Returned without gradient.

    Example:
        >>> import torch
        >>> median_width(torch.tensor([0.0, 1.0, 3.0]))
        tensor(2.)
    """
    points = as_samples("samples", samples)
    return _median_from_sq_dists(squared_distances(points.detach()))


def silverman_width(samples: Tensor) -> Tensor:
    r"""Silverman's rule :math:`\bar s\,(4 / ((d + 2) N))^{1/(d + 4)}` for ``(N,)``/``(N, d)`` samples, no gradient.

    :math:`\bar s` is the root mean per-feature (unbiased) variance.

    Example:
        >>> import torch
        >>> round(silverman_width(torch.tensor([0.0, 1.0, 2.0, 3.0])).item(), 4)
        1.0363
    """
    points = as_samples("samples", samples)
    with torch.no_grad():
        n, d = points.shape
        spread = points.var(dim=0, unbiased=True).mean().sqrt()
        return (spread * (4.0 / ((d + 2) * n)) ** (1.0 / (d + 4))).clamp_min(_MIN_WIDTH)


def _median_from_sq_dists(sq_dists: Tensor) -> Tensor:
    with torch.no_grad():
        rows, cols = torch.triu_indices(sq_dists.shape[0], sq_dists.shape[1], offset=1, device=sq_dists.device)
        values = sq_dists[rows, cols]
        width = values.median().sqrt()
        if width <= _MIN_WIDTH:
            width = values.sqrt().mean()
        return width.clamp_min(_MIN_WIDTH)


def kernel_width(sigma: KernelWidth, samples: Tensor, sq_dists: Tensor) -> Tensor | float:
    """Resolve a validated width for ``(N, d)`` ``samples`` whose pairwise squared distances are ``sq_dists``."""
    if sigma == "median":
        return _median_from_sq_dists(sq_dists)
    if sigma == "silverman":
        return silverman_width(samples)
    return float(sigma)


def log_kernel(sq_dists: Tensor, sigma: Tensor | float) -> Tensor:
    """Log of the Gaussian kernel, ``-sq_dists / (2 sigma^2)``."""
    return sq_dists * (-0.5 / sigma**2)


def _log_self_sum(kernel: Tensor, dim: int | None = None) -> Tensor:
    # log of a sum of a self-kernel (unit diagonal, entries in [0, 1]): every row sum is >= 1, so the plain sum
    # is already stable (no exponent can overflow and the log never sees 0) and cheaper than a logsumexp
    return (kernel.sum() if dim is None else kernel.sum(dim=dim)).log()


def _cs_divergence_compute(k_aa: Tensor, k_bb: Tensor, log_ab: Tensor) -> Tensor:
    # log(1/m^2 sum K_aa) + log(1/n^2 sum K_bb) - 2 log(1/(mn) sum K_ab): the 1/m, 1/n factors cancel
    return _log_self_sum(k_aa) + _log_self_sum(k_bb) - 2 * log_ab.logsumexp(dim=(0, 1))


def cs_qmi_from_kernels(k: Tensor, l_z: Tensor) -> Tensor:
    """:func:`cs_qmi` from the ``(N, N)`` kernel matrices (unit diagonal) of ``x`` and ``z``."""
    # log(1/N^2 sum K∘L) + log(1/N^4 sum K sum L) - 2 log(1/N^3 sum_i (sum_j K_ij)(sum_j L_ij)): N's cancel
    joint = _log_self_sum(k * l_z)
    marginals = _log_self_sum(k) + _log_self_sum(l_z)
    cross = (_log_self_sum(k, 1) + _log_self_sum(l_z, 1)).logsumexp(dim=0)
    return joint + marginals - 2 * cross


def conditional_from_kernel(
    k: Tensor, log_k: Tensor, y: Tensor, y_pred: Tensor, sigma_y: KernelWidth, estimator: Estimator = "proposition"
) -> Tensor:
    """:func:`cs_conditional_divergence` from the ``(N, N)`` kernel on ``x`` (and its log) and ``(N, k)`` targets."""
    d_yy = squared_distances(y)
    width = kernel_width(sigma_y, y, d_yy)
    # per query j: log of the normaliser, (sum_i K_ji)^2 (Proposition 1) or sum_i K_ji^2 (released script)
    log_norm = 2 * _log_self_sum(k, 1) if estimator == "proposition" else _log_self_sum(k.square(), 1)
    l1 = log_kernel(d_yy, width).exp()
    l2 = log_kernel(squared_distances(y_pred), width).exp()
    log_l21 = log_kernel(squared_distances(y_pred, y), width)  # no unit diagonal: needs the logsumexp
    t1 = (_log_self_sum(k * l1, 1) - log_norm).logsumexp(dim=0)
    t2 = (_log_self_sum(k * l2, 1) - log_norm).logsumexp(dim=0)
    t3 = ((log_k + log_l21).logsumexp(dim=1) - log_norm).logsumexp(dim=0)
    return t1 + t2 - 2 * t3


def cs_divergence(a: Tensor, b: Tensor, sigma: KernelWidth = 1.0) -> Tensor:
    r"""Cauchy–Schwarz divergence between the samples ``a`` (``m`` of them) and ``b`` (``n``).

    .. math::
        \hat D_{CS}(a, b) = \log \frac{1}{m^2}\sum_{ij} \kappa(a_i, a_j) + \log \frac{1}{n^2}\sum_{ij} \kappa(b_i, b_j)
        - 2 \log \frac{1}{mn}\sum_{ij} \kappa(a_i, b_j)

    Non-negative, zero for identical sample sets, symmetric and translation invariant. ``"median"`` and
    ``"silverman"`` widths are computed on the pooled samples.

    Args:
        a: ``(m,)`` or ``(m, d)`` samples (``m >= 2``).
        b: ``(n,)`` or ``(n, d)`` samples (``n >= 2``), same number of features as ``a``.
        sigma: kernel width (see the module docstring).

    Returns:
        A scalar tensor (nats).

    Raises:
        TypeError: non-tensor or non-floating input, or a width of the wrong type.
        ValueError: fewer than 2 samples, different feature counts, NaN/Inf, or a width <= 0.

    Example:
        >>> import torch
        >>> a = torch.tensor([0.0, 1.0, 2.0])
        >>> round(cs_divergence(a, a).item(), 6)
        0.0
        >>> bool(cs_divergence(a, a + 3.0) > 0)
        True
    """
    sigma = check_width("sigma", sigma)
    a2, b2 = as_samples("a", a), as_samples("b", b)
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"a and b must have the same number of features, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(sigma, str):
        pooled = torch.cat([a2, b2])
        d_pooled = squared_distances(pooled)
        m = a2.shape[0]
        d_aa, d_bb, d_ab = d_pooled[:m, :m], d_pooled[m:, m:], d_pooled[:m, m:]
        width = kernel_width(sigma, pooled, d_pooled)
    else:
        d_aa, d_bb, d_ab = squared_distances(a2), squared_distances(b2), squared_distances(a2, b2)
        width = sigma
    return _cs_divergence_compute(log_kernel(d_aa, width).exp(), log_kernel(d_bb, width).exp(), log_kernel(d_ab, width))


def cs_qmi(x: Tensor, z: Tensor, sigma_x: KernelWidth = 1.0, sigma_z: KernelWidth = 1.0) -> Tensor:
    r"""Cauchy–Schwarz quadratic mutual information of paired samples ``(x_i, z_i)`` (Proposition 2 of the paper).

    With :math:`K_{ij} = \kappa_{\sigma_x}(x_i, x_j)` and :math:`L_{ij} = \kappa_{\sigma_z}(z_i, z_j)`:

    .. math::
        \hat I_{CS}(x; z) = \log \frac{1}{N^2}\sum_{ij} K_{ij} L_{ij}
        + \log \frac{1}{N^4}\sum_{ij} K_{ij} \sum_{ij} L_{ij}
        - 2 \log \frac{1}{N^3}\sum_i \Big(\sum_j K_{ij}\Big)\Big(\sum_j L_{ij}\Big)

    The CS divergence between the kernel estimates of :math:`p(x, z)` and :math:`p(x)p(z)`: non-negative,
    near zero for independent samples, larger for dependent ones, invariant to translating either input.

    Args:
        x: ``(N,)`` or ``(N, d_x)`` samples, ``N >= 2`` (more dimensions are flattened).
        z: ``(N,)`` or ``(N, d_z)`` samples paired with ``x``.
        sigma_x: kernel width on ``x``.
        sigma_z: kernel width on ``z``.

    Returns:
        A scalar tensor (nats).

    Raises:
        TypeError: non-tensor or non-floating input, or a width of the wrong type.
        ValueError: fewer than 2 samples, different numbers of samples, NaN/Inf, or a width <= 0.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(200, 2)
        >>> bool(cs_qmi(x, x[:, :1] ** 2) > cs_qmi(x, torch.randn(200, 1)))
        True
    """
    sigma_x, sigma_z = check_width("sigma_x", sigma_x), check_width("sigma_z", sigma_z)
    x2, z2 = as_samples("x", x), as_samples("z", z)
    _check_paired(("x", x2), ("z", z2))
    d_x, d_z = squared_distances(x2), squared_distances(z2)
    k = log_kernel(d_x, kernel_width(sigma_x, x2, d_x)).exp()
    l_z = log_kernel(d_z, kernel_width(sigma_z, z2, d_z)).exp()
    return cs_qmi_from_kernels(k, l_z)


def cs_conditional_divergence(
    x: Tensor,
    y: Tensor,
    y_pred: Tensor,
    sigma_x: KernelWidth = 1.0,
    sigma_y: KernelWidth = 1.0,
    estimator: Estimator = "proposition",
) -> Tensor:
    r"""Conditional CS divergence :math:`D_{CS}(p(y|x) \,\|\, q_\theta(\hat y|x))`, the CS-IB prediction term.

    Empirical estimator of Proposition 1 of the paper, from triplets :math:`(x_j, y_j, \hat y_j)`, with
    :math:`K_{ji} = \kappa_{\sigma_x}(x_j, x_i)`, :math:`L^1_{ji} = \kappa_{\sigma_y}(y_j, y_i)`,
    :math:`L^2_{ji} = \kappa_{\sigma_y}(\hat y_j, \hat y_i)` and :math:`L^{21}_{ji} = \kappa_{\sigma_y}(\hat y_j, y_i)`:

    .. math::
        \hat D = \log \sum_j \frac{\sum_i K_{ji} L^1_{ji}}{(\sum_i K_{ji})^2}
        + \log \sum_j \frac{\sum_i K_{ji} L^2_{ji}}{(\sum_i K_{ji})^2}
        - 2 \log \sum_j \frac{\sum_i K_{ji} L^{21}_{ji}}{(\sum_i K_{ji})^2}

    Each sum over ``j`` is a plug-in estimate of :math:`\iint f(y|x)\,g(y|x)\,dx\,dy` with kernel density estimates
    of the conditionals evaluated at the sample points (:math:`\hat p(x_j, \cdot) / \hat p(x_j)^2`). Zero when
    ``y_pred == y``. The first term does not depend on the model; it makes the value a divergence.
    Limits: as :math:`\sigma_x \to 0` (``K`` tends to the identity) the estimate tends to the correntropy loss
    :math:`-2 \log \frac1N \sum_j \kappa_{\sigma_y}(\hat y_j, y_j)`, which behaves like
    :math:`\mathrm{MSE} / \sigma_y^2` for small errors; as :math:`\sigma_x \to \infty` it tends to the unconditional
    :func:`cs_divergence` between ``y`` and ``y_pred``.

    ``estimator="official"`` uses the weighting of the authors' released training script instead: each query
    ``j`` is divided by :math:`\sum_i K_{ji}^2` rather than :math:`(\sum_i K_{ji})^2` (that script also reports
    bits, ``log2``; here both estimators are in nats). The two agree when ``K`` is the identity; otherwise the
    script's weights are not those of the proposition and the value is not zero-calibrated in the same way.

    Args:
        x: ``(N,)`` or ``(N, d_x)`` inputs (conditioning variable), ``N >= 2``.
        y: ``(N,)`` or ``(N, k)`` targets.
        y_pred: predictions with the same number of samples and features as ``y`` (``(N,)`` and ``(N, 1)``
            are the same thing).
        sigma_x: kernel width on ``x``.
        sigma_y: kernel width shared by ``y`` and ``y_pred`` (``"median"``/``"silverman"`` use ``y``).
        estimator: ``"proposition"`` (Proposition 1) or ``"official"`` (the released script's weighting).

    Returns:
        A scalar tensor (nats).

    Raises:
        TypeError: non-tensor or non-floating input, or a width of the wrong type.
        ValueError: fewer than 2 samples, mismatched samples or features, NaN/Inf, a width <= 0, or an unknown
            estimator.

    Example:
        >>> import torch
        >>> x, y = torch.randn(64, 3), torch.randn(64)
        >>> round(cs_conditional_divergence(x, y, y.clone()).item(), 5)
        0.0
        >>> bool(cs_conditional_divergence(x, y, y + 1.0) > 0)
        True
    """
    sigma_x, sigma_y = check_width("sigma_x", sigma_x), check_width("sigma_y", sigma_y)
    check_choice("estimator", estimator, ("proposition", "official"))
    x2, y2, p2 = as_samples("x", x), as_samples("y", y), as_samples("y_pred", y_pred)
    _check_paired(("x", x2), ("y", y2), ("y_pred", p2))
    if y2.shape[1] != p2.shape[1]:
        raise ValueError(
            f"y and y_pred must have the same number of features, got {tuple(y.shape)} and {tuple(y_pred.shape)}"
        )
    d_x = squared_distances(x2)
    log_k = log_kernel(d_x, kernel_width(sigma_x, x2, d_x))
    return conditional_from_kernel(log_k.exp(), log_k, y2, p2, sigma_y, estimator)


def _check_paired(*named: tuple[str, Tensor]) -> None:
    sizes = {name: t.shape[0] for name, t in named}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"paired inputs must have the same number of samples, got {sizes}")


__all__ = [
    "KernelWidth",
    "as_samples",
    "check_width",
    "conditional_from_kernel",
    "cs_conditional_divergence",
    "cs_divergence",
    "cs_qmi",
    "cs_qmi_from_kernels",
    "kernel_width",
    "log_kernel",
    "median_width",
    "silverman_width",
    "squared_distances",
]

r"""Cauchy–Schwarz (CS) divergence, CS quadratic mutual information and the conditional CS divergence.

Kernel estimators from Yu, Yu, Løkse, Jenssen and Principe, "Cauchy-Schwarz Divergence Information Bottleneck for
Regression" (ICLR 2024): the CS divergence, the CS-QMI of Proposition 2 and the conditional CS divergence of
Proposition 1 (the prediction term), with the Gaussian kernel
:math:`\kappa_\sigma(u, v) = \exp(-\lVert u - v\rVert^2 / 2\sigma^2)`.

Every quantity is a combination of logarithms of kernel sums, computed in log space from the kernel exponents
:math:`e_{ij} = -\lVert u_i - v_j\rVert^2 / 2\sigma^2`: a sum of kernels is :math:`\log\sum_{ij} e^{e_{ij}}`, a
``logsumexp``. A sum that contains a unit diagonal (a sample set against itself, e.g. :math:`\sum_{ij} K_{ij}` or
:math:`\sum_i K_{ji} L^1_{ji}`) has its largest exponent known in advance, :math:`\max e = 0`, so its ``logsumexp``
is exactly ``log(sum(exp(e)))`` with no shift; it is computed that way (one pass instead of three). Every other sum
(``a`` against ``b``, ``y_pred`` against ``y``, the sums over queries ``j``) is a ``logsumexp`` shifted by its
maximum. So
samples that are far apart relative to :math:`\sigma` give large *finite* values and finite gradients in float32,
where the textbook ``log(sum(exp(...)))`` of a cross term gives ``log(0) = -inf``. The normalising constants
(:math:`1/N^2`, :math:`1/N^3`, ...) cancel exactly in each formula and are left out.

Underflow floors (speed, not accuracy): on CPU, ``exp`` of exponents below about -87 and products that underflow
float32 take a slow path (tens of times slower). Kernel values are therefore computed as
``exp(max(e, -40))`` and the ``logsumexp`` terms as ``max + log(sum(exp(max(e - max, -80))))``. A floored entry only
ever enters a sum that is at least 1 (a unit diagonal, or the largest term of a ``logsumexp``), so the change is at
most ``N * 4e-18`` relative (``N * 2e-35`` for the ``logsumexp``): invisible in float32, below ``1e-13`` in float64
for ``N <= 10^4``; floored entries get no gradient (their true gradient is as small).

Squared distances are computed once per pair of sample sets with a matrix product (``addmm``; exact differences
for one feature), in O(N·M) memory: never an ``(N, M, d)`` tensor. Inputs of shape ``(N,)`` are ``N`` samples with
one feature each (never broadcast across samples); inputs with more than two dimensions are flattened to
``(N, -1)``. Half-precision inputs are computed in float32; sample sets of different dtypes are computed in their
promoted dtype (float32 with float64: float64).

Kernel widths (``sigma``) are a positive float or one of (computed without gradient, from the samples the kernel
is applied to):

- ``"median"``: the median Euclidean distance between distinct samples (lower median over the pairs ``i < j``).
- ``"silverman"``: Silverman's rule of thumb :math:`\bar s \, (4 / ((d + 2) N))^{1/(d + 4)}`, with :math:`\bar s`
  the root mean per-feature variance and ``d`` the number of features.

``"median"`` adapts to the scale and dimension of each batch (a good default for representations, whose scale
changes during training, and for the kernel two-sample use of :func:`cs_divergence`); ``"silverman"`` is the
density-estimation rule, much narrower than the median distance and narrower as ``N`` grows (the default for the
inputs of the CS-IB prediction term, see :class:`~lightning_info.losses.CSIBLoss`); a float fixes the width (the
authors' script uses ``sigma = 1`` on standardised data). A width is resolved per call, from the batch, and treated
as a constant by autograd.
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
# exp() of exponents below about -87 (float32 underflow) takes a slow path on CPU (~50x); the floors keep every
# exponentiated value, and every product of two kernel values, a normal float32 (see the module docstring)
_KERNEL_FLOOR = -40.0
_LSE_FLOOR = -80.0


def as_samples(name: str, value: object, min_rows: int = 2) -> Tensor:
    """Validate a batch of samples and return it as ``(N, d)`` (float32 when given in half precision).

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: a 0-d tensor or fewer than ``min_rows`` samples, or NaN/Inf values.
    """
    tensor = check_tensor(name, value, min_rows=min_rows)  # a 0-d tensor has no rows: rejected here
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.reshape(tensor.shape[0], -1)


def common_dtype(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The validated sample sets in their common (promoted) floating dtype: float32 and float64 give float64."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return tuple(tensor.to(dtype) for tensor in tensors)


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
    ``1e-6`` when all samples coincide. Returned without gradient, in the samples' dtype (computed in float64, so
    that samples whose squares overflow their dtype still get their width).

    Example:
        >>> import torch
        >>> median_width(torch.tensor([0.0, 1.0, 3.0]))
        tensor(2.)
    """
    points = as_samples("samples", samples)
    return _median_from_sq_dists(squared_distances(points.detach().double())).to(points.dtype)


def silverman_width(samples: Tensor) -> Tensor:
    r"""Silverman's rule :math:`\bar s\,(4 / ((d + 2) N))^{1/(d + 4)}` for ``(N,)``/``(N, d)`` samples, no gradient.

    :math:`\bar s` is the root mean per-feature (unbiased) variance.

    Example:
        >>> import torch
        >>> round(silverman_width(torch.tensor([0.0, 1.0, 2.0, 3.0])).item(), 4)
        1.0363
    """
    points = as_samples("samples", samples)
    return _silverman(points.double()).to(points.dtype)  # float64: the variance of large samples overflows float32


def _silverman(points: Tensor) -> Tensor:
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


def _resolve_width(sigma: KernelWidth, samples: Tensor, sq_dists: Tensor) -> Tensor | float:
    if sigma == "median":
        return _median_from_sq_dists(sq_dists)
    if sigma == "silverman":
        return _silverman(samples)
    return float(sigma)


def check_width_fits(name: str, sigma: KernelWidth, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` if a float width is so small that ``1 / (2 sigma^2)`` overflows ``dtype``.

    (``sigma=1e-30`` in float32 would turn the zero self-distances into ``0 * inf = NaN``.)
    """
    if isinstance(sigma, str):
        return
    factor = 0.5 / sigma / sigma
    if factor > torch.finfo(dtype).max:
        smallest = (0.5 / torch.finfo(dtype).max) ** 0.5
        raise ValueError(
            f"{name} must be >= {smallest:.3g} for {dtype} inputs (1 / (2 {name}^2) overflows), got {sigma!r}; "
            "rescale the samples or pass float64 inputs"
        )


def _check_finite_result(function: str, value: Tensor, inputs: str, widths: str) -> Tensor:
    """Return ``value`` or raise ``ValueError`` when the kernel exponents overflowed (NaN/Inf result)."""
    if not bool(torch.isfinite(value.detach())):
        wider = "" if value.dtype == torch.float64 else " or pass float64 inputs"
        raise ValueError(
            f"{function} is not finite ({float(value)}) in {value.dtype}: the kernel exponents "
            f"|u - v|^2 / (2 sigma^2) of {inputs} overflow for {widths}; rescale the samples or use a larger width"
            f"{wider}"
        )
    return value


def _log_kernel(sq_dists: Tensor, sigma: Tensor | float) -> Tensor:
    return sq_dists * (-0.5 / sigma**2)


def log_gram(samples: Tensor, sigma: KernelWidth) -> Tensor:
    """``(N, N)`` matrix of Gaussian-kernel exponents ``-|s_i - s_j|^2 / (2 sigma^2)`` of validated ``(N, d)`` samples.

    Built once per batch from one squared-distance matrix; ``"median"``/``"silverman"`` widths come from ``samples``
    (without gradient). The diagonal is exactly 0 (the kernel matrix ``exp`` of it has a unit diagonal).
    """
    sq_dists = squared_distances(samples)
    return _log_kernel(sq_dists, _resolve_width(sigma, samples, sq_dists))


def _kernel(log_k: Tensor) -> Tensor:
    """Kernel values from exponents, floored at ``exp(-40)`` (products of two stay normal float32 numbers)."""
    return log_k.clamp_min(_KERNEL_FLOOR).exp()


def _logsumexp(values: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """``torch.logsumexp`` with the shifted exponents floored at -80 (no slow underflow path; same value)."""
    top = values.detach().amax(dim=dim, keepdim=True)
    return (values - top).clamp_min(_LSE_FLOOR).exp().sum(dim=dim).log() + top.squeeze(dim)


def _log_self_sum(kernel: Tensor, dim: int | None = None) -> Tensor:
    # logsumexp of exponents whose maximum is known to be 0 (a unit diagonal in every row): the shift of the
    # logsumexp is 0, so it is exactly log(sum(exp(e))) -- never log(0), since every row sum is >= 1
    return (kernel.sum() if dim is None else kernel.sum(dim=dim)).log()


def _qmi_from_kernels(k: Tensor, l_z: Tensor) -> Tensor:
    # log(1/N^2 sum K∘L) + log(1/N^4 sum K sum L) - 2 log(1/N^3 sum_i (sum_j K_ij)(sum_j L_ij)): the N's cancel
    joint = _log_self_sum(k * l_z)
    marginals = _log_self_sum(k) + _log_self_sum(l_z)
    cross = _logsumexp(_log_self_sum(k, 1) + _log_self_sum(l_z, 1), dim=0)
    return joint + marginals - 2 * cross


def _conditional_from_kernel(
    k: Tensor, log_k: Tensor, y: Tensor, y_pred: Tensor, sigma_y: KernelWidth, estimator: Estimator
) -> Tensor:
    # Proposition 1 from the (N, N) kernel on x (and its exponents) and (N, k) targets
    d_yy = squared_distances(y)
    width = _resolve_width(sigma_y, y, d_yy)
    # per query j, the log of the weight's denominator: (sum_i K_ji)^2 (Proposition 1) or sum_i K_ji^2 (script)
    log_norm = 2 * _log_self_sum(k, 1) if estimator == "proposition" else _log_self_sum(k.square(), 1)
    l1 = _kernel(_log_kernel(d_yy, width))
    l2 = _kernel(_log_kernel(squared_distances(y_pred), width))
    log_l21 = _log_kernel(squared_distances(y_pred, y), width)  # L21_ji = k(yhat_j, y_i): no unit diagonal
    t1 = _logsumexp(_log_self_sum(k * l1, 1) - log_norm, dim=0)
    t2 = _logsumexp(_log_self_sum(k * l2, 1) - log_norm, dim=0)
    t3 = _logsumexp(_logsumexp(log_k + log_l21, dim=1) - log_norm, dim=0)
    return t1 + t2 - 2 * t3


def ib_terms(
    x: Tensor,
    t: Tensor,
    y_pred: Tensor,
    y: Tensor,
    sigma_x: KernelWidth,
    sigma_t: KernelWidth,
    sigma_y: KernelWidth,
    estimator: Estimator = "proposition",
) -> tuple[Tensor, Tensor]:
    """The two CS-IB terms ``(prediction, compression)`` of validated ``(N, d)`` tensors, sharing one kernel on ``x``.

    ``prediction`` is :func:`cs_conditional_divergence` ``(x, y, y_pred)``, ``compression`` is :func:`cs_qmi`
    ``(x, t)``; the kernel matrix of ``x`` is built once for both.
    """
    for name, width in (("sigma_x", sigma_x), ("sigma_t", sigma_t), ("sigma_y", sigma_y)):
        check_width_fits(name, width, x.dtype)
    log_k = log_gram(x, sigma_x)
    k = _kernel(log_k)
    prediction = _conditional_from_kernel(k, log_k, y, y_pred, sigma_y, estimator)
    return prediction, _qmi_from_kernels(k, _kernel(log_gram(t, sigma_t)))


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
        ValueError: fewer than 2 samples, different feature counts, NaN/Inf, a width <= 0, or a result that is
            not finite because the kernel exponents overflow the dtype (e.g. float32 samples of size ~1e20, or
            ``sigma=1e-30``): rescale, widen ``sigma`` or pass float64 (see :func:`check_width_fits`).

    Example:
        >>> import torch
        >>> a = torch.tensor([0.0, 1.0, 2.0])
        >>> round(cs_divergence(a, a).item(), 6)
        0.0
        >>> bool(cs_divergence(a, a + 3.0) > 0)
        True
    """
    sigma = check_width("sigma", sigma)
    a2, b2 = common_dtype(as_samples("a", a), as_samples("b", b))
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"a and b must have the same number of features, got {tuple(a.shape)} and {tuple(b.shape)}")
    check_width_fits("sigma", sigma, a2.dtype)
    m = a2.shape[0]
    if isinstance(sigma, str):  # one pooled matrix: the width rule needs every pair anyway
        log_pooled = log_gram(torch.cat([a2, b2]), sigma)
        log_aa, log_bb, log_ab = log_pooled[:m, :m], log_pooled[m:, m:], log_pooled[:m, m:]
    else:
        log_aa, log_bb = log_gram(a2, sigma), log_gram(b2, sigma)
        log_ab = _log_kernel(squared_distances(a2, b2), sigma)
    # log(1/m^2 sum K_aa) + log(1/n^2 sum K_bb) - 2 log(1/(mn) sum K_ab): the 1/m, 1/n factors cancel
    value = _log_self_sum(_kernel(log_aa)) + _log_self_sum(_kernel(log_bb)) - 2 * _logsumexp(log_ab, dim=(0, 1))
    return _check_finite_result("cs_divergence", value, "a and b", f"sigma={sigma!r}")


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
        ValueError: fewer than 2 samples, different numbers of samples, NaN/Inf, a width <= 0, or a result that
            is not finite because the kernel exponents overflow the dtype (see :func:`cs_divergence`).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(200, 2)
        >>> bool(cs_qmi(x, x[:, :1] ** 2) > cs_qmi(x, torch.randn(200, 1)))
        True
    """
    sigma_x, sigma_z = check_width("sigma_x", sigma_x), check_width("sigma_z", sigma_z)
    x2, z2 = as_samples("x", x), as_samples("z", z)
    check_paired(("x", x2), ("z", z2))
    check_width_fits("sigma_x", sigma_x, x2.dtype)
    check_width_fits("sigma_z", sigma_z, z2.dtype)
    value = _qmi_from_kernels(_kernel(log_gram(x2, sigma_x)), _kernel(log_gram(z2, sigma_z)))
    return _check_finite_result("cs_qmi", value, "x and z", f"sigma_x={sigma_x!r}, sigma_z={sigma_z!r}")


def cs_conditional_divergence(
    x: Tensor,
    y: Tensor,
    y_pred: Tensor,
    sigma_x: KernelWidth = 1.0,
    sigma_y: KernelWidth = 1.0,
    estimator: Estimator = "proposition",
) -> Tensor:
    r"""Conditional CS divergence :math:`D_{CS}(p(y|x) \,\|\, q_\theta(\hat y|x))`, the CS-IB prediction term.

    The empirical estimator of Proposition 1 of Yu et al. (ICLR 2024), from triplets :math:`(x_j, y_j, \hat y_j)`,
    with :math:`K_{ji} = \kappa_{\sigma_x}(x_j, x_i)`, :math:`L^1_{ji} = \kappa_{\sigma_y}(y_j, y_i)`,
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

    ``estimator="official"`` is the simplified weighting the authors train with in their released script
    (``CS_Div`` in ``loss_cs.py``): each query ``j`` is divided by :math:`\sum_i K_{ji}^2` instead of
    :math:`(\sum_i K_{ji})^2`. The two agree when ``K`` is the identity (:math:`\sigma_x \to 0`) and both are zero at
    ``y_pred == y``; otherwise the script weights the queries by :math:`1 / \sum_i K_{ji}^2` (more weight to
    queries in dense regions of ``x`` relative to the proposition's :math:`1/\hat p(x_j)^2`), so its value is not
    the Proposition 1 estimate. The script also reports bits (``log2``); here both estimators are in nats, on
    correctly shaped ``(N, k)`` targets, in log space.

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
        ValueError: fewer than 2 samples, mismatched samples or features, NaN/Inf, a width <= 0, an unknown
            estimator, or a result that is not finite because the kernel exponents overflow the dtype (see
            :func:`cs_divergence`).

    Example:
        >>> import torch
        >>> x, y = torch.randn(64, 3), torch.randn(64)
        >>> round(cs_conditional_divergence(x, y, y.clone()).item(), 5)
        0.0
        >>> bool(cs_conditional_divergence(x, y, y + 1.0) > 0)
        True
    """
    sigma_x, sigma_y = check_width("sigma_x", sigma_x), check_width("sigma_y", sigma_y)
    check_estimator(estimator)
    x2, y2, p2 = common_dtype(as_samples("x", x), as_samples("y", y), as_samples("y_pred", y_pred))
    check_paired(("x", x2), ("y", y2), ("y_pred", p2))
    if y2.shape[1] != p2.shape[1]:
        raise ValueError(
            f"y and y_pred must have the same number of features, got {tuple(y.shape)} and {tuple(y_pred.shape)}"
        )
    check_width_fits("sigma_x", sigma_x, x2.dtype)
    check_width_fits("sigma_y", sigma_y, y2.dtype)
    log_k = log_gram(x2, sigma_x)
    value = _conditional_from_kernel(_kernel(log_k), log_k, y2, p2, sigma_y, estimator)
    return _check_finite_result(
        "cs_conditional_divergence", value, "x, y and y_pred", f"sigma_x={sigma_x!r}, sigma_y={sigma_y!r}"
    )


def check_estimator(estimator: object) -> Estimator:
    """Validate the conditional estimator name: ``"proposition"`` or ``"official"``."""
    return check_choice("estimator", estimator, ("proposition", "official"))  # type: ignore[return-value]


def check_paired(*named: tuple[str, Tensor]) -> None:
    """Raise a ``ValueError`` listing the sizes unless every ``(name, tensor)`` has the same number of samples."""
    sizes = {name: t.shape[0] for name, t in named}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"paired inputs must have the same number of samples, got {sizes}")


__all__ = [
    "Estimator",
    "KernelWidth",
    "as_samples",
    "check_estimator",
    "check_paired",
    "check_width",
    "check_width_fits",
    "common_dtype",
    "cs_conditional_divergence",
    "cs_divergence",
    "cs_qmi",
    "ib_terms",
    "log_gram",
    "median_width",
    "silverman_width",
    "squared_distances",
]

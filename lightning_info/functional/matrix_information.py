r"""Matrix-based Rényi :math:`\alpha`-order entropy and mutual information of Gram matrices (no training, no sampling).

Giraldo, Rao & Príncipe, "Measures of Entropy from Data Using Infinitely Divisible Kernels" (IEEE Trans. Inf.
Theory, 2015). For ``N`` samples and a kernel :math:`\kappa` with :math:`\kappa(x, x) = 1`, the Gram matrix
:math:`K_{ij} = \kappa(x_i, x_j)` normalised to trace 1, :math:`A = K / \mathrm{tr}(K)`, has the entropy

.. math:: S_\alpha(A) = \frac{1}{1-\alpha} \log \mathrm{tr}(A^\alpha) = \frac{1}{1-\alpha}\log\sum_i\lambda_i(A)^\alpha,

the joint entropy of two such matrices is that of their normalised Hadamard product, and the mutual information

.. math:: I_\alpha(A; B) = S_\alpha(A) + S_\alpha(B) - S_\alpha\Big(\frac{A \circ B}{\mathrm{tr}(A \circ B)}\Big).

Yu, Wickstrøm, Jenssen & Príncipe ("Understanding Convolutional Neural Networks with Information Theory: An Initial
Exploration", IEEE TNNLS 2021) use it for the information plane of deep networks with :math:`\alpha = 1.01`. It is
a deterministic function of the samples: the same batch gives the same value, which is what an information plane
that follows a representation (not an estimator's training) needs.

Kernels (:func:`normalized_gram`): floating-point samples get the Gaussian kernel
:math:`\exp(-\lVert x_i - x_j\rVert^2 / 2\sigma^2)` of :mod:`~lightning_info.functional.kernels` (``sigma`` a
float, ``"median"``: the median distance between distinct samples, or ``"silverman"``); integer class labels
get the delta kernel :math:`K_{ij} = [y_i = y_j]`, which is the linear kernel of the one-hot vectors. The default
width is the median distance: Silverman's rule is a density-estimation rule whose width stays near the per-feature
spread while distances grow as :math:`\sqrt{d}`, so on wide representations (``d`` of tens or more) every
off-diagonal kernel value is ~0, :math:`A \approx I/N` and every entropy saturates at :math:`\log N`.

Properties (Giraldo et al., Prop. 4 and Cor. 1, for the infinitely divisible kernels used here):
:math:`0 \le I_\alpha(A;B) \le \min(S_\alpha(A), S_\alpha(B))`, symmetric in ``A`` and ``B``, invariant to a common
permutation of the samples, :math:`S_\alpha \le \log N`; for class labels :math:`A \circ A = A`, so
:math:`I_\alpha(Y;Y) = S_\alpha(Y)`. Values are in nats (Giraldo et al. and Yu et al. use bits: divide by
:math:`\log 2`). Cost: three ``N x N`` symmetric eigendecompositions in float64, :math:`O(N^3)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.validation import check_labels, check_order
from lightning_info.functional.entropy import renyi_entropy
from lightning_info.functional.kernels import KernelWidth, as_samples, check_width, log_gram
from lightning_info.functional.spectral import spectrum_distribution

__all__ = [
    "DEFAULT_ALPHA",
    "matrix_joint_entropy",
    "matrix_mutual_information",
    "matrix_renyi_entropy",
    "normalized_gram",
]

DEFAULT_ALPHA = 1.01
"""Yu et al.'s order: close to Shannon's limit, still a Rényi entropy (no eigenvalue logarithms needed)."""


def _is_labels(x: object) -> bool:
    return isinstance(x, Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool


def normalized_gram(x: Tensor, sigma: KernelWidth = "median") -> Tensor:
    r"""The trace-1 Gram matrix :math:`A = K / \mathrm{tr}(K) = K / N` of ``N`` samples, float64, ``(N, N)``.

    Args:
        x: ``(N, d)`` (or ``(N,)``, or ``(N, ...)``, flattened) floating-point samples: Gaussian kernel of width
            ``sigma``; or ``(N,)`` integer class labels: the delta kernel :math:`[y_i = y_j]` (``sigma`` unused).
        sigma: Gaussian kernel width: a positive float, ``"median"`` or ``"silverman"`` (see
            :mod:`~lightning_info.functional.kernels`), resolved from ``x``.

    Raises:
        TypeError: ``x`` is neither a floating-point nor an integer tensor.
        ValueError: fewer than 2 samples, NaN/Inf, labels that are not 1-D or negative, or a bad ``sigma``.

    Example:
        >>> import torch
        >>> normalized_gram(torch.tensor([0, 0, 1]))
        tensor([[0.3333, 0.3333, 0.0000],
                [0.3333, 0.3333, 0.0000],
                [0.0000, 0.0000, 0.3333]], dtype=torch.float64)
    """
    return _normalized_gram(x, sigma, "x", "sigma")


def _normalized_gram(x: Tensor, sigma: KernelWidth, name: str, sigma_name: str) -> Tensor:
    """:func:`normalized_gram` with the argument names its errors give (``y``/``sigma_y`` for the second input)."""
    if _is_labels(x):
        labels = check_labels(name, x, x.shape[0] if x.ndim else -1)
        if labels.shape[0] < 2:
            raise ValueError(f"{name} must have at least 2 rows (samples), got shape {tuple(labels.shape)}")
        kernel = (labels[:, None] == labels[None, :]).to(torch.float64)
    else:
        samples = as_samples(name, x).to(torch.float64)
        kernel = log_gram(samples, check_width(sigma_name, sigma)).exp()
    return kernel / kernel.shape[0]


def matrix_renyi_entropy(a: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    r""":math:`S_\alpha(A) = \frac{1}{1-\alpha}\log\sum_i \lambda_i(A)^\alpha` (nats) of a trace-1 PSD matrix ``a``.

    The eigenvalues (``eigvalsh``) have their round-off clipped to 0 and are renormalised to sum 1
    (:func:`~lightning_info.functional.spectral.spectrum_distribution`); :math:`\alpha = 1` is the von Neumann
    entropy. Build ``a`` with :func:`normalized_gram`.

    Raises:
        ValueError: ``a`` is not a square matrix, or ``alpha`` is outside ``(0, inf]``.
    """
    order = check_order("alpha", alpha)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a must be a square (N, N) matrix, got shape {tuple(a.shape)}")
    return renyi_entropy(spectrum_distribution(torch.linalg.eigvalsh(a)), order)


def matrix_joint_entropy(a: Tensor, b: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    r"""Joint entropy :math:`S_\alpha(A \circ B / \mathrm{tr}(A \circ B))` (nats) of two trace-1 Gram matrices.

    Raises:
        ValueError: ``a`` and ``b`` differ in shape, or as :func:`matrix_renyi_entropy`.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    joint = a * b
    return matrix_renyi_entropy(joint / joint.trace(), alpha)


def matrix_mutual_information(
    x: Tensor,
    y: Tensor,
    alpha: float = DEFAULT_ALPHA,
    sigma_x: KernelWidth = "median",
    sigma_y: KernelWidth = "median",
) -> Tensor:
    r"""Matrix-based Rényi :math:`\alpha`-order mutual information :math:`I_\alpha(X;Y)` (nats) of paired samples.

    :math:`S_\alpha(A) + S_\alpha(B) - S_\alpha(A \circ B / \mathrm{tr}(A \circ B))` with :math:`A`, :math:`B` the
    :func:`normalized_gram` matrices of ``x`` and ``y`` (see the module docstring for the paper and properties).
    Deterministic: no critic, no random draws.

    Args:
        x: ``(N, d_x)`` floating-point samples (Gaussian kernel) or ``(N,)`` integer class labels (delta kernel).
        y: the paired ``(N, d_y)`` samples or ``(N,)`` labels.
        alpha: Rényi order in ``(0, inf]`` (default 1.01, as Yu et al.).
        sigma_x: kernel width for ``x`` (float, ``"median"`` or ``"silverman"``); unused for labels.
        sigma_y: kernel width for ``y``.

    Returns:
        0-dim float64 tensor in :math:`[0, \min(S_\alpha(A), S_\alpha(B))]` up to round-off.

    Raises:
        TypeError: ``x``/``y`` neither floating-point nor integer tensors.
        ValueError: different numbers of rows, fewer than 2, NaN/Inf, or a bad ``alpha``/``sigma``.

    Example:
        >>> import torch
        >>> labels = torch.tensor([0, 1, 0, 1])
        >>> round(float(matrix_mutual_information(labels, labels)), 4)  # I(Y;Y) = S(Y) = log 2
        0.6931
    """
    order = check_order("alpha", alpha)
    a, b = _normalized_gram(x, sigma_x, "x", "sigma_x"), _normalized_gram(y, sigma_y, "y", "sigma_y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same number of rows, got {a.shape[0]} and {b.shape[0]}")
    return matrix_renyi_entropy(a, order) + matrix_renyi_entropy(b, order) - matrix_joint_entropy(a, b, order)

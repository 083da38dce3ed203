"""Diffusion Spectral Entropy and Mutual Information (Liao, Liu et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.validation import (
    check_bool,
    check_int,
    check_labels,
    check_max_samples,
    check_range,
    check_samples,
)
from lightning_info.functional.entropy import log_base, plogp_entropy

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_REPETITIONS",
    "DEFAULT_SIGMA",
    "DEFAULT_T",
    "check_dse_args",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
]

DEFAULT_SIGMA = 10.0
DEFAULT_T = 1
DEFAULT_MAX_SAMPLES = 10_000  # the authors' ``max_N``: beyond it a random subset is used (O(N^3) eigen-solve)
DEFAULT_REPETITIONS = 5


def _diffusion_eigenvalues(z: Tensor, sigma: float) -> Tensor:
    r"""All eigenvalues of the diffusion operator :math:`P = D^{-1}G` of each ``(N, d)`` set in ``z`` (``(..., N, d)``).

    :math:`G_{ij} = \exp(-\|z_i - z_j\|^2 / (2\sigma^2))`, :math:`D = \mathrm{diag}(G\mathbf{1})`; the symmetric
    :math:`D^{-1/2} G D^{-1/2}` is similar to :math:`P` (same real eigenvalues, in :math:`[-1, 1]`) and is
    decomposed with ``eigvalsh``, batched over the leading dimensions.
    """
    kernel = torch.exp(-torch.cdist(z, z).pow(2) / (2.0 * sigma**2))
    inv_sqrt_degree = kernel.sum(dim=-1).rsqrt()
    return torch.linalg.eigvalsh(inv_sqrt_degree[..., :, None] * kernel * inv_sqrt_degree[..., None, :])


def _dse(z: Tensor, sigma: float, t: float, scale: float) -> Tensor:
    r"""DSE of the rows of ``z`` (``(..., N, d)``, batched): entropy of :math:`|\lambda_i|^t / \sum_j |\lambda_j|^t`.

    Every one of the ``N`` eigenvalues counts; a single row (``P = [1]``) gives 0. Magnitudes below ``N * eps`` (the
    top one is 1) are round-off and set to 0.
    """
    n = z.shape[-2]
    if n < 2:
        return torch.zeros(z.shape[:-2], dtype=z.dtype, device=z.device)
    magnitudes = _diffusion_eigenvalues(z, sigma).abs()
    magnitudes = torch.where(magnitudes > n * torch.finfo(z.dtype).eps, magnitudes, 0.0)
    powered = magnitudes.pow(t)
    return plogp_entropy(powered / powered.sum(dim=-1, keepdim=True), dim=-1) / scale


def check_dse_args(sigma: object, t: object, base: float | str) -> tuple[float, float, float]:
    """Validate ``sigma > 0``, ``t > 0`` and the log base; return them with ``log(base)``."""
    return (
        check_range("sigma", sigma, 0.0, low_inclusive=False),
        check_range("t", t, 0.0, low_inclusive=False),
        log_base(base),
    )


def _canonical_order(z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Indices sorting the rows of ``z`` (with their label as a last key) lexicographically on the float64 values.

    Equal rows keep their relative order; they are interchangeable, so any seeded draw over the sorted rows depends
    on the set of rows only, not on the order they arrived in (batches, DDP ranks, ``merge_state``).
    """
    keys = z if labels is None else torch.cat([z, labels.to(z.dtype)[:, None]], dim=1)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)  # rank of each row among the sorted unique rows
    return torch.sort(inverse, stable=True).indices


def _subsample_index(n: int, max_samples: int | None, generator: torch.Generator) -> Tensor | None:
    """Indices of a uniform random subset of ``max_samples`` of ``n`` rows, or ``None`` if no cap applies."""
    if max_samples is None or n <= max_samples:
        return None
    return torch.randperm(n, generator=generator)[:max_samples]


def diffusion_spectral_entropy(
    z: Tensor,
    sigma: float = DEFAULT_SIGMA,
    t: float = DEFAULT_T,
    base: float | str = 2,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
) -> Tensor:
    r"""Diffusion Spectral Entropy (DSE) of ``N`` representations.

    Liao, Liu, Christensen, Tong, Huguet, Wolf, Nickel, Adelstein & Krishnaswamy, "Assessing Neural Network
    Representations During Training Using Noise-Resilient Diffusion Spectral Entropy" (2023): build the
    Gaussian-kernel diffusion operator :math:`P = D^{-1}G`, :math:`G_{ij} = \exp(-\|z_i-z_j\|^2/(2\sigma^2))`,
    :math:`D = \mathrm{diag}(G\mathbf{1})`, take its ``N`` eigenvalues :math:`\lambda_i` to the diffusion time
    :math:`t`, and

    .. math:: S_D(P, t) = -\sum_{i=1}^{N} \alpha_{i,t} \log \alpha_{i,t},\qquad
              \alpha_{i,t} = \frac{|\lambda_i|^t}{\sum_{j=1}^{N} |\lambda_j|^t}.

    Every eigenvalue counts, the top one :math:`\lambda_1 = 1` included (as in the paper and the authors' release);
    the paper's defaults are :math:`\sigma = 10`, :math:`t = 1`, bits, and a random subset of at most 10 000 points
    (``max_samples``). Identical points give 0 (:math:`P` has rank 1) and ``N`` points far apart relative to
    :math:`\sigma` give :math:`\log N` (:math:`P = I`); in between DSE tracks the intrinsic dimension of the data at
    the scale :math:`\sigma` and is robust to ambient noise, which larger ``t`` filters more. Cost:
    :math:`O(N^2 d + N^3)` time and :math:`O(N^2)` memory.

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; any float dtype (computed in float64).
        sigma: Gaussian kernel bandwidth :math:`\sigma > 0` (in the units of ``z``).
        t: diffusion time :math:`t > 0` (the power of the eigenvalues).
        base: logarithm base, 2 (bits, the paper's) or ``"e"`` (nats) or any positive number other than 1.
        max_samples: when ``N`` exceeds it, a uniform random subset of ``max_samples`` rows is used (``None``: all
            rows; at 10 000 the eigen-solve takes minutes on a CPU), drawn over the rows in a canonical (sorted)
            order, so the result does not depend on the row order.
        seed: seed of the random subset (the result is deterministic for a given ``seed``).

    Returns:
        0-dim float64 tensor in :math:`[0, \log N]`.

    Raises:
        TypeError: if ``z`` is not a floating tensor or an argument has a wrong type.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, non-positive ``sigma``/``t``, a bad ``base`` or
            ``max_samples < 2``.

    Example:
        >>> import torch
        >>> float(diffusion_spectral_entropy(100.0 * torch.eye(4)))  # 4 points far apart: log2(4)
        2.0
        >>> float(diffusion_spectral_entropy(torch.ones(5, 3)))  # identical points
        0.0
    """
    z = check_samples("z", z)
    sigma_, t_, scale = check_dse_args(sigma, t, base)
    cap = check_max_samples(max_samples)
    index = _subsample_index(z.shape[0], cap, torch.Generator().manual_seed(check_int("seed", seed)))
    if index is not None:
        z = z[_canonical_order(z)][index.to(z.device)]
    return _dse(z, sigma_, t_, scale)


def diffusion_spectral_mutual_information(
    z: Tensor,
    labels: Tensor,
    sigma: float = DEFAULT_SIGMA,
    t: float = DEFAULT_T,
    base: float | str = 2,
    matched_subsets: bool = True,
    num_repetitions: int = DEFAULT_REPETITIONS,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
) -> Tensor:
    r"""Diffusion Spectral Mutual Information (DSMI) between representations and class labels.

    Liao, Liu et al. (2023):

    .. math:: I_D(Z; Y) = S_D(P_Z, t) - \sum_{c} p(c)\, S_D(P_{Z \mid Y=c}, t),\qquad p(c) = N_c / N.

    DSE grows with the number of points, so with ``matched_subsets=True`` (the paper's estimator and default) the
    first term is estimated, for each class, on ``num_repetitions`` (5) uniform random subsets of ``N_c`` points,
    averaged: :math:`\sum_c p(c)\,[\overline{S_D}(P_{Z^*_{N_c}}) - S_D(P_{Z|Y=c})]`, so labels independent of ``z``
    score about 0. ``matched_subsets=False`` computes the equation above literally. A class with one sample
    contributes 0.

    The random subsets are drawn (with ``seed``) over the rows sorted into a canonical order (lexicographic on the
    float64 values, then the label), so the result depends on the set of (z, label) pairs only, not on their order.
    The matched-subset term is a Monte-Carlo average of ``num_repetitions`` draws: its spread over seeds shrinks as
    ``1 / sqrt(num_repetitions)``. For 100 rows of 5-d Gaussian noise with 4 random classes (``sigma=1``, true
    value 0) the default 5 draws give values from -0.032 to +0.039 bits over 20 seeds (standard deviation 0.019),
    50 draws 0.004 to 0.013 over 5 seeds (0.003). So a small negative value (within a few such standard deviations
    of 0) is estimator noise, meaning "no detectable dependence"; measure the spread by repeating with a few seeds,
    or raise ``num_repetitions`` (cost linear in it) when differences that small matter.

    DSMI with the labels rises while a classifier learns generalisable features and stays flat when it memorises
    (the paper's finding).

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; any float dtype (computed in float64).
        labels: ``(N,)`` integer class labels >= 0.
        sigma: Gaussian kernel bandwidth :math:`\sigma > 0`.
        t: diffusion time :math:`t > 0`.
        base: logarithm base (2: bits, as the paper).
        matched_subsets: estimate :math:`S_D(P_Z)` on class-sized random subsets (see above).
        num_repetitions: number of random subsets per class when ``matched_subsets`` (>= 1).
        max_samples: when ``N`` exceeds it, a uniform random subset of ``max_samples`` (z, label) pairs is used
            (``None``: all).
        seed: seed of the random subsets.

    Returns:
        0-dim float64 tensor.

    Raises:
        TypeError: if ``z`` is not floating, ``labels`` not integer, or an argument has a wrong type.
        ValueError: on wrong ranks, ``N < 2``, NaN/Inf, mismatched lengths, negative labels, or bad arguments.

    Example:
        >>> import torch
        >>> z = 100.0 * torch.eye(4)
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> float(diffusion_spectral_mutual_information(z, y, matched_subsets=False))  # log2(4) - log2(2)
        1.0
    """
    z = check_samples("z", z)
    labels = check_labels("labels", labels, z.shape[0])
    sigma_, t_, scale = check_dse_args(sigma, t, base)
    matched = check_bool("matched_subsets", matched_subsets)
    repetitions = check_int("num_repetitions", num_repetitions, min_value=1)
    cap = check_max_samples(max_samples)

    generator = torch.Generator().manual_seed(check_int("seed", seed))
    labels = labels.to(z.device)
    order = _canonical_order(z, labels)  # the seeded draws below then depend on the set of rows, not their order
    z, labels = z[order], labels[order]
    index = _subsample_index(z.shape[0], cap, generator)
    if index is not None:
        z, labels = z[index.to(z.device)], labels[index.to(z.device)]
    n = z.shape[0]
    classes, counts = torch.unique(labels, return_counts=True)
    unconditional = None if matched else _dse(z, sigma_, t_, scale)
    mutual_information = torch.zeros((), dtype=z.dtype, device=z.device)
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        conditional = _dse(z[labels == cls], sigma_, t_, scale)
        if unconditional is None:
            subsets = torch.stack([torch.randperm(n, generator=generator)[:count] for _ in range(repetitions)])
            reference = _dse(z[subsets.to(z.device)], sigma_, t_, scale).mean()  # one batched eigen-solve
        else:
            reference = unconditional
        mutual_information = mutual_information + (count / n) * (reference - conditional)
    return mutual_information

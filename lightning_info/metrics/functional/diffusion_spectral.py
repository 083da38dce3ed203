"""Diffusion Spectral Entropy and Mutual Information (Liao, Liu et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.validation import check_int, check_range, check_tensor
from lightning_info.metrics.functional._utils import check_max_samples, check_samples, log_base, plogp_entropy

__all__ = ["diffusion_spectral_entropy", "diffusion_spectral_mutual_information"]

DEFAULT_SIGMA = 10.0
DEFAULT_T = 1


def _diffusion_eigenvalues(z: Tensor, sigma: float) -> Tensor:
    r"""Eigenvalues of the diffusion operator :math:`P = D^{-1}G` without the trivial one (:math:`\lambda_1 = 1`).

    :math:`G_{ij} = \exp(-\|z_i - z_j\|^2 / (2\sigma^2))`, :math:`D = \mathrm{diag}(G\mathbf{1})`; the symmetric
    :math:`D^{-1/2} G D^{-1/2}` has the same eigenvalues and is decomposed with ``eigvalsh``.
    """
    sq_dist = torch.cdist(z, z).pow(2)
    kernel = torch.exp(-sq_dist / (2.0 * sigma**2))
    inv_sqrt_degree = kernel.sum(dim=1).rsqrt()
    symmetric = inv_sqrt_degree[:, None] * kernel * inv_sqrt_degree[None, :]
    return torch.linalg.eigvalsh(symmetric)[:-1]  # ascending: drop the largest (the constant eigenvector's 1)


def _spectral_entropy(eigenvalues: Tensor, t: float, scale: float) -> Tensor:
    r"""Entropy of :math:`\alpha_i = |\lambda_i|^t / \sum_j |\lambda_j|^t`; 0 when the spectrum is all zero."""
    magnitudes = eigenvalues.abs()
    # |lambda| <= 1 (the dropped top eigenvalue is 1): below n * eps an eigenvalue is round-off, not spectrum
    magnitudes = torch.where(
        magnitudes > (eigenvalues.shape[0] + 1) * torch.finfo(eigenvalues.dtype).eps, magnitudes, 0.0
    )
    powered = magnitudes.pow(t)
    total = powered.sum()
    if not bool(total > 0):
        return torch.zeros((), dtype=eigenvalues.dtype, device=eigenvalues.device)
    p = powered / total
    return plogp_entropy(p) / scale


def _dse(z: Tensor, sigma: float, t: float, scale: float) -> Tensor:
    if z.shape[0] < 2:
        return torch.zeros((), dtype=z.dtype, device=z.device)
    return _spectral_entropy(_diffusion_eigenvalues(z, sigma), t, scale)


def _check_dse_args(sigma: object, t: object, max_samples: object, seed: object) -> tuple[float, float, int | None]:
    sigma_ = check_range("sigma", sigma, 0.0, low_inclusive=False)
    t_ = check_range("t", t, 0.0, low_inclusive=False)
    check_int("seed", seed)
    return sigma_, t_, check_max_samples(max_samples)


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
    max_samples: int | None = None,
    seed: int = 0,
) -> Tensor:
    r"""Diffusion Spectral Entropy (DSE) of ``N`` representations.

    Liao, Liu, Christensen, Tong, Huguet, Wolf, Nickel, Adelstein & Krishnaswamy, "Assessing Neural Network
    Representations During Training Using Noise-Resilient Diffusion Spectral Entropy" (2023), Sec. 3.1: build the
    Gaussian-kernel diffusion operator :math:`P = D^{-1}G`, :math:`G_{ij} = \exp(-\|z_i-z_j\|^2/(2\sigma^2))`, take
    its eigenvalues :math:`\lambda_i` to the diffusion time :math:`t`, and

    .. math:: S_D(P, t) = -\sum_i \alpha_{i,t} \log \alpha_{i,t},\qquad
              \alpha_{i,t} = \frac{|\lambda_i|^t}{\sum_j |\lambda_j|^t}.

    As in the authors' release the trivial eigenvalue :math:`\lambda_1 = 1` (constant eigenvector) is dropped and
    the entropy is in bits; defaults :math:`\sigma = 10`, :math:`t = 1`. DSE grows with the intrinsic dimension of
    the data at the scale :math:`\sigma` (the paper's Fig. 2); identical points give 0 and ``N`` points far apart
    relative to :math:`\sigma` give :math:`\log(N-1)`. As the remaining spectrum is renormalised, the value does
    not shrink with the spread of nearly collapsed points: choose :math:`\sigma` on the scale of the data.
    Cost: :math:`O(N^2 d + N^3)` time and :math:`O(N^2)` memory, so cap ``N`` with ``max_samples`` for large sets.

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; any float dtype (computed in float64).
        sigma: Gaussian kernel bandwidth :math:`\sigma > 0` (in the units of ``z``).
        t: diffusion time :math:`t > 0` (power of the eigenvalues; larger ``t`` filters noise more).
        base: logarithm base, 2 (bits, the paper's) or ``"e"`` (nats) or any positive number other than 1.
        max_samples: if set and ``N`` exceeds it, a uniform random subset of ``max_samples`` rows is used.
        seed: seed of the random subset (the result is deterministic for a given ``seed``).

    Returns:
        0-dim float64 tensor.

    Raises:
        TypeError: if ``z`` is not a floating tensor or an argument has a wrong type.
        ValueError: on a wrong rank, ``N < 2``, NaN/Inf, or non-positive ``sigma``/``t``.

    Example:
        >>> import torch
        >>> round(float(diffusion_spectral_entropy(100.0 * torch.eye(4))), 4)  # far apart: log2(3)
        1.585
    """
    z = check_samples("z", z)
    sigma_, t_, cap = _check_dse_args(sigma, t, max_samples, seed)
    index = _subsample_index(z.shape[0], cap, torch.Generator().manual_seed(seed))
    if index is not None:
        z = z[index.to(z.device)]
    return _dse(z, sigma_, t_, log_base(base))


def diffusion_spectral_mutual_information(
    z: Tensor,
    labels: Tensor,
    sigma: float = DEFAULT_SIGMA,
    t: float = DEFAULT_T,
    base: float | str = 2,
    matched_subsets: bool = True,
    num_repetitions: int = 5,
    max_samples: int | None = None,
    seed: int = 0,
) -> Tensor:
    r"""Diffusion Spectral Mutual Information (DSMI) between representations and class labels.

    Liao, Liu et al. (2023), Sec. 3.2:

    .. math:: I_D(Z; Y) = S_D(P_Z, t) - \sum_{c} p(c)\, S_D(P_{Z \mid Y=c}, t),\qquad p(c) = N_c / N.

    DSE grows with the number of points, so with ``matched_subsets=True`` (the authors' release, default) the
    first term is estimated, for each class, on ``num_repetitions`` uniform random subsets of ``N_c`` points
    (averaged): :math:`\sum_c p(c)\,[\overline{S_D}(P_{Z^*_{N_c}}) - S_D(P_{Z|Y=c})]`. That makes labels
    independent of ``z`` score about 0. ``matched_subsets=False`` computes the equation above literally.
    A class with one sample contributes 0. DSMI rises while a classifier learns generalisable features and stays
    flat when it memorises (the paper's Fig. 4).

    Args:
        z: ``(N, d)`` representations, ``N >= 2``; any float dtype (computed in float64).
        labels: ``(N,)`` integer class labels >= 0.
        sigma: Gaussian kernel bandwidth :math:`\sigma > 0`.
        t: diffusion time :math:`t > 0`.
        base: logarithm base (2: bits, as the paper).
        matched_subsets: estimate :math:`S_D(P_Z)` on class-sized random subsets (see above).
        num_repetitions: number of random subsets per class when ``matched_subsets`` (>= 1).
        max_samples: if set and ``N`` exceeds it, a uniform random subset of ``max_samples`` (z, label) pairs is used.
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
        >>> round(float(diffusion_spectral_mutual_information(z, y, matched_subsets=False)), 4)  # log2(3) - 0
        1.585
    """
    z = check_samples("z", z)
    labels = check_tensor("labels", labels, ndim=1, floating=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have one entry per row of z ({z.shape[0]}), got shape {tuple(labels.shape)}")
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
    sigma_, t_, cap = _check_dse_args(sigma, t, max_samples, seed)
    if not isinstance(matched_subsets, bool):
        raise TypeError(f"matched_subsets must be a bool, got {type(matched_subsets).__name__}")
    repetitions = check_int("num_repetitions", num_repetitions, min_value=1)
    scale = log_base(base)

    generator = torch.Generator().manual_seed(seed)
    labels = labels.to(z.device)
    index = _subsample_index(z.shape[0], cap, generator)
    if index is not None:
        z, labels = z[index.to(z.device)], labels[index.to(z.device)]
    n = z.shape[0]
    classes, counts = torch.unique(labels, return_counts=True)
    unconditional = None if matched_subsets else _dse(z, sigma_, t_, scale)
    mutual_information = torch.zeros((), dtype=z.dtype, device=z.device)
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        conditional = _dse(z[labels == cls], sigma_, t_, scale)
        if unconditional is None:
            reference = torch.stack(
                [
                    _dse(z[torch.randperm(n, generator=generator)[:count].to(z.device)], sigma_, t_, scale)
                    for _ in range(repetitions)
                ]
            ).mean()
        else:
            reference = unconditional
        mutual_information = mutual_information + (count / n) * (reference - conditional)
    return mutual_information

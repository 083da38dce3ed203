"""Shannon entropy of categorical distributions given as probabilities or logits."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_bool, check_int, check_probabilities, check_range, check_tensor

__all__ = ["log_base", "plogp_entropy", "renyi_entropy", "shannon_entropy"]


def log_base(base: float | str) -> float:
    """Return ``log(base)``, the divisor turning nats into units of ``base`` (``"e"``: nats, 2: bits)."""
    if base == "e":
        return 1.0
    if isinstance(base, str):
        raise ValueError(f"base must be 'e' or a positive number other than 1, got {base!r}")
    value = check_range("base", base, 0.0, low_inclusive=False)
    if value == 1.0:
        raise ValueError(f"base must be 'e' or a positive number other than 1, got {base!r}")
    return math.log(value)


def plogp_entropy(p: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    r"""Shannon entropy :math:`-\sum p \log p` (nats) along ``dim`` (all dims if ``None``), with :math:`0\log 0 = 0`.

    Written as ``0 - sum`` so that deterministic distributions give ``+0.0``, not ``-0.0``.
    """
    terms = torch.special.xlogy(p, p)
    return 0.0 - (terms.sum() if dim is None else terms.sum(dim=dim))


def renyi_entropy(p: Tensor, order: float) -> Tensor:
    r"""Rényi entropy (nats) of a probability vector: :math:`\frac{1}{1-\alpha}\log\sum_i p_i^\alpha`.

    ``order=1`` is the Shannon entropy :math:`-\sum_i p_i \log p_i` and ``order=inf`` the min-entropy
    :math:`-\log \max_i p_i`. Zero entries are left out (:math:`0 \log 0 = 0`).
    """
    if order == 1.0:
        return plogp_entropy(p)
    if order == math.inf:
        return -torch.log(p.max())
    positive = p[p > 0]
    # log sum p^a as a logsumexp of a log p: p^a underflows to 0 for large orders (a = 1e30 gave log 0 = -inf)
    return torch.logsumexp(order * torch.log(positive), dim=0) / (1.0 - order)


def _check_dim(x: Tensor, dim: object) -> int:
    dim = check_int("dim", dim)
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim must be in [{-x.ndim}, {x.ndim - 1}] for shape {tuple(x.shape)}, got {dim}")
    return dim


def shannon_entropy(x: Tensor, dim: int = -1, from_logits: bool = False, base: float | str = "e") -> Tensor:
    r"""Shannon entropy :math:`H(p) = -\sum_k p_k \log p_k` of the distributions along ``dim`` (Shannon, 1948).

    With ``from_logits=True`` the entropy is computed from :math:`\log p = \mathrm{log\_softmax}(x)` as
    :math:`H = -\sum_k \mathrm{softmax}(x)_k \, \mathrm{log\_softmax}(x)_k`, which stays finite and exact for
    very large logits (no ``log(softmax)`` underflow). Probabilities use :math:`0 \log 0 = 0`.

    Args:
        x: probabilities (entries in [0, 1], summing to 1 along ``dim``) or logits, any rank >= 1.
            float16/bfloat16 inputs are computed in float32.
        dim: the dimension holding the categories.
        from_logits: whether ``x`` holds unnormalised logits.
        base: ``"e"`` for nats, ``2`` for bits, or any positive number other than 1.

    Returns:
        The entropies, shape of ``x`` without ``dim``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``x`` is 0-dimensional, has NaN/Inf, ``dim`` is out of range, ``base`` is invalid, or
            (probabilities) entries leave [0, 1] or do not sum to 1.

    Example:
        >>> import torch
        >>> shannon_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), base=2)
        tensor([1., 0.])
        >>> shannon_entropy(torch.tensor([1000.0, 0.0]), from_logits=True)
        tensor(0.)
    """
    check_tensor("x", x, ndim=None)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the categories), got a 0-dimensional tensor")
    dim = _check_dim(x, dim)
    check_bool("from_logits", from_logits)
    scale = log_base(base)
    if from_logits:
        log_p = torch.log_softmax(upcast(x), dim=dim)
        entropy = 0.0 - (log_p.exp() * log_p).sum(dim=dim)
    else:
        check_probabilities("x", x, dim, hint="pass from_logits=True for logits")
        p = upcast(x)
        entropy = plogp_entropy(p, dim=dim)
    return entropy / scale


def _shannon_entropy_update(x: Tensor, from_logits: bool, base: float | str) -> tuple[Tensor, Tensor]:
    """Sum of the entropies of the distributions along the last dim of ``x`` and their number."""
    entropy = shannon_entropy(x, dim=-1, from_logits=from_logits, base=base)
    return entropy.sum(dtype=torch.float64), torch.tensor(entropy.numel(), dtype=torch.float64)


def _mean_compute(total: Tensor, count: Tensor, owner: str, updated: bool) -> Tensor:
    """Mean from a running sum and count.

    After updates (``updated``) a count of 0 (every row empty or left out) raises ``ValueError`` instead of giving a
    silent NaN; before any update the result is NaN, as torchmetrics' metrics give with its warning.
    """
    if updated and bool((count == 0).any()):
        raise ValueError(
            f"{owner}.compute() has nothing to average (no row counted for some entry): call update() with at least "
            "one valid row first"
        )
    return total / count

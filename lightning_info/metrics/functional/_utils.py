"""Helpers shared by the information metrics' functional code: input checks, dtypes, spectra."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_info._internal.validation import check_int, check_range, check_tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``x`` in ``dtype`` if given, else in float32 when it is float16/bfloat16, else unchanged."""
    if dtype is not None:
        return x.to(dtype)
    return x.float() if x.dtype in _LOW_PRECISION else x


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``x`` has NaN/Inf.

    One ``amax`` reduction (NaN propagates through it) is much cheaper than ``isfinite(x).all()`` on CPU.
    """
    if x.numel() and not bool(torch.isfinite(x.abs().amax())):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_samples(name: str, z: object) -> Tensor:
    """Check a finite floating-point (N, d) matrix of N >= 2 samples and return it in float64."""
    z = check_tensor(name, z, ndim=2, min_rows=2, finite=False)
    if z.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(z.shape)}")
    return check_finite(name, z.to(torch.float64))


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError`` naming the argument."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_labels(name: str, labels: object, num_rows: int, num_classes: int | None = None) -> Tensor:
    """Check ``(num_rows,)`` integer class labels in ``[0, num_classes)`` (``>= 0`` without ``num_classes``).

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: on a wrong shape or a label out of range (the message gives the offending value).
    """
    labels = check_tensor(name, labels, ndim=1, floating=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.shape[0] != num_rows:
        raise ValueError(f"{name} must have one entry per sample ({num_rows}), got shape {tuple(labels.shape)}")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"{name} must be >= 0, got {low}")
        if num_classes is not None and high >= num_classes:
            raise ValueError(f"{name} must be < num_classes ({num_classes}), got {high}")
    return labels


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


def check_order(name: str, value: object) -> float:
    """Check a Rényi order in (0, inf] (``float('inf')`` allowed) and return it as a float."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return check_range(name, value, 0.0, low_inclusive=False)


def spectrum_distribution(eigenvalues: Tensor) -> Tensor:
    """Clip round-off (eigenvalues below ``n * eps * max``, negatives included) to 0 and normalise to sum 1."""
    tol = eigenvalues.shape[-1] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    kept = torch.where(eigenvalues > tol, eigenvalues, torch.zeros_like(eigenvalues))
    return kept / kept.sum()


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
    return torch.log(positive.pow(order).sum()) / (1.0 - order)


def check_max_samples(value: object) -> int | None:
    """Check an optional cap on the number of samples (``None`` or an int >= 2)."""
    return None if value is None else check_int("max_samples", value, min_value=2)

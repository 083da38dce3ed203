"""Argument and tensor validation shared by every part.

Every check raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value, and the message names the
argument and the value it got, e.g. ``ValueError("keep_ratio must be in (0, 1], got 1.5")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import torch
from torch import Tensor


def check_number(name: str, value: object) -> float:
    """Return ``value`` as a finite ``float`` or raise (bools are rejected: ``True`` is not a hyper-parameter)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def check_int(name: str, value: object, *, min_value: int | None = None) -> int:
    """Return ``value`` as an ``int`` (at least ``min_value`` when given) or raise."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    out = int(value)
    if min_value is not None and out < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {out}")
    return out


def check_range(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a float inside the interval, e.g. ``check_range("rho", rho, 0, low_inclusive=False)``."""
    out = check_number(name, value)
    above = out >= low if low_inclusive else out > low
    below = out <= high if high_inclusive else out < high
    if not (above and below):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return out


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError`` naming the argument (``"no"`` is not a bool)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_order(name: str, value: object) -> float:
    """Check a Rényi order in (0, inf] (``float('inf')`` allowed) and return it as a float."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return check_range(name, value, 0.0, low_inclusive=False)


def check_max_samples(value: object) -> int | None:
    """Check an optional cap on the number of samples (``None`` or an int >= 2)."""
    return None if value is None else check_int("max_samples", value, min_value=2)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices`` or raise a ``ValueError`` listing them."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, got {type(value).__name__} ({value!r})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    min_rows: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> Tensor:
    """Check a tensor at a functional boundary: type, rank, number of rows (dim 0), dtype and finiteness."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(value.shape)}"
            )
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if min_rows is not None and (value.ndim == 0 or value.shape[0] < min_rows):
        raise ValueError(f"{name} must have at least {min_rows} rows (samples), got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return value


_SUM_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 2e-2}


def check_probabilities(name: str, x: Tensor, dim: int, *, hint: str, rows: Tensor | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` holds probability vectors along ``dim``: entries in [0, 1], sums 1.

    The sums are taken in float64 and compared with a tolerance of 1e-3 (1e-2 for float16, 2e-2 for bfloat16);
    ``hint`` ends the message, e.g. ``"apply softmax to logits first"``. ``rows`` (a bool tensor broadcastable to
    the sums' shape) restricts the sum check to the rows where it is ``True`` (e.g. attention rows with a valid key).
    """
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1] ({hint})")
    sums = x.sum(dim=dim, dtype=torch.float64)
    deviation = (sums - 1).abs()
    if rows is not None:
        deviation = torch.where(rows, deviation, 0.0)
    if deviation.numel() and float(deviation.max()) > _SUM_TOLERANCE.get(x.dtype, 1e-3):
        worst = float(deviation.max())
        raise ValueError(f"{name} must sum to 1 along dim {dim}, got a deviation of {worst:.3g} ({hint})")


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


def check_labels(
    name: str, labels: object, num_rows: int, num_classes: int | None = None, *, check_values: bool = True
) -> Tensor:
    """Check ``(num_rows,)`` integer class labels in ``[0, num_classes)`` (``>= 0`` without ``num_classes``).

    Returns the labels as ``int64``. ``check_values=False`` checks type and shape only, for callers that find the
    range without a host sync (:func:`lightning_info.functional.cmi.class_statistics`); they raise
    :func:`labels_out_of_range` themselves.

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: on a wrong shape or a label out of range (the message gives the offending value).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (integer class indices), got dtype {labels.dtype}")
    check_tensor(name, labels, ndim=1, floating=False)
    if labels.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape ({num_rows},) (one entry per sample), got shape {tuple(labels.shape)}"
        )
    if check_values and num_rows:
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0:
            raise labels_out_of_range(name, num_classes, low)
        if num_classes is not None and high >= num_classes:
            raise labels_out_of_range(name, num_classes, high)
    return labels.long()


def labels_out_of_range(name: str, num_classes: int | None, bad: int) -> ValueError:
    """The error for a class label outside ``[0, num_classes)``."""
    if num_classes is None:
        return ValueError(f"{name} must be >= 0, got {bad}")
    return ValueError(f"{name} must hold class indices in [0, {num_classes - 1}], got {bad}")

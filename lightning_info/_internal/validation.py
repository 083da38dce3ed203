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


def check_probabilities(name: str, x: Tensor, dim: int, *, hint: str) -> None:
    """Raise ``ValueError`` unless ``x`` holds probability vectors along ``dim``: entries in [0, 1], sums 1.

    The sums are taken in float64 and compared with a tolerance of 1e-3 (1e-2 for float16, 2e-2 for bfloat16);
    ``hint`` ends the message, e.g. ``"apply softmax to logits first"``.
    """
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1] ({hint})")
    sums = x.sum(dim=dim, dtype=torch.float64)
    if not bool(torch.allclose(sums, torch.ones_like(sums), rtol=0.0, atol=_SUM_TOLERANCE.get(x.dtype, 1e-3))):
        worst = float((sums - 1).abs().max())
        raise ValueError(f"{name} must sum to 1 along dim {dim}, got a deviation of {worst:.3g} ({hint})")

"""Glue of the sharpness-aware optimizers that mutation testing found unasserted (issue 20): ``global_norm`` with
mixed dtypes and half precision, the infinite-norm guard."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_info.optim import NonFiniteGradientError
from lightning_info.optim.sharpness_aware import finite_norm_value, finiteness_norm, global_norm


def test_global_norm_of_mixed_dtypes_is_the_float64_norm_of_everything() -> None:
    a = torch.full((3,), 1.0 + 2**-20, dtype=torch.float64)  # not representable in float32/float16
    b = torch.full((4,), 0.5, dtype=torch.float16)
    c = torch.tensor([3.0, 4.0], dtype=torch.bfloat16)  # per-tensor norms exact in their dtype
    norm = global_norm([[a, b], [c]])
    expected = math.sqrt(3 * (1.0 + 2**-20) ** 2 + 4 * 0.25 + 25.0)
    assert norm.dtype == torch.float64
    assert float(norm) == pytest.approx(expected, rel=1e-15)


def test_global_norm_of_half_tensors_is_float32() -> None:
    half = torch.full((4,), 300.0, dtype=torch.float16)
    norm = global_norm([[half], [half.clone()]])
    assert norm.dtype == torch.float32
    assert float(norm) == pytest.approx(300.0 * math.sqrt(8), rel=1e-3)  # per-tensor norms rounded in float16


def test_global_norm_of_half_tensors_does_not_overflow() -> None:
    """Regression (found by issue 20's tests): ``_foreach_norm`` of float16 tensors overflowed at 65504."""
    big = torch.full((4,), 60000.0, dtype=torch.float16)  # each tensor's norm, 120000, overflows float16
    assert float(global_norm([[big]])) == pytest.approx(120000.0, rel=1e-3)


def test_global_norm_with_ord_inf_is_the_largest_entry() -> None:
    tensors = [[torch.tensor([1.0, -7.0]), torch.tensor([3.0])], [torch.tensor([-2.0], dtype=torch.float64)]]
    assert float(global_norm(tensors, ord=math.inf)) == 7.0
    assert float(global_norm([[]])) == 0.0


def test_finiteness_norm_is_finite_for_huge_finite_entries() -> None:
    """The L2 norm overflows above ~1.8e19 in float32; the check then decides on the largest entry."""
    huge = torch.tensor([3e38, -1.0])
    assert math.isinf(float(global_norm([[huge]])))
    assert float(finiteness_norm([[huge], [torch.tensor([2.0])]])) == pytest.approx(3e38, rel=1e-6)
    assert float(finiteness_norm([[torch.tensor([3.0]), torch.tensor([4.0])]])) == pytest.approx(5.0, rel=1e-7)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_finiteness_norm_is_not_finite_when_an_entry_is_not(value: float) -> None:
    tensors = [[torch.tensor([1.0, 2.0])], [torch.tensor([3e38, value], dtype=torch.float64)]]
    assert not math.isfinite(float(finiteness_norm(tensors)))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_finite_norm_value_refuses_inf_and_nan(value: float) -> None:
    with pytest.raises(NonFiniteGradientError, match="the norm"):
        finite_norm_value("the norm", torch.tensor(value), "SAM")
    assert finite_norm_value("the norm", torch.tensor(2.5), "SAM") == 2.5

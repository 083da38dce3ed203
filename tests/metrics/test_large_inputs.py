"""Finite samples whose squares or exponentials overflow their dtype: a value or a named error, never inf/NaN."""

from __future__ import annotations

import pytest
import torch

from lightning_info.functional import matrix_nuclear_norm, median_width, nwj, silverman_width


def _huge(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([[1.5e20, 2.0e19], [-2.9e19, 1.0e20], [3.0e19, -4.0e19]], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_widths_of_huge_samples(dtype: torch.dtype) -> None:
    z = _huge(dtype)
    for width, reference in ((median_width, median_width(z.double())), (silverman_width, silverman_width(z.double()))):
        value = width(z)
        assert bool(torch.isfinite(value))
        assert float(value) == pytest.approx(float(reference), rel=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_nuclear_norm_is_scale_invariant_past_overflow(dtype: torch.dtype) -> None:
    z = _huge(dtype)
    expected = matrix_nuclear_norm(z.double() / 1e20)
    assert float(matrix_nuclear_norm(z)) == pytest.approx(float(expected), rel=1e-2)


def test_nwj_names_the_overflow() -> None:
    with pytest.raises(ValueError, match=r"scores are too large for the NWJ bound in torch\.float32"):
        nwj(torch.full((3, 3), 1e20))

"""``vendi_score(normalize=False)`` is only defined for unit rows (K_ii = 1): the check's tolerance is 1e-4."""

from __future__ import annotations

import pytest
import torch

from lightning_info.functional import vendi_score


@pytest.mark.parametrize("norm", [1.01, 0.999, 1.001])
def test_rows_off_unit_norm_are_rejected(norm: float) -> None:
    x = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    x[2] *= norm
    with pytest.raises(ValueError, match="rows of x must have unit L2 norm"):
        vendi_score(x, normalize=False)


def test_rows_within_round_off_of_unit_norm_are_accepted() -> None:
    x = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    x[2] *= 1 + 5e-5
    assert float(vendi_score(x, normalize=False)) == pytest.approx(float(vendi_score(x)), rel=1e-3)

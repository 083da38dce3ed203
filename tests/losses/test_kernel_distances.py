"""``squared_distances`` (under every CS estimator): exact zeros on the diagonal, and the centring that keeps float32
accurate far from the origin (mutants of both survived the suite before these tests)."""

from __future__ import annotations

import pytest
import torch

from lightning_info.functional import cs_divergence, cs_qmi
from lightning_info.functional.kernels import median_width, squared_distances


def _points(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_self_distance_diagonal_is_exactly_zero() -> None:
    x = _points(50, 7, 0) * 37.0 + 11.0  # round-off in |a|^2 + |a|^2 - 2 a.a is not zero here
    dist = squared_distances(x)
    assert torch.equal(dist.diagonal(), torch.zeros(50))
    brute = torch.tensor(
        [[float(((x[i].double() - x[j].double()) ** 2).sum()) for j in range(50)] for i in range(50)],
        dtype=torch.float64,
    )
    assert torch.allclose(dist.double(), brute, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("offset", [1e3, -5e3])
def test_float32_is_translation_invariant_far_from_the_origin(offset: float) -> None:
    a, b = _points(64, 3, 1), _points(64, 3, 2) + 0.5
    reference = float(cs_divergence(a.double(), b.double()))  # float64 at the origin
    shifted = float(cs_divergence(a + offset, b + offset))  # float32 far away
    assert shifted == pytest.approx(reference, rel=1e-4)
    x, z = _points(48, 4, 3), _points(48, 2, 4)
    assert float(cs_qmi(x + offset, z - offset)) == pytest.approx(float(cs_qmi(x.double(), z.double())), rel=1e-3)


def test_cross_distances_match_brute_force_with_an_offset() -> None:
    a, b = _points(9, 5, 5) + 1e3, _points(7, 5, 6) + 1e3
    brute = torch.cdist(a.double(), b.double()).square()
    # float32 round-off of distances ~30 is ~1e-5; without the centring it is ~1e-7 * |a|^2 ~ 0.5
    assert torch.allclose(squared_distances(a, b).double(), brute, rtol=1e-5, atol=1e-3)


def test_coinciding_points_are_at_distance_zero_never_below() -> None:
    # float32 |a|^2 + |b|^2 - 2 a.b of two equal rows rounds to about -6e-5 here; a negative squared distance makes
    # a Gaussian kernel value above 1 and a NaN distance under sqrt (the clamp at zero)
    x = _points(64, 16, 7) * 3.0 + 1.0
    assert bool((squared_distances(torch.cat([x, x[:32]])) >= 0).all())
    assert bool((squared_distances(x, x[:32].clone()) >= 0).all())


def test_median_width_falls_back_to_the_mean_distance_when_most_pairs_coincide() -> None:
    # 4 zeros and a one: 6 of the 10 pairs are at distance 0 (the lower median), 4 at distance 1 (mean 0.4)
    assert float(median_width(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64))) == pytest.approx(0.4)
    assert float(median_width(torch.zeros(4, dtype=torch.float64))) == pytest.approx(1e-6)  # all coincide

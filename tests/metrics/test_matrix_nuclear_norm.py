import math

import numpy as np
import pytest
import torch

from lightning_info.metrics import MatrixNuclearNorm
from lightning_info.metrics.functional import matrix_nuclear_norm


def _normalised(z: np.ndarray) -> np.ndarray:
    centred = z - z.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


def _reference_exact(z: np.ndarray) -> float:
    return float(np.linalg.svd(_normalised(z), compute_uv=False).sum() / z.shape[0])


def _reference_fast(z: np.ndarray) -> float:
    zn = _normalised(z)
    norms = sorted(
        (math.sqrt(sum(zn[i, j] ** 2 for i in range(zn.shape[0]))) for j in range(zn.shape[1])), reverse=True
    )
    return sum(norms[: min(zn.shape)]) / z.shape[0]


@pytest.mark.parametrize("shape", [(20, 6), (6, 20)])
def test_both_modes_match_brute_force(shape: tuple[int, int]) -> None:
    z = np.random.default_rng(0).normal(size=shape)
    zt = torch.from_numpy(z)
    assert matrix_nuclear_norm(zt, mode="exact").item() == pytest.approx(_reference_exact(z), rel=1e-10)
    assert matrix_nuclear_norm(zt, mode="fast").item() == pytest.approx(_reference_fast(z), rel=1e-10)


def test_fast_upper_bounds_exact_and_is_exact_for_orthogonal_columns() -> None:
    torch.manual_seed(0)
    mixing = torch.randn(8, 8, dtype=torch.float64)
    for _ in range(5):
        z = torch.randn(64, 8, dtype=torch.float64) @ mixing  # correlated features, N >= d
        fast, exact = matrix_nuclear_norm(z), matrix_nuclear_norm(z, mode="exact")
        n = z.shape[0]
        assert math.sqrt(n) / n - 1e-12 <= exact.item() <= fast.item() <= math.sqrt(8 * n) / n + 1e-12
    signs = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    orthogonal = torch.cat([signs * torch.eye(3, dtype=torch.float64)[j] for j in range(3)])  # rows +-e_j
    torch.testing.assert_close(matrix_nuclear_norm(orthogonal), matrix_nuclear_norm(orthogonal, mode="exact"))
    assert matrix_nuclear_norm(orthogonal).item() == pytest.approx(3 * math.sqrt(2) / 6)


def test_a_row_at_the_mean_contributes_nothing() -> None:
    # rows a, -a, 0: centred they are unchanged and the zero row has no direction (F.normalize keeps it at 0)
    a = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    z = torch.cat([a, -a, torch.zeros(1, 3, dtype=torch.float64)])
    unit = a / 5.0  # both nonzero rows are +-unit: columns norms sqrt(2) * |unit_j|
    expected_fast = float(math.sqrt(2) * unit.abs().sum()) / 3
    assert matrix_nuclear_norm(z).item() == pytest.approx(expected_fast, rel=1e-12)
    assert matrix_nuclear_norm(z, mode="exact").item() == pytest.approx(math.sqrt(2) / 3, rel=1e-12)  # rank 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    z = torch.randn(30, 8).to(dtype)
    assert matrix_nuclear_norm(z).dtype == torch.float32
    assert matrix_nuclear_norm(z).item() == pytest.approx(matrix_nuclear_norm(z.double()).item(), rel=1e-5)
    assert matrix_nuclear_norm(z, mode="exact").dtype == torch.float64


def test_errors() -> None:
    with pytest.raises(ValueError, match="mode"):
        matrix_nuclear_norm(torch.randn(3, 2), mode="approx")
    with pytest.raises(ValueError, match="at least 2 rows"):
        matrix_nuclear_norm(torch.randn(1, 2))
    for mode in ("fast", "exact"):
        with pytest.raises(ValueError, match="NaN"):
            matrix_nuclear_norm(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), mode=mode)
        with pytest.raises(ValueError, match="NaN or Inf"):
            matrix_nuclear_norm(torch.tensor([[float("inf"), 1.0], [0.0, 1.0], [1.0, 1.0]]).half(), mode=mode)
    with pytest.raises(ValueError, match="dimensions"):
        matrix_nuclear_norm(torch.randn(2, 2, 2))


def test_metric_matches_functional() -> None:
    a, b = torch.randn(5, 4), torch.randn(9, 4)
    for mode in ("fast", "exact"):
        metric = MatrixNuclearNorm(mode=mode)
        assert (metric.is_differentiable, metric.higher_is_better, metric.full_state_update) == (False, None, False)
        metric.update(a)
        metric.update(b)
        torch.testing.assert_close(metric.compute(), matrix_nuclear_norm(torch.cat([a, b]), mode=mode))
    with pytest.raises(ValueError, match="mode"):
        MatrixNuclearNorm(mode="svd")


def test_finite_float32_inputs_whose_squares_overflow_keep_their_score() -> None:
    # the score is invariant to one common scale: inputs of ~1e25 (squares overflow float32) give the same value
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    expected = float(matrix_nuclear_norm(z.double()))
    assert float(matrix_nuclear_norm(z * 1e25)) == pytest.approx(expected, rel=1e-5)

import math

import numpy as np
import pytest
import torch

from lightning_info.metrics import MatrixEntropy
from lightning_info.metrics.functional import matrix_entropy


def _reference(z: np.ndarray, alpha: float) -> float:
    """Giraldo et al.: A = K / tr K with the N x N cosine kernel (always the primal), Renyi entropy of eig(A)."""
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    k = zn @ zn.T
    lam = np.linalg.eigvalsh(k / np.trace(k))
    lam = lam[lam > 1e-12]
    if alpha == 1.0:
        return float(-np.sum(lam * np.log(lam)))
    if alpha == math.inf:
        return float(-np.log(lam.max()))
    return float(np.log(np.sum(lam**alpha)) / (1 - alpha))


@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, math.inf])
def test_matches_primal_brute_force(shape: tuple[int, int], alpha: float) -> None:
    z = np.random.default_rng(0).normal(size=shape)
    assert matrix_entropy(torch.from_numpy(z), alpha=alpha).item() == pytest.approx(_reference(z, alpha), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, math.inf])
def test_rank_one_is_zero_and_isotropic_is_log_rank(alpha: float) -> None:
    direction = torch.randn(1, 16, dtype=torch.float64)
    scales = torch.rand(10, 1, dtype=torch.float64) + 0.5
    assert matrix_entropy(scales * direction, alpha=alpha).item() == pytest.approx(0.0, abs=1e-10)
    basis = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64)).Q.T  # 4 orthonormal rows
    isotropic = basis.repeat(3, 1)  # each direction used equally
    assert matrix_entropy(isotropic, alpha=alpha).item() == pytest.approx(math.log(4), rel=1e-10)


@pytest.mark.parametrize("shape", [(30, 8), (6, 20)])
def test_center_gives_wei_et_al_covariance_entropy(shape: tuple[int, int]) -> None:
    """Wei et al. 2024: centre, L2-normalise rows, Sigma = Z^T Z / N (d x d), SVD of Sigma / tr Sigma, von Neumann."""
    z = np.random.default_rng(3).normal(size=shape) + 2.0
    centred = z - z.mean(axis=0)
    zn = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    cov = zn.T @ zn / shape[0]
    s = np.linalg.svd(cov / np.trace(cov), compute_uv=False)
    s = s[s > 1e-12]
    got = matrix_entropy(torch.from_numpy(z), center=True).item()
    assert got == pytest.approx(float(-np.sum(s * np.log(s))), rel=1e-10)
    assert matrix_entropy(torch.from_numpy(z)).item() < got - 0.1  # the common offset of 2 dominates uncentred
    with pytest.raises(TypeError, match="center must be a bool"):
        matrix_entropy(torch.from_numpy(z), center=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    z = torch.randn(20, 6)
    got = matrix_entropy(z.to(dtype))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(matrix_entropy(z.to(dtype).double()).item(), rel=1e-12)


@pytest.mark.parametrize(
    ("z", "kwargs", "match"),
    [
        (torch.randn(4), {}, "dimensions"),
        (torch.randn(1, 4), {}, "at least 2 rows"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {}, "NaN or Inf"),
        (torch.zeros(3, 2), {}, "all-zero"),
        (torch.randn(3, 2), {"alpha": 0.0}, "alpha"),
    ],
)
def test_errors(z: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        matrix_entropy(z, **kwargs)


def test_metric_concatenates_and_caps() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(7, 5), torch.randn(6, 5)
    metric = MatrixEntropy(alpha=2.0)
    assert (metric.is_differentiable, metric.higher_is_better, metric.full_state_update) == (False, None, False)
    metric.update(a)
    metric.update(b.to(torch.bfloat16))
    expected = matrix_entropy(torch.cat([a, b.to(torch.bfloat16).float()]), alpha=2.0)
    torch.testing.assert_close(metric.compute(), expected)
    capped = MatrixEntropy(max_samples=9)
    capped.update(a)
    with pytest.warns(UserWarning, match="keeps the first max_samples=9 rows per process"):
        capped.update(b)  # 4 of its 6 rows are beyond the cap: dropped
    capped.update(b)
    torch.testing.assert_close(capped.compute(), matrix_entropy(torch.cat([a, b[:2]])))
    with pytest.raises(ValueError, match="features"):
        capped.update(torch.randn(2, 4))
    with pytest.raises(ValueError, match="max_samples"):
        MatrixEntropy(max_samples=1)
    with pytest.raises(ValueError, match="before any update"), pytest.warns(UserWarning):
        MatrixEntropy().compute()


def test_huge_order_tends_to_the_min_entropy() -> None:
    # found by tests/fuzz: alpha=1e30 underflowed lambda^alpha to 0 and returned inf
    z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)
    eigenvalues = np.linalg.eigvalsh(_cosine_gram(z.numpy()) / 3)
    expected = -math.log(eigenvalues.max())
    for dtype in (torch.float16, torch.float64):
        value = float(matrix_entropy(z.to(dtype), alpha=1e30))
        assert value == pytest.approx(expected, rel=1e-3 if dtype == torch.float16 else 1e-12)


def _cosine_gram(z: np.ndarray) -> np.ndarray:
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return unit @ unit.T


def test_an_all_zero_row_adds_a_zero_eigenvalue_only() -> None:
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with_zero_row = torch.cat([z, torch.zeros(1, 4, dtype=torch.float64)])
    for alpha in (1.0, 2.0):
        expected = float(matrix_entropy(z, alpha=alpha))
        assert float(matrix_entropy(with_zero_row, alpha=alpha)) == pytest.approx(expected, abs=1e-12)

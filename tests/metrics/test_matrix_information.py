"""Matrix-based Rényi alpha-order mutual information (Giraldo, Rao & Príncipe 2015): reference and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_info.functional.matrix_information import (
    matrix_joint_entropy,
    matrix_mutual_information,
    matrix_renyi_entropy,
    normalized_gram,
)


def _reference_gram(x: np.ndarray, sigma: float) -> np.ndarray:
    n = x.shape[0]
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = math.exp(-float(np.sum((x[i] - x[j]) ** 2)) / (2 * sigma**2))
    return k / np.trace(k)


def _reference_entropy(a: np.ndarray, alpha: float) -> float:
    eig = np.clip(np.linalg.eigvals(a).real, 0.0, None)  # general eig, not eigh: another route to the spectrum
    eig = eig / eig.sum()
    return math.log(sum(v**alpha for v in eig if v > 0)) / (1 - alpha)


def _reference_mi(x: np.ndarray, y: np.ndarray, alpha: float, sx: float, sy: float) -> float:
    a, b = _reference_gram(x, sx), _reference_gram(y, sy)
    ab = a * b
    return _reference_entropy(a, alpha) + _reference_entropy(b, alpha) - _reference_entropy(ab / np.trace(ab), alpha)


@pytest.mark.parametrize("alpha", [1.01, 2.0, 0.5])
def test_matches_an_explicit_loop_reference(alpha: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = x[:, :2] + 0.5 * torch.randn(12, 2, generator=gen, dtype=torch.float64)
    got = float(matrix_mutual_information(x, y, alpha=alpha, sigma_x=1.3, sigma_y=0.7))
    assert got == pytest.approx(_reference_mi(x.numpy(), y.numpy(), alpha, 1.3, 0.7), abs=1e-10)


def test_median_width_is_the_median_pairwise_distance() -> None:
    x = torch.randn(9, 4, dtype=torch.float64)
    distances = [float((x[i] - x[j]).norm()) for i in range(9) for j in range(i + 1, 9)]
    sigma = sorted(distances)[(len(distances) - 1) // 2]  # lower median
    expected = _reference_gram(x.numpy(), sigma)
    assert np.allclose(normalized_gram(x).numpy(), expected, atol=1e-12)


def test_labels_use_the_one_hot_linear_kernel() -> None:
    labels = torch.tensor([0, 2, 2, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels).double()
    assert torch.allclose(normalized_gram(labels), one_hot @ one_hot.T / 5)


def test_properties() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 4, generator=gen, dtype=torch.float64)
    y = torch.tanh(x[:, :3]) + 0.3 * torch.randn(60, 3, generator=gen, dtype=torch.float64)
    mi = float(matrix_mutual_information(x, y))
    assert mi == pytest.approx(float(matrix_mutual_information(y, x)), abs=1e-12)  # symmetric
    s_x = float(matrix_renyi_entropy(normalized_gram(x), 1.01))
    s_y = float(matrix_renyi_entropy(normalized_gram(y), 1.01))
    assert 0.0 < mi <= min(s_x, s_y) + 1e-12
    assert max(s_x, s_y) <= float(matrix_joint_entropy(normalized_gram(x), normalized_gram(y))) + 1e-12
    perm = torch.randperm(60, generator=gen)
    assert float(matrix_mutual_information(x[perm], y[perm])) == pytest.approx(mi, abs=1e-10)
    assert s_x <= math.log(60)
    assert float(matrix_mutual_information(x, y)) == mi  # deterministic: bit-identical on a second call


def test_i_of_labels_with_themselves_is_their_entropy() -> None:
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 0, 1])
    entropy = float(matrix_renyi_entropy(normalized_gram(labels), 1.01))
    assert float(matrix_mutual_information(labels, labels)) == pytest.approx(entropy, abs=1e-12)
    counts = (
        torch.tensor([2.0, 3.0, 3.0], dtype=torch.float64) / 8
    )  # delta kernel: the spectrum is the class frequencies
    assert entropy == pytest.approx(math.log(float((counts**1.01).sum())) / (1 - 1.01), abs=1e-12)


def test_independent_samples_give_a_small_value_that_shrinks_with_n() -> None:
    gen = torch.Generator().manual_seed(3)
    values = []
    for n in (50, 300):
        x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        y = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        values.append(float(matrix_mutual_information(x, y)))
        dependent = float(matrix_mutual_information(x, x + 0.1 * y))
        assert 0.0 <= values[-1] < 0.4 * dependent
    assert values[1] < 0.6 * values[0]


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        matrix_mutual_information(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="alpha"):
        matrix_mutual_information(torch.randn(5, 2), torch.randn(5, 2), alpha=0.0)
    with pytest.raises(ValueError, match="sigma"):
        normalized_gram(torch.randn(5, 2), sigma=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        normalized_gram(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(TypeError, match="x"):
        normalized_gram(torch.ones(4, dtype=torch.bool))

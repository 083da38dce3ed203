"""The one Gram-spectrum path (vendi_score, matrix_entropy) against an independent float64 N x N cosine kernel.

The path decomposes the N x N Gram when N <= d and the d x d one otherwise, and on CPU runs the product in numpy's
BLAS; the reference always builds the N x N cosine kernel with numpy from its definition, so both sides of the
switch and float32/float64 inputs are held to the same 1e-12.
"""

import math

import numpy as np
import pytest
import torch

from lightning_info.functional.spectral import gram_spectrum
from lightning_info.metrics.functional import matrix_entropy, vendi_score

ORDERS = (0.5, 1.0, 2.0, math.inf)


def _cosine_kernel_spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of K / tr K, K_ij = <x_i, x_j> / (|x_i| |x_j|) (N x N, float64), round-off zeros dropped."""
    n = x.shape[0]
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = np.dot(x[i], x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    lam = np.linalg.eigvalsh(k / np.trace(k))
    return lam[lam > n * np.finfo(np.float64).eps * lam.max()]


def _renyi(lam: np.ndarray, order: float) -> float:
    if order == 1.0:
        return float(-np.sum(lam * np.log(lam)))
    if order == math.inf:
        return float(-np.log(lam.max()))
    return float(np.log(np.sum(lam**order)) / (1.0 - order))


@pytest.mark.parametrize("shape", [(40, 9), (9, 40), (16, 16)], ids=["N>d", "N<d", "N=d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_agrees_with_float64_cosine_kernel_eigendecomposition(shape: tuple[int, int], dtype: torch.dtype) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype) + 0.3
    lam = _cosine_kernel_spectrum(x.double().numpy())  # the float32 values, exactly, in float64
    assert len(lam) == min(shape)
    for order in ORDERS:
        expected = _renyi(lam, order)
        assert matrix_entropy(x, alpha=order).item() == pytest.approx(expected, rel=1e-12, abs=0.0)
        vendi = vendi_score(x, q=order)
        assert vendi.dtype == torch.float64
        # Vendi's lambda are those of K / N, and tr K = N: the same spectrum
        assert vendi.item() == pytest.approx(math.exp(expected), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("shape", [(12, 5), (5, 12)], ids=["N>d", "N<d"])
def test_non_contiguous_and_scaled_inputs_take_the_same_path(shape: tuple[int, int]) -> None:
    """A transposed view (column-major) and a constant rescaling give the same value as the contiguous input."""
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    column_major = x.T.contiguous().T
    assert not column_major.is_contiguous()
    assert vendi_score(column_major).item() == pytest.approx(vendi_score(x).item(), rel=1e-13)
    assert matrix_entropy(column_major * 1e3).item() == pytest.approx(matrix_entropy(x).item(), rel=1e-13)


@pytest.mark.parametrize("shape", [(7, 4), (4, 7)], ids=["N>d", "N<d"])
def test_matrix_entropy_stays_differentiable(shape: tuple[int, int]) -> None:
    """With autograd the Gram product stays in torch (numpy cannot carry gradients): same value, finite gradients."""
    z = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    value = matrix_entropy(z, alpha=2.0)
    assert value.item() == pytest.approx(matrix_entropy(z.detach(), alpha=2.0).item(), rel=1e-13)
    assert torch.autograd.gradcheck(lambda t: matrix_entropy(t, alpha=2.0), (z,))


@pytest.mark.parametrize("shape", [(40, 3), (3, 40)], ids=["tall", "wide"])
def test_the_eigendecomposition_runs_on_the_smaller_gram(shape: tuple[int, int]) -> None:
    # the numpy (SYRK) path too: min(N, d) eigenvalues, the same nonzero ones as the other Gram's
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    spectrum = gram_spectrum(z)
    assert spectrum.shape == (min(shape),)
    other = torch.linalg.eigvalsh(z.T @ z if shape[0] < shape[1] else z @ z.T)
    nonzero = torch.sort(other[other > 1e-9 * other.max()] / other.sum()).values
    torch.testing.assert_close(torch.sort(spectrum).values, nonzero, atol=1e-12, rtol=0)

"""The CS divergence / CS-QMI metric classes: accumulated samples give the CS-IB functionals on all of them."""

import math

import pytest
import torch

from lightning_info.losses.functional import cs_divergence, cs_qmi
from lightning_info.metrics import CauchySchwarzDivergence, CauchySchwarzQMI


def _log_mean_kernel(u: list[list[float]], v: list[list[float]], sigma: float) -> float:
    """log (1 / (|u| |v|)) sum_ij exp(-|u_i - v_j|^2 / (2 sigma^2)) by loops (float64)."""
    total = sum(
        math.exp(-sum((a - b) ** 2 for a, b in zip(ui, vj, strict=True)) / (2 * sigma**2)) for ui in u for vj in v
    )
    return math.log(total / (len(u) * len(v)))


def test_divergence_accumulates_unequal_sets_and_matches_loops() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64) + 1
    metric = CauchySchwarzDivergence(sigma=0.8)
    assert (metric.is_differentiable, metric.higher_is_better, metric.full_state_update) == (False, None, False)
    metric.update(a[:4], b[:6])  # each update may bring different numbers of a and b
    metric.update(a[4:], b[6:])
    la, lb = a.tolist(), b.tolist()
    expected = _log_mean_kernel(la, la, 0.8) + _log_mean_kernel(lb, lb, 0.8) - 2 * _log_mean_kernel(la, lb, 0.8)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(metric.compute(), cs_divergence(a, b, sigma=0.8))
    median = CauchySchwarzDivergence(sigma="median")
    median.update(a, b)
    torch.testing.assert_close(median.compute(), cs_divergence(a, b, sigma="median"))


def test_qmi_matches_functional_on_all_pairs_and_vectors() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    z = x[:, 0] ** 2 + 0.1 * torch.randn(40, generator=g)  # (N,): one feature per sample
    metric = CauchySchwarzQMI(sigma_x="silverman", sigma_z=0.5)
    for chunk in (slice(0, 15), slice(15, 40)):
        metric.update(x[chunk], z[chunk].to(torch.bfloat16))
    torch.testing.assert_close(metric.compute(), cs_qmi(x, z.to(torch.bfloat16).float(), "silverman", 0.5))
    capped = CauchySchwarzQMI(max_samples=20)
    with pytest.warns(UserWarning, match="max_samples=20"):
        capped.update(x, z)
    torch.testing.assert_close(capped.compute(), cs_qmi(x[:20], z[:20]))


def test_errors() -> None:
    with pytest.raises(ValueError, match="sigma must be in"):
        CauchySchwarzDivergence(sigma=0.0)
    with pytest.raises(ValueError, match="sigma_z must be one of"):
        CauchySchwarzQMI(sigma_z="scott")  # type: ignore[arg-type]
    qmi = CauchySchwarzQMI()
    with pytest.raises(ValueError, match="same number of rows"):
        qmi.update(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        qmi.update(torch.tensor([[float("nan")], [0.0]]), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="1 or 2 dimensions"):
        qmi.update(torch.zeros(2, 2, 2), torch.zeros(2, 1))
    divergence = CauchySchwarzDivergence()
    divergence.update(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="must keep 2 features"):
        divergence.update(torch.randn(3, 2), torch.randn(3, 3))
    with pytest.raises(ValueError, match="before any update"), pytest.warns(UserWarning):
        CauchySchwarzQMI().compute()

"""DSMI assertions that mutation testing found missing (issue 20): the sample cap's boundary and the seeded average."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_info.functional import diffusion_spectral_mutual_information as dsmi


def _data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    z = torch.randn(n, 3, generator=g, dtype=torch.float64) + labels[:, None].double()
    return z, labels


def _dse_reference(z: np.ndarray, sigma: float, t: float) -> float:
    """DSE in bits from the non-symmetric diffusion operator P = D^-1 G (numpy's general eigen-solver)."""
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    g = np.exp(-sq / (2 * sigma**2))
    p = g / g.sum(1, keepdims=True)
    magnitudes = np.abs(np.linalg.eigvals(p)) ** t
    alpha = magnitudes / magnitudes.sum()
    alpha = alpha[alpha > 1e-12]
    return float(-(alpha * np.log2(alpha)).sum())


def test_the_cap_equal_to_the_number_of_rows_is_no_cap() -> None:
    # mutant: `n <= max_samples` -> `n < max_samples` draws a permutation and shifts every later seeded draw
    z, labels = _data()
    expected = dsmi(z, labels, sigma=1.0, max_samples=None)
    assert float(dsmi(z, labels, sigma=1.0, max_samples=24)) == float(expected)
    assert float(dsmi(z, labels, sigma=1.0, max_samples=23)) != pytest.approx(float(expected), abs=1e-9)


@pytest.mark.parametrize("repetitions", [1, 4])
def test_the_matched_subset_average_equals_an_independent_reference(repetitions: int) -> None:
    # mutant: num_repetitions ignored (one draw per class). The reference follows the documented draw contract:
    # rows sorted by (z, label), then for each class in increasing order num_repetitions seeded randperm(N)[:N_c]
    z, labels = _data()
    sigma, seed = 1.0, 3
    z_np, y_np = z.numpy(), labels.numpy()
    order = np.lexsort(tuple(np.concatenate([z_np, y_np[:, None]], 1).T[::-1]))
    z_np, y_np = z_np[order], y_np[order]
    generator = torch.Generator().manual_seed(seed)
    n, expected = len(y_np), 0.0
    for c in np.unique(y_np):
        members = z_np[y_np == c]
        draws = [torch.randperm(n, generator=generator)[: len(members)].numpy() for _ in range(repetitions)]
        matched = np.mean([_dse_reference(z_np[d], sigma, 1.0) for d in draws])
        expected += len(members) / n * (matched - _dse_reference(members, sigma, 1.0))
    got = dsmi(z, labels, sigma=sigma, num_repetitions=repetitions, seed=seed)
    assert float(got) == pytest.approx(expected, abs=1e-9)


def test_subsampled_dsmi_with_equal_rows_of_different_labels_is_order_free() -> None:
    # mutant: the canonical order sorts on z alone, so equal rows with different labels keep their arrival order
    # and the seeded subsample takes other labels when the rows arrive in another order
    g = torch.Generator().manual_seed(5)
    base = torch.randn(20, 3, generator=g, dtype=torch.float64)
    z = torch.cat([base, base])  # every row twice ...
    labels = torch.cat([torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.long)])  # ... once per class
    values = [
        float(dsmi(z[order], labels[order], max_samples=15, seed=3))
        for order in (torch.arange(40), torch.arange(40).flip(0), torch.randperm(40, generator=g))
    ]
    assert values[0] == pytest.approx(values[1], abs=1e-12) and values[0] == pytest.approx(values[2], abs=1e-12)

import inspect
import math

import numpy as np
import pytest
import torch

from lightning_info.metrics import DiffusionSpectralEntropy, DiffusionSpectralMutualInformation
from lightning_info.metrics.functional import diffusion_spectral_entropy, diffusion_spectral_mutual_information


def _reference_dse(z: np.ndarray, sigma: float = 10.0, t: float = 1.0) -> float:
    """Random-walk matrix P = D^-1 G (non-symmetric, general eigen-solver), explicit loops for the kernel, bits.

    Every eigenvalue of P counts, the trivial lambda_1 = 1 included (the paper's sum over i = 1..N).
    """
    n = z.shape[0]
    g = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            g[i, j] = math.exp(-np.sum((z[i] - z[j]) ** 2) / (2 * sigma**2))
    p = g / g.sum(axis=1, keepdims=True)
    eig = np.linalg.eigvals(p).real
    powered = np.abs(eig) ** t
    if powered.sum() == 0:
        return 0.0
    alpha = powered / powered.sum()
    alpha = alpha[alpha > 0]
    return float(-np.sum(alpha * np.log2(alpha)))


@pytest.mark.parametrize(("sigma", "t"), [(10.0, 1), (2.0, 3), (0.5, 1.5)])
def test_dse_matches_brute_force(sigma: float, t: float) -> None:
    z = np.random.default_rng(0).normal(size=(25, 4))
    got = diffusion_spectral_entropy(torch.from_numpy(z), sigma=sigma, t=t).item()
    assert got == pytest.approx(_reference_dse(z, sigma, t), rel=1e-8, abs=1e-10)


def test_dse_properties() -> None:
    n = 9
    far_apart = 1000.0 * torch.eye(n)  # P = I: N equal eigenvalues
    assert diffusion_spectral_entropy(far_apart).item() == pytest.approx(math.log2(n))
    assert diffusion_spectral_entropy(far_apart, base="e").item() == pytest.approx(math.log(n))
    assert diffusion_spectral_entropy(torch.zeros(4, 3)).item() == 0.0  # identical points: P = 11^T / N, rank 1
    # two tight clusters far apart: P is block-constant, two eigenvalues 1 -> 1 bit
    two = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 1000.0)])
    assert diffusion_spectral_entropy(two).item() == pytest.approx(1.0)
    # the paper's claim: DSE tracks intrinsic dimension, with 32-d ambient noise
    torch.manual_seed(0)
    values = []
    for k in (1, 2, 4, 8):
        basis = torch.linalg.qr(torch.randn(32, k)).Q.T
        values.append(diffusion_spectral_entropy(10 * torch.randn(200, k) @ basis + 0.5 * torch.randn(200, 32)).item())
    assert values == sorted(values) and values[-1] - values[0] > 3.0


def test_subsampling_cap_is_seeded_and_defaults_to_the_papers() -> None:
    z = torch.randn(60, 3)
    a = diffusion_spectral_entropy(z, max_samples=20, seed=1)
    torch.testing.assert_close(a, diffusion_spectral_entropy(z, max_samples=20, seed=1))
    assert a.item() != diffusion_spectral_entropy(z, max_samples=20, seed=2).item()
    torch.testing.assert_close(diffusion_spectral_entropy(z, max_samples=60), diffusion_spectral_entropy(z))
    torch.testing.assert_close(diffusion_spectral_entropy(z, max_samples=None), diffusion_spectral_entropy(z))
    index = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:20]  # the subset is uniform, seeded,
    rows = z[np.lexsort(z.double().numpy().T[::-1]).copy()]  # drawn over the rows sorted lexicographically
    torch.testing.assert_close(a, diffusion_spectral_entropy(rows[index], max_samples=None))
    for fn in (diffusion_spectral_entropy, diffusion_spectral_mutual_information):
        assert inspect.signature(fn).parameters["max_samples"].default == 10_000  # the authors' max_N


def test_dsmi_plain_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 3)) * 4
    labels = rng.integers(0, 3, size=30)
    labels[0] = 5  # a class with one sample contributes DSE 0
    expected = _reference_dse(z)
    for c in np.unique(labels):
        members = z[labels == c]
        expected -= (len(members) / 30) * (_reference_dse(members) if len(members) > 1 else 0.0)
    got = diffusion_spectral_mutual_information(torch.from_numpy(z), torch.from_numpy(labels), matched_subsets=False)
    assert got.item() == pytest.approx(expected, rel=1e-8)


def test_dsmi_informative_vs_random_labels() -> None:
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    z = (40.0 * torch.randn(4, 8))[labels] + 5.0 * torch.randn(100, 8)  # within-class spread ~ sigma
    informative = diffusion_spectral_mutual_information(z, labels)
    shuffled = diffusion_spectral_mutual_information(z, labels[torch.randperm(100)])
    assert informative.item() > 0.15
    assert abs(shuffled.item()) < 0.1
    assert diffusion_spectral_mutual_information(z.to(torch.float16), labels).dtype == torch.float64


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (torch.tensor([0, 1, -1, 0]), {}, ValueError, "labels must be >= 0, got -1"),
        (torch.tensor([0, 1, 1]), {}, ValueError, "one entry per sample"),
        (torch.tensor([[0, 1, 1, 0]]), {}, ValueError, "1 dimensions"),
        (torch.tensor([0, 1, 1, 0]), {"matched_subsets": 1}, TypeError, "matched_subsets must be a bool"),
        (torch.tensor([0.0, 1.0, 1.0, 0.0]), {}, TypeError, "integer"),
        (torch.tensor([0, 1, 1, 0]), {"sigma": 0.0}, ValueError, "sigma"),
        (torch.tensor([0, 1, 1, 0]), {"num_repetitions": 0}, ValueError, "num_repetitions"),
    ],
)
def test_dsmi_errors(labels: torch.Tensor, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        diffusion_spectral_mutual_information(torch.randn(4, 2), labels, **kwargs)


def test_metrics_match_functional() -> None:
    z, labels = torch.randn(24, 5) * 5, torch.randint(0, 3, (24,))
    dse, dsmi = DiffusionSpectralEntropy(t=2), DiffusionSpectralMutualInformation(num_repetitions=2)
    assert (dse.higher_is_better, dsmi.higher_is_better) == (None, True)
    for chunk in (slice(0, 10), slice(10, 24)):
        dse.update(z[chunk])
        dsmi.update(z[chunk], labels[chunk])
    torch.testing.assert_close(dse.compute(), diffusion_spectral_entropy(z, t=2))
    torch.testing.assert_close(dsmi.compute(), diffusion_spectral_mutual_information(z, labels, num_repetitions=2))
    with pytest.raises(ValueError, match="labels"):
        dsmi.update(z[:3], labels[:2])
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        dsmi.update(z[:2], labels[:2].float())
    capped = DiffusionSpectralMutualInformation(max_samples=10)
    with pytest.warns(UserWarning, match="keeps the first max_samples=10 rows"):
        for chunk in (slice(0, 8), slice(8, 16)):
            capped.update(z[chunk], labels[chunk])
    torch.testing.assert_close(capped.compute(), diffusion_spectral_mutual_information(z[:10], labels[:10]))


def test_dsmi_and_capped_dse_do_not_depend_on_row_order() -> None:
    # issue 14.11: five orders of the same rows gave -0.071 to +0.057 bits for a fixed seed
    g = torch.Generator().manual_seed(0)
    z = torch.randn(100, 5, generator=g, dtype=torch.float64)
    z[10] = z[20]  # duplicate rows, one pair with different labels, one with the same
    z[30] = z[40]
    labels = torch.randint(0, 4, (100,), generator=g)
    labels[10], labels[20], labels[30], labels[40] = 0, 1, 2, 2
    values, capped, dse = [], [], []
    for seed in range(5):
        perm = torch.randperm(100, generator=torch.Generator().manual_seed(seed))
        values.append(float(diffusion_spectral_mutual_information(z[perm], labels[perm], sigma=1.0)))
        capped.append(float(diffusion_spectral_mutual_information(z[perm], labels[perm], sigma=1.0, max_samples=60)))
        dse.append(float(diffusion_spectral_entropy(z[perm], sigma=1.0, max_samples=60)))
    for series_ in (values, capped, dse):
        assert max(series_) - min(series_) <= 1e-12, series_
    # the metric: batches in any order, or merged states, give the same value
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(7))
    forward_order, reverse_order = (
        DiffusionSpectralMutualInformation(sigma=1.0),
        DiffusionSpectralMutualInformation(sigma=1.0),
    )
    for chunk in perm.split(25):
        forward_order.update(z[chunk], labels[chunk])
    for chunk in reversed(perm.split(25)):
        reverse_order.update(z[chunk], labels[chunk])
    assert abs(float(forward_order.compute()) - values[0]) <= 1e-12
    assert abs(float(reverse_order.compute()) - values[0]) <= 1e-12

import math

import numpy as np
import pytest
import torch

from lightning_info.metrics import ShannonEntropy
from lightning_info.metrics.functional import shannon_entropy


def _reference(p: np.ndarray, base: float = math.e) -> np.ndarray:
    """Row-wise -sum p log p with explicit loops (float64)."""
    out = np.zeros(p.shape[0])
    for i in range(p.shape[0]):
        for pk in p[i]:
            if pk > 0:
                out[i] -= pk * math.log(pk) / math.log(base)
    return out


def test_probabilities_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(7, 0.3), size=20)
    p[0] = np.eye(7)[2]  # deterministic row: 0 log 0 = 0
    got = shannon_entropy(torch.from_numpy(p), base=2)
    np.testing.assert_allclose(got.numpy(), _reference(p, base=2), rtol=1e-12, atol=1e-12)
    assert got[0].item() == 0.0 and math.copysign(1.0, got[0].item()) == 1.0  # +0, not -0


def test_logits_match_brute_force_and_dim() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(5, 6))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = shannon_entropy(torch.from_numpy(logits), from_logits=True)
    np.testing.assert_allclose(got.numpy(), _reference(p), rtol=1e-10)
    got_dim0 = shannon_entropy(torch.from_numpy(logits.T.copy()), dim=0, from_logits=True)
    np.testing.assert_allclose(got_dim0.numpy(), _reference(p), rtol=1e-10)


def test_large_logits_are_stable() -> None:
    x = torch.tensor([[0.3, -1.2, 2.0, 0.0]]) + 1e6  # float32 logits far from 0
    reference = shannon_entropy(x.double() - 1e6, from_logits=True)  # same representable values, shifted back
    torch.testing.assert_close(shannon_entropy(x, from_logits=True).double(), reference, rtol=1e-5, atol=1e-6)
    peaked = shannon_entropy(torch.tensor([[1e4, 0.0, -1e4]]), from_logits=True)
    assert torch.isfinite(peaked).all() and peaked.item() == 0.0
    # logits 30 apart in float16: the naive softmax-then-log would give log(0) = -inf
    half = shannon_entropy(torch.tensor([[30.0, 0.0]], dtype=torch.float16), from_logits=True)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    p = torch.tensor([[0.25, 0.25, 0.5]])
    got = shannon_entropy(p.to(dtype), base=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([1.5]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.tensor([0.5, float("nan")])}, ValueError, "NaN"),
        ({"x": torch.tensor(1.0)}, ValueError, "at least 1 dimension"),
        ({"x": torch.tensor([0.5, 0.6])}, ValueError, "sum to 1"),
        ({"x": torch.tensor([1.5, -0.5])}, ValueError, r"\[0, 1\]"),
        ({"x": torch.tensor([0.5, 0.5]), "base": 1}, ValueError, "base"),
        ({"x": torch.tensor([0.5, 0.5]), "base": "two"}, ValueError, "base"),
        ({"x": torch.tensor([0.5, 0.5]), "dim": 1}, ValueError, "dim"),
        ({"x": torch.tensor([1, 0])}, TypeError, "floating"),
    ],
)
def test_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        shannon_entropy(**kwargs)


def test_metric_is_mean_over_all_distributions() -> None:
    torch.manual_seed(0)
    batches = [torch.randn(4, 3, 5), torch.randn(2, 3, 5)]
    metric = ShannonEntropy(from_logits=True, base=2)
    for batch in batches:
        metric.update(batch)
    expected = torch.cat([shannon_entropy(b.reshape(-1, 5), from_logits=True, base=2) for b in batches]).double().mean()
    torch.testing.assert_close(metric.compute(), expected)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    with pytest.raises(TypeError, match="from_logits"):
        ShannonEntropy(from_logits=1)  # type: ignore[arg-type]


def test_compute_without_rows_raises_instead_of_nan() -> None:
    # found by tests/fuzz: 0 / 0 = NaN was returned silently after updates without rows
    metric = ShannonEntropy()
    metric.update(torch.empty(0, 3))
    with pytest.raises(ValueError, match=r"ShannonEntropy.compute\(\) has nothing to average .* update\(\)"):
        metric.compute()

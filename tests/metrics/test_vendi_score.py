import math

import numpy as np
import pytest
import torch
from vendi_score import vendi

from lightning_info.metrics import VendiScore
from lightning_info.metrics.functional import vendi_score


@pytest.mark.parametrize("shape", [(200, 16), (12, 30)])
@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_agrees_with_vendi_score_package(shape: tuple[int, int], q: float) -> None:
    x = np.random.default_rng(0).normal(size=shape)
    reference = vendi.score_dual(x, q="inf" if q == math.inf else q)
    assert vendi_score(torch.from_numpy(x), q=q).item() == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_matches_primal_kernel_brute_force(q: float) -> None:
    x = np.random.default_rng(1).normal(size=(15, 4))
    n = x.shape[0]
    k = np.array([[xi @ xj / (np.linalg.norm(xi) * np.linalg.norm(xj)) for xj in x] for xi in x])  # loops
    lam = np.linalg.eigvalsh(k / n)
    lam = lam[lam > 1e-12]
    if q == 1.0:
        expected = math.exp(-np.sum(lam * np.log(lam)))
    elif q == math.inf:
        expected = 1 / lam.max()
    else:
        expected = math.exp(np.log(np.sum(lam**q)) / (1 - q))
    assert vendi_score(torch.from_numpy(x), q=q).item() == pytest.approx(expected, rel=1e-10)


def test_properties_and_unnormalised_input() -> None:
    assert vendi_score(torch.ones(6, 3)).item() == pytest.approx(1.0)
    assert vendi_score(torch.eye(5) * 3.0).item() == pytest.approx(5.0)
    x = torch.nn.functional.normalize(torch.randn(40, 8, dtype=torch.float64), dim=1)
    torch.testing.assert_close(vendi_score(x, normalize=False), vendi_score(x))
    assert vendi_score(x.to(torch.bfloat16)).dtype == torch.float64
    values = [vendi_score(x, q=q).item() for q in (0.5, 1.0, 2.0, math.inf)]
    assert values == sorted(values, reverse=True)  # Renyi entropies decrease with the order
    # rows too large to square in float64 (|x|^2 overflows): the cosine kernel is scale-free, so the same score
    torch.testing.assert_close(vendi_score(x * 1e200), vendi_score(x))
    with pytest.raises(TypeError, match="normalize must be a bool"):
        vendi_score(x, normalize=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.randn(3, 2) * 2 + 5, {"normalize": False}, "unit L2 norm"),
        (torch.tensor([[0.0, 0.0], [1.0, 0.0]]), {}, "all-zero row"),
        (torch.randn(3, 2), {"q": -1.0}, "q"),
        (torch.randn(1, 2), {}, "at least 2 rows"),
        (torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]), {}, "NaN"),
        (torch.tensor([[float("inf"), 0.0], [1.0, 0.0]], dtype=torch.float64), {}, "NaN or Inf"),
        (torch.randn(3), {}, "2 dimensions"),
    ],
)
def test_errors(x: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vendi_score(x, **kwargs)


def test_metric_matches_functional() -> None:
    a, b = torch.randn(30, 6), torch.randn(10, 6)
    metric = VendiScore(q=2.0, max_samples=35)
    assert (metric.is_differentiable, metric.higher_is_better, metric.full_state_update) == (False, True, False)
    metric.update(a)
    with pytest.warns(UserWarning, match="keeps the first max_samples=35 rows"):
        metric.update(b)
    torch.testing.assert_close(metric.compute(), vendi_score(torch.cat([a, b[:5]]), q=2.0))


def test_huge_order_tends_to_the_order_inf_score() -> None:
    # found by tests/fuzz: q=1e30 returned inf (lambda^q underflowed to 0)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)
    unit = z.numpy() / np.linalg.norm(z.numpy(), axis=1, keepdims=True)
    expected = 1.0 / np.linalg.eigvalsh(unit @ unit.T / 3).max()  # VS_inf = 1 / lambda_max
    assert float(vendi_score(z, q=1e30)) == pytest.approx(expected, rel=1e-12)

"""Every Metric of ``lightning_info.metrics.__all__`` through our metric test helper (tests/helpers/metric_tester.py):
class vs functional over several batches, forward vs update, CPU float16, pickling/clone/deepcopy, scriptability,
an independent float64 numpy reference, and one 2-rank gloo run covering every metric in both sync modes."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics import Metric

import lightning_info.metrics as metrics
from lightning_info import functional as F
from tests.helpers.lightning import run_ddp
from tests.helpers.metric_tester import MetricCase, check_metric, ddp_script


def _gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + i)


def _rows(i: int, n: int = 8, d: int = 5) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(i), dtype=torch.float64)


def _probs(i: int) -> torch.Tensor:
    return torch.randn(6, 4, generator=_gen(i), dtype=torch.float64).softmax(-1)


def _plogp(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis)


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _gram_probs(z: np.ndarray) -> np.ndarray:
    lam = np.clip(np.linalg.eigvalsh(_unit(z) @ _unit(z).T / len(z)), 0, None)
    return lam / lam.sum()


def _dse_bits(z: np.ndarray, sigma: float) -> float:
    sq = ((z[:, None] - z[None]) ** 2).sum(-1)
    g = np.exp(-sq / (2 * sigma**2))
    lam = np.abs(np.linalg.eigvals(g / g.sum(1, keepdims=True)))
    return float(_plogp(lam / lam.sum()) / np.log(2))


def _log_sum_gauss(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    return float(np.log(np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2)).sum()))


def _cs_qmi(x: np.ndarray, z: np.ndarray, sigma: float) -> float:
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * sigma**2))
    ell = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * sigma**2))
    cross = (k.sum(1) * ell.sum(1)).sum()
    return float(np.log((k * ell).sum()) + np.log(k.sum()) + np.log(ell.sum()) - 2 * np.log(cross))


def _cmi(p: np.ndarray, y: np.ndarray) -> float:
    q = np.stack([p[y == c].mean(0) if (y == c).any() else np.zeros(p.shape[1]) for c in range(p.shape[1])])
    return float((p * (np.log(p) - np.log(q[y]))).sum(1).mean())


def _labels(i: int, n: int = 8) -> torch.Tensor:
    return torch.arange(n) % 2 + (i % 2) * 0


def _attention(i: int) -> torch.Tensor:
    return torch.randn(3, 2, 4, 4, generator=_gen(i), dtype=torch.float64).softmax(-1)


def cases() -> list[MetricCase]:
    sep = lambda i: _rows(i) + 3.0 * _labels(i)[:, None].double()  # noqa: E731  (classes apart)
    return [
        MetricCase(metrics.ShannonEntropy, {}, lambda i: (_probs(i),), lambda p: F.shannon_entropy(p).mean(),
                   lambda p: _plogp(p).mean()),
        MetricCase(metrics.AttentionEntropy, {}, lambda i: (_attention(i),), lambda a: F.attention_entropy(a),
                   lambda a: _plogp(a).mean(axis=(0, 2))),
        MetricCase(metrics.ConditionalMutualInformation, {"num_classes": 4},
                   lambda i: (_probs(i), torch.arange(6) % 4),
                   lambda p, y: F.conditional_mutual_information(p, y, 4), _cmi),
        MetricCase(metrics.MatrixEntropy, {}, lambda i: (_rows(i),), lambda z: F.matrix_entropy(z),
                   lambda z: _plogp(_gram_probs(z))),
        MetricCase(metrics.VendiScore, {}, lambda i: (_rows(i),), lambda z: F.vendi_score(z),
                   lambda z: np.exp(_plogp(_gram_probs(z)))),
        MetricCase(metrics.MatrixNuclearNorm, {"mode": "exact"}, lambda i: (_rows(i),),
                   lambda z: F.matrix_nuclear_norm(z, mode="exact"),
                   lambda z: np.linalg.svd(_unit(z - z.mean(0)), compute_uv=False).sum() / len(z)),
        MetricCase(metrics.DiffusionSpectralEntropy, {"sigma": 2.0}, lambda i: (_rows(i),),
                   lambda z: F.diffusion_spectral_entropy(z, sigma=2.0), lambda z: _dse_bits(z, 2.0), half_atol=0.1),
        MetricCase(metrics.DiffusionSpectralMutualInformation, {"sigma": 2.0, "matched_subsets": False},
                   lambda i: (sep(i), _labels(i)),
                   lambda z, y: F.diffusion_spectral_mutual_information(z, y, sigma=2.0, matched_subsets=False),
                   lambda z, y: _dse_bits(z, 2.0) - sum((y == c).mean() * _dse_bits(z[y == c], 2.0) for c in (0, 1)),
                   half_atol=0.1),
        MetricCase(metrics.CauchySchwarzDivergence, {"sigma": 2.0}, lambda i: (_rows(i), _rows(50 + i) + 1.0),
                   lambda a, b: F.cs_divergence(a, b, sigma=2.0),
                   lambda a, b: _log_sum_gauss(a, a, 2.0) + _log_sum_gauss(b, b, 2.0) - 2 * _log_sum_gauss(a, b, 2.0)),
        MetricCase(metrics.CauchySchwarzQMI, {"sigma_x": 2.0, "sigma_z": 2.0},
                   lambda i: (_rows(i), _rows(i)[:, :2] + 0.5 * _rows(70 + i)[:, :2]),
                   lambda x, z: F.cs_qmi(x, z, sigma_x=2.0, sigma_z=2.0), lambda x, z: _cs_qmi(x, z, 2.0)),
    ]  # fmt: skip


def test_every_metric_has_a_case() -> None:
    exported = {
        n for n in metrics.__all__ if inspect.isclass(getattr(metrics, n)) and issubclass(getattr(metrics, n), Metric)
    }
    assert exported == {case.id for case in cases()}


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_metric(case: MetricCase) -> None:
    check_metric(case)


@pytest.mark.ddp
def test_every_metric_under_two_rank_ddp_in_both_sync_modes(tmp_path: Path) -> None:
    run_ddp(tmp_path, ddp_script("tests.metrics.test_metric_harness", "cases"), timeout=120)
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()

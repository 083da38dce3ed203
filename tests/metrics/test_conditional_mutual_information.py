import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

import lightning_info.losses.functional as losses_functional
from lightning_info.callbacks import InformationMonitor
from lightning_info.metrics import ConditionalMutualInformation
from lightning_info.metrics.functional import conditional_mutual_information as cmi
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader


def reference_cmi(probs: list[list[float]], labels: list[int], centroids: list[list[float]] | None = None) -> float:
    """(1/N) sum_i KL(P_i || Q_{y_i}) with plain Python loops (centroids: class means unless given)."""
    n, k = len(probs), len(probs[0])
    total = 0.0
    for i in range(n):
        if centroids is None:
            members = [j for j in range(n) if labels[j] == labels[i]]
            q = [sum(probs[j][c] for j in members) / len(members) for c in range(k)]
        else:
            q = centroids[labels[i]]
        total += sum(probs[i][c] * math.log(probs[i][c] / q[c]) for c in range(k) if probs[i][c] > 0)
    return total / n


def random_case(n: int = 13, k: int = 4, seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, k, (n,), generator=g)
    return probs, labels


def test_one_implementation_exported_from_losses_and_metrics() -> None:
    assert losses_functional.conditional_mutual_information is cmi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_loop_reference(seed: int) -> None:
    probs, labels = random_case(seed=seed)
    expected = reference_cmi(probs.tolist(), labels.tolist())
    assert float(cmi(probs, labels, 4)) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_equals_conditional_entropy_difference() -> None:
    # I(X; Yhat | Y) = H(Yhat | Y) - H(Yhat | X, Y) = sum_c (n_c/N) H(Q_c) - mean_i H(P_i)
    probs, labels = random_case(n=40, k=5, seed=3)
    entropy = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    h_given_y = sum((labels == c).double().mean() * entropy(probs[labels == c].mean(0)) for c in labels.unique())
    expected = h_given_y - entropy(probs).mean()
    torch.testing.assert_close(cmi(probs, labels, 5), expected, rtol=1e-12, atol=1e-14)


def test_zero_when_each_class_shares_one_distribution_positive_otherwise() -> None:
    per_class = torch.softmax(torch.randn(3, 3, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 2, 2, 0, 1, 1])
    assert float(cmi(per_class[labels], labels, 3)) == pytest.approx(0.0, abs=1e-15)
    probs = per_class[labels].clone()
    probs[0] = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)  # one sample of class 0 differs
    assert float(cmi(probs, labels, 3)) > 1e-3


def test_invariant_to_sample_order_and_absent_classes_are_skipped() -> None:
    probs, labels = random_case(n=20, k=6, seed=4)
    labels = labels % 3  # classes 3, 4, 5 never occur
    perm = torch.randperm(20)
    value = cmi(probs, labels, 6)
    assert torch.isfinite(value)
    torch.testing.assert_close(cmi(probs[perm], labels[perm], 6), value, rtol=1e-12, atol=0.0)
    assert float(cmi(probs[:1], labels[:1], 6)) == 0.0  # one sample is its own centroid


def test_bounded_by_log_k_with_batch_centroids() -> None:
    # the largest CMI: each class's samples are one-hot on different outputs, centroid uniform
    k = 4
    probs = torch.eye(k, dtype=torch.float64).repeat(2, 1)
    labels = torch.zeros(2 * k, dtype=torch.long)
    assert float(cmi(probs, labels, k)) == pytest.approx(math.log(k), rel=1e-12)
    for seed in range(5):
        p, y = random_case(n=30, k=k, seed=seed, scale=20.0)
        assert 0.0 <= float(cmi(p, y, k)) <= math.log(k)


def test_given_centroids_and_the_clamp_keeps_kl_finite() -> None:
    probs, labels = random_case(n=9, k=3, seed=5)
    centroids = torch.softmax(torch.randn(3, 3, dtype=torch.float64), dim=1)
    expected = reference_cmi(probs.tolist(), labels.tolist(), centroids.tolist())
    assert float(cmi(probs, labels, 3, centroids)) == pytest.approx(expected, rel=1e-12)
    # a centroid with zero mass where P is not: log(0) is clamped at log(eps), so KL <= log(1/eps)
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    zero = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eps = 1e-6
    value = cmi(p, torch.tensor([0]), 3, zero, eps=eps)
    assert float(value) == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(eps)), rel=1e-12)
    assert float(value) <= -math.log(eps)
    # the default clamp is 1e-8 (the bound log(1/eps) = 18.42 nats that keeps CE - lam * CMI bounded below)
    value = cmi(p, torch.tensor([0]), 3, zero)
    assert float(value) == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-8)), rel=1e-12)


def test_gradcheck_float64_with_batch_centroids() -> None:
    probs, labels = random_case(n=7, k=3, seed=6, scale=1.0)
    probs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: cmi(p, labels, 3), (probs,), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    probs, labels = random_case(n=32, k=5, seed=7, scale=1.0)
    value = cmi(probs.to(dtype), labels, 5)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(reference_cmi(probs.to(dtype).double().tolist(), labels.tolist()), rel=1e-5)


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs", "error", "match"),
    [
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 3]), {}, ValueError, r"\[0, 2\], got 3"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, -1, 2, 0]), {}, ValueError, "got -1"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0.0, 1, 2, 0]), {}, TypeError, "integer"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2]), {}, ValueError, r"shape \(4,\)"),
        (torch.full((4, 2), 1 / 2), torch.tensor([0, 1, 1, 0]), {}, ValueError, "num_classes=3 columns"),
        (torch.full((4,), 1 / 3), torch.tensor([0, 1, 2, 0]), {}, ValueError, "2 dimensions"),
        (torch.full((4, 3), 0.5), torch.tensor([0, 1, 2, 0]), {}, ValueError, "sum to 1"),
        (torch.tensor([[1.5, -0.5, 0.0]]), torch.tensor([0]), {}, ValueError, r"\[0, 1\]"),
        (torch.full((4, 3), math.nan), torch.tensor([0, 1, 2, 0]), {}, ValueError, "NaN"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0]), {"eps": 0.0}, ValueError, "eps"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0]), {"centroids": torch.ones(2, 3)}, ValueError, "3, 3"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0]), {"centroids": -torch.ones(3, 3)}, ValueError, "neg"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(probs, labels, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        cmi(probs, labels, 3, **kwargs)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        cmi(probs, labels, 1)


def test_metric_equals_functional_on_all_samples_with_classes_missing_from_updates() -> None:
    probs, labels = random_case(n=30, k=4, seed=8)
    metric = ConditionalMutualInformation(num_classes=4)
    order = labels.argsort()  # updates of one or two classes at a time: per-batch centroids would differ
    for chunk in order.split(7):
        metric.update(probs[chunk].float(), labels[chunk])
    expected = reference_cmi(probs.float().double().tolist(), labels.tolist())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)
    metric.reset()
    metric.update(probs[:1], labels[:1])
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        metric.compute()


def test_metric_flags_and_bad_arguments() -> None:
    assert ConditionalMutualInformation.full_state_update is False
    assert ConditionalMutualInformation.is_differentiable is False
    assert ConditionalMutualInformation.higher_is_better is None
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ConditionalMutualInformation(num_classes=1)
    with pytest.raises(ValueError, match="eps"):
        ConditionalMutualInformation(num_classes=3, eps=2.0)
    metric = ConditionalMutualInformation(num_classes=3)
    with pytest.raises(ValueError, match="got 5"):
        metric.update(torch.full((2, 3), 1 / 3), torch.tensor([0, 5]))


def test_information_monitor_logs_cmi_of_the_logits(tmp_path: Path) -> None:
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))  # frozen: recomputable
    monitor = InformationMonitor(["net.4"], ["cmi"], every_n_steps=2)
    trainer = Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=3, limit_val_batches=0))
    trainer.fit(model, loader(classification_data(n=96)))
    x, y = loader(classification_data(n=96)).dataset[32:48]  # step 2 captured batch 2
    with torch.no_grad():
        expected = reference_cmi(torch.softmax(model(x).double(), 1).tolist(), y.tolist())
    assert monitor.latest["info/net.4/cmi"] == pytest.approx(expected, rel=1e-4)  # float32 logits


# The 2-process DDP check (synced value == single-process value, with a class present on one rank only) runs in
# tests/distill/test_ddp.py, through MCMICallback's validation metric, to share one DDP launch.


def test_compute_error_names_update() -> None:
    # found by tests/fuzz: the message named no argument or method to act on
    with pytest.raises(ValueError, match=r"compute\(\) needs at least 2 samples, got 0: pass more rows to update\(\)"):
        ConditionalMutualInformation(num_classes=3).compute()

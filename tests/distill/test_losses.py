import math

import pytest
import torch

from lightning_info.distill import KDLoss, MCMILoss
from lightning_info.metrics.functional import conditional_mutual_information
from tests.metrics.test_conditional_mutual_information import reference_cmi


def _case(n: int = 12, k: int = 4, seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    return logits, torch.arange(n) % k


def _reference_ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    rows = logits.tolist()
    return sum(
        math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(rows, labels.tolist(), strict=True)
    ) / len(rows)


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------ MCMILoss
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_mcmi_objective_matches_independent_float64_computation(temperature: float) -> None:
    logits, labels = _case()
    out = MCMILoss(num_classes=4, lam=0.3, temperature=temperature)(logits, labels)
    expected_cmi = reference_cmi(torch.softmax(logits / temperature, 1).tolist(), labels.tolist())
    assert float(out.cmi) == pytest.approx(expected_cmi, rel=1e-12)
    assert float(out.ce) == pytest.approx(_reference_ce(logits, labels), rel=1e-12)
    assert float(out.loss) == pytest.approx(_reference_ce(logits, labels) - 0.3 * expected_cmi, rel=1e-12)


def test_gradcheck_float64_batch_and_running_centroids() -> None:
    logits, labels = _case(n=8, k=3, seed=1, scale=1.0)
    logits.requires_grad_(True)
    batch = MCMILoss(num_classes=3, lam=0.7, temperature=1.5)
    assert torch.autograd.gradcheck(lambda z: batch(z, labels).loss, (logits,))
    ema = MCMILoss(num_classes=3, lam=0.7, centroids="ema").double()
    ema(torch.randn(8, 3, dtype=torch.float64), labels)  # fills the centroids
    ema.eval()  # no update inside gradcheck's repeated calls
    assert torch.autograd.gradcheck(lambda z: ema(z, labels).loss, (logits,))


def test_batch_centroids_held_fixed_give_the_full_gradient() -> None:
    # d/dP_j sum_i P_i log Q is log Q + 1 for the exact class mean; the +1 vanishes through the softmax, so
    # MCMILoss (centroids held fixed) has the gradient of the functional's full graph through the class means
    logits, labels = _case(n=10, k=4, seed=2)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(MCMILoss(4, lam=1.0, temperature=2.0)(logits, labels).cmi, logits)
    full = conditional_mutual_information(torch.softmax(logits / 2.0, 1), labels, 4)
    (expected,) = torch.autograd.grad(full, logits)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    # ... which is not the gradient of the loss with the centroids frozen at other values
    (moved,) = torch.autograd.grad(
        conditional_mutual_information(torch.softmax(logits / 2.0, 1), labels, 4, torch.full((4, 4), 0.25)), logits
    )
    assert not torch.allclose(moved, grad)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_each_output_has_the_gradient_of_plain_autograd(temperature: float) -> None:
    """The fused node's analytic backward, for ``loss``, ``ce``, ``cmi`` and any mix of them (the callback
    back-propagates ``cmi`` alone), equals autograd through cross-entropy and the functional CMI."""
    logits, labels = _case(n=9, k=3, seed=4)
    logits.requires_grad_(True)
    out = MCMILoss(3, lam=0.4, temperature=temperature)(logits, labels)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    cmi = conditional_mutual_information(torch.softmax(logits / temperature, 1), labels, 3)
    for weights in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.3, -1.2, 2.5)]:
        fused = sum(w * t for w, t in zip(weights, out, strict=True))
        plain = weights[0] * (ce - 0.4 * cmi) + weights[1] * ce + weights[2] * cmi
        (got,) = torch.autograd.grad(fused, logits, retain_graph=True)
        (expected,) = torch.autograd.grad(plain, logits, retain_graph=True)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_hessian_vector_products_equal_plain_autograd_with_the_centroids_held_fixed(temperature: float) -> None:
    """Double backward (what GAM(hvp="exact") does) through the fused node = through the plain formula."""
    logits, labels = _case(n=7, k=3, seed=5)
    logits.requires_grad_(True)
    v = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def plain(z: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(z / temperature, 1)
        q = torch.zeros(3, 3, dtype=z.dtype).index_add(0, labels, p.detach()) / torch.bincount(labels)[:, None]
        cmi = (p * (p.log() - q.log()[labels])).sum(1).mean()
        return torch.nn.functional.cross_entropy(z, labels) - 0.5 * cmi

    def hvp(objective) -> torch.Tensor:
        (grad,) = torch.autograd.grad(objective(logits), logits, create_graph=True)
        return torch.autograd.grad(grad, logits, grad_outputs=v)[0]

    expected = hvp(plain)
    torch.testing.assert_close(hvp(lambda z: MCMILoss(3, lam=0.5, temperature=temperature)(z, labels).loss), expected,
                               rtol=1e-10, atol=1e-12)  # fmt: skip
    assert expected.abs().max() > 1e-3  # a real second derivative, not zeros


def test_running_centroids_first_update_blend_and_absent_classes() -> None:
    loss = MCMILoss(num_classes=3, centroids="ema", momentum=0.75).double()
    p1 = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    loss(p1.log(), torch.tensor([0, 0, 2]))
    assert loss.class_seen.tolist() == [True, False, True]
    torch.testing.assert_close(loss.class_centroids[0], _f64([0.7, 0.2, 0.1]))  # no bias towards 0
    assert loss.class_centroids[1].abs().sum() == 0
    p2 = torch.tensor([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)
    out = loss(p2.log(), torch.tensor([1, 0]))
    expected0 = 0.75 * _f64([0.7, 0.2, 0.1]) + 0.25 * _f64([0.3, 0.3, 0.4])
    torch.testing.assert_close(loss.class_centroids[0], expected0)
    torch.testing.assert_close(loss.class_centroids[1], _f64([0.1, 0.8, 0.1]))
    torch.testing.assert_close(loss.class_centroids[2], _f64([0.2, 0.2, 0.6]))  # absent: unchanged
    # this call used the updated centroids
    centroids = loss.class_centroids.double().tolist()
    assert float(out.cmi) == pytest.approx(reference_cmi(p2.tolist(), [1, 0], centroids), rel=1e-6)
    assert "class_centroids" in loss.state_dict() and "class_seen" in loss.state_dict()


def test_running_centroids_converge_to_the_data_centroids_and_eval_does_not_update() -> None:
    g = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(300, 5, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    data_centroids = torch.stack([torch.softmax(logits[labels == c], 1).mean(0) for c in range(5)])
    loss = MCMILoss(num_classes=5, centroids="ema", momentum=0.95)
    for _ in range(30):
        for index in torch.randperm(300, generator=g).split(50):
            loss(logits[index], labels[index])
    # EMA noise: per-batch class-mean std (~0.1 with ~10 samples) * sqrt((1 - m) / (1 + m)) ~ 0.016; max of 25 entries
    torch.testing.assert_close(loss.class_centroids, data_centroids, atol=0.03, rtol=0.0)
    loss.eval()
    before = loss.class_centroids.clone()
    loss(logits[:50], labels[:50])
    assert torch.equal(loss.class_centroids, before)


def test_running_centroids_move_once_per_sharpness_aware_step() -> None:
    """Regression: SAM's perturbed pass re-ran the loss and updated the running centroids a second time (with the
    perturbed model's outputs). Its extra passes now use the centroids the clean pass just set, unchanged."""
    from lightning_info._internal.passes import pass_kind

    loss = MCMILoss(num_classes=3, centroids="ema", momentum=0.75).double()
    p1 = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 2])
    loss(p1.log(), labels)  # the clean pass
    stored = (loss.class_centroids.clone(), loss.class_seen.clone())
    perturbed = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]], dtype=torch.float64)
    with pass_kind(auxiliary=True):
        out = loss(perturbed.log(), labels)
    assert torch.equal(loss.class_centroids, stored[0]) and torch.equal(loss.class_seen, stored[1])
    centroids = stored[0].tolist()
    assert float(out.cmi) == pytest.approx(reference_cmi(perturbed.tolist(), labels.tolist(), centroids), rel=1e-6)


def test_the_cmi_term_is_bounded_clamp_and_running_centroids() -> None:
    # running centroids all on output 0, then a batch of class 0 predicting output 1 with certainty
    loss = MCMILoss(num_classes=3, centroids="ema", momentum=0.9, eps=1e-6)
    loss(torch.tensor([[50.0, 0.0, 0.0]] * 4), torch.zeros(4, dtype=torch.long))
    adversarial = torch.tensor([[0.0, 50.0, 0.0]] * 4)
    loss.eval()  # stored centroids (what frozen centroids do): only the clamp bounds the term
    frozen = float(loss(adversarial, torch.zeros(4, dtype=torch.long)).cmi)
    assert math.log(1 / 1e-6) - 1e-3 <= frozen <= math.log(1 / 1e-6) + 1e-6
    loss.train()  # the updated centroid keeps (1 - m) of this batch: KL <= log(n_c / (1 - m))
    bounded = float(loss(adversarial, torch.zeros(4, dtype=torch.long)).cmi)
    assert bounded == pytest.approx(math.log(1 / 0.1), rel=1e-4)
    assert bounded <= math.log(4 / 0.1)
    for seed in range(3):
        logits, labels = _case(n=32, k=6, seed=seed, scale=30.0)
        assert 0.0 <= float(MCMILoss(6)(logits, labels).cmi) <= math.log(6)


def test_low_precision_logits_are_computed_in_float32() -> None:
    logits, labels = _case(n=16, k=4, seed=4)
    out = MCMILoss(4, centroids="ema")(logits.bfloat16(), labels)
    assert out.loss.dtype == torch.float32
    expected = reference_cmi(torch.softmax(logits.bfloat16().double(), 1).tolist(), labels.tolist())
    assert float(out.cmi) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lam": -0.1}, ValueError, r"lam must be in \[0, inf\], got -0.1"),
        ({"temperature": 0.0}, ValueError, "temperature must be in"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"centroids": "frozen"}, ValueError, "centroids must be one of"),
        ({"num_classes": 1}, ValueError, "num_classes must be >= 2"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"lam": "0.2"}, TypeError, "lam must be a real number"),
        ({"sync_dist": 1}, TypeError, "sync_dist"),
    ],
)
def test_mcmi_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        MCMILoss(**{"num_classes": 3, **kwargs})


def test_mcmi_bad_inputs() -> None:
    loss = MCMILoss(num_classes=3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\], got 3"):
        loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    for centroids in ("batch", "ema"):  # the range is read off bincount: both signs, both centroid kinds
        with pytest.raises(ValueError, match=r"class indices in \[0, 2\], got -1"):
            MCMILoss(num_classes=3, centroids=centroids)(torch.randn(4, 3), torch.tensor([0, -1, 2, 1]))
        with pytest.raises(ValueError, match=r"class indices in \[0, 2\], got 7"):
            MCMILoss(3, centroids=centroids)(torch.randn(4, 3, requires_grad=True), torch.tensor([7, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, 3\), got \(4, 5\)"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="integer class indices"):
        loss(torch.randn(4, 3), torch.zeros(4))


# ------------------------------------------------------------------ KDLoss
def _reference_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / temperature) for v in s_row)
        zt = sum(math.exp(v / temperature) for v in t_row)
        for s, t in zip(s_row, t_row, strict=True):
            pt, ps = math.exp(t / temperature) / zt, math.exp(s / temperature) / zs
            total += pt * math.log(pt / ps)
    return total / len(student)


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.9), (1.0, 0.5), (2.0, 0.0), (3.0, 1.0)])
def test_kd_loss_equals_the_textbook_formula(temperature: float, alpha: float) -> None:
    student, labels = _case(n=10, k=5, seed=5)
    teacher, _ = _case(n=10, k=5, seed=6, scale=3.0)
    out = KDLoss(temperature=temperature, alpha=alpha)(student, teacher, labels)
    kl, ce = _reference_kl(student, teacher, temperature), _reference_ce(student, labels)
    assert float(out.kd) == pytest.approx(kl, rel=1e-12)
    assert float(out.ce) == pytest.approx(ce, rel=1e-12)
    assert float(out.loss) == pytest.approx(alpha * temperature**2 * kl + (1 - alpha) * ce, rel=1e-12)


def test_t_squared_scaling_matches_hinton_high_temperature_limit() -> None:
    # Hinton et al. 2015, Sec. 2.1: for large T, T^2 KL -> (1/2K) sum_k (s_k - t_k)^2 with zero-mean logits,
    # so the soft term's gradient keeps its size as T grows (it would shrink as 1/T^2 without the factor)
    student, labels = _case(n=6, k=5, seed=7)
    teacher, _ = _case(n=6, k=5, seed=8)
    student, teacher = student - student.mean(1, keepdim=True), teacher - teacher.mean(1, keepdim=True)
    limit = float(((student - teacher) ** 2).sum(1).mean() / (2 * 5))
    assert float(KDLoss(temperature=200.0, alpha=1.0)(student, teacher, labels).loss) == pytest.approx(limit, rel=1e-2)
    grads = []
    for temperature in (20.0, 40.0):
        s = student.clone().requires_grad_(True)
        KDLoss(temperature=temperature, alpha=1.0)(s, teacher, labels).loss.backward()
        grads.append(s.grad.norm())
    assert float(grads[1] / grads[0]) == pytest.approx(1.0, abs=0.05)


def test_alpha_edge_cases_use_only_labels_or_only_the_teacher() -> None:
    student, labels = _case(n=8, k=4, seed=9)
    teacher, _ = _case(n=8, k=4, seed=10)
    ce_only = KDLoss(alpha=0.0)
    assert float(ce_only(student, teacher, labels).loss) == float(torch.nn.functional.cross_entropy(student, labels))
    assert float(ce_only(student, 5 * teacher, labels).loss) == float(ce_only(student, teacher, labels).loss)
    kd_only = KDLoss(temperature=2.0, alpha=1.0)
    assert float(kd_only(student, teacher, labels).loss) == float(kd_only(student, teacher, (labels + 1) % 4).loss)
    assert float(kd_only(teacher, teacher, labels).loss) == pytest.approx(0.0, abs=1e-12)


def test_kd_low_precision_and_bad_inputs() -> None:
    student, labels = _case(n=8, k=4, seed=11)
    assert KDLoss()(student.half(), student.bfloat16(), labels).loss.dtype == torch.float32
    with pytest.raises(ValueError, match=r"same shape, got student \(8, 4\) and teacher \(8, 5\)"):
        KDLoss()(student, torch.randn(8, 5), labels)
    with pytest.raises(ValueError, match="got 4"):
        KDLoss()(student, student, labels + 1)
    with pytest.raises(ValueError, match="temperature must be in"):
        KDLoss(temperature=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        KDLoss(alpha=1.5)

"""GAM against an independent float64 reference built from full Hessians (Algorithm 1 of Zhang et al., CVPR 2023)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_info.optim import GAM, NonFiniteGradientError
from tests.optim.reference import gam_direction, params_of


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _batch(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)


def _flat_loss(model: nn.Module, batch: tuple[Tensor, Tensor]):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def loss(flat: Tensor) -> Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.mse_loss(functional_call(model, params, (batch[0],)), batch[1])

    return loss, names, shapes


def _reference_direction(model, batch, rho, alpha, xi=1e-12, sam_rho=None) -> Tensor:
    """h_loss + alpha * rho * H(theta_adv) g_adv / (||g_adv|| + xi), every product with the full Hessian."""
    loss, _, _ = _flat_loss(model, batch)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def grad(x: Tensor) -> Tensor:
        return torch.func.grad(loss)(x)

    def hessian(x: Tensor) -> Tensor:
        return torch.autograd.functional.hessian(loss, x)

    g = grad(theta)
    f = hessian(theta) @ (g / (g.norm() + xi))
    adv = theta + rho * f / (f.norm() + xi)
    g_adv = grad(adv)
    h_norm = rho * hessian(adv) @ (g_adv / (g_adv.norm() + xi))
    h_loss = g if sam_rho is None else grad(theta + sam_rho * g / g.norm())
    return h_loss + alpha * h_norm


def _gam_direction(model, batch, **kwargs) -> Tensor:
    """One GAM step with SGD(lr=1): the change of the weights is minus the direction."""
    create_graph = kwargs.get("hvp") == "exact"
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=1.0, **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward(create_graph=create_graph)
        return loss

    optimizer.step(closure)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return before - after


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("sam_rho", [None, 0.05])
def test_exact_mode_equals_the_full_hessian_reference(sam_rho) -> None:
    model, batch = _model(), _batch()
    expected = _reference_direction(model, batch, rho=0.1, alpha=0.5, sam_rho=sam_rho)
    got = _gam_direction(model, batch, rho=0.1, alpha=0.5, sam_rho=sam_rho, hvp="exact")
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_a_large_xi_enters_every_normalisation_as_in_the_references() -> None:
    # mutants: the ascent direction F = f / r1 (or H g / (||g|| + xi)) taken unscaled. The scale cancels in
    # F / (||F|| + xi) only while xi << ||F||: with xi = 0.5 it shows.
    model, batch = _model(), _batch()
    expected = _reference_direction(model, batch, rho=0.1, alpha=0.5, xi=0.5)
    got = _gam_direction(model, batch, rho=0.1, alpha=0.5, xi=0.5, hvp="exact")
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    loss, _, _ = _flat_loss(model, batch)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    expected = gam_direction(torch.func.grad(loss), theta, rho=0.1, alpha=0.5, r=0.01, xi=0.5)
    got = _gam_direction(model, batch, rho=0.1, alpha=0.5, xi=0.5, fd_step=0.01)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_finite_differences_converge_to_the_exact_direction_at_first_order() -> None:
    batch = _batch()
    expected = _reference_direction(_model(), batch, rho=0.1, alpha=0.5)
    errors = [
        float((_gam_direction(_model(), batch, rho=0.1, alpha=0.5, fd_step=r) - expected).norm() / expected.norm())
        for r in (1e-2, 1e-3, 1e-4)
    ]
    assert errors[2] < 1e-4
    assert 4 < errors[0] / errors[1] < 25 and 4 < errors[1] / errors[2] < 25  # error ~ r: first order


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize(
    ("kwargs", "passes"),
    [({}, 4), ({"sam_rho": 0.05}, 4), ({"hvp": "exact"}, 2), ({"hvp": "exact", "sam_rho": 0.05}, 3)],
)
def test_forward_backward_passes_per_step(kwargs, passes) -> None:
    model, batch = _model(), _batch()
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=0.1, **kwargs)
    calls: list[int] = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward(create_graph=kwargs.get("hvp") == "exact")
        return loss

    optimizer.step(closure)
    assert optimizer.passes == passes and len(calls) == passes
    assert set(optimizer.statistics) >= {"grad_norm", "perturbation_norm", "first_order_flatness"}
    assert float(optimizer.statistics["perturbation_norm"]) == pytest.approx(0.05, rel=1e-6)
    assert ("sharpness" in optimizer.statistics) == ("sam_rho" in kwargs)


def test_first_order_flatness_statistic_is_rho_times_the_adversarial_gradient_norm() -> None:
    model, batch = _model(), _batch()
    loss, _, _ = _flat_loss(model, batch)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = torch.func.grad(loss)(theta)
    f = torch.autograd.functional.hessian(loss, theta) @ (g / g.norm())
    g_adv = torch.func.grad(loss)(theta + 0.1 * f / f.norm())
    optimizer = GAM(model.parameters(), torch.optim.SGD, rho=0.1, fd_step=1e-5, lr=0.1)

    def closure():
        optimizer.zero_grad()
        out = nn.functional.mse_loss(model(batch[0]), batch[1])
        out.backward()
        return out

    optimizer.step(closure)
    assert float(optimizer.statistics["first_order_flatness"]) == pytest.approx(float(0.1 * g_adv.norm()), rel=1e-4)


@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_perturbation_norm_is_the_distance_to_theta_adv_with_a_rho_per_group(hvp: str) -> None:
    model, batch = _model(), _batch()
    groups = [{"params": list(model[0].parameters()), "rho": 0.2}, {"params": list(model[2].parameters())}]
    optimizer = GAM(groups, torch.optim.SGD, rho=0.05, lr=0.1, hvp=hvp)
    at_call: list[Tensor] = []

    def closure():
        at_call.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward(create_graph=hvp == "exact")
        return loss

    optimizer.step(closure)
    theta, theta_adv = at_call[0], at_call[1 if hvp == "exact" else 2]  # the pass at theta_adv
    radius = float(optimizer.statistics["perturbation_norm"])
    assert radius == pytest.approx(float((theta_adv - theta).norm()), rel=1e-9)
    split = sum(p.numel() for p in model[0].parameters())
    d = theta_adv - theta  # rho_g * f_g / ||f||: divided by each group's rho, one unit vector
    assert float((d[:split] / 0.2).norm() ** 2 + (d[split:] / 0.05).norm() ** 2) == pytest.approx(1.0, rel=1e-9)


def test_zero_gradient_is_a_zero_direction() -> None:
    model = _model()
    before = params_of(model)
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = 0.0 * model(torch.ones(2, 3, dtype=torch.float64)).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])


def test_non_finite_gradient_raises_and_restores_the_weights() -> None:
    model = _model()
    before = params_of(model)
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=0.1)
    calls: list[int] = []

    def closure():  # finite at theta, NaN at the first moved point
        calls.append(1)
        optimizer.zero_grad()
        x = torch.ones(2, 3, dtype=torch.float64) * (float("nan") if len(calls) == 3 else 1.0)
        loss = model(x).square().sum()
        loss.backward()
        return loss

    with pytest.raises(NonFiniteGradientError, match="theta_adv"):
        optimizer.step(closure)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize(
    ("kwargs", "passes", "bad"), [({}, 4, 4), ({"hvp": "exact", "sam_rho": 0.05}, 3, 2)], ids=["fd", "exact-sam"]
)
def test_non_finite_gradient_only_in_the_update_direction_raises_and_restores_the_weights(kwargs, passes, bad) -> None:
    """Regression: the gradient of the pass that only enters the update direction (finite differences: the last;
    exact + SAM: SAM's) was never checked; the base step applied a NaN direction and every weight became NaN."""
    model = _model()
    before = params_of(model)
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, **kwargs)
    calls: list[int] = []

    def closure():  # finite everywhere except in pass ``bad``
        calls.append(1)
        optimizer.zero_grad()
        x = torch.ones(2, 3, dtype=torch.float64) * (float("nan") if len(calls) == bad else 1.0)
        loss = model(x).square().sum()
        loss.backward(create_graph=kwargs.get("hvp") == "exact")
        return loss

    with pytest.raises(NonFiniteGradientError, match=rf"pass {bad} of {passes}\b.*weights were restored"):
        optimizer.step(closure)
    assert len(calls) == passes
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])
    assert not optimizer.state  # the base optimizer never stepped


def test_exact_mode_needs_create_graph() -> None:
    model, batch = _model(), _batch()
    optimizer = GAM(model.parameters(), torch.optim.SGD, hvp="exact", lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph=True"):
        optimizer.step(closure)


def test_bad_arguments_are_named() -> None:
    params = list(_model().parameters())
    for kwargs, message in [
        ({"rho": 0.0}, "rho must be in"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"fd_step": 0.0}, "fd_step must be in"),
        ({"sam_rho": -1.0}, "sam_rho must be in"),
        ({"xi": -1e-3}, "xi must be in"),
        ({"xi": 0.0}, r"xi must be in \(0, inf\], got 0.0"),
        ({"hvp": "fast"}, "hvp must be one of"),
        ({"interval": 0}, "interval must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            GAM(params, torch.optim.SGD, lr=0.1, **kwargs)
    with pytest.raises(TypeError, match="base_optimizer"):
        GAM(params, "SGD")

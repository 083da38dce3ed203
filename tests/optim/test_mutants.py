"""Assertions that mutation testing found missing in the optimizers (issue 20): each fails on a known mutant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_info.optim import GAM, SAM
from tests.optim.reference import SGDReference, loss_and_grad, params_of, sam_perturbation

mse = nn.functional.mse_loss


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)


def test_plain_sam_with_groups_of_different_rho_reports_the_actual_displacement() -> None:
    # mutant: the single-group shortcut ||e|| = rho also taken with several groups (it would report one group's rho)
    model, batch = _model(), _batch()
    groups = [{"params": list(model[0].parameters()), "rho": 0.3}, {"params": list(model[2].parameters())}]
    optimizer = SAM(groups, torch.optim.SGD, rho=0.05, lr=0.1)
    optimizer.zero_grad()
    mse(model(batch[0]), batch[1]).backward()
    before = params_of(model)
    optimizer.first_step()
    displacement = torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in model.named_parameters()])
    assert float(displacement.norm()) not in (pytest.approx(0.3), pytest.approx(0.05))  # a real mix of the two
    assert float(optimizer.statistics["perturbation_norm"]) == pytest.approx(float(displacement.norm()), rel=1e-12)
    optimizer.second_step()


def test_a_closure_that_zeroes_the_gradients_in_place_steps() -> None:
    # mutant: the accumulation check ignores zero_grad() calls, so zero_grad(set_to_none=False) (same .grad tensor)
    # would be refused as accumulation
    model, batch = _model(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    optimizer.zero_grad()
    mse(model(batch[0]), batch[1]).backward()  # .grad tensors exist before the step
    start = params_of(model)

    def closure():
        optimizer.zero_grad(set_to_none=False)
        loss = mse(model(batch[0]), batch[1])
        loss.backward()
        return loss

    optimizer.step(closure)
    _, grads = loss_and_grad(model, mse, start, batch)
    e = sam_perturbation(start, grads, rho=0.05)
    _, perturbed = loss_and_grad(model, mse, {k: start[k] + e[k] for k in start}, batch)
    expected = SGDReference(lr=0.1).step(start, perturbed)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], atol=1e-12, rtol=0)


def _gam_direction(alpha: float, **kwargs) -> torch.Tensor:
    model, batch = _model(), _batch()
    create_graph = kwargs.get("hvp") == "exact"
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=1.0, rho=0.1, alpha=alpha, **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = mse(model(batch[0]), batch[1])
        loss.backward(create_graph=create_graph)
        return loss

    optimizer.step(closure)
    return before - torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_gam_sam_finite_differences_has_the_exact_mode_s_sam_gradient() -> None:
    # mutants: the second pass at theta + r u instead of SAM's theta + rho' u; h_loss = g instead of SAM's gradient.
    # With alpha = 0 the direction is h_loss alone: SAM's gradient, no finite difference in it.
    exact = _gam_direction(0.0, sam_rho=0.05, hvp="exact")
    torch.testing.assert_close(_gam_direction(0.0, sam_rho=0.05, fd_step=1e-4), exact, atol=1e-12, rtol=0)
    # with alpha > 0 the products are differences of gradients (f with the step rho' = 0.05): close, not equal
    exact = _gam_direction(0.5, sam_rho=0.05, hvp="exact")
    error = float((_gam_direction(0.5, sam_rho=0.05, fd_step=1e-4) - exact).norm() / exact.norm())
    assert error < 2e-3

"""Assertions that mutation testing found missing in the optimizers (issue 20): each fails on a known mutant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_info.optim import GAM, SAM
from tests.optim.reference import (
    SGDReference,
    gam_direction,
    loss_and_grad,
    params_of,
    sam_perturbation,
    sam_trajectory,
)

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


def _sam_closure(model, optimizer, batch):
    def closure():
        optimizer.zero_grad()
        loss = mse(model(batch[0]), batch[1])
        loss.backward()
        return loss

    return closure


def test_load_state_dict_uses_the_loaded_hyper_parameters() -> None:
    # mutant: the loaded param_groups are not copied into the shared list, so the next step uses the old lr
    model, batch = _model(), _batch()
    saved = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1).state_dict()
    saved["param_groups"][0]["lr"] = 0.5
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["lr"] == 0.5 and optimizer.base_optimizer.param_groups[0]["lr"] == 0.5
    start = params_of(model)
    optimizer.step(_sam_closure(model, optimizer, batch))
    _, grads = loss_and_grad(model, mse, start, batch)
    e = sam_perturbation(start, grads, rho=0.05)
    _, perturbed = loss_and_grad(model, mse, {k: start[k] + e[k] for k in start}, batch)
    expected = SGDReference(lr=0.5).step(start, perturbed)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], atol=1e-12, rtol=0)


class _WithUnused(nn.Module):
    """The test model plus a Linear that ``forward`` never uses (its ``.grad`` stays ``None``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        self.unused = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_sam_leaves_a_parameter_without_gradient_untouched() -> None:
    # mutant: the parameters without .grad are kept in the step's lists (None gradients reach the foreach norms)
    model, batch = _WithUnused(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    start = params_of(model)
    optimizer.step(_sam_closure(model, optimizer, batch))
    assert model.unused.weight.grad is None
    used = {k.removeprefix("net."): v for k, v in start.items() if k.startswith("net.")}
    _, grads = loss_and_grad(model.net, mse, used, batch)
    e = sam_perturbation(used, grads, rho=0.05)
    _, perturbed = loss_and_grad(model.net, mse, {k: used[k] + e[k] for k in used}, batch)
    expected = SGDReference(lr=0.1).step(used, perturbed)
    for name, value in model.named_parameters():
        want = expected[name.removeprefix("net.")] if name.startswith("net.") else start[name]
        torch.testing.assert_close(value.detach(), want, atol=1e-12, rtol=0)


def test_a_zero_gradient_reports_a_zero_perturbation_norm() -> None:
    # mutant: the single-group shortcut reports rho even when e = 0 (zero gradient)
    model, (x, _) = _model(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    before = params_of(model)

    def closure():
        optimizer.zero_grad()
        loss = (model(x) * 0.0).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(optimizer.statistics["grad_norm"]) == 0.0
    assert float(optimizer.statistics["perturbation_norm"]) == 0.0
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), before[name], atol=0, rtol=0)


def test_every_k_sam_under_a_grad_scaler_follows_the_every_k_reference() -> None:
    # mutant: scaled_step (SharpnessAwarePrecision's 16-mixed path) swaps its plain and sharpness-aware steps
    model = _model()
    batches = [_batch(seed) for seed in range(1, 5)]
    expected, _ = sam_trajectory(model, mse, batches, SGDReference(lr=0.1, momentum=0.9), 0.05, interval=2)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, interval=2, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)  # a power of two: unscaling is exact
    calls: list[int] = []
    for step, batch in enumerate(batches):

        def closure(batch=batch):
            calls.append(1)
            optimizer.zero_grad()
            loss = mse(model(batch[0]), batch[1])
            scaler.scale(loss).backward()
            return loss

        optimizer.scaled_step(closure, scaler)
        for name, value in model.named_parameters():
            torch.testing.assert_close(value.detach(), expected[step][name], atol=1e-12, rtol=0)
    assert len(calls) == 2 + 1 + 2 + 1  # sharpness-aware at steps 0 and 2, plain at 1 and 3


def test_gam_takes_a_zero_gradient_for_a_parameter_a_later_pass_does_not_reach() -> None:
    # mutant: the gradient materialised for a parameter that a pass did not reach is ones instead of zeros.
    # An "expert" routed to in the clean pass only (as a mixture-of-experts router may do at the moved weights).
    torch.manual_seed(0)
    main, expert = nn.Linear(3, 2).double(), nn.Linear(3, 2).double()
    params = [*main.parameters(), *expert.parameters()]
    x, y = _batch()[0], _batch()[1][:, :2]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss_at(theta: torch.Tensor, routed: bool) -> torch.Tensor:
        w, b, we, be = (t.reshape(s) for t, s in zip(theta.split(sizes), shapes, strict=True))
        out = x @ w.T + b + ((x @ we.T + be) if routed else 0.0)
        return mse(out, y)

    passes: list[int] = []

    def reference_grad(theta: torch.Tensor) -> torch.Tensor:
        passes.append(1)
        leaf = theta.detach().clone().requires_grad_(True)
        routed = len(passes) == 1
        grad = torch.autograd.grad(loss_at(leaf, routed), leaf, allow_unused=True)[0]
        return grad

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    expected = theta - gam_direction(reference_grad, theta, rho=0.1, alpha=0.5, r=0.01)

    optimizer = GAM(params, torch.optim.SGD, lr=1.0, rho=0.1, alpha=0.5, fd_step=0.01)
    calls: list[int] = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        out = main(x) + (expert(x) if len(calls) == 1 else 0.0)
        loss = mse(out, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert len(calls) == len(passes) == 4
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    assert not torch.equal(got[-8:], theta[-8:])  # the expert moved with its clean-pass gradient

"""SAM / ASAM / every-k SAM as torch optimizers: float64 references, API, state, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from lightning_info.optim import SAM, NonFiniteGradientError
from tests.optim.reference import (
    SGDReference,
    loss_and_grad,
    params_of,
    sam_perturbation,
    sam_trajectory,
)

mse = nn.functional.mse_loss


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64))
            for _ in range(n)]  # fmt: skip


def _closure(model, optimizer, batch, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        optimizer.zero_grad()
        loss = mse(model(batch[0]), batch[1])
        loss.backward()
        return loss

    return closure


def _assert_params(model: nn.Module, expected: dict[str, torch.Tensor], atol: float) -> None:
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("adaptive", "sgd"),
    [
        (False, {"lr": 0.1, "momentum": 0.9}),
        (False, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-2}),
        (True, {"lr": 0.1, "momentum": 0.9}),
    ],
    ids=["sam-momentum", "sam-nesterov-wd", "asam"],
)
def test_matches_float64_reference(adaptive: bool, sgd: dict) -> None:
    model, batches = _model(), _batches(3)
    rho = 0.5 if adaptive else 0.05
    expected, _ = sam_trajectory(model, mse, batches, SGDReference(**sgd), rho, adaptive=adaptive, eta=0.01)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, eta=0.01, **sgd)
    for batch, params in zip(batches, expected, strict=True):
        optimizer.step(_closure(model, optimizer, batch))
        _assert_params(model, params, atol=1e-10)


def test_every_k_sam_calls_the_closure_1_plus_1_over_k_times() -> None:
    model, batches = _model(), _batches(7)
    expected, _ = sam_trajectory(model, mse, batches, SGDReference(lr=0.1, momentum=0.9), 0.05, interval=3)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, interval=3, lr=0.1, momentum=0.9)
    calls: list[int] = []
    for batch in batches:
        optimizer.step(_closure(model, optimizer, batch, calls))
    assert len(calls) == 7 + 3  # sharpness-aware steps 0, 3, 6 cost one extra pass each
    _assert_params(model, expected[-1], atol=1e-10)


def test_rho_per_parameter_group_with_a_global_norm() -> None:
    model = _model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    optimizer = SAM([{"params": first, "rho": 0.2}, {"params": second}], torch.optim.SGD, rho=0.05, lr=0.1)
    batch = _batches(1)[0]
    _closure(model, optimizer, batch)()
    before = params_of(model)
    _, grads = loss_and_grad(model, mse, before, batch)
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads.values()))
    optimizer.first_step()
    for name, p in model.named_parameters():
        rho = 0.2 if name.startswith("0.") else 0.05
        torch.testing.assert_close(p.detach() - before[name], rho * grads[name] / norm, atol=1e-12, rtol=0)
    optimizer.second_step()  # restores w exactly, then steps
    assert optimizer.param_groups[0]["rho"] == 0.2 and optimizer.param_groups[1]["rho"] == 0.05


def test_statistics_are_the_step_s_norms_and_sharpness() -> None:
    model, batch = _model(), _batches(1)[0]
    params = params_of(model)
    clean, grads = loss_and_grad(model, mse, params, batch)
    e = sam_perturbation(params, grads, 0.05)
    perturbed, _ = loss_and_grad(model, mse, {k: params[k] + e[k] for k in params}, batch)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    returned = optimizer.step(_closure(model, optimizer, batch))
    stats = optimizer.statistics
    assert float(returned.detach()) == pytest.approx(float(clean), abs=1e-12)  # step() returns the clean loss
    assert float(stats["perturbation_norm"]) == pytest.approx(0.05, abs=1e-12)
    assert float(stats["grad_norm"]) == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in grads.values())))
    assert float(stats["sharpness"]) == pytest.approx(float(perturbed - clean), abs=1e-6)


def test_statistics_with_groups_of_different_rho_and_asam_are_the_displacement_s_norms() -> None:
    model, batch = _model(), _batches(1)[0]
    first, second = list(model[0].parameters()), list(model[2].parameters())
    groups = [{"params": first, "rho": 0.2, "adaptive": True}, {"params": second}]
    optimizer = SAM(groups, torch.optim.SGD, rho=0.05, lr=0.1)
    _closure(model, optimizer, batch)()
    before = params_of(model)
    _, grads = loss_and_grad(model, mse, before, batch)
    optimizer.first_step()
    displacement = torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in model.named_parameters()])
    stats = optimizer.statistics
    assert float(stats["perturbation_norm"]) == pytest.approx(float(displacement.norm()), rel=1e-12)
    assert float(stats["grad_norm"]) == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in grads.values())))
    optimizer.second_step()


def test_zero_gradient_gives_zero_perturbation_not_nan() -> None:
    model = _model()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, adaptive=True, lr=0.1)
    before = params_of(model)

    def closure():
        optimizer.zero_grad()
        loss = 0.0 * model(torch.ones(2, 3, dtype=torch.float64)).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(optimizer.statistics["perturbation_norm"]) == 0.0
    _assert_params(model, before, atol=0)


def test_non_finite_gradient_norm_raises_and_leaves_the_weights() -> None:
    model = _model()
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    before = params_of(model)

    def closure():
        optimizer.zero_grad()
        loss = model(torch.full((2, 3), float("nan"), dtype=torch.float64)).sum()
        loss.backward()
        return loss

    with pytest.raises(NonFiniteGradientError, match="gradient norm"):
        optimizer.step(closure)
    _assert_params(model, before, atol=0)
    assert not optimizer.state  # the base optimizer never stepped


class OverflowsNearby(nn.Module):
    """``mse(net(x), y) + exp(c a)`` with ``c = 1000``: ``c a = 345`` at ``w`` (finite loss, gradient and gradient
    norm in float64), but SAM's step ``a + e_a ~ a + rho`` (rho 0.5) gives ``c (a + e_a) ~ 845``, past float64's
    ``exp`` overflow at 709.8."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        self.a = nn.Parameter(torch.tensor(0.345, dtype=torch.float64))

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return mse(self.net(batch[0]), batch[1]) + torch.exp(1000.0 * self.a)


def test_gradient_non_finite_only_at_the_perturbed_point_raises_and_restores_w() -> None:
    """Regression: the perturbed pass's gradient was never checked; the base step applied it and every weight
    became NaN (only the next step raised)."""
    model, batch = OverflowsNearby(), _batches(1)[0]
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    losses: list[float] = []

    def closure():
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    before = params_of(model)
    with pytest.raises(NonFiniteGradientError, match=r"perturbed pass \(pass 2 of 2\b.*weights were restored"):
        optimizer.step(closure)
    assert math.isfinite(losses[0]) and losses[1] == math.inf  # finite at w, overflowing at w + e
    _assert_params(model, before, atol=0)
    assert not optimizer.state  # the base optimizer never stepped: no momentum from the bad gradient
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("finite", [True, False], ids=["stepped", "skipped-by-the-scaler"])
def test_scaled_step_runs_the_step_hooks_like_step(finite: bool) -> None:
    """Regression: the GradScaler path (``SharpnessAwarePrecision``) bypassed ``step()`` and so every hook registered
    with ``register_step_pre_hook``/``register_step_post_hook`` (FisherMask restores its frozen entries in one)."""
    model, (x, y) = _model().float(), _batches(1)[0]
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    calls: list[tuple[str, bool]] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", not opt.state)))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(("post", not opt.state)))

    def closure():
        optimizer.zero_grad()
        loss = mse(model(x.float()), y.float()) * (1.0 if finite else float("inf"))
        scaler.scale(loss).backward()
        return loss

    optimizer.scaled_step(closure, scaler)
    # pre before the base step (no momentum yet), post after it (momentum buffers exist unless the step was skipped)
    assert calls == [("pre", True), ("post", not finite)]
    assert scaler.get_scale() == (2.0**4 if finite else 2.0**3)


def test_closure_that_accumulates_gradients_is_refused() -> None:
    model, batch = _model(), _batches(1)[0]
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    _closure(model, optimizer, batch)()
    before = params_of(model)

    def accumulating():
        loss = mse(model(batch[0]), batch[1])
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="accumulate_grad_batches"):
        optimizer.step(accumulating)
    _assert_params(model, before, atol=0)


def test_manual_second_step_with_a_non_finite_perturbed_gradient_restores_w_and_raises() -> None:
    model, batch = OverflowsNearby(), _batches(1)[0]
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    before = params_of(model)
    model.loss(batch).backward()
    optimizer.first_step(zero_grad=True)
    model.loss(batch).backward()  # inf at w + e
    with pytest.raises(NonFiniteGradientError, match="weights were restored"):
        optimizer.second_step()
    _assert_params(model, before, atol=0)
    assert not optimizer.state


def test_manual_first_and_second_step_equal_step() -> None:
    batches = _batches(3)
    auto, manual = _model(), _model()
    opt_auto = SAM(auto.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    opt_manual = SAM(manual.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for x, y in batches:
        opt_auto.step(_closure(auto, opt_auto, (x, y)))
        mse(manual(x), y).backward()
        opt_manual.first_step(zero_grad=True)
        mse(manual(x), y).backward()
        opt_manual.second_step(zero_grad=True)
    _assert_params(manual, params_of(auto), atol=1e-14)


def test_base_optimizer_shares_param_groups_state_and_schedulers() -> None:
    model = _model()
    optimizer = SAM(model[0].parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    base = optimizer.base_optimizer
    assert optimizer.param_groups is base.param_groups and optimizer.state is base.state
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step(_closure(model, optimizer, _batches(1)[0]))
    scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)  # no improvement: halve
    assert base.param_groups[0]["lr"] == pytest.approx(0.025)
    optimizer.add_param_group({"params": list(model[2].parameters()), "rho": 0.3})
    assert len(base.param_groups) == 2 and base.param_groups[1]["momentum"] == 0.9
    assert set(base.state) == set(model[0].parameters())  # momentum buffers live in the shared state


def test_state_dict_roundtrip_under_weights_only_resumes_the_trajectory() -> None:
    batches = _batches(5)
    straight = _model()
    opt = SAM(straight.parameters(), torch.optim.SGD, rho=0.05, interval=2, lr=0.1, momentum=0.9)
    for batch in batches:
        opt.step(_closure(straight, opt, batch))

    first = _model()
    opt = SAM(first.parameters(), torch.optim.SGD, rho=0.05, interval=2, lr=0.1, momentum=0.9)
    for batch in batches[:3]:
        opt.step(_closure(first, opt, batch))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["sharpness_aware"] == {"step": 3}

    resumed = _model(seed=5)
    resumed.load_state_dict(saved["model"])
    opt = SAM(resumed.parameters(), torch.optim.SGD, rho=0.05, interval=2, lr=0.1, momentum=0.9)
    groups, state = opt.param_groups, opt.state
    opt.load_state_dict(saved["optimizer"])
    assert opt.param_groups is groups and opt.state is state and opt.base_optimizer.state is state
    calls: list[int] = []
    for batch in batches[3:]:
        opt.step(_closure(resumed, opt, batch, calls))
    assert len(calls) == 1 + 2  # step 3 plain, step 4 sharpness-aware: the counter was restored
    _assert_params(resumed, params_of(straight), atol=1e-12)


@pytest.mark.parametrize(
    ("base", "kwargs"),
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
        ("fadam", {"lr": 0.01, "weight_decay": 0.1, "momentum_dtype": torch.float64, "fim_dtype": torch.float64}),
    ],
    ids=["sgd-nesterov", "adamw", "fadam"],
)
def test_any_base_optimizer_steps_with_the_perturbed_gradient(base, kwargs) -> None:
    if base == "fadam":
        pytest.importorskip("pytorch_optimizer")
        from lightning_info.optim import FAdam

        base = FAdam
    model, reference, batches = _model(), _model(), _batches(3)
    optimizer = SAM(model.parameters(), base, rho=0.05, **kwargs)
    reference_base = base(reference.parameters(), **kwargs)  # the same base optimizer, fed the reference gradient
    for batch in batches:
        params = params_of(reference)
        _, grads = loss_and_grad(reference, mse, params, batch)
        e = sam_perturbation(params, grads, 0.05)
        _, g_sam = loss_and_grad(reference, mse, {k: params[k] + e[k] for k in params}, batch)
        for name, p in reference.named_parameters():
            p.grad = g_sam[name]
        reference_base.step()
        optimizer.step(_closure(model, optimizer, batch))
    _assert_params(model, params_of(reference), atol=1e-10)


def test_bad_arguments_are_named() -> None:
    params = list(_model().parameters())
    with pytest.raises(ValueError, match=r"rho must be in \(0, inf\], got 0"):
        SAM(params, torch.optim.SGD, rho=0, lr=0.1)
    with pytest.raises(ValueError, match="rho must be finite"):
        SAM(params, torch.optim.SGD, rho=float("nan"), lr=0.1)
    with pytest.raises(ValueError, match="interval must be >= 1, got 0"):
        SAM(params, torch.optim.SGD, interval=0, lr=0.1)
    with pytest.raises(TypeError, match="interval must be an int"):
        SAM(params, torch.optim.SGD, interval=1.5, lr=0.1)
    with pytest.raises(ValueError, match="eta must be in"):
        SAM(params, torch.optim.SGD, adaptive=True, eta=-1.0, lr=0.1)
    with pytest.raises(TypeError, match="adaptive must be a bool"):
        SAM(params, torch.optim.SGD, adaptive="yes", lr=0.1)
    with pytest.raises(TypeError, match=r"base_optimizer must be a torch\.optim\.Optimizer subclass"):
        SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    with pytest.raises(TypeError, match=r"base_optimizer must be a torch\.optim\.Optimizer subclass"):
        SAM(params, nn.Linear)
    with pytest.raises(TypeError, match="must not itself be sharpness-aware"):
        SAM(params, SAM)
    with pytest.raises(ValueError, match=r"Adadelta has hyper-parameters named \['rho'\]"):
        SAM(params, torch.optim.Adadelta)
    optimizer = SAM(params[:2], torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="rho must be in"):
        optimizer.add_param_group({"params": params[2:], "rho": -1.0})
    with pytest.raises(TypeError, match=r"SAM.step\(\) needs `closure`.*SharpnessAwarePrecision"):
        optimizer.step()

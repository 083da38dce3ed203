"""GSAM, LookSAM, WSAM, FriendlySAM as torch optimizers: float64 references from the papers, API, state, errors."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn

from lightning_info.optim import GSAM, SAM, WSAM, FriendlySAM, LookSAM, NonFiniteGradientError
from tests.optim.reference import SGDReference
from tests.optim.reference_variants import variant_trajectory
from tests.optim.test_sam import _assert_params, _batches, _closure, _model

mse = nn.functional.mse_loss
SGD = {"lr": 0.1, "momentum": 0.9}

CASES: dict[str, tuple[str, type, dict[str, Any], dict[str, Any]]] = {
    # id: (reference method, optimizer class, optimizer kwargs, extra reference kwargs)
    "gsam": ("gsam", GSAM, {"rho": 0.05, "alpha": 0.3}, {}),
    "looksam": ("looksam", LookSAM, {"rho": 0.05, "k": 3, "alpha": 0.7}, {}),
    "wsam-decoupled": ("wsam", WSAM, {"rho": 0.05, "gamma": 0.9}, {"decouple": True}),
    "wsam-coupled": ("wsam", WSAM, {"rho": 0.05, "gamma": 0.8, "decouple": False}, {}),
    "fsam": ("fsam", FriendlySAM, {"rho": 0.05, "sigma": 1.0, "lmbda": 0.9}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_float64_reference_written_from_the_paper(case: str) -> None:
    method, cls, kwargs, extra = CASES[case]
    model, batches = _model(), _batches(12)
    expected, _, _ = variant_trajectory(method, model, mse, batches, SGDReference(**SGD), **kwargs, **extra)
    optimizer = cls(model.parameters(), torch.optim.SGD, **kwargs, **SGD)
    for batch, params in zip(batches, expected, strict=True):
        optimizer.step(_closure(model, optimizer, batch))
        _assert_params(model, params, atol=1e-10)


def test_gsam_rho_follows_the_learning_rate_as_in_the_paper() -> None:
    """rho_t = rho_min + (rho - rho_min)(lr_t - lr_min)/(lr_max - lr_min), lr_t from a cosine schedule."""
    model, batches = _model(), _batches(10)
    optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.1, alpha=0.2, rho_min=0.02, lr_min=0.01, **SGD)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=9, eta_min=0.01)
    lrs, rhos = [], []
    for batch in batches:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step(_closure(model, optimizer, batch))
        rhos.append(float(optimizer.statistics["perturbation_norm"]))
        schedule.step()
    assert optimizer.param_groups[0]["lr_max"] == 0.1  # the initial lr
    assert rhos == pytest.approx([0.02 + 0.08 * (lr - 0.01) / 0.09 for lr in lrs], abs=1e-12)
    assert rhos[0] == pytest.approx(0.1) and rhos[-1] == pytest.approx(0.02)
    reference = variant_trajectory(
        "gsam", _model(), mse, batches, SGDReference(**SGD), lrs=lrs, rho=0.1, alpha=0.2, rho_min=0.02, lr_min=0.01,
        lr_max=0.1,
    )[0]  # fmt: skip
    _assert_params(model, reference[-1], atol=1e-10)


def test_gsam_rho_is_clipped_when_the_lr_leaves_its_range() -> None:
    optimizer = GSAM([nn.Parameter(torch.zeros(2))], torch.optim.SGD, rho=0.1, rho_min=0.02, lr=0.1)
    group = optimizer.param_groups[0]
    group["lr"] = 0.5
    assert optimizer.rho_t(group) == pytest.approx(0.1)
    group["lr"] = -1.0
    assert optimizer.rho_t(group) == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(GSAM, {"alpha": 0.0}), (LookSAM, {"k": 1}), (WSAM, {"gamma": 0.5, "decouple": False}),
     (WSAM, {"gamma": 0.5, "decouple": True}), (FriendlySAM, {"sigma": 0.0})],
    ids=["gsam-alpha0", "looksam-k1", "wsam-gamma-half", "wsam-gamma-half-decoupled", "fsam-sigma0"],
)  # fmt: skip
def test_the_papers_special_cases_reduce_to_sam(cls, kwargs) -> None:
    """alpha = 0, k = 1, gamma = 1/2 (plain SGD: decoupled too), sigma = 0 are SAM."""
    momentum = 0.0 if kwargs.get("decouple") else 0.9  # decoupled: only SGD without momentum equals SAM
    batches = _batches(5)
    sam_model, model = _model(), _model()
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=momentum)
    optimizer = cls(model.parameters(), torch.optim.SGD, rho=0.05, **kwargs, lr=0.1, momentum=momentum)
    for batch in batches:
        sam.step(_closure(sam_model, sam, batch))
        optimizer.step(_closure(model, optimizer, batch))
    expected = {k: v.detach() for k, v in sam_model.named_parameters()}
    _assert_params(model, expected, atol=1e-12)


def test_looksam_costs_one_pass_on_the_reusing_steps() -> None:
    model, batches = _model(), _batches(10)
    optimizer = LookSAM(model.parameters(), torch.optim.SGD, k=5, lr=0.1)
    calls: list[int] = []
    statistics = []
    for batch in batches:
        optimizer.step(_closure(model, optimizer, batch, calls))
        statistics.append(sorted(optimizer.statistics))
    assert len(calls) == 10 + 2  # 1 + 1/k passes per step on average
    assert statistics[0] == statistics[5] == ["grad_norm", "perturbation_norm", "sharpness"]
    assert all(s == [] for i, s in enumerate(statistics) if i % 5)


STATE_KEYS = {LookSAM: "looksam_g_v", FriendlySAM: "friendly_sam_ema"}


@pytest.mark.parametrize("cls", [LookSAM, FriendlySAM])
def test_state_round_trips_bit_identically_with_weights_only(cls) -> None:
    batches = _batches(7)
    model = _model()
    optimizer = cls(model.parameters(), torch.optim.SGD, k=3, **SGD) if cls is LookSAM else cls(
        model.parameters(), torch.optim.SGD, **SGD)  # fmt: skip
    for batch in batches[:4]:
        optimizer.step(_closure(model, optimizer, batch))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = _model(seed=5)
    resumed_model.load_state_dict(saved["model"])
    resumed = cls(resumed_model.parameters(), torch.optim.SGD, k=3, **SGD) if cls is LookSAM else cls(
        resumed_model.parameters(), torch.optim.SGD, **SGD)  # fmt: skip
    resumed.load_state_dict(saved["optimizer"])
    key = STATE_KEYS[cls]
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert set(resumed.state[q]) == {"momentum_buffer", key}
        for name, value in optimizer.state[p].items():
            assert torch.equal(resumed.state[q][name], value) and resumed.state[q][name].dtype == value.dtype
    assert resumed.state_dict()["sharpness_aware"] == {"step": 4}
    for batch in batches[4:]:
        optimizer.step(_closure(model, optimizer, batch))
        resumed.step(_closure(resumed_model, resumed, batch))
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls", [GSAM, LookSAM, WSAM, FriendlySAM])
def test_adam_as_the_base_optimizer_initialises_its_own_state(cls) -> None:
    """The variants' state is stored after the base step: Adam (which initialises on empty state) still works."""
    model, batches = _model(), _batches(4)
    optimizer = cls(model.parameters(), torch.optim.Adam, lr=1e-2)
    for batch in batches:
        optimizer.step(_closure(model, optimizer, batch))
    assert all("exp_avg" in optimizer.state[p] for p in model.parameters())


class Overflowing(nn.Module):
    """``_model()`` plus ``exp(1000 a)``: finite at ``a = 0.34``, Inf once ``a`` moves up by about 0.4."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        self.a = nn.Parameter(torch.tensor(0.34, dtype=torch.float64))

    def forward(self, x):
        return self.net(x) + torch.exp(1000.0 * self.a)


@pytest.mark.parametrize("cls", [GSAM, LookSAM, WSAM, FriendlySAM])
def test_a_non_finite_perturbed_pass_restores_the_weights_and_keeps_the_state(cls) -> None:
    model, batches = Overflowing(), _batches(3)
    kwargs = {"k": 1} if cls is LookSAM else {}
    optimizer = cls(model.parameters(), torch.optim.SGD, rho=0.5, **kwargs, lr=1e-9, momentum=0.9)
    with torch.no_grad():
        model.a.fill_(-1.0)  # first step finite everywhere: state exists
    optimizer.step(_closure(model, optimizer, batches[0]))
    with torch.no_grad():
        model.a.fill_(0.34)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}
    with pytest.raises(NonFiniteGradientError, match="weights were"):
        optimizer.step(_closure(model, optimizer, batches[1]))
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name])
    for p in model.parameters():
        assert all(torch.equal(optimizer.state[p][k], v) for k, v in state[id(p)].items())


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda p: GSAM(p, torch.optim.SGD, rho=0.0, lr=0.1), ValueError, r"rho must be in \(0, inf\], got 0.0"),
        (lambda p: GSAM(p, torch.optim.SGD, alpha=-0.1, lr=0.1), ValueError, "alpha must be in .*got -0.1"),
        (lambda p: GSAM(p, torch.optim.SGD, rho_min=0.1, rho=0.05, lr=0.1), ValueError, r"rho_min \(<= rho = 0.05\)"),
        (lambda p: GSAM(p, torch.optim.SGD, rho_min=0.01, lr_min=0.2, lr=0.1), ValueError, r"lr_max \(> lr_min = 0.2"),
        (lambda p: GSAM(p, torch.optim.SGD, lr_max=0.1, lr=0.1), ValueError, "lr_max .*pass rho_min"),
        (lambda p: GSAM(p, torch.optim.SGD, lr_min=-1.0, lr=0.1), ValueError, "lr_min must be in"),
        (lambda p: LookSAM(p, torch.optim.SGD, k=0, lr=0.1), ValueError, "k must be >= 1, got 0"),
        (lambda p: LookSAM(p, torch.optim.SGD, k=2.5, lr=0.1), TypeError, "k must be an int"),
        (lambda p: LookSAM(p, torch.optim.SGD, alpha=-1.0, lr=0.1), ValueError, "alpha must be in .*got -1.0"),
        (lambda p: LookSAM(p, torch.optim.SGD, rho=-1.0, lr=0.1), ValueError, "rho must be in"),
        (lambda p: WSAM(p, torch.optim.SGD, gamma=1.0, lr=0.1), ValueError, r"gamma must be in \[0, 1\), got 1.0"),
        (lambda p: WSAM(p, torch.optim.SGD, gamma=-0.1, lr=0.1), ValueError, "gamma must be in"),
        (lambda p: WSAM(p, torch.optim.SGD, decouple="yes", lr=0.1), TypeError, "decouple must be a bool"),
        (lambda p: FriendlySAM(p, torch.optim.SGD, sigma=-1.0, lr=0.1), ValueError, "sigma must be in .*got -1.0"),
        (lambda p: FriendlySAM(p, torch.optim.SGD, lmbda=1.0, lr=0.1), ValueError, r"lmbda must be in \[0, 1\)"),
        (lambda p: GSAM(p, torch.optim.RMSprop, lr=0.1), ValueError, r"RMSprop has hyper-parameters named \['alpha'\]"),
        (lambda p: WSAM(p, torch.nn.Linear, lr=0.1), TypeError, "base_optimizer must be"),
    ],
)
def test_bad_hyper_parameters_are_named(factory, error, message) -> None:
    with pytest.raises(error, match=message):
        factory([nn.Parameter(torch.zeros(2))])


def test_per_group_hyper_parameters_are_validated_and_kept() -> None:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    optimizer = GSAM([{"params": [a]}, {"params": [b], "alpha": 0.0, "rho_min": 0.01}], torch.optim.SGD, lr=0.1)
    assert [g["alpha"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert [g["lr_max"] for g in optimizer.param_groups] == [None, 0.1]
    with pytest.raises(ValueError, match="gamma must be in"):
        WSAM([{"params": [a]}, {"params": [b], "gamma": 2.0}], torch.optim.SGD, lr=0.1)


def test_a_zero_gradient_gives_no_perturbation_and_no_nan() -> None:
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    for cls in (GSAM, LookSAM, WSAM, FriendlySAM):
        optimizer = cls([w], torch.optim.SGD, lr=0.1)

        def closure(optimizer=optimizer):
            optimizer.zero_grad()
            loss = (w * 0).sum()
            loss.backward()
            return loss

        for _ in range(2):
            optimizer.step(closure)
        assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64)) and not math.isnan(
            float(optimizer.statistics.get("perturbation_norm", 0.0))
        )

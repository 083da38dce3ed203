"""Cauchy–Schwarz divergence, CS-QMI and conditional CS divergence against float64 loops, properties, stability."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightning_info.losses.functional import (
    cs_conditional_divergence,
    cs_divergence,
    cs_qmi,
    median_width,
    silverman_width,
)

# ---------------------------------------------------------------- independent float64 references (explicit loops)


def _rows(t: Tensor) -> list[list[float]]:
    t = t.double()
    if t.ndim == 1:
        return [[float(v)] for v in t]
    return [[float(v) for v in row.reshape(-1)] for row in t]


def _k(u: list[float], v: list[float], s: float) -> float:
    return math.exp(-sum((a - b) ** 2 for a, b in zip(u, v, strict=True)) / (2 * s * s))


def ref_divergence(a: Tensor, b: Tensor, s: float) -> float:
    A, B = _rows(a), _rows(b)
    m, n = len(A), len(B)
    saa = sum(_k(u, v, s) for u in A for v in A) / m**2
    sbb = sum(_k(u, v, s) for u in B for v in B) / n**2
    sab = sum(_k(u, v, s) for u in A for v in B) / (m * n)
    return math.log(saa) + math.log(sbb) - 2 * math.log(sab)


def ref_qmi(x: Tensor, z: Tensor, sx: float, sz: float) -> float:
    X, Z = _rows(x), _rows(z)
    N = len(X)
    K = [[_k(X[i], X[j], sx) for j in range(N)] for i in range(N)]
    L = [[_k(Z[i], Z[j], sz) for j in range(N)] for i in range(N)]
    joint = sum(K[i][j] * L[i][j] for i in range(N) for j in range(N)) / N**2
    marg = sum(map(sum, K)) * sum(map(sum, L)) / N**4
    cross = sum(sum(K[i]) * sum(L[i]) for i in range(N)) / N**3
    return math.log(joint) + math.log(marg) - 2 * math.log(cross)


def ref_conditional(x: Tensor, y: Tensor, p: Tensor, sx: float, sy: float, official: bool = False) -> float:
    X, Y, P = _rows(x), _rows(y), _rows(p)
    N = len(X)
    total = [0.0, 0.0, 0.0]
    for j in range(N):
        kj = [_k(X[j], X[i], sx) for i in range(N)]
        norm = sum(v * v for v in kj) if official else sum(kj) ** 2
        total[0] += sum(kj[i] * _k(Y[j], Y[i], sy) for i in range(N)) / norm
        total[1] += sum(kj[i] * _k(P[j], P[i], sy) for i in range(N)) / norm
        total[2] += sum(kj[i] * _k(P[j], Y[i], sy) for i in range(N)) / norm
    return math.log(total[0]) + math.log(total[1]) - 2 * math.log(total[2])


def _lse(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _e(u: list[float], v: list[float], s: float) -> float:  # kernel exponent
    return -sum((a - b) ** 2 for a, b in zip(u, v, strict=True)) / (2 * s * s)


def ref_divergence_log(a: Tensor, b: Tensor, s: float) -> float:
    """The same formula with every log-sum in log space (loops, float64): valid where kernels underflow."""
    A, B = _rows(a), _rows(b)
    m, n = len(A), len(B)
    saa = _lse([_e(u, v, s) for u in A for v in A]) - 2 * math.log(m)
    sbb = _lse([_e(u, v, s) for u in B for v in B]) - 2 * math.log(n)
    sab = _lse([_e(u, v, s) for u in A for v in B]) - math.log(m * n)
    return saa + sbb - 2 * sab


def ref_conditional_log(x: Tensor, y: Tensor, p: Tensor, sx: float, sy: float) -> float:
    X, Y, P = _rows(x), _rows(y), _rows(p)
    N = len(X)
    terms: list[list[float]] = [[], [], []]
    for j in range(N):
        ej = [_e(X[j], X[i], sx) for i in range(N)]
        log_norm = 2 * _lse(ej)
        for term, other, rows in ((0, Y[j], Y), (1, P[j], P), (2, P[j], Y)):
            terms[term].append(_lse([ej[i] + _e(other, rows[i], sy) for i in range(N)]) - log_norm)
    return _lse(terms[0]) + _lse(terms[1]) - 2 * _lse(terms[2])


def ref_median(x: Tensor) -> float:
    X = _rows(x)
    d = sorted(
        math.sqrt(sum((a - b) ** 2 for a, b in zip(X[i], X[j], strict=True)))
        for i in range(len(X))
        for j in range(i + 1, len(X))
    )
    return d[(len(d) - 1) // 2]  # lower median


# ---------------------------------------------------------------- agreement with the references


@pytest.mark.parametrize(("m", "n", "d", "sigma"), [(5, 7, None, 0.7), (6, 4, 3, 1.3), (9, 9, 2, 2.0), (3, 8, 1, 0.5)])
def test_cs_divergence_matches_loops(m: int, n: int, d: int | None, sigma: float) -> None:
    g = torch.Generator().manual_seed(m * 10 + n)
    shape_a, shape_b = ((m,), (n,)) if d is None else ((m, d), (n, d))
    a = torch.randn(shape_a, generator=g, dtype=torch.float64)
    b = torch.randn(shape_b, generator=g, dtype=torch.float64) * 1.5 + 0.3
    assert cs_divergence(a, b, sigma).item() == pytest.approx(ref_divergence(a, b, sigma), rel=1e-10, abs=1e-12)


def test_cs_divergence_median_width_uses_pooled_samples() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    s = ref_median(torch.cat([a, b]))
    assert cs_divergence(a, b, "median").item() == pytest.approx(ref_divergence(a, b, s), rel=1e-10)


@pytest.mark.parametrize(
    ("n", "dx", "dz", "sx", "sz"), [(6, None, None, 1.0, 0.5), (8, 3, 2, 1.5, 0.8), (5, 4, 1, 2.0, 2.0)]
)
def test_cs_qmi_matches_loops(n: int, dx: int | None, dz: int | None, sx: float, sz: float) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn((n,) if dx is None else (n, dx), generator=g, dtype=torch.float64)
    z = torch.randn((n,) if dz is None else (n, dz), generator=g, dtype=torch.float64) + x.reshape(n, -1)[:, :1]
    assert cs_qmi(x, z, sx, sz).item() == pytest.approx(ref_qmi(x, z, sx, sz), rel=1e-10, abs=1e-12)


def test_cs_qmi_flattens_extra_dims_and_median() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)
    z = torch.randn(7, 2, generator=g, dtype=torch.float64)
    expected = ref_qmi(x.reshape(7, -1), z, ref_median(x.reshape(7, -1)), ref_median(z))
    assert cs_qmi(x, z, "median", "median").item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize(
    ("n", "dx", "k", "sx", "sy"), [(6, 3, None, 1.0, 0.7), (9, 2, 2, 0.8, 1.2), (5, None, 1, 2.0, 0.5)]
)
def test_conditional_matches_loops(n: int, dx: int | None, k: int | None, sx: float, sy: float, official: bool) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn((n,) if dx is None else (n, dx), generator=g, dtype=torch.float64)
    y = torch.randn((n,) if k is None else (n, k), generator=g, dtype=torch.float64)
    p = y + 0.5 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    estimator = "official" if official else "proposition"
    got = cs_conditional_divergence(x, y, p, sx, sy, estimator=estimator).item()
    assert got == pytest.approx(ref_conditional(x, y, p, sx, sy, official), rel=1e-10, abs=1e-12)


def test_width_helpers_match_references() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, 3, generator=g, dtype=torch.float64)
    assert median_width(x).item() == pytest.approx(ref_median(x), rel=1e-12)
    X = _rows(x)
    var = [sum((r[c] - sum(q[c] for q in X) / 11) ** 2 for r in X) / 10 for c in range(3)]
    expected = math.sqrt(sum(var) / 3) * (4 / (5 * 11)) ** (1 / 7)
    assert silverman_width(x).item() == pytest.approx(expected, rel=1e-12)
    assert median_width(torch.ones(5)).item() == pytest.approx(1e-6)  # all equal: floor, not zero


# ---------------------------------------------------------------- properties


def test_divergence_properties() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(40, 3, generator=g, dtype=torch.float64)
    b = torch.randn(30, 3, generator=g, dtype=torch.float64) + 0.5
    assert cs_divergence(a, a, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert cs_divergence(a, b, 1.0) > 0
    assert cs_divergence(a, b, 1.0).item() == pytest.approx(cs_divergence(b, a, 1.0).item(), rel=1e-12)
    shift = torch.tensor([100.0, -3.0, 7.0], dtype=torch.float64)
    assert cs_divergence(a + shift, b + shift, 1.0).item() == pytest.approx(cs_divergence(a, b, 1.0).item(), rel=1e-9)
    # further apart -> larger
    assert cs_divergence(a, b + 2.0, 1.0) > cs_divergence(a, b, 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_properties_hold_on_random_samples(seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    m, n, d = 5 + seed, 12 - seed, 1 + seed % 3
    a = torch.randn(m, d, generator=g, dtype=torch.float64) * (1 + seed)
    b = torch.randn(n, d, generator=g, dtype=torch.float64) + seed / 2
    sigma = 0.3 + 0.4 * seed
    d_ab, d_ba = cs_divergence(a, b, sigma).item(), cs_divergence(b, a, sigma).item()
    assert d_ab >= 0 and d_ab == pytest.approx(d_ba, rel=1e-12)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    assert cs_qmi(x, z, sigma, 1.0).item() >= -1e-12
    assert cs_qmi(x, z, "median", "silverman").item() >= -1e-12


def test_qmi_properties() -> None:
    g = torch.Generator().manual_seed(5)
    n = 1500
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    independent = cs_qmi(x, torch.randn(n, 2, generator=g, dtype=torch.float64))
    dependent = cs_qmi(x, x[:, :1].sin() + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64))
    assert 0 <= independent.item() < 5e-3
    assert dependent.item() > 20 * independent.item()
    assert cs_qmi(x, x).item() > dependent.item() > 0
    small = x[:50]
    z = small[:, :1] ** 2
    shifted = cs_qmi(small + 1e3, z - 50.0, 0.8, 0.6).item()
    assert shifted == pytest.approx(cs_qmi(small, z, 0.8, 0.6).item(), rel=1e-7)


def test_one_feature_vector_equals_column() -> None:
    g = torch.Generator().manual_seed(6)
    a, b, x = torch.randn(20, generator=g), torch.randn(15, generator=g), torch.randn(20, 3, generator=g)
    assert torch.equal(cs_divergence(a, b), cs_divergence(a[:, None], b[:, None]))
    assert torch.equal(cs_qmi(x, a), cs_qmi(x, a[:, None]))
    p = a + 0.3
    assert torch.equal(cs_conditional_divergence(x, a, p), cs_conditional_divergence(x, a[:, None], p[:, None]))
    # a 1-D input is N samples, never broadcast: its value differs from treating the vector as one sample
    assert cs_divergence(a, b).item() > 0


def test_conditional_properties_and_limits() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = x[:, 0].sin() + 0.1 * torch.randn(60, generator=g, dtype=torch.float64)
    assert cs_conditional_divergence(x, y, y.clone()).item() == pytest.approx(0.0, abs=1e-12)
    near, far = y + 0.1, y + 1.0
    assert 0 < cs_conditional_divergence(x, y, near) < cs_conditional_divergence(x, y, far)
    shift = torch.tensor([5.0, -2.0, 1e3, 0.5], dtype=torch.float64)
    moved = cs_conditional_divergence(x + shift, y - 40.0, near - 40.0).item()
    assert moved == pytest.approx(cs_conditional_divergence(x, y, near).item(), rel=1e-9)
    # sigma_x -> 0: K -> identity, the correntropy loss -2 log mean_j k(yhat_j, y_j)
    corr = -2 * math.log(float(torch.exp(-((far - y) ** 2) / 2).mean()))
    assert cs_conditional_divergence(x, y, far, sigma_x=1e-3).item() == pytest.approx(corr, rel=1e-9)
    assert cs_conditional_divergence(x, y, far, 1e-3, estimator="official").item() == pytest.approx(corr, rel=1e-9)
    # sigma_x -> inf: K -> all ones, the unconditional CS divergence between y and y_pred
    perm = y[torch.randperm(60, generator=g)]
    marginal = cs_divergence(y, perm).item()
    assert cs_conditional_divergence(x, y, perm, sigma_x=1e6).item() == pytest.approx(marginal, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------- stability and gradients


def test_large_scale_targets_float32_finite_and_accurate() -> None:
    g = torch.Generator().manual_seed(8)
    x = torch.randn(64, 5, generator=g)
    y = 1e4 * torch.randn(64, generator=g)  # not standardised, sigma 1: every off-diagonal kernel underflows
    y_pred = (y + 500.0 * torch.randn(64, generator=g)).requires_grad_()
    value = cs_conditional_divergence(x, y, y_pred, sigma_x=1.0, sigma_y=1.0)
    value.backward()
    assert torch.isfinite(value) and value.item() > 50  # dominated by the closest (y_pred_j, y_i) pair
    assert torch.isfinite(y_pred.grad).all() and y_pred.grad.abs().sum() > 0
    # the float32 value agrees with float64
    ref = cs_conditional_divergence(x.double(), y.double(), y_pred.detach().double(), 1.0, 1.0)
    assert value.item() == pytest.approx(ref.item(), rel=1e-5)
    d = cs_divergence(y, y_pred, 1.0)
    assert torch.isfinite(d) and d.item() == pytest.approx(
        cs_divergence(y.double(), y_pred.detach().double(), 1.0).item(), rel=1e-5
    )


def test_log_space_matches_loop_reference_where_kernels_underflow() -> None:
    g = torch.Generator().manual_seed(12)
    a = torch.randn(7, 2, generator=g) - 300.0
    b = torch.randn(5, 2, generator=g) + 300.0  # every cross kernel is exp(-3.6e5): 0 even in float64
    ref = ref_divergence_log(a, b, 0.5)
    assert math.isfinite(ref) and ref > 1e5
    assert cs_divergence(a, b, 0.5).item() == pytest.approx(ref, rel=1e-5)
    x = torch.randn(10, 3, generator=g)
    y = 1e4 * torch.randn(10, generator=g)
    p = y + 800.0 * torch.randn(10, generator=g)
    ref = ref_conditional_log(x, y, p, 1.0, 1.0)
    assert cs_conditional_divergence(x, y, p, 1.0, 1.0).item() == pytest.approx(ref, rel=1e-5)
    # and the log-space reference agrees with the textbook loops where those are fine
    y, p = torch.randn(10, generator=g), torch.randn(10, generator=g)
    assert ref_conditional_log(x, y, p, 1.0, 0.7) == pytest.approx(ref_conditional(x, y, p, 1.0, 0.7), rel=1e-12)


def test_memory_is_quadratic_never_n_n_d() -> None:
    from torch.profiler import ProfilerActivity, profile

    from lightning_info.functional.kernels import ib_terms

    n, d = 128, 256  # an (n, n, d) float32 tensor would be 16 MiB; an (n, n) float64 one is 128 KiB
    g = torch.Generator().manual_seed(13)
    x, t = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g, requires_grad=True)
    y, p = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g, requires_grad=True)

    def largest_allocation(fn: Callable[[], Tensor]) -> int:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn().backward()
        return max(event.cpu_memory_usage for event in prof.events())

    ours = largest_allocation(lambda: sum(ib_terms(x, t, p, y, "median", "median", 1.0)))
    broadcast = largest_allocation(lambda: (x[:, None] - t[None]).square().sum(-1).neg().exp().sum().log())
    assert ours <= 4 * n * n * 8 < n * n * d * 4 <= broadcast


def test_far_apart_clusters_float32_finite_gradients() -> None:
    g = torch.Generator().manual_seed(9)
    centers = torch.tensor([[-1e3] * 8, [1e3] * 8])
    x = centers.repeat_interleave(16, 0) + torch.randn(32, 8, generator=g)
    t = (x * 0.5 + torch.randn(32, 8, generator=g)).requires_grad_()
    a = (torch.randn(16, 3, generator=g) - 500.0).requires_grad_()
    b = torch.randn(16, 3, generator=g) + 500.0
    for value, leaf in ((cs_qmi(x, t, 0.5, 0.5), t), (cs_divergence(a, b, 0.5), a)):
        (grad,) = torch.autograd.grad(value, leaf)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert cs_divergence(a, b, 0.5).item() > 1e5


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(10)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(6, generator=g, dtype=torch.float64)
    p = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: cs_conditional_divergence(x, y, q, 1.0, 0.8), (p,))
    assert torch.autograd.gradcheck(lambda z: cs_qmi(x, z, 1.0, 1.2), (t,))
    assert torch.autograd.gradcheck(lambda z: cs_divergence(z, x, 0.9), (t[:, :2],))


@pytest.mark.parametrize("rule", ["median", "silverman"])
def test_width_rules_are_constants_for_autograd(rule: str) -> None:
    g = torch.Generator().manual_seed(14)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    t = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    width = (median_width if rule == "median" else silverman_width)(t).item()
    (by_rule,) = torch.autograd.grad(cs_qmi(x, t, 1.0, rule), t)  # type: ignore[arg-type]
    (by_value,) = torch.autograd.grad(cs_qmi(x, t, 1.0, width), t)
    torch.testing.assert_close(by_rule, by_value, rtol=1e-12, atol=1e-14)


def test_half_precision_inputs_computed_in_float32() -> None:
    g = torch.Generator().manual_seed(11)
    x, z = torch.randn(30, 4, generator=g), torch.randn(30, 2, generator=g)
    value = cs_qmi(x.bfloat16(), z.bfloat16())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(cs_qmi(x.bfloat16().float(), z.bfloat16().float()).item(), rel=1e-6)


# ---------------------------------------------------------------- bad input


def test_bad_input() -> None:
    x, y = torch.randn(8, 3), torch.randn(8)
    with pytest.raises(ValueError, match=r"a must have at least 2 rows \(samples\), got shape \(1,\)"):
        cs_divergence(torch.randn(1), y)
    with pytest.raises(ValueError, match="same number of samples"):
        cs_qmi(x, torch.randn(7))
    with pytest.raises(ValueError, match="same number of samples"):
        cs_conditional_divergence(x, y, torch.randn(9))
    with pytest.raises(ValueError, match="same number of features"):
        cs_divergence(x, torch.randn(8, 2))
    with pytest.raises(ValueError, match="y and y_pred must have the same number of features"):
        cs_conditional_divergence(x, y, torch.randn(8, 2))
    with pytest.raises(ValueError, match=r"sigma must be in \(0, inf\], got 0"):
        cs_divergence(y, y, 0.0)
    with pytest.raises(ValueError, match=r"sigma_x must be in \(0, inf\], got -1"):
        cs_qmi(x, y, sigma_x=-1.0)
    with pytest.raises(ValueError, match="sigma_y must be one of"):
        cs_conditional_divergence(x, y, y, sigma_y="mean")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sigma_z must be a real number"):
        cs_qmi(x, y, sigma_z=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimator must be one of"):
        cs_conditional_divergence(x, y, y, estimator="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="z contains NaN or Inf"):
        cs_qmi(x, torch.tensor([float("nan")] * 8))
    with pytest.raises(TypeError, match="floating-point"):
        cs_qmi(x, torch.arange(8))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        cs_divergence([1.0, 2.0], y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 rows"):
        cs_divergence(torch.tensor(1.0), y)


def test_overflowing_exponents_raise_instead_of_nan() -> None:
    # issue 14.12: finite float32 inputs of ~1e20, or sigma=1e-30, returned NaN silently
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    big = "is not finite .* overflow .*rescale the samples or use a larger width or pass float64 inputs"
    with pytest.raises(ValueError, match=f"cs_divergence {big}"):
        cs_divergence(1e20 * a, 1e20 * b)
    # an allowed width whose cross exponent -|a - b|^2 / (2 sigma^2) = -2e38 is finite but doubles to -inf: the
    # divergence is +inf, not NaN, and is refused the same way
    with pytest.raises(ValueError, match=r"cs_divergence is not finite \(inf\)"):
        cs_divergence(torch.tensor([0.0, 0.1]), torch.tensor([20.0, 20.1]), sigma=1e-18)
    with pytest.raises(ValueError, match=f"cs_qmi {big}"):
        cs_qmi(1e20 * a, 1e20 * b)
    with pytest.raises(ValueError, match=f"cs_conditional_divergence {big}"):
        cs_conditional_divergence(1e20 * a, 1e20 * b[:, 0], 1e20 * b[:, 1])
    for call, name in (
        (lambda: cs_divergence(a, b, sigma=1e-30), "sigma"),
        (lambda: cs_qmi(a, b, sigma_z=1e-30), "sigma_z"),
        (lambda: cs_conditional_divergence(a, b[:, 0], b[:, 1], sigma_x=1e-30), "sigma_x"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be >= 3.83e-20 for torch.float32 inputs"):
            call()
    # float64 holds both: a large, finite divergence (the exponents are ~1e40 and ~1e60)
    assert math.isfinite(float(cs_divergence(1e20 * a.double(), 1e20 * b.double())))
    assert math.isfinite(float(cs_divergence(a.double(), b.double(), sigma=1e-30)))
    with pytest.raises(ValueError, match=r"sigma must be >= .* for torch.float64 inputs"):
        cs_divergence(a.double(), b.double(), sigma=1e-160)


def test_mixed_dtypes_are_promoted() -> None:
    # found by tests/fuzz: float16 a with float64 b raised torch's "mat1 and mat2 must have the same dtype"
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(6, 2, generator=g, dtype=torch.float64) for _ in range(3))
    mixed = cs_divergence(a.half(), b)
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, cs_divergence(a.half().double(), b))
    conditional = cs_conditional_divergence(a.float(), b, c.half())
    torch.testing.assert_close(conditional, cs_conditional_divergence(a.float().double(), b, c.half().double()))

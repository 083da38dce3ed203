"""EntropyRegularizer: the band, the paper's formula (loops), gradient direction, errors."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_info.attention import EntropyGuidedAttention
from lightning_info.losses import EntropyRegularizer
from lightning_info.losses.functional import entropy_regularizer


def brute_penalty(entropies, max_entropies, thresholds, tolerance, reduction):
    total = 0.0
    for ent, e_max, theta in zip(entropies, max_entropies, thresholds, strict=True):
        b, h, n = ent.shape
        layer = 0.0
        for hi in range(h):
            head = 0.0
            for bi in range(b):
                for i in range(n):
                    m = float(e_max[bi, 0, i])
                    dev = float(ent[bi, hi, i]) - theta[hi] * m
                    head += dev**2 if abs(dev) > tolerance * m else 0.0
            layer += head / (b * n if reduction == "mean" else 1)
        total += layer / h
    return total / len(entropies)


def test_zero_inside_band() -> None:
    e_max = torch.full((2, 1, 5), math.log(5))
    inside = e_max * (0.5 + 0.19 * (torch.rand(2, 3, 5) * 2 - 1))
    assert entropy_regularizer([inside], [e_max], 0.5, 0.2).item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_paper_formula(reduction: str) -> None:
    e_max = torch.log(torch.arange(1, 7, dtype=torch.float64)).expand(2, 1, 6)  # causal rows
    entropies = [torch.rand(2, 3, 6, dtype=torch.float64) * e_max for _ in range(2)]
    thresholds = [torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), torch.tensor([0.4, 0.4, 0.4])]
    got = entropy_regularizer(entropies, [e_max, e_max], thresholds, 0.1, reduction=reduction)
    expected = brute_penalty(entropies, [e_max, e_max], [t.tolist() for t in thresholds], 0.1, reduction)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_head_granularity_is_algorithm_1_on_query_averaged_entropy() -> None:
    """Algorithm 1: E^(l,h) is the row entropy averaged over the queries, then the band penalty, per batch element."""
    e_max = torch.log(torch.arange(1, 6, dtype=torch.float64)).expand(3, 1, 5)
    entropy = torch.rand(3, 2, 5, dtype=torch.float64) * e_max
    rows = torch.ones(3, 1, 5, dtype=torch.bool)
    rows[2, 0, 3:] = False  # padded queries of the third sequence
    theta, gamma = [0.3, 0.8], 0.05
    for reduction in ("mean", "sum"):
        got = entropy_regularizer(
            [entropy], [e_max], torch.tensor(theta, dtype=torch.float64), gamma, [rows], reduction, "head"
        ).item()
        heads = []
        for h in range(2):
            penalties = []
            for b in range(3):
                valid = [i for i in range(5) if rows[b, 0, i]]
                mean_h = sum(float(entropy[b, h, i]) for i in valid) / len(valid)
                mean_max = sum(float(e_max[b, 0, i]) for i in valid) / len(valid)
                dev = mean_h - theta[h] * mean_max
                penalties.append(dev**2 if abs(dev) > gamma * mean_max else 0.0)
            heads.append(sum(penalties) / (3 if reduction == "mean" else 1))
        assert got == pytest.approx(sum(heads) / 2, rel=1e-9)


def test_sum_context_option_is_the_papers_loss_on_attention_weights() -> None:
    """reduction="sum", max_entropy="context": the released loss (before lambda) from the returned attention maps."""
    torch.manual_seed(0)
    layers = [EntropyGuidedAttention(8, 2, threshold_init=init, dtype=torch.float64) for init in (0.2, 0.9)]
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    maps = [layer(x, x, x, is_causal=True, average_attn_weights=False)[1].detach() for layer in layers]
    got = EntropyRegularizer(tolerance=0.2, reduction="sum", max_entropy="context").forward_modules(layers).item()
    e_max, total = math.log(6), 0.0
    for attn, layer in zip(maps, layers, strict=True):
        layer_sum = 0.0
        for h in range(2):
            for b in range(2):
                for i in range(6):
                    row = [float(p) for p in attn[b, h, i] if p > 0]
                    dev = -sum(p * math.log(p) for p in row) - float(layer.entropy_threshold[h]) * e_max
                    layer_sum += dev**2 if abs(dev) > 0.2 * e_max else 0.0
        total += layer_sum / 2
    assert got == pytest.approx(total / 2, rel=1e-9)
    assert got > 0


def test_mean_reduction_does_not_grow_with_batch_size() -> None:
    e_max = torch.log(torch.arange(1, 5, dtype=torch.float64)).expand(2, 1, 4)
    entropy = torch.rand(2, 2, 4, dtype=torch.float64) * e_max
    for granularity in ("row", "head"):
        single = entropy_regularizer([entropy], [e_max], 0.9, 0.0, granularity=granularity)
        double = entropy_regularizer([entropy.repeat(2, 1, 1)], [e_max.repeat(2, 1, 1)], 0.9, 0.0,
                                     granularity=granularity)  # fmt: skip
        torch.testing.assert_close(double, single)
        summed = entropy_regularizer([entropy], [e_max], 0.9, 0.0, reduction="sum", granularity=granularity)
        summed2 = entropy_regularizer([entropy.repeat(2, 1, 1)], [e_max.repeat(2, 1, 1)], 0.9, 0.0, reduction="sum",
                                      granularity=granularity)  # fmt: skip
        torch.testing.assert_close(summed2, 2 * summed)


def test_context_max_entropy_option_uses_log_context() -> None:
    e_max = torch.log(torch.arange(1, 5, dtype=torch.float64)).expand(1, 1, 4)
    ent = torch.zeros(1, 1, 4, dtype=torch.float64)
    row = EntropyRegularizer(0.5, 0.0, max_entropy="row")([ent], [e_max])
    context = EntropyRegularizer(0.5, 0.0, max_entropy="context")([ent], [e_max])
    assert context.item() == pytest.approx((0.5 * math.log(4)) ** 2)
    assert row.item() < context.item()


@pytest.mark.parametrize(("temperature", "target", "direction"), [(8.0, 0.2, -1), (0.05, 0.9, 1)])
def test_sgd_step_on_temperature_moves_entropy_toward_band(temperature: float, target: float, direction: int) -> None:
    torch.manual_seed(0)
    attn = EntropyGuidedAttention(16, 2, temperature_init=temperature, dtype=torch.float64)
    x = torch.randn(4, 12, 16, dtype=torch.float64)
    reg = EntropyRegularizer(target_fraction=target, tolerance=0.1)
    optimizer = torch.optim.SGD([attn.log_temperature], lr=0.5)
    attn(x, x, x)
    before = attn.last_entropy.mean().item()
    loss = reg.forward_modules([attn], use_module_thresholds=False)
    assert loss.item() > 0
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        attn(x, x, x)
    after = attn.last_entropy.mean().item()
    assert (after - before) * direction > 0


def test_learnable_threshold_receives_gradient() -> None:
    attn = EntropyGuidedAttention(8, 2, learnable_threshold=True, threshold_init=0.9)
    x = torch.randn(2, 6, 8)
    attn(x, x, x, is_causal=True)
    EntropyRegularizer().forward_modules([attn]).backward()
    assert attn.entropy_threshold.grad is not None and attn.entropy_threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("granularity", ["row", "head"])
def test_nan_entropy_propagates_unless_its_row_is_masked(granularity: str) -> None:
    """Regression: a NaN entropy fell outside the band test and was penalised as 0, so a NaN batch passed the
    EntropyGuidedAttentionCallback's finiteness check silently."""
    g = torch.Generator().manual_seed(0)
    entropy = torch.rand(2, 2, 5, generator=g) * math.log(5)
    e_max = torch.full((2, 1, 5), math.log(5))
    mask = torch.ones(2, 1, 5, dtype=torch.bool)
    mask[1, 0, 3] = False
    clean = entropy_regularizer([entropy], [e_max], 0.5, 0.1, row_masks=[mask], granularity=granularity)
    assert torch.isfinite(clean) and clean > 0
    masked_nan = entropy.clone()
    masked_nan[1, :, 3] = float("nan")  # a row that does not count: ignored
    out = entropy_regularizer([masked_nan], [e_max], 0.5, 0.1, row_masks=[mask], granularity=granularity)
    torch.testing.assert_close(out, clean)
    counted_nan = entropy.clone()
    counted_nan[0, 1, 2] = float("nan")
    assert entropy_regularizer([counted_nan], [e_max], 0.5, 0.1, row_masks=[mask], granularity=granularity).isnan()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="target_fraction must be in"):
        EntropyRegularizer(target_fraction=1.5)
    with pytest.raises(ValueError, match="tolerance must be in"):
        EntropyRegularizer(tolerance=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        EntropyRegularizer(reduction="max")
    with pytest.raises(ValueError, match="granularity"):
        EntropyRegularizer(granularity="layer")
    with pytest.raises(ValueError, match="max_entropy"):
        EntropyRegularizer(max_entropy="global")
    with pytest.raises(ValueError, match="thresholds"):
        entropy_regularizer([torch.zeros(1, 1, 2)], [torch.ones(1, 1, 2)], [2.0])
    with pytest.raises(ValueError, match="max_entropies"):
        entropy_regularizer([torch.zeros(1, 1, 2)], [])

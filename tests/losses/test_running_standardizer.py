"""RunningStandardizer: cumulative statistics against float64 sums, fallback, validation."""

from __future__ import annotations

import pytest
import torch

from lightning_info.losses import RunningStandardizer


def test_cumulative_statistics_equal_those_of_all_rows() -> None:
    g = torch.Generator().manual_seed(0)
    scaler = RunningStandardizer(num_features=3)
    batches = [torch.randn(n, 3, generator=g) * torch.tensor([1.0, 50.0, 0.05]) + 7.0 for n in (1, 9, 4, 17)]
    for batch in batches:
        scaler.update(batch)
    rows = torch.cat(batches).double()
    n = rows.shape[0]
    mean = rows.sum(0) / n
    var = ((rows - mean) ** 2).sum(0) / n
    torch.testing.assert_close(scaler.mean.double(), mean, rtol=1e-6, atol=0)
    # float32 buffers: the merge sees the mean rounded to float32, ~1e-7 * |mean| / std relative error in var
    torch.testing.assert_close(scaler.var.double(), var, rtol=2e-4, atol=0)
    assert int(scaler.count) == n
    z = scaler(rows.float())
    torch.testing.assert_close(z.mean(0), torch.zeros(3), rtol=0, atol=1e-4)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3), rtol=1e-4, atol=0)


def test_before_any_update_uses_the_values_own_statistics() -> None:
    scaler = RunningStandardizer()
    out = scaler(torch.tensor([[2.0], [4.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0], [1.0]]))
    assert int(scaler.count) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_features must be >= 1, got 0"):
        RunningStandardizer(0)
    with pytest.raises(TypeError, match="sync must be a bool"):
        RunningStandardizer(1, sync="yes")  # type: ignore[arg-type]


def test_empty_batch_changes_nothing() -> None:
    scaler = RunningStandardizer(num_features=2)
    scaler.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    before = {k: v.clone() for k, v in scaler.state_dict().items()}
    scaler.update(torch.empty(0, 2))
    for key, value in scaler.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert bool(torch.isfinite(scaler(torch.tensor([[2.0, 4.0]]))).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_batch_raises_and_leaves_the_statistics(bad: float) -> None:
    scaler = RunningStandardizer(num_features=2)
    scaler.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    before = {k: v.clone() for k, v in scaler.state_dict().items()}
    with pytest.raises(ValueError, match="values contains NaN or Inf"):
        scaler.update(torch.tensor([[1.0, bad]]))
    for key, value in scaler.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    torch.testing.assert_close(scaler(torch.tensor([[2.0, 4.0]])), torch.tensor([[0.0, 0.0]]))


def test_update_checks_the_values() -> None:
    scaler = RunningStandardizer(num_features=2)
    with pytest.raises(ValueError, match="values must have num_features=2 columns, got shape \\(3, 1\\)"):
        scaler.update(torch.zeros(3, 1))
    with pytest.raises(TypeError, match="values must be a floating-point tensor"):
        scaler.update(torch.zeros(3, 2, dtype=torch.long))


def test_feature_without_spread_is_centred_not_blown_up() -> None:
    # first batches with constant targets: the old 1e-8 floor divided errors by 1e-8
    scaler = RunningStandardizer(num_features=2)
    scaler.update(torch.tensor([[5.0, 1.0], [5.0, 3.0]]))
    out = scaler(torch.tensor([[5.5, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.0]]))  # feature 0: (5.5 - 5) / 1; feature 1: std 1
    # spread far below float32 resolution of the mean counts as none too
    scaler = RunningStandardizer()
    scaler.update(torch.tensor([[1e4], [1e4 + 1e-3]], dtype=torch.float64))
    torch.testing.assert_close(scaler(torch.tensor([[1e4 + 1.0]])), torch.tensor([[1.0]]), rtol=0, atol=2e-3)
    # once a batch with spread arrives, the feature is scaled by its standard deviation again
    scaler = RunningStandardizer()
    scaler.update(torch.tensor([[2.0], [2.0]]))
    scaler.update(torch.tensor([[0.0], [4.0]]))  # all rows: 2, 2, 0, 4 -> mean 2, var 2
    torch.testing.assert_close(scaler(torch.tensor([[4.0]])), torch.tensor([[2.0 / 2.0**0.5]]))
    # before any update, a constant batch is centred (not divided by a floor)
    torch.testing.assert_close(RunningStandardizer()(torch.tensor([[3.0], [3.0]])), torch.zeros(2, 1))

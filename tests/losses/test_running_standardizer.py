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

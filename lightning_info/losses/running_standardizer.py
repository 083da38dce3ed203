"""Standardise regression targets with running (cumulative) statistics kept in buffers."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_info._internal.validation import check_int, check_tensor

_REL_STD = 1e-6
"""A feature whose standard deviation is at most this fraction of its mean's magnitude (or exactly 0) has no spread
to scale by: float32 round-off alone gives ~6e-8 relative. Such a feature is centred and divided by 1."""


class RunningStandardizer(nn.Module):
    r"""The map :math:`v \mapsto (v - \mu) / \sigma` with the mean and variance of all batches given to :meth:`update`.

    The statistics are cumulative (Chan et al.'s parallel update, in float64): after batches of sizes
    :math:`n_1, \dots, n_b` they are the mean and (population) variance of all :math:`\sum n_i` rows seen, so the
    map does not change from batch to batch the way per-batch standardisation does. They live in the buffers
    ``mean``, ``var`` and ``count`` (saved in ``state_dict`` and checkpoints, moved by ``.to()``). Under
    ``torch.distributed`` each batch's count, sum and sum of squares are summed over the processes before the update
    (``sync=True``), so every rank holds identical buffers.

    Before the first :meth:`update` (``count == 0``) the map uses the statistics of the values it is given.

    A feature without spread (standard deviation 0, or at most ``1e-6`` times its mean's magnitude, e.g. constant
    targets in the first batches) is only centred, divided by 1, until a batch with spread arrives: dividing by a
    floored standard deviation would blow errors up by ~1e8 (a CS-IB loss of 1e10 after a constant first batch).
    An empty batch leaves the statistics unchanged; a batch with NaN/Inf raises ``ValueError`` and leaves them
    unchanged too (under ``torch.distributed`` every rank raises, after the all-reduce).

    Args:
        num_features: number of columns ``k`` of the ``(N, k)`` values.
        sync: all-reduce the batch statistics when ``torch.distributed`` is initialised.

    Example:
        >>> import torch
        >>> scaler = RunningStandardizer()
        >>> scaler.update(torch.tensor([[1.0], [3.0]]))
        >>> scaler.update(torch.tensor([[5.0], [7.0]]))
        >>> scaler.mean, scaler.var, int(scaler.count)
        (tensor([4.]), tensor([5.]), 4)
        >>> scaler(torch.tensor([[4.0]]))
        tensor([[0.]])
    """

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, num_features: int = 1, sync: bool = True) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, min_value=1)
        if not isinstance(sync, bool):
            raise TypeError(f"sync must be a bool, got {type(sync).__name__} ({sync!r})")
        self.sync = sync
        self.register_buffer("mean", torch.zeros(self.num_features))
        self.register_buffer("var", torch.ones(self.num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, values: Tensor) -> Tensor:
        """Standardise ``(N, k)`` ``values`` (differentiable; the statistics are constants)."""
        if int(self.count) == 0:
            mean, var = values.detach().mean(dim=0), values.detach().var(dim=0, unbiased=False)
        else:
            mean, var = self.mean, self.var
        mean, std = mean.to(values.dtype), var.to(values.dtype).sqrt()
        spread = (std > 0) & (std > _REL_STD * mean.abs())
        return (values - mean) / torch.where(spread, std, torch.ones_like(std))

    def _check(self, values: object) -> Tensor:
        values = check_tensor("values", values, ndim=2, finite=False)
        if values.shape[1] != self.num_features:
            raise ValueError(
                f"values must have num_features={self.num_features} columns, got shape {tuple(values.shape)}"
            )
        return values

    @torch.no_grad()
    def update(self, values: Tensor) -> None:
        """Add the rows of ``(N, k)`` ``values`` to the statistics (an empty batch changes nothing).

        Raises:
            TypeError / ValueError: ``values`` is not a floating ``(N, num_features)`` tensor, or has NaN/Inf (or
                squares that overflow float64) on this or another process; the statistics are left unchanged.
        """
        v64 = self._check(values).detach().double()
        stats = torch.cat([v64.new_tensor([v64.shape[0]]), v64.sum(dim=0), v64.square().sum(dim=0)])
        if self.sync and dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)  # before any raise: every rank takes part, then all raise alike
        if not bool(torch.isfinite(stats).all()):
            raise ValueError(
                "values contains NaN or Inf values (or values whose squares overflow float64), on this or another "
                "process; the running statistics were left unchanged"
            )
        k = self.num_features
        n_b, sum_b, sumsq_b = stats[0], stats[1 : 1 + k], stats[1 + k :]
        if int(n_b.item()) == 0:
            return
        mean_b = sum_b / n_b
        m2_b = (sumsq_b - n_b * mean_b.square()).clamp_min(0.0)
        n = self.count.double()
        total = n + n_b
        delta = mean_b - self.mean.double()
        self.mean.copy_(self.mean.double() + delta * n_b / total)
        self.var.copy_((self.var.double() * n + m2_b + delta.square() * n * n_b / total) / total)
        self.count.add_(int(n_b.item()))

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, sync={self.sync}"

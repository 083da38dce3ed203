"""ShannonEntropy: mean entropy of predicted distributions."""

# no `from __future__ import annotations`: torch.jit.script reads the class-level state annotations below and
# cannot resolve them as strings
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_info._internal.validation import check_bool
from lightning_info.functional.entropy import _mean_compute, _shannon_entropy_update, log_base


class ShannonEntropy(Metric):
    r"""Mean Shannon entropy :math:`\frac{1}{M}\sum_{m} -\sum_k p_{m,k}\log p_{m,k}` of categorical distributions.

    Every ``update`` takes probabilities or logits with the categories in the last dimension (all leading
    dimensions are distributions: ``(N, K)`` predictions, ``(B, T, V)`` token distributions, ...). States are a
    running sum and count (``"sum"``-reduced), so the DDP value equals the single-process mean. From logits the
    entropy goes through ``log_softmax`` (stable for very large logits). See
    :func:`~lightning_info.functional.shannon_entropy`.

    Args:
        from_logits: whether ``update`` receives logits.
        base: ``"e"`` (nats), ``2`` (bits) or any positive number other than 1.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on a bad ``base``; ``update`` raises on NaN/Inf or probabilities that are not distributions.

    Example:
        >>> import torch
        >>> metric = ShannonEntropy(base=2)
        >>> metric.update(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
        >>> metric.update(torch.tensor([[0.25, 0.25, 0.25, 0.25]]))
        >>> metric.compute()
        tensor(1., dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, from_logits: bool = False, base: float | str = "e", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_bool("from_logits", from_logits)
        log_base(base)
        self.from_logits = from_logits
        self.base = base
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor) -> None:
        total, count = _shannon_entropy_update(x.detach(), self.from_logits, self.base)
        # out of place: states reset in inference mode (trainer.validate) stay updatable outside it
        self.total = self.total + total.to(self.total.device)
        self.count = self.count + count.to(self.count.device)

    def compute(self) -> Tensor:
        return _mean_compute(self.total, self.count, "ShannonEntropy", self._update_count > 0)

"""AttentionEntropy: mean row entropy of attention maps per (layer, head)."""

# no `from __future__ import annotations`: torch.jit.script reads the class-level state annotations below and
# cannot resolve them as strings
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_info._internal.validation import check_bool
from lightning_info.functional.attention import _attention_entropy_update
from lightning_info.functional.entropy import _mean_compute


class AttentionEntropy(Metric):
    r"""Mean Shannon entropy of attention rows per (layer, head), optionally normalised by :math:`\log` (valid keys).

    :math:`\bar H_{l,h} = \frac{1}{|R|}\sum_{(b,i) \in R} -\sum_{j \in \mathcal{K}_i} a_{l,b,h,ij}\log a_{l,b,h,ij}`
    over the rows :math:`R` seen in all updates (see :func:`~lightning_info.functional.attention`;
    Jha & Reagen 2025 use it to detect entropy collapse and entropic overload). States are per-(layer, head) sums
    and row counts (``"sum"``-reduced), shaped by the first ``update``: keep the number of layers and heads fixed,
    and update every DDP process at least once before ``compute``.

    Args:
        normalize: divide each row's entropy by ``log`` of its number of valid keys (1 = uniform, 0 = one-hot).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: if ``normalize`` is not a bool; ``update`` raises like the functional.

    Example:
        >>> import torch
        >>> metric = AttentionEntropy(normalize=True)
        >>> metric.update(torch.full((2, 3, 4, 4), 0.25))  # uniform attention, 3 heads
        >>> metric.compute()
        tensor([1., 1., 1.], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_bool("normalize", normalize)
        self.normalize = normalize
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, attn_probs: Tensor, mask: Tensor | str | None = None) -> None:
        """Add a batch of attention maps ``(B, H, Lq, Lk)`` or ``(L, B, H, Lq, Lk)`` (``mask``: see the functional)."""
        total, count = _attention_entropy_update(attn_probs.detach(), mask, self.normalize)
        if self.total.ndim and self.total.shape != total.shape:
            raise ValueError(
                f"attn_probs gives per-head states of shape {tuple(total.shape)}, earlier updates gave "
                f"{tuple(self.total.shape)}: keep the number of layers and heads fixed"
            )
        self.total = self.total + total.to(self.total.device)
        self.count = self.count + count.to(self.count.device)

    def compute(self) -> Tensor:
        return _mean_compute(self.total, self.count, "AttentionEntropy", self._update_count > 0)

"""Base class of the sample-based information metrics: concatenated (N, d) states with an optional cap."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lightning_info._internal.validation import check_tensor
from lightning_info.metrics.functional._utils import check_finite, check_max_samples

_STORE_DTYPES = (torch.float32, torch.float64)


class SampleMetric(Metric):
    """Base of the metrics that need all samples at once (spectra of Gram or kernel matrices).

    Stores the rows passed to ``update`` in a ``"cat"``-reduced list state ``samples`` (and ``labels`` when the
    subclass registers that state), keeping at most ``max_samples`` rows per process: once the cap is reached further
    rows are dropped, so memory is bounded by ``world_size * max_samples`` rows after a DDP sync.

    Args:
        max_samples: cap on the rows kept per process (``None``: keep all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    full_state_update = False
    samples: list[Tensor]  # one Tensor (all processes' rows) while synced inside compute()
    labels: list[Tensor]

    def __init__(self, max_samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_samples = check_max_samples(max_samples)
        self.add_state("samples", default=[], dist_reduce_fx="cat")

    def _stored_rows(self) -> int:
        return sum(int(chunk.shape[0]) for chunk in self.samples)

    def _store(self, z: Tensor, labels: Tensor | None = None) -> None:
        check_tensor("z", z, ndim=2, finite=False)
        check_finite("z", z)
        if self.samples and z.shape[1] != self.samples[0].shape[1]:
            raise ValueError(
                f"z must keep {self.samples[0].shape[1]} features across updates, got shape {tuple(z.shape)}"
            )
        room = z.shape[0] if self.max_samples is None else max(self.max_samples - self._stored_rows(), 0)
        if room == 0:
            return
        dtype = z.dtype if z.dtype in _STORE_DTYPES else torch.float32
        self.samples.append(z[:room].detach().to(dtype))
        if labels is not None:
            self.labels.append(labels[:room].detach())

    def _gathered(self) -> Tensor:
        """All stored rows (after the DDP sync, all processes' rows)."""
        if isinstance(self.samples, list) and not self.samples:  # after a DDP sync the state is one tensor
            raise ValueError(f"{type(self).__name__}.compute() called before any update()")
        return dim_zero_cat(self.samples)

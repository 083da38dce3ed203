"""Base class of the sample-based information metrics: concatenated ``(N, d)`` states with an optional cap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_finite, check_max_samples, check_tensor


class SampleMetric(Metric):
    """Base of the metrics that need all samples at once (spectra of Gram or kernel matrices).

    Stores the rows passed to ``update`` in ``"cat"``-reduced list states (``samples`` by default; subclasses name
    others, e.g. ``labels``), keeping at most ``max_samples`` rows per process: the first ``max_samples`` rows are
    kept and later ones dropped (with a one-time warning), so memory is bounded by ``world_size * max_samples``
    rows after a DDP sync. Shuffle the data when its order matters (e.g. a validation set sorted by class).
    float16/bfloat16 rows are stored in float32, float32/float64 as given.

    The cap holds under ``forward`` (``metric(x)``: torchmetrics updates a fresh state with the batch and merges it
    into the kept rows) and ``merge_state`` too: the merged rows are cut back to the first ``max_samples``.

    Under DDP every process must call ``update`` at least once before ``compute``: torchmetrics replaces an empty
    ``"cat"`` state by a 1-D empty tensor, whose shape does not match the other ranks' ``(N, d)`` rows, and the
    gather fails or (gloo) blocks. With uneven shards (e.g. ``DistributedSampler(drop_last=True)`` off and few
    batches) make sure each rank sees a batch, or compute on one rank without syncing (``sync_on_compute=False``).

    Args:
        max_samples: cap on the rows kept per process (``None``: keep all).
        states: names of the list states (all get the same rows count per ``update``).
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    def __init__(self, max_samples: int | None = None, states: Sequence[str] = ("samples",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_samples = check_max_samples(max_samples)
        for state in states:
            self.add_state(state, default=[], dist_reduce_fx="cat")
        self._warned_cap = False

    def _features(self, name: str, value: object, state: str = "samples", vector_ok: bool = False) -> Tensor:
        """Check finite floating ``(N, d)`` rows for ``state`` (same ``d`` as earlier updates); return them detached.

        With ``vector_ok`` a 1-D ``(N,)`` input is ``N`` samples of one feature.
        """
        value = check_tensor(name, value, ndim=(1, 2) if vector_ok else 2, finite=False)
        if value.ndim == 1:
            value = value[:, None]
        check_finite(name, value)
        stored = getattr(self, state)
        if stored and value.shape[1] != stored[0].shape[1]:
            raise ValueError(f"{name} must keep {stored[0].shape[1]} features across updates, got {tuple(value.shape)}")
        return upcast(value.detach())

    def _store(self, **rows: Tensor) -> None:
        """Append ``rows`` (state name -> tensor, all with the same number of rows) up to ``max_samples``."""
        first = next(iter(rows.values()))
        room = first.shape[0]
        if self.max_samples is not None:
            kept = sum(int(chunk.shape[0]) for chunk in getattr(self, next(iter(rows))))
            room = min(room, max(self.max_samples - kept, 0))
            if room < first.shape[0]:
                self._warn_cap()
        if room:
            for state, value in rows.items():
                getattr(self, state).append(value[:room])

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge like torchmetrics (``forward``, ``merge_state``), then cut each list state to ``max_samples`` rows."""
        super()._reduce_states(incoming_state)
        if self.max_samples is None:
            return
        for state, reduce_fn in self._reductions.items():
            chunks = getattr(self, state)
            if reduce_fn is not dim_zero_cat or not isinstance(chunks, list):
                continue
            if sum(int(chunk.shape[0]) for chunk in chunks) <= self.max_samples:
                continue
            kept: list[Tensor] = []
            room = self.max_samples
            for chunk in chunks:
                if room <= 0:
                    break
                kept.append(chunk[:room])
                room -= int(kept[-1].shape[0])
            setattr(self, state, kept)
            self._warn_cap()

    def _warn_cap(self) -> None:
        if not self._warned_cap:
            rank_zero_warn(
                f"{type(self).__name__} keeps the first max_samples={self.max_samples} rows per process; "
                "later rows are dropped"
            )
            self._warned_cap = True

    def _gathered(self, state: str = "samples") -> Tensor:
        """All stored rows of ``state`` (after the DDP sync, all processes' rows)."""
        value = getattr(self, state)
        if isinstance(value, list) and not value:  # after a DDP sync the state is one tensor
            raise ValueError(f"{type(self).__name__}.compute() called before any update()")
        return dim_zero_cat(value)

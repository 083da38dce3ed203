"""ConditionalMutualInformation: empirical I(X; Yhat | Y) of predicted distributions over every sample seen."""

# no `from __future__ import annotations`: torch.jit.script reads the class-level state annotations below and
# cannot resolve them as strings
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_info._internal.validation import check_int
from lightning_info.functional.cmi import (
    DEFAULT_EPS,
    centroids_from_statistics,
    check_eps,
    check_inputs,
    class_statistics,
)


class ConditionalMutualInformation(Metric):
    r"""Conditional mutual information :math:`I(X;\hat Y|Y)` of a classifier (Ye et al., ICLR 2024, Eq. 4-5).

    .. math::
        \widehat{\mathrm{CMI}} = \frac{1}{N}\sum_{i=1}^{N} \mathrm{KL}\big(P_{x_i} \,\|\, Q_{y_i}\big),
        \qquad Q_c = \frac{1}{n_c}\sum_{i: y_i = c} P_{x_i},

    over all the samples passed to ``update`` (the centroids :math:`Q_c` use every sample, not each batch's). It is
    how much the predicted distributions of one class spread around their class centroid: 0 when every sample of a
    class gets the same distribution, at most :math:`\log K`. MCMI distillation trains the teacher to raise it.

    The sum over samples splits into per-sample and per-class parts,
    :math:`N\,\widehat{\mathrm{CMI}} = \sum_i \sum_k P_{ik}\log P_{ik} - \sum_c \sum_k S_{ck} \log Q_{ck}` with
    :math:`S_c = \sum_{i:y_i=c} P_{x_i}`, so the states are the class sums :math:`S` (``(C, C)``), the class counts,
    :math:`\sum_i \sum_k P_{ik}\log P_{ik}` and :math:`N`, all ``"sum"``-reduced in float64: memory does not grow
    with the number of samples and the DDP value equals the single-process value exactly. Logarithms use the clamp
    ``eps`` of :func:`~lightning_info.functional.cmi`, so ``compute`` equals that
    function applied to all the samples at once.

    ``higher_is_better`` is ``None``: a higher CMI is what an MCMI teacher aims for, not a quality of every model.

    Args:
        num_classes: number of classes :math:`C` (>= 2); ``probs`` have ``C`` columns.
        eps: clamp :math:`\epsilon \in (0, 1)` of the probabilities inside the logarithms.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError / ValueError: bad ``num_classes`` or ``eps``; ``update`` raises like the functional (NaN/Inf,
            wrong shapes, rows that are not distributions, labels out of range); ``compute`` raises
            ``ValueError`` with fewer than 2 samples seen.

    Example:
        >>> import torch
        >>> metric = ConditionalMutualInformation(num_classes=2)
        >>> metric.update(torch.tensor([[0.9, 0.1], [0.5, 0.5]]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([[0.2, 0.8]]), torch.tensor([1]))
        >>> metric.compute()
        tensor(0.0678, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    class_sums: Tensor
    class_counts: Tensor
    plogp: Tensor
    total: Tensor

    def __init__(self, num_classes: int, eps: float = DEFAULT_EPS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, min_value=2)
        self.eps = check_eps(eps)
        zeros = torch.zeros
        self.add_state("class_sums", zeros(num_classes, num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("class_counts", zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("plogp", zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add ``(N, C)`` predicted distributions and their ``(N,)`` integer labels."""
        p, labels = check_inputs(probs, target, self.num_classes)
        p = p.detach().to(self.class_sums.device, torch.float64)
        sums, counts = class_statistics(p, labels.to(p.device), self.num_classes)
        # out of place: states reset inside an inference-mode loop (trainer.validate) are inference tensors, which
        # a later update outside inference mode may read but not modify
        self.class_sums = self.class_sums + sums
        self.class_counts = self.class_counts + counts
        self.plogp = self.plogp + (p * p.clamp_min(self.eps).log()).sum()
        self.total = self.total + p.shape[0]

    def compute(self) -> Tensor:
        """CMI in nats over every sample seen (all processes after a DDP sync)."""
        if float(self.total) < 2:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least 2 samples, got {int(self.total)}: "
                "pass more rows to update()"
            )
        q = centroids_from_statistics(self.class_sums, self.class_counts)
        cross = (self.class_sums * q.clamp_min(self.eps).log()).sum()
        return ((self.plogp - cross) / self.total).clamp_min(0.0)

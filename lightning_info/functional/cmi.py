r"""Empirical conditional mutual information :math:`I(X; \hat Y \mid Y)` of a classifier's predicted distributions.

Ye et al., "Bayes Conditional Distribution Estimation for Knowledge Distillation Based on Conditional Mutual
Information", ICLR 2024 (Eq. 4-5). With :math:`P_{x_i}` the predicted distribution of sample :math:`i`, :math:`y_i`
its label and :math:`Q_c` the centroid of class :math:`c` (the mean of :math:`P_x` over the samples of class
:math:`c`),

.. math::
    \widehat{\mathrm{CMI}} = \frac{1}{N} \sum_{i=1}^{N} \mathrm{KL}\big(P_{x_i} \,\|\, Q_{y_i}\big)
    = \sum_c \frac{n_c}{N} H(Q_c) - \frac{1}{N} \sum_i H(P_{x_i}),

the second form (batch centroids) being :math:`H(\hat Y \mid Y) - H(\hat Y \mid X, Y)`, so the batch estimate lies in
:math:`[0, \log K]`. Log-probabilities are clamped at :math:`\log \epsilon`, which bounds every KL term by
:math:`\log(1/\epsilon)` even against centroids that put zero mass where :math:`P_x` does not (external or frozen
centroids); this is what keeps :math:`\mathcal{L}_{CE} - \lambda\,\mathrm{CMI}` bounded below.

The per-class sums are one ``index_add`` over the batch (no loop over classes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import (
    check_int,
    check_labels,
    check_probabilities,
    check_range,
    check_tensor,
    labels_out_of_range,
)

__all__ = [
    "DEFAULT_EPS",
    "centroids_from_statistics",
    "check_eps",
    "check_inputs",
    "class_statistics",
    "conditional_mutual_information",
    "kl_to_centroids",
]

DEFAULT_EPS = 1e-8


def check_eps(eps: object) -> float:
    r"""Check the clamp :math:`\epsilon \in (0, 1)` of the probabilities."""
    return check_range("eps", eps, 0.0, 1.0, low_inclusive=False, high_inclusive=False)


def class_statistics(probs: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums ``(C, K)`` of the rows of ``probs`` (one ``index_add``) and per-class counts ``(C,)``.

    Differentiable w.r.t. ``probs``. Counts have the dtype of ``probs``. Raises ``ValueError`` for a label outside
    ``[0, C)`` (read off ``bincount``'s length, so valid labels cost no host sync).
    """
    try:
        counts = torch.bincount(target, minlength=num_classes)
    except RuntimeError as error:  # bincount refuses negative values; anything else is not ours to rename
        low = int(target.min()) if target.numel() else 0
        if low < 0:
            raise labels_out_of_range("target", num_classes, low) from error
        raise
    if counts.shape[0] > num_classes:
        raise labels_out_of_range("target", num_classes, int(target.max()))
    sums = probs.new_zeros(num_classes, probs.shape[1]).index_add_(0, target, probs)
    return sums, counts.to(probs.dtype)


def centroids_from_statistics(sums: Tensor, counts: Tensor) -> Tensor:
    """Class means ``sums / counts``; rows of absent classes (count 0) are 0 and must not be used."""
    return sums / counts.clamp_min(1.0)[:, None]


def kl_to_centroids(probs: Tensor, log_probs: Tensor, target: Tensor, centroids: Tensor, eps: float) -> Tensor:
    r"""Per-sample :math:`\mathrm{KL}(P_i \| Q_{y_i})`, the centroids clamped at :math:`\epsilon` in the logarithm.

    ``log_probs`` must be finite where ``probs`` is 0 (``log_softmax`` output, or a clamped logarithm).
    """
    log_q = centroids.clamp_min(eps).log()[target]
    return (probs * (log_probs - log_q)).sum(dim=1)


def check_inputs(probs: object, target: object, num_classes: int) -> tuple[Tensor, Tensor]:
    """Check ``(N, C)`` distributions and ``(N,)`` labels; return them (float16/bfloat16 upcast, labels ``int64``)."""
    p = check_tensor("probs", probs, ndim=2, min_rows=1)
    if p.shape[1] != num_classes:
        raise ValueError(f"probs must have num_classes={num_classes} columns, got shape {tuple(p.shape)}")
    check_probabilities("probs", p, 1, hint="apply softmax to logits first")
    labels = check_labels("target", target, p.shape[0], num_classes).to(p.device)
    return upcast(p), labels


def conditional_mutual_information(
    probs: Tensor, target: Tensor, num_classes: int, centroids: Tensor | None = None, *, eps: float = DEFAULT_EPS
) -> Tensor:
    r"""Empirical :math:`I(X;\hat Y|Y) = \frac{1}{N}\sum_i \mathrm{KL}(P_{x_i} \| Q_{y_i})` (Ye et al., ICLR 2024).

    :math:`Q_c` is the mean of the rows of ``probs`` whose label is :math:`c` (computed on this batch, with its
    gradient), unless ``centroids`` are given. Classes absent from the batch are simply not used (no NaN). A single
    sample gives 0 (it is its class's centroid).

    Args:
        probs: ``(N, K)`` predicted distributions (rows in [0, 1] summing to 1), ``K == num_classes``, ``N >= 1``.
            float16/bfloat16 are computed in float32; the result has the dtype of the computation.
        target: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes :math:`C` (>= 2).
        centroids: optional ``(C, K)`` centroids :math:`Q_c` to use instead of the batch means (e.g. running
            averages); their rows must be non-negative and finite.
        eps: clamp :math:`\epsilon \in (0, 1)` of the probabilities inside the logarithms; each KL term is at most
            :math:`\log(1/\epsilon)`.

    Returns:
        The scalar CMI in nats (>= 0 with batch centroids).

    Raises:
        TypeError: non-tensor or non-floating ``probs``, non-integer ``target``.
        ValueError: wrong shapes, NaN/Inf, entries outside [0, 1] or rows not summing to 1, labels out of range,
            ``num_classes < 2``, bad ``centroids`` or ``eps``.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
        >>> conditional_mutual_information(probs, torch.tensor([0, 0, 1]), num_classes=2)
        tensor(0.0678)
        >>> conditional_mutual_information(probs[[0, 0, 2]], torch.tensor([0, 0, 1]), num_classes=2)
        tensor(0.)
    """
    num_classes = check_int("num_classes", num_classes, min_value=2)
    eps = check_eps(eps)
    p, target = check_inputs(probs, target, num_classes)
    if centroids is None:
        q = centroids_from_statistics(*class_statistics(p, target, num_classes))
    else:
        check_tensor("centroids", centroids, ndim=2)
        if centroids.shape != (num_classes, num_classes):
            raise ValueError(f"centroids must have shape ({num_classes}, {num_classes}), got {tuple(centroids.shape)}")
        if bool((centroids < 0).any()):
            raise ValueError("centroids must be non-negative (class-mean probabilities)")
        q = centroids.to(device=p.device, dtype=p.dtype)
    return kl_to_centroids(p, p.clamp_min(eps).log(), target, q, eps).mean()

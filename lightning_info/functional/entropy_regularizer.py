r"""Entropy regularizer of Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), as pure tensor math.

The paper's Algorithm 1 (Sec. 4): for layer :math:`l` and head :math:`h` with entropy :math:`E^{(l,h)}`, learnable
threshold weight :math:`\theta^{(l,h)}` (``reg_threshold_weights``), tolerance :math:`\gamma` and maximal entropy
:math:`E^{\max}`,

.. math::
    \delta^{(l,h)} = E^{(l,h)} - \theta^{(l,h)} E^{\max}, \qquad
    P^{(l,h)} = \big(\delta^{(l,h)}\big)^2 \, \mathbb{1}\big[|\delta^{(l,h)}| > \gamma E^{\max}\big], \qquad
    \mathcal{L}_{\text{ent}} = \frac{1}{L} \sum_{l=1}^{L} \frac{1}{H} \sum_{h=1}^{H} P^{(l,h)},

added to the loss as :math:`\mathcal{L}_{\text{CE}} + \lambda \mathcal{L}_{\text{ent}}` (line 19). Where the penalty
is taken, the paper is of two minds, and both readings are here (``granularity``):

- ``"row"`` (default): on the entropy of every attention row (batch element :math:`b`, query :math:`i`), as in the
  paper's PyTorch listing (Appendix B) and its released code, which then *sum* over rows;
- ``"head"``: on the entropy averaged over the query positions (Algorithm 1, line 7, and Eq. 7), per batch element.

Where the paper and its code fall short, the defaults differ (each choice is an argument):

- :math:`E^{\max}` per row, :math:`\log(\#\text{valid keys})` (row :math:`i` of a causal map reaches only
  :math:`\log(i + 1)`; the paper uses :math:`\log T` for every row, so early rows always look "below target");
- ``reduction="mean"`` over rows (and batch elements), so the term does not grow with batch size x length; ``"sum"``
  is the paper's scaling (its :math:`\lambda = 10^{-5}` then corresponds to a mean-reduced weight of about
  :math:`10^{-5} \cdot B \cdot T`);
- each layer has its own thresholds (the released example reuses the first layer's).

The term is zero inside the band :math:`|\delta| \le \gamma E^{\max}` and pushes entropies back into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_info._internal.validation import check_choice, check_range, check_tensor

__all__ = ["entropy_band_penalty", "entropy_regularizer"]


def entropy_band_penalty(entropy: Tensor, max_entropy: Tensor, threshold: Tensor | float, tolerance: float) -> Tensor:
    r"""Penalty :math:`\delta^2 \mathbb{1}[|\delta| > \gamma E^{\max}]`, :math:`\delta = H - \theta E^{\max}`.

    Args:
        entropy: entropies :math:`H`, shape ``(batch, heads, N)`` (or ``(batch, heads)``).
        max_entropy: :math:`E^{\max}` broadcastable to ``entropy``.
        threshold: :math:`\theta`, a float or a tensor of shape ``(heads,)``.
        tolerance: :math:`\gamma`.

    Example:
        >>> e_max = torch.log(torch.tensor(8.0))
        >>> entropy_band_penalty(torch.tensor([[[0.5, 0.6, 2.0]]]) * e_max, e_max, 0.5, 0.2)
        tensor([[[0.0000, 0.0000, 9.7292]]])
    """
    theta = torch.as_tensor(threshold, dtype=entropy.dtype, device=entropy.device)
    if theta.ndim == 1 and entropy.ndim == 3:
        theta = theta[:, None]
    deviation = entropy - theta * max_entropy
    # a NaN entropy has no place in the band: its penalty stays NaN (a comparison would make it 0 and hide a broken
    # forward pass from the loss-term check, which names the callback)
    outside = (deviation.abs() > tolerance * max_entropy) | deviation.isnan()
    return torch.where(outside, deviation.square(), 0.0)


def _layer_penalty(
    entropy: Tensor,
    max_entropy: Tensor,
    theta: Tensor | float,
    tolerance: float,
    mask: Tensor | None,
    reduction: str,
    granularity: str,
) -> Tensor:
    """One layer's term: the per-head penalty aggregated over rows (or batch elements), averaged over heads."""
    weight = torch.ones_like(entropy) if mask is None else mask.to(entropy.dtype).expand_as(entropy)
    max_entropy = max_entropy.to(entropy.dtype).expand_as(entropy)
    if granularity == "head":  # Algorithm 1, line 7: entropy averaged over the query positions
        rows = weight.sum(-1)
        entropy = entropy.masked_fill(weight == 0, 0.0).sum(-1) / rows.clamp_min(1.0)
        max_entropy = (max_entropy * weight).sum(-1) / rows.clamp_min(1.0)
        weight = (rows > 0).to(entropy.dtype)  # (batch, heads): batch elements with a row that counts
    penalty = entropy_band_penalty(entropy, max_entropy, theta, tolerance).masked_fill(weight == 0, 0.0)
    dims = (0, 2) if penalty.ndim == 3 else (0,)
    per_head = penalty.sum(dim=dims)
    if reduction == "mean":
        per_head = per_head / weight.sum(dim=dims).clamp_min(1.0)
    return per_head.mean()


def entropy_regularizer(
    entropies: Sequence[Tensor],
    max_entropies: Sequence[Tensor],
    thresholds: Sequence[Tensor | float] | Tensor | float = 0.5,
    tolerance: float = 0.2,
    row_masks: Sequence[Tensor | None] | None = None,
    reduction: str = "mean",
    granularity: str = "row",
) -> Tensor:
    r"""The paper's entropy penalty :math:`\mathcal{L}_{\text{ent}}` over all layers and heads (module docstring).

    Differentiable in the entropies (hence the temperatures and projections that produced them) and the thresholds.

    Args:
        entropies: one tensor of row entropies per layer, shape ``(batch, heads, N)``.
        max_entropies: per layer, :math:`E^{\max}` broadcastable to that layer's entropies.
        thresholds: :math:`\theta` — one float/``(heads,)`` tensor per layer, or one value for all layers;
            each value must lie in [0, 1] when given as a float.
        tolerance: :math:`\gamma \in [0, 1]`, the half-width of the band as a fraction of :math:`E^{\max}`
            (paper: 0.2, chosen in its Fig. 7 study; its Appendix B listing uses 0.1).
        row_masks: per layer, boolean tensors broadcastable to the entropies; ``False`` rows are ignored (whatever
            their value). A NaN entropy in a row that counts makes the result NaN, so that a broken forward pass is
            reported (``LossTermCallback``'s finiteness check) instead of being penalised as 0.
        reduction: ``"mean"`` over the rows that count (default) or ``"sum"`` over them (the paper's scaling).
        granularity: ``"row"`` (penalty per attention row, Appendix B and the released code) or ``"head"`` (on the
            query-averaged entropy of each head and batch element, Algorithm 1).

    Returns:
        Scalar tensor :math:`\mathcal{L}_{\text{ent}}` (0 when there is no layer or no valid row).

    Raises:
        ValueError: a ``thresholds``/``tolerance`` value outside [0, 1], an unknown ``reduction``/``granularity``,
            mismatched numbers of layers, or an entropy tensor that is not 3-D.

    Example:
        >>> h = [torch.full((1, 2, 4), 0.1), torch.full((1, 2, 4), 1.0)]
        >>> entropy_regularizer(h, [torch.log(torch.tensor(4.0))] * 2, thresholds=0.5, tolerance=0.2)
        tensor(0.2230)
    """
    check_range("tolerance", tolerance, 0.0, 1.0)
    check_choice("reduction", reduction, ("mean", "sum"))
    check_choice("granularity", granularity, ("row", "head"))
    num_layers = len(entropies)
    if len(max_entropies) != num_layers:
        raise ValueError(f"max_entropies must have one entry per layer ({num_layers}), got {len(max_entropies)}")
    if isinstance(thresholds, (Tensor, float, int)):
        layer_thresholds: Sequence[Tensor | float] = [thresholds] * num_layers
    else:
        layer_thresholds = thresholds
    masks: Sequence[Tensor | None] = [None] * num_layers if row_masks is None else row_masks
    if len(layer_thresholds) != num_layers or len(masks) != num_layers:
        raise ValueError(
            f"thresholds and row_masks must have one entry per layer ({num_layers}), "
            f"got {len(layer_thresholds)} and {len(masks)}"
        )
    total: Tensor | None = None
    for layer, (entropy, max_entropy, theta, mask) in enumerate(
        zip(entropies, max_entropies, layer_thresholds, masks, strict=True)
    ):
        check_tensor(f"entropies[{layer}]", entropy, ndim=3, finite=False)
        if not isinstance(theta, Tensor):
            check_range(f"thresholds[{layer}]", theta, 0.0, 1.0)
        term = _layer_penalty(entropy, max_entropy, theta, tolerance, mask, reduction, granularity)
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total / num_layers

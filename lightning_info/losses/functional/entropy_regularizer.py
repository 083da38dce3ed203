r"""Entropy regularizer of Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), as pure tensor math.

For layer :math:`l`, head :math:`h` and attention row :math:`r` (a batch element and a query position) with entropy
:math:`H^{(l,h)}_r` and maximal entropy :math:`E^{\max}_r = \log(\#\text{valid keys of } r)`, the paper's penalty is

.. math::
    \delta^{(l,h)}_r = H^{(l,h)}_r - \theta^{(l,h)} E^{\max}_r, \qquad
    P^{(l,h)}_r = \big(\delta^{(l,h)}_r\big)^2 \, \mathbb{1}\big[|\delta^{(l,h)}_r| > \gamma E^{\max}_r\big],

.. math::
    \mathcal{L}_{\text{ent}} = \frac{1}{L} \sum_{l=1}^{L} \frac{1}{H} \sum_{h=1}^{H} \operatorname{agg}_r P^{(l,h)}_r,

with target fraction (threshold) :math:`\theta^{(l,h)} \in [0, 1]` (learnable per head in the paper), tolerance
:math:`\gamma` (0.2 in the paper) and :math:`\operatorname{agg}` the mean over valid rows (``reduction="mean"``,
independent of batch size and length) or their sum (``"sum"``, the paper's scaling). The paper uses
:math:`E^{\max} = \log(\text{context size})` for every row; with causal masks row :math:`i` can only reach
:math:`\log(i + 1)`, so here :math:`E^{\max}_r` is per row unless the caller passes the context value.
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
        entropy: row entropies :math:`H`, shape ``(batch, heads, N)``.
        max_entropy: :math:`E^{\max}` broadcastable to ``entropy``.
        threshold: :math:`\theta`, a float or a tensor of shape ``(heads,)``.
        tolerance: :math:`\gamma`.

    Example:
        >>> e_max = torch.log(torch.tensor(8.0))
        >>> entropy_band_penalty(torch.tensor([[[0.5, 0.6, 2.0]]]) * e_max, e_max, 0.5, 0.2)
        tensor([[[0.0000, 0.0000, 9.7292]]])
    """
    theta = torch.as_tensor(threshold, dtype=entropy.dtype, device=entropy.device)
    if theta.ndim == 1:
        theta = theta[:, None]
    deviation = entropy - theta * max_entropy
    return torch.where(deviation.abs() > tolerance * max_entropy, deviation.square(), 0.0)


def entropy_regularizer(
    entropies: Sequence[Tensor],
    max_entropies: Sequence[Tensor],
    thresholds: Sequence[Tensor | float] | Tensor | float = 0.5,
    tolerance: float = 0.2,
    row_masks: Sequence[Tensor | None] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The paper's entropy penalty over all layers and heads (module docstring), differentiable in its inputs.

    Args:
        entropies: one tensor of row entropies per layer, shape ``(batch, heads, N)``.
        max_entropies: per layer, :math:`E^{\max}` broadcastable to that layer's entropies.
        thresholds: :math:`\theta` — one float/``(heads,)`` tensor per layer, or one value for all layers;
            each value must lie in [0, 1] when given as a float.
        tolerance: :math:`\gamma \in [0, 1]`, the half-width of the band as a fraction of :math:`E^{\max}`.
        row_masks: per layer, boolean tensors broadcastable to the entropies; ``False`` rows are ignored.
        reduction: ``"mean"`` over valid rows (default) or ``"sum"`` over them (the paper's scaling).

    Returns:
        Scalar tensor :math:`\mathcal{L}_{\text{ent}}` (0 when there is no layer or no valid row).

    Raises:
        ValueError: a ``thresholds``/``tolerance`` value outside [0, 1], mismatched numbers of layers, or an
            entropy tensor that is not 3-D.

    Example:
        >>> h = [torch.full((1, 2, 4), 0.1), torch.full((1, 2, 4), 1.0)]
        >>> entropy_regularizer(h, [torch.log(torch.tensor(4.0))] * 2, thresholds=0.5, tolerance=0.2)
        tensor(0.2230)
    """
    check_range("tolerance", tolerance, 0.0, 1.0)
    check_choice("reduction", reduction, ("mean", "sum"))
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
        penalty = entropy_band_penalty(entropy, max_entropy, theta, tolerance)
        weight = torch.ones_like(penalty) if mask is None else mask.to(penalty.dtype).expand_as(penalty)
        per_head = (penalty * weight).sum(dim=(0, 2))
        if reduction == "mean":
            per_head = per_head / weight.sum(dim=(0, 2)).clamp_min(1.0)
        layer_term = per_head.mean()
        total = layer_term if total is None else total + layer_term
    if total is None:
        return torch.zeros(())
    return total / num_layers

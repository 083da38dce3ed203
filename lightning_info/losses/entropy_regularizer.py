r"""``nn.Module`` form of the entropy regularizer of Jha & Reagen (2025).

The math is in :mod:`lightning_info.functional.entropy_regularizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from lightning_info._internal.validation import check_choice, check_range
from lightning_info.attention.sdpa import EntropyRecorder
from lightning_info.functional.entropy_regularizer import entropy_regularizer

__all__ = ["EntropyRegularizer"]


class EntropyRegularizer(nn.Module):
    r"""Penalise attention heads whose entropies leave a band around a target fraction of the maximal entropy.

    .. math::
        \mathcal{L}_{\text{ent}} = \frac{1}{L} \sum_{l} \frac{1}{H} \sum_{h} \operatorname{agg}_r
        \big(H^{(l,h)}_r - \theta^{(l,h)} E^{\max}_r\big)^2 \,
        \mathbb{1}\big[|H^{(l,h)}_r - \theta^{(l,h)} E^{\max}_r| > \gamma E^{\max}_r\big]

    (Jha & Reagen, "Entropy-Guided Attention for Private LLMs", 2025, Algorithm 1), with :math:`r` an attention row
    (``granularity="row"``) or a batch element's query-averaged head entropy (``"head"``) and :math:`\operatorname{agg}`
    a mean (``reduction="mean"``) or a sum (``"sum"``). The paper adds :math:`\lambda \mathcal{L}_{\text{ent}}` to the
    cross-entropy with :math:`\lambda = 10^{-5}` (CodeParrot, T = 128) or :math:`5 \cdot 10^{-5}` (Languini), summed
    over rows; the mean-reduced default here needs :math:`\lambda \approx 10^{-5} \cdot B \cdot T` for the same push
    (about 0.1). Zero inside the band; differentiable w.r.t. the entropies, hence the temperatures and projections
    that produced them, and the thresholds :math:`\theta`.

    Args:
        target_fraction: :math:`\theta \in [0, 1]`, the target entropy as a fraction of the maximum, used when the
            caller gives no per-head thresholds.
        tolerance: :math:`\gamma \in [0, 1]`, half-width of the band as a fraction of the maximum (paper: 0.2).
        reduction: ``"mean"`` (default) or ``"sum"`` (the paper's scaling) over rows and batch elements.
        max_entropy: ``"row"``: :math:`E^{\max}_r = \log(\#\text{valid keys of row } r)` (correct for causal and
            padded rows); ``"context"``: the largest row maximum, :math:`\log T`, for every row, as in the paper.
        granularity: ``"row"`` (Appendix B, released code) or ``"head"`` (Algorithm 1); see the functional.

    Raises:
        ValueError: ``target_fraction`` or ``tolerance`` outside [0, 1], unknown ``reduction``/``max_entropy``/
            ``granularity``.

    Example:
        >>> from lightning_info.attention import EntropyGuidedAttention
        >>> attn = EntropyGuidedAttention(8, num_heads=2)
        >>> x = torch.randn(3, 6, 8)
        >>> _ = attn(x, x, x, is_causal=True)
        >>> loss = EntropyRegularizer(target_fraction=0.5, tolerance=0.2).forward_modules([attn])
        >>> loss.ndim, bool(loss >= 0)
        (0, True)
    """

    def __init__(
        self,
        target_fraction: float = 0.5,
        tolerance: float = 0.2,
        reduction: str = "mean",
        max_entropy: str = "row",
        granularity: str = "row",
    ) -> None:
        super().__init__()
        self.target_fraction = check_range("target_fraction", target_fraction, 0.0, 1.0)
        self.tolerance = check_range("tolerance", tolerance, 0.0, 1.0)
        self.reduction = check_choice("reduction", reduction, ("mean", "sum"))
        self.max_entropy = check_choice("max_entropy", max_entropy, ("row", "context"))
        self.granularity = check_choice("granularity", granularity, ("row", "head"))

    def forward(
        self,
        entropies: Sequence[Tensor],
        max_entropies: Sequence[Tensor],
        row_masks: Sequence[Tensor | None] | None = None,
        thresholds: Sequence[Tensor | float] | None = None,
    ) -> Tensor:
        """Penalty from per-layer row entropies ``(batch, heads, N)`` and their maxima.

        ``thresholds`` (one float or ``(heads,)`` tensor per layer) overrides ``target_fraction``.
        """
        if self.max_entropy == "context":
            max_entropies = [m.amax() for m in max_entropies]
        return entropy_regularizer(
            entropies,
            max_entropies,
            self.target_fraction if thresholds is None else thresholds,
            self.tolerance,
            row_masks,
            self.reduction,
            self.granularity,
        )

    def forward_modules(self, modules: Iterable[EntropyRecorder], use_module_thresholds: bool = True) -> Tensor:
        r"""Penalty from what each :class:`EntropyGuidedAttention` (or SDPA ``AttentionProbe``) recorded last.

        Args:
            modules: the attention layers (or probes), in order; those that recorded nothing are skipped.
            use_module_thresholds: use each module's own (possibly learned) ``entropy_threshold`` :math:`\theta_h`
                instead of ``target_fraction``.
        """
        recorded = [m for m in modules if m.last_entropy is not None]
        if not recorded:
            return torch.zeros(())
        return self(
            [m.last_entropy for m in recorded],
            [m.last_max_entropy for m in recorded],
            [m.last_row_mask for m in recorded],
            [m.last_threshold for m in recorded] if use_module_thresholds else None,
        )

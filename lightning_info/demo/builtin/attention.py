"""Demo part ``attention``: entropy-guided attention (Jha & Reagen, 2025) in the digits transformer.

:class:`~lightning_info.callbacks.EntropyGuidedAttentionCallback` swaps the encoder's ``nn.MultiheadAttention``
modules for :class:`~lightning_info.attention.EntropyGuidedAttention` (learnable temperature and threshold per head)
at setup and adds the entropy regularizer to the loss. It logs ``attn_entropy/layer{i}/head{j}``, the temperatures,
the overload/collapse fractions and, with W&B, a layer x head heatmap each epoch. The part comes first among the
built-in parts (name order), so the swap happens before other callbacks hook the attention modules.
"""

from __future__ import annotations

from lightning_info.callbacks import EntropyGuidedAttentionCallback
from lightning_info.demo.parts import DemoContext, register_part

SUMMARY_KEYS = (
    "attn_entropy/reg",
    "attn_entropy/normalized_mean",
    "attn_entropy/overload_frac",
    "attn_entropy/collapse_frac",
)


@register_part("attention", help="EntropyGuidedAttentionCallback: learnable-temperature attention + entropy penalty")
def configure(ctx: DemoContext) -> None:
    """Add the callback; its last penalty, mean normalised entropy and overload/collapse fractions go in the summary."""
    ctx.callbacks.append(
        EntropyGuidedAttentionCallback(
            weight=0.1, target_fraction=0.5, tolerance=0.2, log_every_n_steps=1 if ctx.fast else 10
        )
    )
    ctx.summary_keys.extend(SUMMARY_KEYS)

"""The attention-entropy math, kept importable from here for 0.1 code (see :mod:`lightning_info.functional`)."""

from lightning_info.functional.attention import (
    attention_entropy_from_qk,
    entropy_from_logits,
    head_entropy_summary,
    head_entropy_totals,
    max_attention_entropy,
    merge_attention_masks,
    mha_mask_views,
    row_entropy_bounds,
)

__all__ = [
    "attention_entropy_from_qk",
    "entropy_from_logits",
    "head_entropy_summary",
    "head_entropy_totals",
    "max_attention_entropy",
    "merge_attention_masks",
    "mha_mask_views",
    "row_entropy_bounds",
]

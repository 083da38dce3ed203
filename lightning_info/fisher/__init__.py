"""Fisher information for sparse fine-tuning (FISH): per-sample empirical Fisher, global top-k masks, saliency."""

from lightning_info.fisher.fisher import empirical_fisher, fisher_importance, nll_from_logits
from lightning_info.fisher.masks import match_parameter_names, topk_masks
from lightning_info.fisher.sparse import KeptEntries, train_kept_entries_only

__all__ = [
    "KeptEntries",
    "empirical_fisher",
    "fisher_importance",
    "match_parameter_names",
    "nll_from_logits",
    "topk_masks",
    "train_kept_entries_only",
]

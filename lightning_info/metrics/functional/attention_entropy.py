"""Mean row entropy of attention maps per (layer, head), with padding or causal masks."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_info._internal.validation import check_tensor
from lightning_info.attention.functional import head_entropy_totals, max_attention_entropy
from lightning_info.metrics.functional._utils import check_bool, plogp_entropy, upcast

__all__ = ["attention_entropy"]


def _valid_keys(mask: Tensor | str | None, shape: torch.Size, device: torch.device) -> Tensor | None:
    """Boolean valid-key mask broadcastable to ``shape`` (``None``: every key is valid)."""
    if mask is None:
        return None
    num_queries, num_keys = shape[-2], shape[-1]
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"mask must be None, 'causal' or a bool tensor, got {mask!r}")
        # query i (of the last num_queries positions) sees keys 0 .. i + num_keys - num_queries
        return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(num_keys - num_queries)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be None, 'causal' or a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = key may be attended), got dtype {mask.dtype}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to attn_probs shape {tuple(shape)}")
    return mask.to(device)


def _attention_entropy_update(
    attn_probs: Tensor, mask: Tensor | str | None = None, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-(layer, head) sums of row entropies (nats, or normalised) and numbers of rows counted.

    Returns two float64 tensors of shape ``(H,)`` for 4-D input or ``(L, H)`` for 5-D input.
    """
    check_tensor("attn_probs", attn_probs, ndim=(4, 5))
    check_bool("normalize", normalize)
    if bool((attn_probs < 0).any()):
        raise ValueError("attn_probs must hold probabilities (no negative entries); pass softmax outputs")
    p = upcast(attn_probs, torch.float64)
    valid = _valid_keys(mask, p.shape, p.device)
    if valid is None:
        row_entropy = plogp_entropy(p, dim=-1)
        num_keys = torch.full_like(row_entropy, float(p.shape[-1]))
    else:
        p = p.masked_fill(~valid, 0.0)
        row_entropy = plogp_entropy(p, dim=-1)
        num_keys = valid.expand(p.shape).sum(dim=-1).to(torch.float64)
    # rows are (..., B, H, Lq): fully masked rows (padded queries) are left out, and with normalize also rows with
    # a single key (entropy and maximum both 0)
    return head_entropy_totals(row_entropy, max_attention_entropy(num_keys), num_keys >= 1, normalize)


def attention_entropy(attn_probs: Tensor, mask: Tensor | str | None = None, normalize: bool = False) -> Tensor:
    r"""Mean Shannon entropy of the attention rows, per (layer, head).

    For head :math:`h` and query row :math:`i` with valid keys :math:`\mathcal{K}_i`,
    :math:`H_{h,i} = -\sum_{j \in \mathcal{K}_i} a_{h,ij} \log a_{h,ij}` (nats), averaged over the batch and the
    query rows. With ``normalize=True`` each row is divided by its maximum :math:`\log |\mathcal{K}_i|`, so uniform
    attention gives 1 and one-hot attention 0 whatever the number of keys; this is the measure of entropy collapse
    / entropic overload of Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), with the causal
    maximum :math:`\log(i+1)` for row :math:`i` instead of :math:`\log L`.

    Args:
        attn_probs: attention probabilities (softmax outputs), ``(B, H, Lq, Lk)`` or ``(L, B, H, Lq, Lk)`` for
            ``L`` stacked layers. float16/bfloat16 inputs are fine (computed in float64).
        mask: ``None`` (all keys valid), ``"causal"`` (query ``i`` of the last ``Lq`` positions sees keys
            ``0..i + Lk - Lq``, i.e. row ``i`` has ``i + 1`` keys when ``Lq == Lk``), or a bool tensor broadcastable
            to ``attn_probs`` where ``True`` marks a key the query may attend to (the *opposite* of
            ``nn.MultiheadAttention``'s boolean ``attn_mask``). Probability mass on masked keys is ignored.
            Rows without valid keys are left out of the mean.
        normalize: divide each row's entropy by ``log`` of its number of valid keys. Rows with a single valid key
            (entropy and maximum both 0) are then left out of the mean.

    Returns:
        float64 tensor of shape ``(H,)`` (4-D input) or ``(L, H)`` (5-D input).

    Raises:
        TypeError: if ``attn_probs`` is not a floating tensor or ``mask`` is not a bool tensor / ``"causal"``.
        ValueError: on a wrong rank, NaN/Inf or negative entries, a mask that does not broadcast, or when a head
            has no row to average (e.g. ``normalize=True`` with a single key).

    Example:
        >>> import torch
        >>> uniform = torch.full((2, 3, 4, 4), 0.25)
        >>> attention_entropy(uniform, normalize=True)
        tensor([1., 1., 1.], dtype=torch.float64)
        >>> causal = torch.tril(torch.ones(4, 4, dtype=torch.float64)) / torch.arange(1, 5).unsqueeze(1)
        >>> attention_entropy(causal.expand(1, 1, 4, 4), mask="causal", normalize=True)
        tensor([1.], dtype=torch.float64)
    """
    total, count = _attention_entropy_update(attn_probs, mask, normalize)
    if bool((count == 0).any()):
        raise ValueError("attention_entropy has no query row to average for some head (all rows masked or single-key)")
    return total / count

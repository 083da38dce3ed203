r"""Pure tensor math of attention entropy (no Lightning, no state).

The Shannon entropy of one softmax attention row with logits :math:`s_j` over its valid keys :math:`j \in V_i` is

.. math:: H_i = -\sum_{j \in V_i} p_j \log p_j = \operatorname{logsumexp}_{j \in V_i}(s_j) - \sum_{j \in V_i} p_j s_j,
    \qquad p_j = \operatorname{softmax}(s)_j,

and its maximum, reached by the uniform row, is :math:`\log |V_i|` (``log(i + 1)`` for row ``i`` of a causal map).
Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), use these row entropies (their Eq. for
:math:`\mathbf{E}^{(l,h)}`) to diagnose entropic overload and entropy collapse.

Mask convention here is the one of :func:`torch.nn.functional.scaled_dot_product_attention`: a boolean mask is
``True`` where a query may attend to a key; a floating mask is added to the logits (``-inf`` removes a key).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_info._internal.validation import check_int, check_tensor

__all__ = [
    "attention_entropy_from_qk",
    "entropy_from_logits",
    "head_entropy_summary",
    "max_attention_entropy",
    "merge_attention_masks",
    "row_entropy_bounds",
]


def entropy_from_logits(logits: Tensor) -> Tensor:
    r"""Entropy of ``softmax(logits)`` along the last dimension, computed stably as ``logsumexp(s) - sum(p * s)``.

    Entries equal to ``-inf`` are masked keys; a row with no finite entry has entropy 0 (and a zero gradient).

    Args:
        logits: attention logits of shape ``(..., num_keys)``.

    Returns:
        Entropies in nats, shape ``(...)``.

    Example:
        >>> entropy_from_logits(torch.zeros(4))  # uniform over 4 keys: log 4
        tensor(1.3863)
        >>> entropy_from_logits(torch.tensor([0.0, -float("inf")]))
        tensor(0.)
    """
    return _entropy_from_logits(logits, in_place=False)


def _entropy_from_logits(logits: Tensor, in_place: bool) -> Tensor:
    """``entropy_from_logits``; ``in_place=True`` overwrites ``logits`` (a temporary, no autograd) to save memory."""
    in_place = in_place and not (torch.is_grad_enabled() and logits.requires_grad)
    row_max = logits.amax(-1, keepdim=True).detach()
    has_key = row_max > -torch.inf
    if not bool(has_key.all()):  # computed as uniform rows, zeroed below: no NaN in any gradient
        logits, row_max = torch.where(has_key, logits, 0.0), torch.where(has_key, row_max, 0.0)
    # with s = logits - max (masked entries: the most negative finite value), e = exp(s), z = sum e:
    # H = log z - sum(e * s) / z, where masked entries contribute 0 * finite = 0
    lowest = torch.finfo(logits.dtype).min
    shifted = logits.sub_(row_max).clamp_min_(lowest) if in_place else (logits - row_max).clamp_min(lowest)
    weights = torch.exp(shifted)
    normalizer = weights.sum(-1)
    weighted = (weights.mul_(shifted) if in_place else weights * shifted).sum(-1)
    entropy = (torch.log(normalizer) - weighted / normalizer).clamp_min(0.0)
    return torch.where(has_key.squeeze(-1), entropy, 0.0)


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, -torch.inf)
    return mask.to(dtype)


def _check_mask(mask: object, batch_shape: torch.Size, num_queries: int, num_keys: int) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"mask must be a bool or floating-point tensor, got dtype {mask.dtype}")
    target = (*batch_shape, num_queries, num_keys)
    try:
        torch.broadcast_shapes(mask.shape, target)
        ok = mask.ndim >= 2 and mask.ndim <= len(target)
    except RuntimeError:
        ok = False
    if not ok or torch.broadcast_shapes(mask.shape, target) != torch.Size(target):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the logits shape {target}")
    return mask


def _causal_rows(start: int, stop: int, num_keys: int, device: torch.device) -> Tensor:
    rows = torch.arange(start, stop, device=device).unsqueeze(-1)
    return torch.arange(num_keys, device=device) <= rows


def attention_entropy_from_qk(
    q: Tensor,
    k: Tensor,
    mask: Tensor | None = None,
    temperature: Tensor | float | None = None,
    chunk_size: int = 256,
    *,
    scale: float | None = None,
    causal: bool = False,
) -> Tensor:
    r"""Row entropies of ``softmax(q k^T * scale / t + mask)`` without materialising the full attention map.

    The logits are built ``chunk_size`` query rows at a time, so peak memory is
    :math:`O(\text{batch} \cdot \text{chunk} \cdot N_k)` instead of :math:`O(\text{batch} \cdot N_q \cdot N_k)`.
    Differentiable w.r.t. ``q``, ``k`` and ``temperature`` (each chunk keeps its own graph), but meant to be run under
    ``torch.no_grad()`` for monitoring.

    Args:
        q: queries, shape ``(..., N_q, d)`` (e.g. ``(batch, heads, N_q, d)``).
        k: keys, shape ``(..., N_k, d)`` with batch dimensions broadcastable against ``q``'s.
        mask: boolean (``True`` = may attend) or additive floating mask broadcastable to ``(..., N_q, N_k)``.
        temperature: softmax temperature :math:`t`, a float or a tensor broadcastable to the batch dimensions
            ``q.shape[:-2]`` (shape ``(heads,)`` gives one temperature per head). ``None`` means 1.
        chunk_size: number of query rows per chunk.
        scale: logit scale; ``None`` uses :math:`1/\sqrt{d}` as in scaled dot-product attention.
        causal: also mask keys after the query (row ``i`` sees keys ``0..i``), without building an ``N x N`` mask.

    Returns:
        Entropies in nats, shape ``(..., N_q)``, in float32 (float64 if the inputs are float64). Rows with no valid
        key have entropy 0.

    Raises:
        TypeError: ``q``/``k``/``mask`` are not tensors of a supported dtype.
        ValueError: shapes do not match, ``mask`` does not broadcast to the logits, or ``chunk_size < 1``.

    Example:
        >>> q, k = torch.zeros(2, 5, 8), torch.randn(2, 5, 8)
        >>> attention_entropy_from_qk(q, k, causal=True)[0]  # zero queries: uniform rows, log(i + 1)
        tensor([0.0000, 0.6931, 1.0986, 1.3863, 1.6094])
    """
    check_tensor("q", q, ndim=tuple(range(2, 9)), finite=False)
    check_tensor("k", k, ndim=tuple(range(2, 9)), finite=False)
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension, got {tuple(q.shape)} and {tuple(k.shape)}")
    try:
        batch_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError as err:
        raise ValueError(f"batch dimensions of q {tuple(q.shape)} and k {tuple(k.shape)} do not broadcast") from err
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    if mask is not None:
        mask = _check_mask(mask, batch_shape, num_queries, num_keys)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    factor = (1.0 / math.sqrt(q.shape[-1])) if scale is None else float(scale)
    q = q.to(dtype) * factor
    if temperature is not None:
        t = torch.as_tensor(temperature, dtype=dtype, device=q.device)
        try:
            torch.broadcast_shapes(t.shape, batch_shape)
        except RuntimeError as err:
            raise ValueError(
                f"temperature of shape {tuple(t.shape)} must broadcast to the batch dimensions {tuple(batch_shape)}"
            ) from err
        q = q / t[..., None, None]
    k_t = k.to(dtype).transpose(-1, -2)
    out = []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        logits = q[..., start:stop, :] @ k_t
        if mask is not None:
            rows = mask if mask.shape[-2] == 1 else mask[..., start:stop, :]
            logits = logits + _additive_mask(rows, dtype)
        if causal:
            logits = logits.masked_fill(~_causal_rows(start, stop, num_keys, q.device), -torch.inf)
        out.append(_entropy_from_logits(logits, in_place=True))
    return torch.cat(out, dim=-1)


def _mha_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``nn.MultiheadAttention`` convention: boolean ``True`` = not allowed; floating masks are added."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -torch.inf)
    return mask.to(dtype)


def _check_mha_mask(name: str, mask: Tensor, shapes: tuple[tuple[int, ...], ...]) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(mask.shape)}")


def merge_attention_masks(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    *,
    batch_size: int,
    num_heads: int,
    num_queries: int,
    num_keys: int,
    is_causal: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor | None:
    """Merge ``nn.MultiheadAttention``-style masks into one 4-D additive mask (``-inf`` = not allowed).

    Args:
        key_padding_mask: ``(batch, N_k)``, boolean ``True`` = padding, or additive.
        attn_mask: ``(N_q, N_k)`` or ``(batch * heads, N_q, N_k)``, boolean ``True`` = not allowed, or additive.
        batch_size: batch size.
        num_heads: number of heads.
        num_queries: number of queries ``N_q``.
        num_keys: number of keys ``N_k``.
        is_causal: without ``attn_mask``, build the causal mask (row ``i`` sees keys ``0..i``).
        dtype: dtype of the result.
        device: device of the causal mask.

    Returns:
        A tensor broadcastable to ``(batch, heads, N_q, N_k)``, or ``None`` when nothing is masked.

    Raises:
        TypeError: a mask that is not a bool/floating tensor.
        ValueError: a mask of the wrong shape.

    Example:
        >>> merge_attention_masks(None, None, batch_size=1, num_heads=1, num_queries=2, num_keys=2, is_causal=True)
        tensor([[[[0., -inf],
                  [0., 0.]]]])
    """
    merged: Tensor | None = None
    if attn_mask is not None:
        shapes = ((num_queries, num_keys), (batch_size * num_heads, num_queries, num_keys))
        _check_mha_mask("attn_mask", attn_mask, shapes)
        batch, heads = (batch_size, num_heads) if attn_mask.dim() == 3 else (1, 1)
        merged = _mha_additive(attn_mask.reshape(batch, heads, num_queries, num_keys), dtype)
    elif is_causal:
        causal = torch.ones(1, 1, num_queries, num_keys, dtype=torch.bool, device=device).triu(1)
        merged = _mha_additive(causal, dtype)
    if key_padding_mask is not None:
        _check_mha_mask("key_padding_mask", key_padding_mask, ((batch_size, num_keys),))
        padding = _mha_additive(key_padding_mask, dtype).view(batch_size, 1, 1, num_keys)
        merged = padding if merged is None else merged + padding
    return merged


def row_entropy_bounds(
    mask: Tensor | None,
    key_padding_mask: Tensor | None,
    *,
    batch_size: int,
    num_queries: int,
    num_keys: int,
    self_attention: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Maximal entropy ``log(#valid keys)`` of every attention row and which rows count.

    Args:
        mask: the 4-D additive mask of :func:`merge_attention_masks` (or ``None``).
        key_padding_mask: the ``(batch, N_k)`` padding mask it was built from.
        batch_size: batch size.
        num_queries: number of queries ``N_q``.
        num_keys: number of keys ``N_k``.
        self_attention: queries are the keys; padded query positions then do not count.
        dtype: floating dtype of ``max_entropy``.
        device: device of the results when ``mask`` is ``None``.

    Returns:
        ``(max_entropy, row_mask)``, both of shape ``(batch, 1 or heads, N_q)``; a row counts when it has a valid
        key (and, for self-attention, is not padding).

    Example:
        >>> causal = merge_attention_masks(None, None, batch_size=1, num_heads=1, num_queries=3, num_keys=3,
        ...                                is_causal=True)
        >>> row_entropy_bounds(causal, None, batch_size=1, num_queries=3, num_keys=3, self_attention=True)[0]
        tensor([[[0.0000, 0.6931, 1.0986]]])
    """
    if mask is None:
        counts = torch.full((1, 1, num_queries), num_keys, device=device)
    else:
        counts = (mask > -torch.inf).expand(*mask.shape[:2], num_queries, num_keys).sum(-1)
    max_entropy = max_attention_entropy(counts).to(dtype).expand(batch_size, -1, num_queries)
    row_mask = (counts > 0).expand(batch_size, -1, num_queries)
    if self_attention and key_padding_mask is not None and num_queries == num_keys:
        padded = key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask == -torch.inf
        row_mask = row_mask & ~padded.view(batch_size, 1, num_queries)
    return max_entropy, row_mask


def max_attention_entropy(counts: Tensor) -> Tensor:
    """Maximal entropy ``log(n)`` of rows with ``n`` valid keys (0 for empty rows), as a float tensor.

    Example:
        >>> max_attention_entropy(torch.tensor([0, 1, 4]))
        tensor([0.0000, 0.0000, 1.3863])
    """
    counts = counts.to(torch.float64 if counts.dtype == torch.float64 else torch.float32)
    return torch.log(counts.clamp_min(1.0))


def head_entropy_summary(entropy: Tensor, max_entropy: Tensor, row_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Per-head mean entropy and mean normalised entropy :math:`H / E^{\max}` over the rows that count.

    Args:
        entropy: row entropies, shape ``(batch, heads, N)``.
        max_entropy: :math:`E^{\max}` per row, broadcastable to ``entropy``.
        row_mask: rows that count, broadcastable to ``entropy``; rows with :math:`E^{\max} = 0` (one valid key)
            are left out of the normalised mean.

    Returns:
        ``(mean_entropy, mean_normalized)``, both of shape ``(heads,)`` (0 for a head without rows).

    Example:
        >>> e_max = torch.log(torch.tensor([1.0, 2.0, 4.0])).view(1, 1, 3)
        >>> head_entropy_summary(0.5 * e_max.expand(1, 2, 3), e_max)
        (tensor([0.3466, 0.3466]), tensor([0.5000, 0.5000]))
    """
    entropy = entropy.detach()
    weight = torch.ones_like(entropy) if row_mask is None else row_mask.to(entropy.dtype).expand_as(entropy)
    max_entropy = max_entropy.detach().to(entropy.dtype).expand_as(entropy)
    mean = (entropy * weight).sum((0, 2)) / weight.sum((0, 2)).clamp_min(1.0)
    norm_weight = weight * (max_entropy > 0)
    normalized = entropy / max_entropy.clamp_min(torch.finfo(entropy.dtype).tiny)
    mean_normalized = (normalized * norm_weight).sum((0, 2)) / norm_weight.sum((0, 2)).clamp_min(1.0)
    return mean, mean_normalized

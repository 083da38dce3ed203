r"""Pure tensor math of attention entropy (no Lightning, no state).

The Shannon entropy of one softmax attention row with logits :math:`s_j` over its valid keys :math:`j \in V_i` is

.. math:: H_i = -\sum_{j \in V_i} p_j \log p_j = \operatorname{logsumexp}_{j \in V_i}(s_j) - \sum_{j \in V_i} p_j s_j,
    \qquad p_j = \operatorname{softmax}(s)_j,

and its maximum, reached by the uniform row, is :math:`\log |V_i|` (``log(i + 1)`` for row ``i`` of a causal map).
Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), average these row entropies over the query
positions to get one entropy per head (their Eq. 7; Eq. 9-10 give the logsumexp form with a temperature) and use
them to diagnose entropic overload and entropy collapse. Their maximum is :math:`\log T` for every row; here every
row gets its own maximum, so causal and padded rows are measured against what they can reach.

Mask convention of :func:`attention_entropy_from_qk` is the one of
:func:`torch.nn.functional.scaled_dot_product_attention`: a boolean mask is ``True`` where a query may attend to a
key; a floating mask is added to the logits (``-inf`` removes a key). The ``mha_*``/``merge_*`` helpers take
``nn.MultiheadAttention``'s masks (boolean ``True`` = not allowed).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import (
    check_bool,
    check_int,
    check_number,
    check_probabilities,
    check_range,
    check_tensor,
)
from lightning_info.functional.entropy import plogp_entropy

__all__ = [
    "additive_mask",
    "attention_entropy",
    "attention_entropy_from_qk",
    "entropy_from_logits",
    "head_entropy_summary",
    "head_entropy_totals",
    "max_attention_entropy",
    "merge_attention_masks",
    "mha_mask_views",
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
    if in_place:  # exp(-inf) = 0 is fast, exp of the clamped value is an underflow that costs ~3x: clamp after it
        shifted = logits.sub_(row_max)
        weights = torch.exp(shifted)
        shifted.clamp_min_(lowest)
    else:
        shifted = (logits - row_max).clamp_min(lowest)
        weights = torch.exp(shifted)
    normalizer = weights.sum(-1)
    weighted = (weights.mul_(shifted) if in_place else weights * shifted).sum(-1)
    entropy = (torch.log(normalizer) - weighted / normalizer).clamp_min(0.0)
    return torch.where(has_key.squeeze(-1), entropy, 0.0)


def additive_mask(mask: Tensor, dtype: torch.dtype, *, true_means: str = "allowed") -> Tensor:
    """The one mask conversion: a boolean mask becomes an additive one (``0`` kept, ``-inf`` removed).

    ``true_means="allowed"`` is :func:`torch.nn.functional.scaled_dot_product_attention`'s convention (``True`` =
    the query may attend to the key), ``"masked"`` is ``nn.MultiheadAttention``'s (``True`` = not allowed). A
    floating mask is already additive and is only cast to ``dtype``.

    Example:
        >>> additive_mask(torch.tensor([True, False]), torch.float32)
        tensor([0., -inf])
        >>> additive_mask(torch.tensor([True, False]), torch.float32, true_means="masked")
        tensor([-inf, 0.])
    """
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    removed = ~mask if true_means == "allowed" else mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(removed, -torch.inf)


def _check_mask(name: str, mask: object, batch_shape: torch.Size, num_queries: int, num_keys: int) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    target = (*batch_shape, num_queries, num_keys)
    try:
        torch.broadcast_shapes(mask.shape, target)
        ok = mask.ndim >= 2 and mask.ndim <= len(target)
    except RuntimeError:
        ok = False
    if not ok or torch.broadcast_shapes(mask.shape, target) != torch.Size(target):
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to the logits shape {target}")
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
    key_mask: Tensor | None = None,
    scale: float | None = None,
    causal: bool = False,
    return_counts: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Row entropies of ``softmax(q k^T * scale / t + mask)`` without materialising the full attention map.

    The logits are built ``chunk_size`` query rows at a time and reduced in place, so peak memory is
    :math:`O(\text{batch} \cdot \text{chunk} \cdot N_k)` instead of :math:`O(\text{batch} \cdot N_q \cdot N_k)`
    (masks are sliced per chunk as well; ``causal`` and ``key_mask`` never build an ``N_q x N_k`` tensor). Row entropy
    :math:`H_i = \operatorname{logsumexp}_j(s_{ij}) - \sum_j p_{ij} s_{ij}` (Jha & Reagen 2025, Eq. 9-10) is
    computed from the max-shifted logits. Differentiable w.r.t. ``q``, ``k`` and ``temperature`` (each chunk keeps its
    own graph), but meant to be run under ``torch.no_grad()`` for monitoring.

    Args:
        q: queries, shape ``(..., N_q, d)`` (e.g. ``(batch, heads, N_q, d)``).
        k: keys, shape ``(..., N_k, d)`` with batch dimensions broadcastable against ``q``'s.
        mask: boolean (``True`` = may attend) or additive floating mask broadcastable to ``(..., N_q, N_k)``.
        temperature: softmax temperature :math:`t`, a float or a tensor broadcastable to the batch dimensions
            ``q.shape[:-2]`` (shape ``(heads,)`` gives one temperature per head). ``None`` means 1. A temperature per
            query row (the paper's :math:`t \in \mathbb{R}^{H \times T}`) is folded into ``q`` by the caller.
        chunk_size: number of query rows per chunk.
        key_mask: boolean ``(..., N_k)``, ``True`` = the key may be attended (e.g. ``~key_padding_mask``), broadcast
            over the queries.
        scale: logit scale; ``None`` uses :math:`1/\sqrt{d}` as in scaled dot-product attention.
        causal: also mask keys after the query (row ``i`` sees keys ``0..i``), without building an ``N x N`` mask.
        return_counts: also return the number of valid keys of every row (its maximal entropy is their ``log``).

    Returns:
        Entropies in nats, shape ``(..., N_q)``, in float32 (float64 if the inputs are float64); rows with no valid
        key have entropy 0. With ``return_counts``, ``(entropies, counts)`` with integer counts of the same shape.

    Raises:
        TypeError: ``q``/``k``/masks are not tensors of a supported dtype.
        ValueError: NaN/Inf in ``q``/``k``, no query or no key, shapes that do not match, masks that do not broadcast,
            ``chunk_size < 1``,
            a ``temperature`` that is not finite and > 0, a ``scale`` that is not finite.

    Example:
        >>> q, k = torch.zeros(2, 5, 8), torch.randn(2, 5, 8)
        >>> attention_entropy_from_qk(q, k, causal=True)[0]  # zero queries: uniform rows, log(i + 1)
        tensor([0.0000, 0.6931, 1.0986, 1.3863, 1.6094])
    """
    check_tensor("q", q, ndim=tuple(range(2, 9)))
    check_tensor("k", k, ndim=tuple(range(2, 9)))
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension, got {tuple(q.shape)} and {tuple(k.shape)}")
    try:
        batch_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError as err:
        raise ValueError(f"batch dimensions of q {tuple(q.shape)} and k {tuple(k.shape)} do not broadcast") from err
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    if num_queries < 1 or num_keys < 1:
        raise ValueError(
            f"q and k must have at least one query and one key (dim -2), got shapes {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    if mask is not None:
        mask = _check_mask("mask", mask, batch_shape, num_queries, num_keys)
    if key_mask is not None:
        if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
            raise TypeError(f"key_mask must be a bool tensor or None, got {getattr(key_mask, 'dtype', key_mask)!r}")
        key_mask = _check_mask("key_mask", key_mask.unsqueeze(-2), batch_shape, num_queries, num_keys)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    factor = (1.0 / math.sqrt(q.shape[-1])) if scale is None else check_number("scale", scale)
    q = q.to(dtype) * factor
    if temperature is not None:
        if not isinstance(temperature, Tensor):
            check_range("temperature", temperature, 0.0, low_inclusive=False)
        t = torch.as_tensor(temperature, dtype=dtype, device=q.device)
        try:
            torch.broadcast_shapes(t.shape, batch_shape)
        except RuntimeError as err:
            raise ValueError(
                f"temperature of shape {tuple(t.shape)} must broadcast to the batch dimensions {tuple(batch_shape)}"
            ) from err
        if not bool((t.detach() > 0).all()) or not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"temperature must be finite and > 0, got minimum {float(t.detach().min())}")
        q = q / t[..., None, None]
    k_t = k.to(dtype).transpose(-1, -2)
    entropies, counts = [], []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        logits = q[..., start:stop, :] @ k_t
        if mask is not None:
            logits = logits + additive_mask(mask if mask.shape[-2] == 1 else mask[..., start:stop, :], dtype)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask, -torch.inf)
        if causal:
            logits = logits.masked_fill(~_causal_rows(start, stop, num_keys, q.device), -torch.inf)
        if return_counts:
            counts.append((logits > -torch.inf).sum(-1))
        entropies.append(_entropy_from_logits(logits, in_place=True))
    entropy = torch.cat(entropies, dim=-1)
    return (entropy, torch.cat(counts, dim=-1)) if return_counts else entropy


def _check_mha_mask(name: str, mask: Tensor, shapes: tuple[tuple[int, ...], ...]) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(mask.shape)}")


def mha_mask_views(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    *,
    batch_size: int,
    num_heads: int,
    num_queries: int,
    num_keys: int,
) -> tuple[Tensor | None, Tensor | None]:
    """Check ``nn.MultiheadAttention``-style masks and reshape them to 4-D views, without merging them.

    Args:
        key_padding_mask: ``(batch, N_k)``, boolean ``True`` = padding, or additive.
        attn_mask: ``(N_q, N_k)`` or ``(batch * heads, N_q, N_k)``, boolean ``True`` = not allowed, or additive.
        batch_size: batch size.
        num_heads: number of heads.
        num_queries: number of queries ``N_q``.
        num_keys: number of keys ``N_k``.

    Returns:
        ``(padding, attn)``: ``key_padding_mask`` viewed as ``(batch, 1, 1, N_k)`` and ``attn_mask`` as
        ``(1 or batch, 1 or heads, N_q, N_k)``, still in the ``nn.MultiheadAttention`` convention (or ``None``).

    Raises:
        TypeError: a mask that is not a bool/floating tensor.
        ValueError: a mask of the wrong shape.

    Example:
        >>> padding, attn = mha_mask_views(torch.tensor([[False, True]]), None, batch_size=1, num_heads=2,
        ...                                num_queries=2, num_keys=2)
        >>> padding.shape, attn
        (torch.Size([1, 1, 1, 2]), None)
    """
    padding = attn = None
    if attn_mask is not None:
        shapes = ((num_queries, num_keys), (batch_size * num_heads, num_queries, num_keys))
        _check_mha_mask("attn_mask", attn_mask, shapes)
        batch, heads = (batch_size, num_heads) if attn_mask.dim() == 3 else (1, 1)
        attn = attn_mask.reshape(batch, heads, num_queries, num_keys)
    if key_padding_mask is not None:
        _check_mha_mask("key_padding_mask", key_padding_mask, ((batch_size, num_keys),))
        padding = key_padding_mask.view(batch_size, 1, 1, num_keys)
    return padding, attn


def merge_attention_masks(
    padding: Tensor | None,
    attn: Tensor | None,
    *,
    num_queries: int,
    num_keys: int,
    is_causal: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor | None:
    """Merge the 4-D views of :func:`mha_mask_views` into one additive mask (``-inf`` = not allowed).

    Args:
        padding: ``(batch, 1, 1, N_k)`` key padding view (boolean ``True`` = padding, or additive) or ``None``.
        attn: ``(1 or batch, 1 or heads, N_q, N_k)`` attention-mask view (boolean ``True`` = not allowed, or additive).
        num_queries: number of queries ``N_q``.
        num_keys: number of keys ``N_k``.
        is_causal: without ``attn``, build the causal mask (row ``i`` sees keys ``0..i``).
        dtype: dtype of the result.
        device: device of the causal mask.

    Returns:
        A tensor broadcastable to ``(batch, heads, N_q, N_k)``, or ``None`` when nothing is masked.

    Example:
        >>> merge_attention_masks(None, None, num_queries=2, num_keys=2, is_causal=True)
        tensor([[[[0., -inf],
                  [0., 0.]]]])
    """
    merged: Tensor | None = None
    if attn is not None:
        merged = additive_mask(attn, dtype, true_means="masked")
    elif is_causal:
        merged = additive_mask(
            torch.ones(1, 1, num_queries, num_keys, dtype=torch.bool, device=device).triu(1), dtype, true_means="masked"
        )
    if padding is not None:
        pad = additive_mask(padding, dtype, true_means="masked")
        merged = pad if merged is None else merged + pad
    return merged


def row_entropy_bounds(
    counts: Tensor,
    key_padding_mask: Tensor | None = None,
    *,
    self_attention: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Maximal entropy ``log(#valid keys)`` of every attention row and which rows count.

    Args:
        counts: number of valid keys of every row, shape ``(batch, 1 or heads, N_q)``.
        key_padding_mask: the ``(batch, N_k)`` padding mask of the call (``True`` or ``-inf`` = padding).
        self_attention: queries are the keys; padded query positions then do not count.
        dtype: floating dtype of ``max_entropy``.

    Returns:
        ``(max_entropy, row_mask)``, both of the shape of ``counts``; a row counts when it has a valid key (and,
        for self-attention, is not padding).

    Example:
        >>> row_entropy_bounds(torch.tensor([[[1, 2, 3]]]), torch.tensor([[False, False, True]]), self_attention=True)
        (tensor([[[0.0000, 0.6931, 1.0986]]]), tensor([[[ True,  True, False]]]))
    """
    max_entropy = max_attention_entropy(counts.to(dtype))
    row_mask = counts > 0
    if self_attention and key_padding_mask is not None and key_padding_mask.shape[-1] == counts.shape[-1]:
        padded = key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask == -torch.inf
        row_mask = row_mask & ~padded.view(counts.shape[0], 1, counts.shape[-1])
    return max_entropy, row_mask


def max_attention_entropy(counts: Tensor) -> Tensor:
    """Maximal entropy ``log(n)`` of rows with ``n`` valid keys (0 for empty rows), in ``counts``' floating dtype.

    Example:
        >>> max_attention_entropy(torch.tensor([0, 1, 4]))
        tensor([0.0000, 0.0000, 1.3863])
    """
    counts = counts if counts.is_floating_point() else counts.float()
    return torch.log(counts.clamp_min(1.0))


def head_entropy_totals(
    entropy: Tensor, max_entropy: Tensor, row_mask: Tensor | None = None, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Per-head sums of row entropies (nats, or :math:`H / E^{\max}` with ``normalize``) and numbers of rows counted.

    Args:
        entropy: row entropies, shape ``(..., batch, heads, N_q)`` (a leading layer dimension is kept).
        max_entropy: :math:`E^{\max} = \log(\#\text{valid keys})` per row, broadcastable to ``entropy``.
        row_mask: rows that count, broadcastable to ``entropy`` (``None``: all). With ``normalize`` rows with
            :math:`E^{\max} = 0` (a single valid key: entropy and maximum both 0) are left out as well.
        normalize: divide each row's entropy by its :math:`E^{\max}`.

    Returns:
        ``(total, count)`` reduced over the batch and query dimensions, shape ``(..., heads)``, in ``entropy``'s dtype.

    Example:
        >>> e_max = torch.log(torch.tensor([1.0, 2.0, 4.0])).view(1, 1, 3)
        >>> head_entropy_totals(0.5 * e_max, e_max, normalize=True)
        (tensor([1.]), tensor([2.]))
    """
    max_entropy = max_entropy.to(entropy.dtype).expand_as(entropy)
    counted = torch.ones_like(entropy, dtype=torch.bool) if row_mask is None else row_mask.expand_as(entropy)
    if normalize:
        counted = counted & (max_entropy > 0)
        entropy = entropy / max_entropy.clamp_min(torch.finfo(entropy.dtype).tiny)
    values = torch.where(counted, entropy, torch.zeros((), dtype=entropy.dtype, device=entropy.device))
    return values.sum(dim=(-3, -1)), counted.to(entropy.dtype).sum(dim=(-3, -1))


def head_entropy_summary(entropy: Tensor, max_entropy: Tensor, row_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Per-head mean entropy and mean normalised entropy :math:`H / E^{\max}` over the rows that count.

    Args:
        entropy: row entropies, shape ``(batch, heads, N)``.
        max_entropy: :math:`E^{\max}` per row, broadcastable to ``entropy``.
        row_mask: rows that count, broadcastable to ``entropy`` (see :func:`head_entropy_totals`).

    Returns:
        ``(mean_entropy, mean_normalized)``, both of shape ``(heads,)`` (0 for a head without rows).

    Example:
        >>> e_max = torch.log(torch.tensor([1.0, 2.0, 4.0])).view(1, 1, 3)
        >>> head_entropy_summary(0.5 * e_max.expand(1, 2, 3), e_max)
        (tensor([0.3466, 0.3466]), tensor([0.5000, 0.5000]))
    """
    entropy, max_entropy = entropy.detach(), max_entropy.detach()
    total, count = head_entropy_totals(entropy, max_entropy, row_mask)
    total_normalized, count_normalized = head_entropy_totals(entropy, max_entropy, row_mask, normalize=True)
    return total / count.clamp_min(1.0), total_normalized / count_normalized.clamp_min(1.0)


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
    valid = _valid_keys(mask, attn_probs.shape, attn_probs.device)
    if valid is None:
        check_probabilities("attn_probs", attn_probs, -1, hint="pass softmax outputs")
        p = upcast(attn_probs, torch.float64)
        row_entropy = plogp_entropy(p, dim=-1)
        num_keys = torch.full_like(row_entropy, float(p.shape[-1]))
    else:
        kept = attn_probs.masked_fill(~valid, 0.0)  # in the input dtype: the sum tolerance is the dtype's
        num_keys = valid.expand(attn_probs.shape).sum(dim=-1).to(torch.float64)
        check_probabilities(
            "attn_probs",
            kept,
            -1,
            hint="rows must sum to 1 over their valid keys; pass softmax outputs",
            rows=num_keys > 0,
        )
        p = upcast(kept, torch.float64)
        row_entropy = plogp_entropy(p, dim=-1)
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
            ``nn.MultiheadAttention``'s boolean ``attn_mask``). Probability mass on masked keys is ignored; every
            row with a valid key must sum to 1 over its valid keys. Rows without valid keys (padded queries) are
            left out of the mean, whatever they hold.
        normalize: divide each row's entropy by ``log`` of its number of valid keys. Rows with a single valid key
            (entropy and maximum both 0) are then left out of the mean.

    Returns:
        float64 tensor of shape ``(H,)`` (4-D input) or ``(L, H)`` (5-D input).

    Raises:
        TypeError: if ``attn_probs`` is not a floating tensor or ``mask`` is not a bool tensor / ``"causal"``.
        ValueError: on a wrong rank, NaN/Inf, entries outside [0, 1], a row that does not sum to 1 over its valid
            keys (tolerance 1e-3; 1e-2 for float16, 2e-2 for bfloat16: unnormalised maps would give wrong, even
            negative, entropies), a mask that does not broadcast, or when a head has no row to average (e.g.
            ``normalize=True`` with a single key).

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
        raise ValueError(
            "attention_entropy has no query row to average for some head: every row of attn_probs is masked by mask "
            "(or has a single key, left out with normalize=True)"
        )
    return total / count

r"""Multi-head attention with a learnable temperature per head that records the entropy of its attention rows.

Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), parameterise the attention of head :math:`h` with a
learnable temperature :math:`t_h`,

.. math:: \mathbf{A}^{(h)} = \operatorname{softmax}\!\Big(\frac{\mathbf{Q}^{(h)} \mathbf{K}^{(h)\top}}{t_h \sqrt{d_k}}
    + \mathbf{M}\Big), \qquad \text{output} = \operatorname{concat}_h(\mathbf{A}^{(h)} \mathbf{V}^{(h)})\,W_O,

and regularise the Shannon entropy of every attention row (see :mod:`lightning_info.losses.entropy_regularizer`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_info._internal.validation import check_int, check_range
from lightning_info.attention.functional import merge_attention_masks, row_entropy_bounds

__all__ = ["EntropyGuidedAttention"]

_EXTRA_PARAMETERS = ("log_temperature", "entropy_threshold")


def _keep_module_call(module: nn.Module, args: tuple[Any, ...]) -> None:
    """No-op pre-hook: ``nn.TransformerEncoderLayer`` skips its fused fast path when a submodule has hooks."""
    return None


class EntropyGuidedAttention(nn.MultiheadAttention):
    r"""Drop-in ``nn.MultiheadAttention`` with learnable per-head temperature :math:`t_h` and row-entropy recording.

    It subclasses ``nn.MultiheadAttention``: same constructor arguments (minus ``add_bias_kv``/``add_zero_attn``),
    parameter names, forward signature and return value, so ``load_state_dict`` from an ``nn.MultiheadAttention``
    works (the two extra parameters keep their initial values when absent) and, at :math:`t_h = 1`, outputs match.

    Each forward stores, for the regularizer and the monitors:

    - ``last_entropy``: entropy :math:`H` of every attention row, shape ``(batch, heads, N_q)`` (with its graph;
      meaningless for rows outside ``last_row_mask``, e.g. rows without a valid key, whose output is the mean
      value where ``nn.MultiheadAttention`` returns NaN);
    - ``last_max_entropy``: :math:`\log(\#\text{valid keys})` of every row, shape ``(batch, 1, N_q)`` (or
      ``(batch, heads, N_q)`` with a per-head ``attn_mask``);
    - ``last_row_mask``: rows that count (a valid key exists and, for self-attention with ``key_padding_mask``,
      the query is not padding), same shape as ``last_max_entropy``.

    Args:
        embed_dim: total model dimension.
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: dropout probability on the attention weights.
        bias: add biases to the input/output projections.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``embed_dim``).
        batch_first: inputs are ``(batch, seq, feature)`` (default here ``True``; ``nn.MultiheadAttention``'s is
            ``False``: pass ``batch_first=False`` for its layout).
        learnable_temperature: train :math:`t_h` (parameterised as :math:`t_h = e^{\tau_h}`, so it stays positive).
        temperature_init: initial :math:`t_h` (> 0).
        threshold_init: initial entropy threshold :math:`\theta_h` (fraction of the maximal entropy, in [0, 1]) used
            by :class:`~lightning_info.losses.EntropyRegularizer`.
        learnable_threshold: train :math:`\theta_h` (the paper learns one per head; only do this together with the
            regularizer, otherwise it receives no gradient).
        record_entropy: compute and store the row entropies in every forward.
        device: parameter device.
        dtype: parameter dtype.

    Raises:
        ValueError: ``embed_dim`` not divisible by ``num_heads``, non-positive ``temperature_init``,
            ``threshold_init`` outside [0, 1], or a mask of the wrong shape in ``forward``.

    Example:
        >>> attn = EntropyGuidedAttention(16, num_heads=4)
        >>> x = torch.randn(2, 5, 16)
        >>> out, weights = attn(x, x, x)
        >>> out.shape, weights.shape, attn.last_entropy.shape
        (torch.Size([2, 5, 16]), torch.Size([2, 5, 5]), torch.Size([2, 4, 5]))
    """

    last_entropy: Tensor | None
    last_max_entropy: Tensor | None
    last_row_mask: Tensor | None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        learnable_temperature: bool = True,
        temperature_init: float = 1.0,
        threshold_init: float = 0.5,
        learnable_threshold: bool = False,
        record_entropy: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        embed_dim = check_int("embed_dim", embed_dim, min_value=1)
        num_heads = check_int("num_heads", num_heads, min_value=1)
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim}, num_heads={num_heads}"
            )
        check_range("dropout", dropout, 0.0, 1.0)
        check_range("temperature_init", temperature_init, 0.0, low_inclusive=False)
        check_range("threshold_init", threshold_init, 0.0, 1.0)
        super().__init__(
            embed_dim, num_heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first,
            device=device, dtype=dtype,
        )  # fmt: skip
        factory: dict[str, Any] = {"device": self.out_proj.weight.device, "dtype": self.out_proj.weight.dtype}
        self.log_temperature = nn.Parameter(
            torch.full((num_heads,), math.log(temperature_init), **factory), requires_grad=learnable_temperature
        )
        self.entropy_threshold = nn.Parameter(
            torch.full((num_heads,), float(threshold_init), **factory), requires_grad=learnable_threshold
        )
        self.record_entropy = record_entropy
        self.last_entropy = self.last_max_entropy = self.last_row_mask = None
        self.register_forward_pre_hook(_keep_module_call)

    @property
    def temperature(self) -> Tensor:
        r"""Per-head temperatures :math:`t_h = e^{\tau_h}`, shape ``(num_heads,)``."""
        return self.log_temperature.exp()

    def clear_entropy(self) -> None:
        """Drop the stored entropies (and the graph they hold)."""
        self.last_entropy = self.last_max_entropy = self.last_row_mask = None

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name in _EXTRA_PARAMETERS:  # an nn.MultiheadAttention state dict has no temperature / threshold
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Same arguments and return value as ``nn.MultiheadAttention.forward``.

        ``is_causal=True`` without ``attn_mask`` builds the causal mask (``nn.MultiheadAttention`` raises instead).
        """
        batched = query.dim() == 3
        self_attention = query is key
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        # now (seq, batch, feature), as in nn.functional.multi_head_attention_forward
        n_q, bsz, _ = query.shape
        n_k = key.shape[0]
        heads, head_dim = self.num_heads, self.head_dim
        mask = merge_attention_masks(
            key_padding_mask,
            attn_mask,
            batch_size=bsz,
            num_heads=self.num_heads,
            num_queries=n_q,
            num_keys=n_k,
            is_causal=is_causal,
            dtype=query.dtype if query.is_floating_point() else torch.float32,
            device=query.device,
        )

        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b_q).reshape(n_q, bsz, heads, head_dim).permute(1, 2, 0, 3)
        k = F.linear(key, w_k, b_k).reshape(n_k, bsz, heads, head_dim).permute(1, 2, 3, 0)
        v = F.linear(value, w_v, b_v).reshape(n_k, bsz, heads, head_dim).permute(1, 2, 0, 3)

        scale = (1.0 / math.sqrt(head_dim)) / self.temperature.to(q.dtype)
        logits = (q * scale[:, None, None]) @ k  # (batch, heads, N_q, N_k)
        if mask is not None:  # finite: masked entries get p = 0 and log p finite, so p log p = 0 below
            logits = logits + mask.clamp_min(torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1)
        if self.record_entropy:  # H = -sum_j p_j log p_j (fused log_softmax: faster on CPU than logsumexp + exp)
            entropy = -(weights * torch.log_softmax(logits, dim=-1)).sum(-1)
            self._record(entropy.clamp_min(0.0), mask, key_padding_mask, bsz, n_q, n_k, self_attention)
        if self.training and self.dropout > 0.0:
            weights = F.dropout(weights, p=self.dropout)
        out = (weights @ v).permute(2, 0, 1, 3).reshape(n_q, bsz, self.embed_dim)
        out = self.out_proj(out)
        out = out.transpose(0, 1) if self.batch_first and batched else out
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        returned = weights.mean(dim=1) if average_attn_weights else weights
        return out, returned if batched else returned.squeeze(0)

    def _record(
        self,
        entropy: Tensor,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
        bsz: int,
        n_q: int,
        n_k: int,
        self_attention: bool,
    ) -> None:
        self.last_max_entropy, self.last_row_mask = row_entropy_bounds(
            mask,
            key_padding_mask,
            batch_size=bsz,
            num_queries=n_q,
            num_keys=n_k,
            self_attention=self_attention,
            dtype=entropy.dtype,
            device=entropy.device,
        )
        self.last_entropy = entropy

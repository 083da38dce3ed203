r"""Multi-head attention with a learnable softmax temperature that records the entropy of its attention rows.

Jha & Reagen, "Entropy-Guided Attention for Private LLMs" (2025), Sec. 4 and Appendix A, give every softmax of head
:math:`h` a learnable temperature (their :math:`t \in \mathbb{R}^{H \times T}`, one per head and query position
:math:`i`):

.. math:: a^{(h)}_{ij}(t) = \operatorname{softmax}_j\!\Big(\frac{(X_i W_Q)(X_j W_K)^\top}{t_{h,i} \sqrt{d_k}}
    + M_{ij}\Big), \qquad \text{output} = \operatorname{concat}_h(\mathbf{A}^{(h)} X W_V)\,W_O,

so :math:`t > 1` spreads a row (raises its entropy) and :math:`t < 1` sharpens it. The row entropies feed the
regularizer of :mod:`lightning_info.functional.entropy_regularizer`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_int, check_range
from lightning_info.functional.attention import merge_attention_masks, mha_mask_views, row_entropy_bounds

__all__ = ["EntropyGuidedAttention"]

_EXTRA_PARAMETERS = ("log_temperature", "entropy_threshold")


def _keep_module_call(module: nn.Module, args: tuple[Any, ...]) -> None:
    """No-op pre-hook: ``nn.TransformerEncoderLayer`` skips its fused fast path when a submodule has hooks."""
    return None


class EntropyGuidedAttention(nn.MultiheadAttention):
    r"""Drop-in ``nn.MultiheadAttention`` with a learnable softmax temperature :math:`t` and row-entropy recording.

    It subclasses ``nn.MultiheadAttention``: same constructor arguments (minus ``add_bias_kv``/``add_zero_attn``),
    parameter names, forward signature and return value, so ``load_state_dict`` from an ``nn.MultiheadAttention``
    works (the two extra parameters keep their initial values when absent) and, at :math:`t = 1`, outputs and
    gradients match. Inside ``nn.TransformerEncoderLayer`` the fused inference path is never taken (it would skip
    this module); in ``nn.TransformerEncoder`` build it with ``enable_nested_tensor=False`` (the callback does).

    Each forward stores, for the regularizer and the monitors:

    - ``last_entropy``: entropy :math:`H` of every attention row, shape ``(batch, heads, N_q)`` (with its graph in
      training mode, detached in eval mode; meaningless for rows outside ``last_row_mask``, e.g. rows without a
      valid key, whose output is the mean value where ``nn.MultiheadAttention`` returns NaN);
    - ``last_max_entropy``: :math:`\log(\#\text{valid keys})` of every row, shape ``(batch, 1, N_q)`` (or
      ``(batch, heads, N_q)`` with a per-head ``attn_mask``);
    - ``last_row_mask``: rows that count (a valid key exists and, for self-attention with ``key_padding_mask``,
      the query is not padding), same shape as ``last_max_entropy``;
    - ``last_threshold``: the thresholds :math:`\theta_h` this forward used, for the regularizer (read in the
      forward, where FSDP2/FSDP1 hold the full parameter: after it they hold shards).

    Args:
        embed_dim: total model dimension.
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: dropout probability on the attention weights.
        bias: add biases to the input/output projections.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``embed_dim``).
        batch_first: inputs are ``(batch, seq, feature)`` (default here ``True``; ``nn.MultiheadAttention``'s is
            ``False``: pass ``batch_first=False`` for its layout).
        learnable_temperature: train :math:`t` (parameterised as :math:`t = e^{\tau}` so it stays positive; the
            paper does not say how it keeps :math:`t > 0`).
        temperature_init: initial :math:`t` (> 0). 1 makes the module equal to ``nn.MultiheadAttention``; the paper
            initialises :math:`t` to 1e-2 (CodeParrot) and 1e-1 (Languini).
        temperature_positions: ``None``: one temperature per head, shape ``(heads,)``; an int ``T``: the paper's
            :math:`t \in \mathbb{R}^{H \times T}`, one per head and query position (then at most ``T`` queries).
        threshold_init: initial entropy threshold :math:`\theta_h` (the paper's ``reg_threshold_weights``, a fraction
            of the maximal entropy, in [0, 1]) used by :class:`~lightning_info.losses.EntropyRegularizer`.
        learnable_threshold: train :math:`\theta_h` (the paper learns one per head and layer; only with the
            regularizer, otherwise it receives no gradient).
        record_entropy: compute and store the row entropies in every forward.
        device: parameter device.
        dtype: parameter dtype.

    Raises:
        ValueError: ``embed_dim`` not divisible by ``num_heads``, non-positive ``temperature_init``,
            ``threshold_init`` outside [0, 1], or, in ``forward``, a mask of the wrong shape, more queries than
            ``temperature_positions`` or nested-tensor inputs.

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
    last_threshold: Tensor | None

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
        temperature_positions: int | None = None,
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
        if temperature_positions is not None:
            temperature_positions = check_int("temperature_positions", temperature_positions, min_value=1)
        check_range("threshold_init", threshold_init, 0.0, 1.0)
        super().__init__(
            embed_dim, num_heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first,
            device=device, dtype=dtype,
        )  # fmt: skip
        factory: dict[str, Any] = {"device": self.out_proj.weight.device, "dtype": self.out_proj.weight.dtype}
        shape = (num_heads,) if temperature_positions is None else (num_heads, temperature_positions)
        self.temperature_positions = temperature_positions
        self.log_temperature = nn.Parameter(
            torch.full(shape, math.log(temperature_init), **factory), requires_grad=learnable_temperature
        )
        self.entropy_threshold = nn.Parameter(
            torch.full((num_heads,), float(threshold_init), **factory), requires_grad=learnable_threshold
        )
        self.record_entropy = record_entropy
        self.last_entropy = self.last_max_entropy = self.last_row_mask = self.last_threshold = None
        self.register_forward_pre_hook(_keep_module_call)

    @property
    def temperature(self) -> Tensor:
        r"""Temperatures :math:`t = e^{\tau}`, shape ``(heads,)`` or ``(heads, temperature_positions)``."""
        return self.log_temperature.exp()

    def row_temperature(self, num_queries: int) -> Tensor:
        """Temperature of every head and query row, shape ``(heads, 1)`` or ``(heads, num_queries)``."""
        if self.temperature_positions is None:
            return self.temperature[:, None]
        if num_queries > self.temperature_positions:
            raise ValueError(
                f"got {num_queries} queries but temperature_positions={self.temperature_positions} "
                "(one temperature per query position)"
            )
        return self.temperature[:, :num_queries]

    def clear_entropy(self) -> None:
        """Drop the stored entropies (and the graph they hold)."""
        self.last_entropy = self.last_max_entropy = self.last_row_mask = self.last_threshold = None

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

    def _project(self, query: Tensor, key: Tensor, value: Tensor, packed: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Input projections of ``(N, batch, feature)`` inputs, as ``(batch * heads, N, head_dim)`` tensors."""
        bias = self.in_proj_bias
        if packed and self._qkv_same_embed_dim:  # self-attention: one GEMM, as nn.MultiheadAttention does
            q, k, v = F.linear(query, self.in_proj_weight, bias).unflatten(-1, (3, self.embed_dim)).unbind(-2)
        else:
            if self._qkv_same_embed_dim:
                w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            else:
                w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
            b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        heads, head_dim = self.num_heads, self.head_dim

        def split(t: Tensor) -> Tensor:
            return t.reshape(t.shape[0], t.shape[1] * heads, head_dim).transpose(0, 1)

        return split(q), split(k), split(v)

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

        As there, ``is_causal`` is a hint when ``attn_mask`` is given (the mask is used); without ``attn_mask`` it
        builds the causal mask (``nn.MultiheadAttention`` raises instead).
        """
        if query.is_nested or key.is_nested or value.is_nested:
            raise ValueError(
                "EntropyGuidedAttention does not take nested tensors; build nn.TransformerEncoder with "
                "enable_nested_tensor=False (EntropyGuidedAttentionCallback switches it off)"
            )
        batched = query.dim() == 3
        self_attention, packed = query is key, query is key and key is value
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
        row_temperature = self.row_temperature(n_q)
        padding, attn = mha_mask_views(
            key_padding_mask, attn_mask, batch_size=bsz, num_heads=heads, num_queries=n_q, num_keys=n_k
        )
        mask = merge_attention_masks(
            padding, attn, num_queries=n_q, num_keys=n_k, is_causal=is_causal, device=query.device,
            dtype=query.dtype if query.is_floating_point() else torch.float32,
        )  # fmt: skip

        q, k, v = self._project(query, key, value, packed)
        # (batch * heads, N, head_dim) as in nn.functional.multi_head_attention_forward; the temperature scales q
        scale = (1.0 / math.sqrt(head_dim)) / row_temperature.to(q.dtype)  # (heads, 1 or N_q)
        q = (q.view(bsz, heads, n_q, head_dim) * scale[..., None]).view(bsz * heads, n_q, head_dim)
        counts = None  # valid keys per row, before the mask is made finite
        if self.record_entropy:
            counts = torch.full((1, 1, n_q), n_k, device=q.device) if mask is None else (mask > -torch.inf).sum(-1)
        if mask is not None:  # finite: masked entries get p = 0 and log p finite, so p log p = 0 below
            mask = mask.to(q.dtype).clamp_min(torch.finfo(q.dtype).min)
        if mask is not None and mask.shape[:2] == (1, 1):
            logits = torch.baddbmm(mask[0], q, k.transpose(1, 2)).view(bsz, heads, n_q, n_k)
        else:
            logits = torch.bmm(q, k.transpose(1, 2)).view(bsz, heads, n_q, n_k)
            logits = logits if mask is None else logits + mask.to(logits.dtype)
        weights = torch.softmax(logits, dim=-1)
        if counts is not None:  # H = -sum_j p_j log p_j (fused log_softmax: faster on CPU than logsumexp + exp)
            source = upcast(logits)  # autocast: entropy in float32
            probs = weights if source is logits else torch.softmax(source, dim=-1)
            entropy = -(probs * torch.log_softmax(source, dim=-1)).sum(-1)
            self.last_max_entropy, row_mask = row_entropy_bounds(
                counts.expand(bsz, counts.shape[1], n_q),
                key_padding_mask,
                self_attention=self_attention,
                dtype=entropy.dtype,
            )
            entropy = entropy.clamp_min(0.0)
            # the graph is kept for the regularizer in training only: outside it, a stored graph would keep every
            # activation of the last forward alive until the next one
            self.last_row_mask, self.last_entropy = row_mask, entropy if self.training else entropy.detach()
            # a copy (with its graph): FSDP2 frees the full parameter's storage after the forward
            self.last_threshold = self.entropy_threshold.clone() if self.training else self.entropy_threshold.detach()
        if self.training and self.dropout > 0.0:
            weights = F.dropout(weights, p=self.dropout)
        out = torch.bmm(weights.view(bsz * heads, n_q, n_k), v)
        out = self.out_proj(out.transpose(0, 1).reshape(n_q * bsz, self.embed_dim)).view(n_q, bsz, self.embed_dim)
        out = out.transpose(0, 1) if self.batch_first and batched else out
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        returned = weights.mean(dim=1) if average_attn_weights else weights
        return out, returned if batched else returned.squeeze(0)

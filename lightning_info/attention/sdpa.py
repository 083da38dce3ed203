r"""Attention entropy and a learnable per-head temperature on any attention that calls SDPA.

Models that do not use ``nn.MultiheadAttention`` (Hugging Face transformers, timm-style blocks with a fused ``qkv``
Linear, hand-written attention) compute attention with :func:`torch.nn.functional.scaled_dot_product_attention`
(SDPA). An :class:`AttentionProbe` intercepts that call inside one chosen module, without editing the model:

- for a Hugging Face attention module (its forward calls ``ALL_ATTENTION_FUNCTIONS``) through the attention
  interface of :mod:`lightning_info.attention.hf` (the model is switched to the ``"lightning_info"`` implementation,
  which is SDPA plus the probe);
- for any other module by a forward pre-hook that enters a :class:`~torch.overrides.TorchFunctionMode` for the
  duration of that module's forward (thread-local and scoped to the module: SDPA calls elsewhere are untouched; it
  works whether the module calls ``F.scaled_dot_product_attention`` or imported the function by name).

The probe reads what SDPA receives — ``q`` and ``k`` after rotary embeddings, ``scale``, ``is_causal`` and
``attn_mask`` (boolean ``True`` = may attend, or additive, padding included), with fewer key heads for grouped-query
attention (``repeat_interleave`` semantics, as ``enable_gqa``) — and computes the row entropies of
:math:`\operatorname{softmax}(q k^\top \cdot \text{scale} / t_h + M)` chunked over queries
(:func:`~lightning_info.functional.attention_entropy_from_qk`): never an ``N x N`` map for the monitor, and for the
regularizer each chunk keeps nothing but views of its inputs and its entropies for backward, which recomputes the
chunk's attention and applies the analytic gradient :math:`\partial H_i / \partial s_{ij} = -p_{ij} (\log p_{ij} +
H_i)`, so memory stays :math:`O(B H c N)` for chunk size :math:`c`. The attention output itself is always computed
by SDPA; with a temperature, ``q`` is divided by :math:`t_h` first (Jha & Reagen 2025's parameterised attention),
which leaves the output bit-identical at :math:`t = 1`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint
from torch.utils.hooks import RemovableHandle

from lightning_info._internal.capture import resolve_module_names
from lightning_info._internal.validation import check_int, check_range
from lightning_info.functional.attention import (
    additive_mask,
    attention_entropy_from_qk,
    head_entropy_summary,
    max_attention_entropy,
)

__all__ = ["AttentionProbe", "EntropyRecorder", "SDPAProbes", "find_sdpa_attention", "sdpa_attention_entropy"]

_SDPA = F.scaled_dot_product_attention
_PROBE_ATTRIBUTE = "_lightning_info_probe"
_DOCS = "see docs/attention.md, section 'Hugging Face and SDPA models'"
Summary = tuple[Tensor, Tensor]


class EntropyRecorder(Protocol):
    """What the regularizer and the callbacks read: an ``EntropyGuidedAttention`` or an :class:`AttentionProbe`."""

    last_entropy: Tensor | None
    last_max_entropy: Tensor | None
    last_row_mask: Tensor | None
    last_threshold: Tensor | None  # the thresholds of the recorded forward (read while sharded engines unshard)

    @property
    def num_heads(self) -> int: ...

    @property
    def temperature(self) -> Tensor: ...

    @property
    def entropy_threshold(self) -> Tensor: ...

    def clear_entropy(self) -> None: ...


def sdpa_attention_entropy(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    chunk_size: int = 256,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Row entropies of the attention SDPA would compute from these arguments, chunked over the queries.

    With gradient enabled and an input that requires it, every chunk keeps only views of its inputs and its entropies
    for backward, which recomputes the chunk's softmax and applies :math:`\partial H_i / \partial s_{ij} = -p_{ij}
    (\log p_{ij} + H_i)` (an additive mask that requires gradient is checkpointed instead), so peak memory is that
    of one ``(batch, heads, chunk, N_k)`` chunk, in forward and in backward.

    Args:
        query: ``(batch, heads, N_q, d)``.
        key: ``(batch, heads_kv, N_k, d)``; ``heads_kv`` divides ``heads`` (grouped-query attention: key head
            ``h // (heads / heads_kv)`` serves query head ``h``, as SDPA's ``enable_gqa``).
        attn_mask: SDPA's mask, boolean (``True`` = may attend) or additive, broadcastable to
            ``(batch, heads, N_q, N_k)``.
        is_causal: SDPA's causal flag (row ``i`` sees keys ``0..i``; only without ``attn_mask``, as in SDPA).
        scale: SDPA's scale (``None``: :math:`1/\sqrt{d}`).
        chunk_size: query rows per chunk.

    Returns:
        ``(entropy, counts, row_mask)``, each ``(batch, heads, N_q)``: row entropies (nats), numbers of valid keys,
        and the rows that count (a valid key exists and, when ``N_q == N_k``, the query position is not padding: a
        key that no query may attend is taken as a padded position).

    Raises:
        ValueError: ``query``/``key`` not 4-D, head numbers that do not divide, or both a mask and ``is_causal``.

    Example:
        >>> q = torch.zeros(1, 2, 3, 4)
        >>> entropy, counts, rows = sdpa_attention_entropy(q, q[:, :1], is_causal=True)
        >>> entropy[0, 1], counts[0, 1]
        (tensor([0.0000, 0.6931, 1.0986]), tensor([1, 2, 3]))
    """
    if query.dim() != 4 or key.dim() != 4:
        raise ValueError(
            f"query and key must be (batch, heads, N, d) tensors, got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads != 0:
        raise ValueError(f"key heads ({kv_heads}) must divide query heads ({heads})")
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal cannot both be set (as in scaled_dot_product_attention)")
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    if kv_heads != heads:
        key = key.repeat_interleave(heads // kv_heads, dim=1)
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    grad = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    entropies, counts = [], []
    attended: Tensor | None = None  # keys some query may attend, (batch | 1, heads | 1, N_k)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        mask = None
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() < 2 or attn_mask.shape[-2] == 1 else attn_mask[..., start:stop, :]
            allowed = mask if mask.dtype == torch.bool else mask > -torch.inf
            seen = allowed.expand(*allowed.shape[:-2], stop - start, num_keys).any(-2)
            attended = seen if attended is None else attended | seen
        q_chunk = query[..., start:stop, :]
        causal_from = start if is_causal else None
        # causal: the chunk's rows see keys 0..stop-1 only, so the later keys (all masked) are not computed at all
        k_chunk = key[..., :stop, :] if is_causal else key
        if grad and mask is not None and mask.requires_grad:  # a learnt additive mask: autograd, checkpointed
            entropy, count = checkpoint(_chunk_entropy, q_chunk, k_chunk, mask, causal_from, scale, use_reentrant=False)
        elif grad:  # only views of the inputs and the entropies are kept for backward
            entropy, count = _ChunkEntropy.apply(q_chunk, k_chunk, mask, causal_from, scale)
        else:
            entropy, count = _chunk_entropy(q_chunk, k_chunk, mask, causal_from, scale)
        entropies.append(entropy)
        counts.append(count)
    entropy, count = torch.cat(entropies, -1), torch.cat(counts, -1)
    row_mask = count > 0
    if attended is not None and num_queries == num_keys:
        row_mask = row_mask & attended.expand(*attended.shape[:-1], num_keys)
    return entropy, count, row_mask.expand(entropy.shape)


def _chunk_entropy(
    query: Tensor, key: Tensor, mask: Tensor | None, causal_from: int | None, scale: float | None
) -> tuple[Tensor, Tensor]:
    """Entropies and valid-key counts of one chunk of query rows (the first is row ``causal_from`` if causal)."""
    if causal_from is not None:  # built here, so that a checkpoint does not keep it
        rows = torch.arange(causal_from, causal_from + query.shape[-2], device=query.device)[:, None]
        mask = torch.arange(key.shape[-2], device=query.device) <= rows
    result = attention_entropy_from_qk(query, key, mask, None, query.shape[-2], scale=scale, return_counts=True)
    return result  # type: ignore[return-value]


class _ChunkEntropy(torch.autograd.Function):
    r"""``_chunk_entropy`` with an analytic backward that keeps nothing chunk-sized.

    Backward recomputes the chunk's attention :math:`p = \operatorname{softmax}(s)` and applies
    :math:`\partial H_i / \partial s_{ij} = -p_{ij} (\log p_{ij} + H_i)`, then
    :math:`\partial s / \partial q = k \cdot \text{scale}`, :math:`\partial s / \partial k = q \cdot \text{scale}`:
    nothing chunk-sized lives between forward and backward, and backward runs no autograd graph.
    """

    @staticmethod
    def forward(
        ctx: Any, query: Tensor, key: Tensor, mask: Tensor | None, causal_from: int | None, scale: float | None
    ) -> tuple[Tensor, Tensor]:
        entropy, count = _chunk_entropy(query, key, mask, causal_from, scale)
        ctx.save_for_backward(query, key, mask, entropy)
        ctx.causal_from, ctx.scale = causal_from, scale
        ctx.mark_non_differentiable(count)
        return entropy, count

    @staticmethod
    def backward(
        ctx: Any, grad_entropy: Tensor, grad_count: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        query, key, mask, entropy = ctx.saved_tensors
        factor = 1.0 / math.sqrt(query.shape[-1]) if ctx.scale is None else ctx.scale
        q, k = query.to(entropy.dtype), key.to(entropy.dtype)  # the dtype the forward computed in
        logits = (q * factor) @ k.transpose(-1, -2)
        if mask is not None:
            logits = logits + additive_mask(mask, entropy.dtype)
        if ctx.causal_from is not None:
            rows = torch.arange(ctx.causal_from, ctx.causal_from + q.shape[-2], device=q.device)[:, None]
            logits = logits.masked_fill(torch.arange(k.shape[-2], device=q.device) > rows, -torch.inf)
        # log p = s - log z with s = logits - max and z = sum exp(s): one exp, no log of the map (-inf keys: p = 0)
        row_max = logits.amax(-1, keepdim=True)
        shifted = logits.sub_(row_max.masked_fill_(row_max == -torch.inf, 0.0))
        p = torch.exp(shifted)
        normalizer = p.sum(-1, keepdim=True)
        p.div_(normalizer).nan_to_num_(0.0)  # a row without a valid key: entropy 0, no gradient
        offset = torch.where(normalizer > 0, entropy[..., None] - normalizer.log(), 0.0)  # H - log z
        d_logits = shifted.clamp_min_(torch.finfo(shifted.dtype).min).add_(offset).mul_(p)  # p (log p + H)
        d_logits.mul_(-factor * grad_entropy[..., None])
        grad_query = grad_key = None
        if ctx.needs_input_grad[0]:
            grad_query = (d_logits @ k).sum_to_size(query.shape).to(query.dtype)
        if ctx.needs_input_grad[1]:
            grad_key = (d_logits.transpose(-1, -2) @ q).sum_to_size(key.shape).to(key.dtype)
        return grad_query, grad_key, None, None, None


def _unwrapped_names(module: nn.Module) -> tuple[str, ...]:
    forward = inspect.unwrap(type(module).forward)
    code = getattr(forward, "__code__", None)
    return () if code is None else code.co_names


def _kind(module: nn.Module) -> str | None:
    """``"hf"`` (calls transformers' attention interface), ``"sdpa"`` (calls SDPA by name) or ``None``."""
    names = _unwrapped_names(module)
    if "ALL_ATTENTION_FUNCTIONS" in names:
        return "hf"
    if "scaled_dot_product_attention" in names:
        return "sdpa"
    return None


def find_sdpa_attention(model: nn.Module, modules: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The attention modules a probe can intercept, in model order.

    Args:
        model: the model.
        modules: dotted names or globs (any module: every SDPA call inside its forward is intercepted); ``None``
            takes every module whose forward calls transformers' attention interface (``ALL_ATTENTION_FUNCTIONS``)
            or ``scaled_dot_product_attention`` by name, innermost ones only.

    Returns:
        ``(name, module)`` pairs (empty when nothing is found and ``modules`` is ``None``).

    Example:
        >>> from torch import nn
        >>> find_sdpa_attention(nn.Linear(2, 2))
        []
    """
    named = dict(model.named_modules())
    if modules is not None:
        return [(name, named[name]) for name in resolve_module_names(model, modules)]
    found = [name for name, module in named.items() if _kind(module) is not None]
    innermost = [n for n in found if not any(o.startswith(f"{n}.") for o in found if n)]
    return [(name, named[name]) for name in innermost]


def _num_heads(name: str, module: nn.Module) -> int:
    for attribute in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(
        f"attention module {name!r} ({type(module).__name__}) has no num_heads attribute (nor num_attention_heads, "
        "n_head, n_heads, config.num_attention_heads): set module.num_heads so that one temperature per head can be "
        f"created; {_DOCS}"
    )


class _Interceptor(TorchFunctionMode):
    """Routes SDPA calls made during one module's forward to its probe (thread-local, popped after the forward)."""

    def __init__(self, probe: AttentionProbe, temperature: bool) -> None:
        super().__init__()
        self.probe, self.temperature = probe, temperature

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is not _SDPA:
            return func(*args, **kwargs)
        return self.probe.attention(*args, temperature=self.temperature, **kwargs)


class AttentionProbe:
    r"""Interception state of one attention module (created by :class:`SDPAProbes`, kept on the module).

    It has the interface the entropy regularizer and the callbacks read from an
    :class:`~lightning_info.attention.EntropyGuidedAttention`: ``num_heads``, ``temperature``, ``entropy_threshold``,
    ``last_entropy`` / ``last_max_entropy`` / ``last_row_mask`` (recorded with their graph in ``"regularize"``
    mode) and ``clear_entropy()``; in ``"monitor"`` mode ``summary`` holds ``(mean entropy, mean normalised
    entropy)`` per head, computed without gradient.

    The temperature lives on the module as parameters (``log_temperature``, :math:`t = e^{\tau}`, and
    ``entropy_threshold`` :math:`\theta_h`), so optimizers, checkpoints and FSDP see them.
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module, self.name, self.kind = module, name, _kind(module) or "sdpa"
        self.modes: set[str] = set()
        self.chunk_size = 256
        self.max_samples: int | None = None
        self.summary: Summary | None = None
        self.last_entropy: Tensor | None = None
        self.last_max_entropy: Tensor | None = None
        self.last_row_mask: Tensor | None = None
        self.last_threshold: Tensor | None = None
        self.forwards = 0  # forwards and SDPA calls seen while recording: a forward without SDPA is an error
        self.calls = 0
        self._stack: list[_Interceptor | None] = []
        self._handles: list[RemovableHandle] = []
        if self.kind == "sdpa":
            self._handles = [
                module.register_forward_pre_hook(self._enter),
                module.register_forward_hook(self._exit, always_call=True),
            ]

    # --- the EntropyGuidedAttention-like interface ---------------------------------------------------------------
    @property
    def num_heads(self) -> int:
        """Number of query heads (from the module's attributes or config)."""
        return _num_heads(self.name, self.module)

    @property
    def log_temperature(self) -> nn.Parameter | None:
        """The module's ``log_temperature`` parameter, or ``None`` without a temperature."""
        value = getattr(self.module, "log_temperature", None)
        return value if isinstance(value, nn.Parameter) else None

    @property
    def temperature(self) -> Tensor:
        """Temperatures :math:`t`, ``(heads,)`` or ``(heads, positions)`` (ones without a temperature)."""
        log_t = self.log_temperature
        return torch.ones(self.num_heads) if log_t is None else log_t.exp()

    @property
    def entropy_threshold(self) -> Tensor:
        r"""The module's per-head threshold :math:`\theta_h` (registered by :meth:`add_temperature`)."""
        value = getattr(self.module, "entropy_threshold", None)
        if not isinstance(value, Tensor):
            raise RuntimeError(f"attention module {self.name!r} has no entropy_threshold; call add_temperature first")
        return value

    def clear_entropy(self) -> None:
        """Drop the recorded entropies (and the graph they hold)."""
        self.last_entropy = self.last_max_entropy = self.last_row_mask = self.last_threshold = None

    # --- temperature and recording ------------------------------------------------------------------------------
    def add_temperature(
        self,
        init: float = 1.0,
        positions: int | None = None,
        learnable: bool = True,
        threshold_init: float = 0.5,
        learnable_threshold: bool = True,
    ) -> None:
        """Register ``log_temperature`` and ``entropy_threshold`` on the module (kept if already there)."""
        check_range("temperature_init", init, 0.0, low_inclusive=False)
        check_range("threshold_init", threshold_init, 0.0, 1.0)
        if self.log_temperature is not None:
            return
        reference = next(self.module.parameters(), None)
        factory: dict[str, Any] = {"device": None if reference is None else reference.device}
        heads = self.num_heads
        shape = (heads,) if positions is None else (heads, check_int("temperature_positions", positions, min_value=1))
        self.module.register_parameter(
            "log_temperature", nn.Parameter(torch.full(shape, math.log(init), **factory), requires_grad=learnable)
        )
        self.module.register_parameter(
            "entropy_threshold",
            nn.Parameter(torch.full((heads,), float(threshold_init), **factory), requires_grad=learnable_threshold),
        )

    def scale_query(self, query: Tensor) -> Tensor:
        """Divide ``(..., heads, N, d)`` queries by the head's (and position's) temperature; unchanged without one."""
        log_t = self.log_temperature
        if log_t is None:
            return query
        t = log_t.exp()
        if t.ndim == 1:
            t = t[:, None]
        else:
            if query.shape[-2] > t.shape[-1]:
                raise ValueError(
                    f"{self.name!r} got {query.shape[-2]} queries but its temperature has {t.shape[-1]} positions"
                )
            t = t[:, : query.shape[-2]]
        return query / t[..., None].to(query.dtype)

    def recording(self) -> bool:
        """Whether the next SDPA call records entropies (regularize needs gradient; both need training mode)."""
        if not self.module.training:
            return False
        return "monitor" in self.modes or ("regularize" in self.modes and torch.is_grad_enabled())

    def attention(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        *,
        temperature: bool = True,
    ) -> Tensor:
        """SDPA with the temperature applied to ``query`` and, when recording, the row entropies stored."""
        if temperature:
            query = self.scale_query(query)
        extra = {"enable_gqa": True} if enable_gqa else {}
        out = _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    **extra)  # fmt: skip
        self.calls += 1
        if self.recording():
            self._record(query, key, attn_mask, bool(is_causal), scale)
        return out

    def _record(
        self, query: Tensor, key: Tensor, attn_mask: Tensor | None, is_causal: bool, scale: float | None
    ) -> None:
        if query.dim() != 4 or key.dim() != 4:
            raise ValueError(
                f"attention module {self.name!r} called scaled_dot_product_attention with query {tuple(query.shape)} "
                f"and key {tuple(key.shape)}; the entropy needs (batch, heads, N, d) tensors ({_DOCS})"
            )
        regularize = "regularize" in self.modes and torch.is_grad_enabled()
        if not regularize:
            keep = query.shape[0] if self.max_samples is None else min(query.shape[0], self.max_samples)
            query, key = query[:keep].detach(), key[:keep].detach()
            if attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[0] > 1:
                attn_mask = attn_mask[:keep]
        with torch.set_grad_enabled(regularize):
            entropy, counts, row_mask = sdpa_attention_entropy(query, key, attn_mask, is_causal, scale, self.chunk_size)
        max_entropy = max_attention_entropy(counts.to(entropy.dtype))
        if regularize:
            self.last_entropy, self.last_max_entropy, self.last_row_mask = entropy, max_entropy, row_mask
            threshold = getattr(self.module, "entropy_threshold", None)  # a copy: FSDP2 frees it after the forward
            self.last_threshold = threshold.clone() if isinstance(threshold, Tensor) else None
        if "monitor" in self.modes:
            self.summary = head_entropy_summary(entropy, max_entropy, row_mask)

    # --- hooks of non-Hugging-Face modules ----------------------------------------------------------------------
    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        record = self.recording()
        if not record and self.log_temperature is None:
            self._stack.append(None)
            return
        self.forwards += int(record)
        interceptor = _Interceptor(self, temperature=True)
        interceptor.__enter__()
        self._stack.append(interceptor)

    def _exit(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._stack:
            interceptor = self._stack.pop()
            if interceptor is not None:
                interceptor.__exit__(None, None, None)

    def check_intercepted(self) -> None:
        """Raise if the module ran while recording without calling SDPA (e.g. a fused kernel: no q/k exposed)."""
        forwards, calls = self.forwards, self.calls
        self.forwards = self.calls = 0
        if forwards > 0 and calls == 0:
            raise RuntimeError(
                f"attention module {self.name!r} ({type(self.module).__name__}) ran its forward without calling "
                "torch.nn.functional.scaled_dot_product_attention, so its queries and keys are not exposed (a fused "
                "kernel such as flash_attention_2, or a hand-written softmax); make it call SDPA (for Hugging Face "
                f"models: attn_implementation='sdpa'), or pass modules=[...] naming modules that do; {_DOCS}"
            )

    def remove(self) -> None:
        """Remove the hooks (the temperature parameters stay on the module)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self.module, _PROBE_ATTRIBUTE, None) is self:
            delattr(self.module, _PROBE_ATTRIBUTE)


def probe_of(module: nn.Module) -> AttentionProbe | None:
    """The probe attached to ``module`` (``None``: none)."""
    probe = getattr(module, _PROBE_ATTRIBUTE, None)
    return probe if isinstance(probe, AttentionProbe) else None


class SDPAProbes:
    """Probes on every SDPA / Hugging Face attention module of a model (shared by callbacks on the same modules).

    Args:
        model: the model (e.g. the ``LightningModule``).
        modules: names or globs of the modules (see :func:`find_sdpa_attention`); ``None``: found automatically.

    Raises:
        ValueError: nothing found, or a Hugging Face model whose attention implementation is a fused kernel that
            exposes no q/k (``flash_attention_*``, ``flex_attention``): the message names it and the alternative.

    Example:
        >>> class Attention(nn.Module):
        ...     num_heads = 2
        ...     def forward(self, x):
        ...         q = x.unflatten(-1, (2, -1)).transpose(1, 2)
        ...         return F.scaled_dot_product_attention(q, q, q, is_causal=True)
        >>> model = Attention().train()
        >>> probes = SDPAProbes(model)
        >>> probes.start("monitor")
        >>> _ = model(torch.randn(3, 5, 8))
        >>> [s[0].shape for s in probes.summaries()]
        [torch.Size([2])]
        >>> probes.release("monitor")
    """

    def __init__(self, model: nn.Module, modules: Sequence[str] | None = None) -> None:
        found = find_sdpa_attention(model, modules)
        if not found:
            raise ValueError(
                f"{type(model).__name__} has no attention module that calls scaled_dot_product_attention or "
                f"transformers' attention interface; name them with modules=[...] ({_DOCS})"
            )
        self.probes: list[AttentionProbe] = []
        for name, module in found:
            probe = probe_of(module)
            if probe is None:
                probe = AttentionProbe(module, name)
                setattr(module, _PROBE_ATTRIBUTE, probe)
            self.probes.append(probe)
        self._hf_restore: list[tuple[nn.Module, str | None]] = []
        if any(p.kind == "hf" for p in self.probes):
            from lightning_info.attention.hf import use_lightning_info_attention

            self._hf_restore = use_lightning_info_attention(model, [p.module for p in self.probes if p.kind == "hf"])

    def start(self, mode: str, max_samples: int | None = None, chunk_size: int = 256) -> None:
        """Record in ``mode`` (``"monitor"``: summaries without gradient; ``"regularize"``: entropies with it)."""
        for probe in self.probes:
            probe.modes.add(mode)
            probe.chunk_size = chunk_size
            if mode == "monitor":
                probe.max_samples, probe.summary = max_samples, None

    def stop(self, mode: str) -> None:
        """Stop recording in ``mode``."""
        for probe in self.probes:
            probe.modes.discard(mode)

    def summaries(self) -> list[Summary | None]:
        """Per-probe summaries of the last recorded call (``None``: not called); checks every probe intercepted."""
        for probe in self.probes:
            probe.check_intercepted()
        return [probe.summary for probe in self.probes]

    def release(self, mode: str) -> None:
        """Stop recording in ``mode``; remove idle probes without a temperature and restore Hugging Face models."""
        for probe in self.probes:
            probe.modes.discard(mode)
            probe.clear_entropy()
            if probe.modes:
                continue
            if probe.log_temperature is None:
                probe.remove()
        if all(p.log_temperature is None and not p.modes for p in self.probes):
            for model, implementation in self._hf_restore:
                model.set_attn_implementation(implementation)  # type: ignore[operator]
        self._hf_restore = []

"""Hugging Face transformers: the ``"lightning_info"`` attention implementation (SDPA plus the attention probe).

``transformers`` (the ``hf`` extra) lets a model select its attention function by name
(``AttentionInterface.register`` + ``model.set_attn_implementation``). The function registered here delegates to
transformers' own SDPA function (``sdpa_attention_forward``, so masks, GQA and causal handling are transformers')
and, for a module that has an :class:`~lightning_info.attention.sdpa.AttentionProbe`, divides the queries by the
module's per-head temperature and lets the probe see the SDPA call (q/k after rotary embeddings, scale, mask,
causal flag). Modules without a probe get plain SDPA. The mask function is SDPA's (boolean masks, padding included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lightning_info.attention.sdpa import _DOCS, _Interceptor, probe_of

__all__ = ["ATTENTION_NAME", "lightning_info_attention", "register_attention", "use_lightning_info_attention"]

ATTENTION_NAME = "lightning_info"
_COMPATIBLE = (None, "eager", "sdpa", ATTENTION_NAME)


def lightning_info_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """Transformers' attention-function signature: ``(attn_output, attn_weights)``, computed by SDPA.

    ``query``/``key``/``value`` are ``(batch, heads, N, d)`` (``key``/``value`` may have fewer heads: GQA).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    probe = probe_of(module)
    if probe is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    query = probe.scale_query(query)  # the queries of every head: before transformers packs or repeats anything
    if not probe.recording():
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    probe.forwards += 1
    with _Interceptor(probe, temperature=False):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )


def register_attention() -> None:
    """Register :func:`lightning_info_attention` and SDPA's mask function under ``"lightning_info"`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, lightning_info_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def use_lightning_info_attention(model: nn.Module, modules: Sequence[nn.Module]) -> list[tuple[nn.Module, str | None]]:
    """Switch the Hugging Face models holding ``modules`` to the ``"lightning_info"`` implementation.

    Returns:
        ``(model, previous implementation)`` pairs to restore with ``set_attn_implementation``.

    Raises:
        ValueError: a model on an implementation whose kernel exposes no q/k (``flash_attention_*``,
            ``flex_attention``, a custom one), naming it and the alternative.
    """
    from transformers import PreTrainedModel

    register_attention()
    targets = {id(m) for m in modules}
    roots: list[PreTrainedModel] = []
    for name, sub in model.named_modules():
        if not isinstance(sub, PreTrainedModel) or any(sub is r or _contains(r, sub) for r in roots):
            continue
        if not any(id(m) in targets for m in sub.modules()):
            continue
        implementation = getattr(sub.config, "_attn_implementation", None)
        if implementation not in _COMPATIBLE:
            raise ValueError(
                f"{name or type(model).__name__} ({type(sub).__name__}) uses attn_implementation={implementation!r}, "
                "a fused kernel that exposes no queries and keys, so its attention entropy cannot be read; load or "
                "switch it with attn_implementation='sdpa' (model.set_attn_implementation('sdpa')) to use the "
                f"entropy parts; {_DOCS}"
            )
        roots.append(sub)
    restore: list[tuple[nn.Module, str | None]] = []
    for root in roots:
        previous = getattr(root.config, "_attn_implementation", None)
        if previous != ATTENTION_NAME:
            root.set_attn_implementation(ATTENTION_NAME)
            restore.append((root, previous))
    return restore


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())

"""Monitor the attention entropy of every ``nn.MultiheadAttention`` of a model, without modifying it.

The entropy is recomputed from each module's inputs and projection weights, chunked over queries and without
gradient (:func:`~lightning_info.functional.attention_entropy_from_qk`), so it works when the model calls
its attention with ``need_weights=False`` or a fused kernel, and never materialises an ``N x N`` map (nor an
``N x N`` mask for ``is_causal`` or ``key_padding_mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_info._internal.capture import ActivationCapture
from lightning_info._internal.validation import check_int, check_range
from lightning_info.attention.entropy_guided_attention import EntropyGuidedAttention
from lightning_info.attention.sdpa import SDPAProbes
from lightning_info.callbacks._logging import log_scalars
from lightning_info.callbacks.capture import CaptureCallback
from lightning_info.functional.attention import (
    additive_mask,
    attention_entropy_from_qk,
    head_entropy_summary,
    mha_mask_views,
    row_entropy_bounds,
)

__all__ = [
    "AttentionEntropyMonitor",
    "attention_entropy_of_call",
    "entropy_summary_metrics",
    "measure_attention_entropy",
]

_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights")
Summary = tuple[Tensor, Tensor]  # per head: mean entropy (nats), mean normalised entropy H / log(#valid keys)


def check_thresholds(overload_threshold: object, collapse_threshold: object) -> tuple[float, float]:
    """Check ``overload_threshold`` in (0, 1], ``collapse_threshold`` in [0, 1) and ``collapse < overload``.

    Raises:
        TypeError: a threshold that is not a real number.
        ValueError: a threshold out of its range, or ``collapse_threshold >= overload_threshold`` (a head would then
            count as both overloaded and collapsed).
    """
    overload = check_range("overload_threshold", overload_threshold, 0.0, 1.0, low_inclusive=False)
    collapse = check_range("collapse_threshold", collapse_threshold, 0.0, 1.0, high_inclusive=False)
    if collapse >= overload:
        raise ValueError(
            f"collapse_threshold must be < overload_threshold, got collapse_threshold={collapse_threshold!r} and "
            f"overload_threshold={overload_threshold!r}"
        )
    return overload, collapse


def entropy_summary_metrics(
    summaries: Sequence[Summary | None], overload_threshold: float, collapse_threshold: float
) -> dict[str, float]:
    r"""Logged values from per-layer summaries (``None`` = layer not seen this step; its index is kept).

    ``attn_entropy/layer{i}/head{j}`` and ``attn_entropy/layer{i}/mean`` (nats), ``attn_entropy/normalized_mean``
    (mean :math:`H / E^{\max}` of all heads) and the fractions of heads above ``overload_threshold``
    (``attn_entropy/overload_frac``) and below ``collapse_threshold`` (``attn_entropy/collapse_frac``).
    """
    metrics: dict[str, float] = {}
    for layer, summary in enumerate(summaries):
        if summary is not None:
            metrics.update({f"attn_entropy/layer{layer}/head{h}": v for h, v in enumerate(summary[0].tolist())})
            metrics[f"attn_entropy/layer{layer}/mean"] = summary[0].mean().item()
    normalized = torch.cat([s[1] for s in summaries if s is not None])
    metrics["attn_entropy/normalized_mean"] = normalized.mean().item()
    metrics["attn_entropy/overload_frac"] = (normalized > overload_threshold).float().mean().item()
    metrics["attn_entropy/collapse_frac"] = (normalized < collapse_threshold).float().mean().item()
    return metrics


def _extract_attention_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    bound = dict(zip(_MHA_ARGS, args, strict=False))
    bound.update(kwargs)
    query, key = bound["query"], bound["key"]
    if query.is_nested or key.is_nested:
        return None
    n_q = query.shape[1] if query.dim() == 3 and getattr(module, "batch_first", False) else query.shape[0]
    return {
        "query": query.detach(),
        "key": key.detach(),
        "self_attention": query is key,
        "key_padding_mask": bound.get("key_padding_mask"),
        "attn_mask": bound.get("attn_mask"),
        "is_causal": bool(bound.get("is_causal", False)),
        "projection": _projection(module, n_q),  # type: ignore[arg-type]
    }


@torch.no_grad()
def _projection(module: nn.MultiheadAttention, n_q: int) -> dict[str, Tensor | None]:
    """Copies of the query/key projection (and temperature) that ``module`` uses in this call.

    Taken in the forward hook, where sharded engines hold the full weights: after the forward FSDP2's parameters
    are shards (DTensors) and FSDP1's are views of freed storage.
    """
    if module._qkv_same_embed_dim:
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k = module.q_proj_weight, module.k_proj_weight
    b_q, b_k = (None, None) if module.in_proj_bias is None else module.in_proj_bias.chunk(3)[:2]
    temperature = module.row_temperature(n_q) if isinstance(module, EntropyGuidedAttention) else None
    return {
        name: None if value is None else value.detach().clone()
        for name, value in (("w_q", w_q), ("w_k", w_k), ("b_q", b_q), ("b_k", b_k), ("temperature", temperature))
    }


@torch.no_grad()
def attention_entropy_of_call(
    module: nn.MultiheadAttention, inputs: dict[str, Any], chunk_size: int = 256, max_samples: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Row entropies ``(batch, heads, N_q)``, their maxima and the rows that count, for one captured call.

    ``inputs`` holds the call's ``query``, ``key``, ``key_padding_mask``, ``attn_mask``, ``is_causal`` and
    ``self_attention`` (``query is key``). Masks follow ``nn.MultiheadAttention`` (``is_causal`` is used only
    without ``attn_mask``, as there); the temperature of an :class:`EntropyGuidedAttention` is applied.
    """
    query, key = inputs["query"], inputs["key"]
    kpm, attn_mask = inputs["key_padding_mask"], inputs["attn_mask"]
    if query.dim() == 2:
        query, key = query.unsqueeze(0), key.unsqueeze(0)
        kpm = None if kpm is None else kpm.unsqueeze(0)
    elif not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    bsz, n_q, _ = query.shape
    n_k, heads, head_dim = key.shape[1], module.num_heads, module.head_dim
    padding, attn = mha_mask_views(
        kpm, attn_mask, batch_size=bsz, num_heads=heads, num_queries=n_q, num_keys=n_k
    )  # fmt: skip
    keep = bsz if max_samples is None else min(bsz, max_samples)
    mask = key_mask = None
    if attn is not None:  # the user's own N x N tensor, sliced per chunk; MHA booleans mean "not allowed"
        mask = ~attn[:keep] if attn.dtype == torch.bool else attn[:keep]
    if padding is not None and padding.dtype == torch.bool:
        key_mask = ~padding[:keep, 0]  # (keep, 1, N_k)
    elif padding is not None:  # an additive padding mask is merged with attn_mask (rare: this builds B x N x N)
        if mask is not None and mask.dtype == torch.bool:
            mask = additive_mask(mask, torch.float32)
        mask = padding[:keep] if mask is None else mask + padding[:keep]
    weights = inputs.get("projection") or _projection(module, n_q)
    w_q, w_k = weights["w_q"], weights["w_k"]
    assert w_q is not None and w_k is not None  # (narrowing)
    q = F.linear(query[:keep], w_q, weights["b_q"]).view(keep, n_q, heads, head_dim).transpose(1, 2)
    k = F.linear(key[:keep], w_k, weights["b_k"]).view(keep, n_k, heads, head_dim).transpose(1, 2)
    if weights["temperature"] is not None:
        q = q / weights["temperature"].to(q.dtype)[..., None]
    entropy, counts = attention_entropy_from_qk(
        q, k, mask, chunk_size=chunk_size, key_mask=key_mask, causal=inputs["is_causal"] and attn is None,
        return_counts=True,
    )  # fmt: skip
    max_entropy, row_mask = row_entropy_bounds(
        counts, None if kpm is None else kpm[:keep], self_attention=inputs["self_attention"], dtype=entropy.dtype
    )
    return entropy, max_entropy, row_mask


def _capture(model: nn.Module, names: Sequence[str]) -> ActivationCapture:
    return ActivationCapture(model, list(names), extract=_extract_attention_inputs)


def _summaries(
    modules: dict[str, nn.MultiheadAttention], captured: dict[str, Any], chunk_size: int, max_samples: int | None
) -> list[Summary | None]:
    summaries: list[Summary | None] = []
    for name, module in modules.items():
        inputs = captured.get(name)
        if inputs is None:
            summaries.append(None)
            continue
        entropy, max_entropy, row_mask = attention_entropy_of_call(module, inputs, chunk_size, max_samples)
        summaries.append(head_entropy_summary(entropy, max_entropy, row_mask))
    return summaries


def _attention_modules(model: nn.Module, patterns: Sequence[str] | None) -> dict[str, nn.MultiheadAttention]:
    named = dict(model.named_modules())
    if patterns is None:
        names = [n for n, m in named.items() if isinstance(m, nn.MultiheadAttention)]
        if not names:
            raise ValueError(f"{type(model).__name__} has no nn.MultiheadAttention module to monitor")
    else:
        names = _capture(model, patterns).names
    for name in names:
        if not isinstance(named[name], nn.MultiheadAttention):
            raise ValueError(f"module {name!r} is a {type(named[name]).__name__}, not an nn.MultiheadAttention")
        if named[name].bias_k is not None or named[name].add_zero_attn:
            rank_zero_warn(f"attention entropy: {name!r} uses add_bias_kv/add_zero_attn; it is skipped")
    return {n: named[n] for n in names if named[n].bias_k is None and not named[n].add_zero_attn}


def measure_attention_entropy(
    model: nn.Module,
    run: Callable[[], object],
    modules: Sequence[str] | None = None,
    chunk_size: int = 256,
    max_samples: int | None = None,
) -> dict[str, Summary]:
    """Call ``run()`` (a forward of ``model``) with hooks on its attention; return each module's head summary.

    Returns, per module name, ``(mean entropy per head in nats, mean normalised entropy per head)``, computed as the
    monitor does (chunked, no gradient). Modules that ``run`` did not call are left out.

    Example:
        >>> layer = nn.TransformerEncoderLayer(16, 4, batch_first=True)
        >>> x = torch.randn(2, 5, 16)
        >>> mean, normalized = measure_attention_entropy(layer, lambda: layer(x))["self_attn"]
        >>> mean.shape, bool((normalized <= 1 + 1e-6).all())
        (torch.Size([4]), True)
    """
    attention = _attention_modules(model, modules)
    with _capture(model, list(attention)) as capture:
        run()
    summaries = _summaries(attention, capture.captured, chunk_size, max_samples)
    return {name: s for name, s in zip(attention, summaries, strict=True) if s is not None}


class AttentionEntropyMonitor(CaptureCallback):
    r"""Log the per-head attention entropy of a model's ``nn.MultiheadAttention`` modules during training.

    Every ``every_n_steps`` optimizer steps, forward hooks (:class:`~lightning_info.utils.ActivationCapture`) keep
    each attention module's query/key inputs and masks for one batch; after it the row entropies
    :math:`H_i = \operatorname{logsumexp}(s_i) - \sum_j p_{ij} s_{ij}` are recomputed from the module's input
    projections (and temperature, for :class:`~lightning_info.attention.EntropyGuidedAttention`), chunked over
    queries, without gradient. The hooks exist only during that batch, so the model is untouched otherwise (e.g.
    ``nn.TransformerEncoderLayer`` keeps its fused inference path in validation). Logged keys (``i`` indexes the
    attention modules in model order; on rank 0, from its own batch):

    - ``attn_entropy/layer{i}/head{j}``: mean row entropy in nats; ``attn_entropy/layer{i}/mean``: over heads;
    - ``attn_entropy/normalized_mean``: mean over heads of :math:`H / \log(\#\text{valid keys})`;
    - ``attn_entropy/overload_frac``: fraction of heads whose normalised entropy exceeds ``overload_threshold``
      (entropic overload: near-uniform, under-used heads);
    - ``attn_entropy/collapse_frac``: fraction below ``collapse_threshold`` (entropy collapse: near one-hot).

    The default thresholds, 3/4 and 1/4, are the paper's outer entropy bins (Jha & Reagen 2025, Fig. 2a: heads in
    [3 Max/4, Max] are overloaded, near-zero ones in [0, Max/4) collapsed), taken here relative to each row's
    theoretical maximum :math:`\log(\#\text{valid keys})` rather than to the largest entropy observed in the run
    (which always puts at least one head in the top bin). Nested-tensor inputs are skipped.

    The query/key projections (and temperatures) are copied in the forward hook, so the values are right for sharded
    models too (FSDP2, FSDP1: outside the forward they hold shards); each rank measures its own batch.

    Args:
        modules: dotted names or globs of the attention modules; ``None`` takes every ``nn.MultiheadAttention``.
        every_n_steps: log every this many optimizer steps.
        chunk_size: query rows per chunk of the entropy computation.
        max_samples: batch elements used per step (``None``: all).
        overload_threshold: normalised-entropy threshold of entropic overload, in (0, 1].
        collapse_threshold: normalised-entropy threshold of entropy collapse, in [0, 1).

    Raises:
        ValueError: a bad argument, or (at ``setup``) a name that matches nothing / a model without attention.

    Example:
        >>> monitor = AttentionEntropyMonitor(every_n_steps=10, max_samples=4)
    """

    def __init__(
        self,
        modules: Sequence[str] | None = None,
        every_n_steps: int = 50,
        chunk_size: int = 256,
        max_samples: int | None = 8,
        overload_threshold: float = 0.75,
        collapse_threshold: float = 0.25,
    ) -> None:
        super().__init__()
        if modules is not None and (isinstance(modules, str) or not all(isinstance(m, str) for m in modules)):
            raise TypeError(f"modules must be a list of module names or None, got {modules!r}")
        self.modules = None if modules is None else list(modules)
        self.every_n_steps = check_int("every_n_steps", every_n_steps, min_value=1)
        self.chunk_size = check_int("chunk_size", chunk_size, min_value=1)
        self.max_samples = None if max_samples is None else check_int("max_samples", max_samples, min_value=1)
        self.overload_threshold, self.collapse_threshold = check_thresholds(overload_threshold, collapse_threshold)
        self._attention: dict[str, nn.MultiheadAttention] = {}
        self._sdpa: SDPAProbes | None = None  # models without nn.MultiheadAttention: SDPA / Hugging Face attention
        self._sdpa_step = False
        self._logged_step = -1

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(modules=self.modules)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after every callback's setup: an EntropyGuidedAttentionCallback listed after this monitor has swapped the
        # attention modules by now, so the monitor hooks the modules that run, whatever the callbacks' order
        if not any(isinstance(m, nn.MultiheadAttention) for m in pl_module.modules()):
            self._sdpa = SDPAProbes(pl_module, self.modules)  # SDPA / Hugging Face attention
        else:
            self._attention = _attention_modules(pl_module, self.modules)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._logged_step and self._sdpa is not None:
            self._logged_step, self._sdpa_step = step, True
            self._sdpa.start("monitor", self.max_samples, self.chunk_size)
        if step % self.every_n_steps == 0 and step != self._logged_step and self._attention:
            self._logged_step = step  # once per optimizer step, also with gradient accumulation
            self.attach_captures(attention=_capture(pl_module, list(self._attention)))

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._sdpa is not None and self._sdpa_step:
            self._sdpa.stop("monitor")
            self._sdpa_step = False
            summaries = self._sdpa.summaries()
        elif "attention" not in self.captures:
            return
        else:
            captured = dict(self.captures["attention"].captured)
            self.remove_captures()  # the hooks live for this one batch
            summaries = _summaries(self._attention, captured, self.chunk_size, self.max_samples)
        if any(s is not None for s in summaries):
            metrics = entropy_summary_metrics(summaries, self.overload_threshold, self.collapse_threshold)
            log_scalars(trainer, metrics, self._logged_step)

    @override
    def release(self) -> None:
        super().release()
        if self._sdpa is not None:
            self._sdpa.release("monitor")
            self._sdpa = None

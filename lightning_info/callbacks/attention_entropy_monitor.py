"""Monitor the attention entropy of every ``nn.MultiheadAttention`` of a model, without modifying it.

The entropy is recomputed from each module's inputs and projection weights, chunked over queries and without
gradient (:func:`~lightning_info.attention.functional.attention_entropy_from_qk`), so it works when the model calls
its attention with ``need_weights=False`` or a fused kernel, and never materialises an ``N x N`` map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_info._internal.capture import ActivationCapture
from lightning_info._internal.validation import check_int, check_range
from lightning_info.attention.entropy_guided_attention import EntropyGuidedAttention
from lightning_info.attention.functional import (
    attention_entropy_from_qk,
    head_entropy_summary,
    merge_attention_masks,
    row_entropy_bounds,
)

__all__ = ["AttentionEntropyMonitor"]

_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights")


def entropy_summary_metrics(
    summaries: Sequence[tuple[Tensor, Tensor]], overload_threshold: float, collapse_threshold: float
) -> dict[str, float]:
    """``attn_entropy/layer{i}/head{j}`` and the overload/collapse fractions of all heads (shared by callbacks)."""
    metrics = {
        f"attn_entropy/layer{layer}/head{head}": value
        for layer, (mean, _) in enumerate(summaries)
        for head, value in enumerate(mean.tolist())
    }
    normalized = torch.cat([norm for _, norm in summaries])
    metrics["attn_entropy/overload_frac"] = (normalized > overload_threshold).float().mean().item()
    metrics["attn_entropy/collapse_frac"] = (normalized < collapse_threshold).float().mean().item()
    return metrics


def log_to_loggers(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
    """Log straight to the loggers: ``pl_module.log`` would repeat the last value on the steps that log nothing."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def _extract_attention_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    bound = dict(zip(_MHA_ARGS, args, strict=False))
    bound.update(kwargs)
    query, key = bound["query"], bound["key"]
    if query.is_nested or key.is_nested:
        return None
    return {
        "query": query.detach(),
        "key": key.detach(),
        "self_attention": query is key,
        "key_padding_mask": bound.get("key_padding_mask"),
        "attn_mask": bound.get("attn_mask"),
        "is_causal": bool(bound.get("is_causal", False)),
    }


@torch.no_grad()
def attention_entropy_of_call(
    module: nn.MultiheadAttention, inputs: dict[str, Any], chunk_size: int, max_samples: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Row entropies ``(batch, heads, N_q)``, their maxima and the rows that count, for one captured call."""
    query, key = inputs["query"], inputs["key"]
    kpm, attn_mask = inputs["key_padding_mask"], inputs["attn_mask"]
    if query.dim() == 2:
        query, key = query.unsqueeze(0), key.unsqueeze(0)
        kpm = None if kpm is None else kpm.unsqueeze(0)
    elif not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    bsz, n_q, _ = query.shape
    n_k, heads, head_dim = key.shape[1], module.num_heads, module.head_dim
    mask = merge_attention_masks(
        kpm, attn_mask, batch_size=bsz, num_heads=heads, num_queries=n_q, num_keys=n_k,
        is_causal=inputs["is_causal"], dtype=torch.float32, device=query.device,
    )  # fmt: skip
    keep = bsz if max_samples is None else min(bsz, max_samples)
    if mask is not None:
        mask = mask[:keep]
    kpm = None if kpm is None else kpm[:keep]
    if module._qkv_same_embed_dim:
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k = module.q_proj_weight, module.k_proj_weight
    b_q, b_k = (None, None) if module.in_proj_bias is None else module.in_proj_bias.chunk(3)[:2]
    q = F.linear(query[:keep], w_q, b_q).view(keep, n_q, heads, head_dim).transpose(1, 2)
    k = F.linear(key[:keep], w_k, b_k).view(keep, n_k, heads, head_dim).transpose(1, 2)
    temperature = module.temperature if isinstance(module, EntropyGuidedAttention) else None
    entropy = attention_entropy_from_qk(q, k, mask, temperature, chunk_size)
    max_entropy, row_mask = row_entropy_bounds(
        mask, kpm, batch_size=keep, num_queries=n_q, num_keys=n_k, self_attention=inputs["self_attention"],
        dtype=entropy.dtype, device=entropy.device,
    )  # fmt: skip
    return entropy, max_entropy, row_mask


class AttentionEntropyMonitor(Callback):
    r"""Log the per-head attention entropy of a model's ``nn.MultiheadAttention`` modules during training.

    Every ``every_n_steps`` optimizer steps, forward hooks (:class:`~lightning_info.utils.ActivationCapture`) keep
    each attention module's query/key inputs and masks; after the batch the row entropies
    :math:`H_i = \operatorname{logsumexp}(s_i) - \sum_j p_{ij} s_{ij}` are recomputed from the module's input
    projections (and temperature, for :class:`~lightning_info.attention.EntropyGuidedAttention`), chunked over
    queries, without gradient. Logged keys (``i`` indexes the attention modules in model order):

    - ``attn_entropy/layer{i}/head{j}``: mean row entropy in nats;
    - ``attn_entropy/overload_frac``: fraction of heads whose mean :math:`H / \log(\#\text{valid keys})` exceeds
      ``overload_threshold`` (entropic overload: near-uniform, under-used heads);
    - ``attn_entropy/collapse_frac``: fraction below ``collapse_threshold`` (entropy collapse: near one-hot).

    Hooks switch off ``nn.TransformerEncoderLayer``'s fused inference path for the hooked layers on the logging
    steps only (training never takes it). Nested-tensor inputs are skipped.

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
        overload_threshold: float = 0.9,
        collapse_threshold: float = 0.1,
    ) -> None:
        super().__init__()
        if modules is not None and (isinstance(modules, str) or not all(isinstance(m, str) for m in modules)):
            raise TypeError(f"modules must be a list of module names or None, got {modules!r}")
        self.modules = None if modules is None else list(modules)
        self.every_n_steps = check_int("every_n_steps", every_n_steps, min_value=1)
        self.chunk_size = check_int("chunk_size", chunk_size, min_value=1)
        self.max_samples = None if max_samples is None else check_int("max_samples", max_samples, min_value=1)
        self.overload_threshold = check_range("overload_threshold", overload_threshold, 0.0, 1.0, low_inclusive=False)
        self.collapse_threshold = check_range("collapse_threshold", collapse_threshold, 0.0, 1.0, high_inclusive=False)
        self._capture: ActivationCapture | None = None
        self._attention: dict[str, nn.MultiheadAttention] = {}
        self._step = 0

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(modules=self.modules)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        named = dict(pl_module.named_modules())
        if self.modules is None:
            names = [n for n, m in named.items() if isinstance(m, nn.MultiheadAttention)]
            if not names:
                raise ValueError(f"{type(pl_module).__name__} has no nn.MultiheadAttention module to monitor")
        else:
            names = ActivationCapture(pl_module, self.modules).names
        for name in names:
            if not isinstance(named[name], nn.MultiheadAttention):
                raise ValueError(f"module {name!r} is a {type(named[name]).__name__}, not an nn.MultiheadAttention")
            if named[name].bias_k is not None or named[name].add_zero_attn:
                rank_zero_warn(f"AttentionEntropyMonitor: {name!r} uses add_bias_kv/add_zero_attn; it is skipped")
        self._attention = {n: named[n] for n in names if named[n].bias_k is None and not named[n].add_zero_attn}
        self._capture = ActivationCapture(pl_module, list(self._attention), extract=_extract_attention_inputs)
        self._capture.enabled = False
        self._capture.attach()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._capture is not None:
            self._capture.enabled = trainer.global_step % self.every_n_steps == 0
            self._step = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._capture is None or not self._capture.enabled:
            return
        summaries = []
        for name, module in self._attention.items():
            inputs = self._capture.captured.get(name)
            if inputs is None:
                continue
            entropy, max_entropy, row_mask = attention_entropy_of_call(
                module, inputs, self.chunk_size, self.max_samples
            )
            summaries.append(head_entropy_summary(entropy, max_entropy, row_mask))
        self._capture.clear()
        self._capture.enabled = False
        if summaries:
            metrics = entropy_summary_metrics(summaries, self.overload_threshold, self.collapse_threshold)
            log_to_loggers(trainer, metrics, self._step)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self._capture is not None:
            self._capture.remove()
            self._capture = None

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

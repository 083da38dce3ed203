r"""The per-sample empirical Fisher of a model sharded with FSDP2 (``fully_shard``: DTensor parameters), exact.

Per-sample gradients cannot be taken the way :func:`~lightning_info.fisher.empirical_fisher` takes them on a sharded
model: FSDP2 gathers the weights in forward hooks and hands each rank only its shard of the gradient, averaged over
the ranks by a reduce-scatter, outside autograd (``vmap``/``torch.autograd.grad`` never see the sharded
parameters). A rank's own sample would therefore be averaged with the other ranks' samples before it could be
squared, which is not the Fisher.

:func:`sharded_empirical_fisher` makes the reduce-scatter harmless instead: the ranks exchange their samples, and
every rank runs the same sample at the same time (one forward/backward with batch size 1 per sample), so the
averaged gradient *is* that sample's gradient and each rank squares its own shard of it exactly. The full Fisher is
then gathered on every rank (``DTensor.full_tensor``), so the global top-k of
:func:`~lightning_info.fisher.topk_masks` sees every entry and gives the same masks on every rank. Cost: each rank
runs all ``world_size * num_samples`` samples (DDP runs its own ``num_samples``), and holds the full Fisher (one
float per parameter entry) while the masks are selected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_info._internal.sharding import is_dtensor
from lightning_info._internal.validation import check_int
from lightning_info.fisher.fisher import LossFn, _call, _chunks, _rows, _scalar, nll_from_logits


def _to(tree: Any, device: torch.device | str) -> Any:
    if isinstance(tree, Tensor):
        return tree.to(device)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to(t, device) for t in tree)
    return tree


def sharded_empirical_fisher(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn | None = None,
    num_samples: int = 1024,
) -> dict[str, Tensor]:
    r"""Diagonal empirical Fisher :math:`F_j = \sum_i (\partial_j \log p(y_i \mid x_i))^2` of an FSDP2 model.

    Every rank of the default process group must call it (with its own ``batches``): the sum runs over the first
    ``num_samples`` samples of **every** rank's ``batches``, and the result is the same on every rank. The model is in
    ``eval()`` mode during the estimate (training flags restored after); the parameters' ``.grad`` are ``None``
    afterwards.

    Args:
        model: the sharded module (parameters ``DTensor``\ s; plain parameters are counted as replicated).
        batches: this rank's ``(inputs, targets, ...)`` batches.
        loss_fn: ``loss_fn(output, target)``, the negative log-likelihood of one sample (default: cross-entropy of
            logits).
        num_samples: samples taken from this rank's ``batches``.

    Returns:
        ``{name: full (unsharded) Fisher of the parameter}`` for every parameter with ``requires_grad``.

    Raises:
        ValueError: ``num_samples < 1``, no trainable parameter, or no rank's batches held a sample.
    """
    num_samples = check_int("num_samples", num_samples, min_value=1)
    loss = loss_fn or nll_from_logits
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"model ({type(model).__name__}) has no trainable parameters (requires_grad=True)")
    device = next(iter(params.values())).device
    local = [(_to(x, "cpu"), y.cpu()) for x, y in _chunks(batches, num_samples, num_samples)]
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, local)
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    training = {module: module.training for module in model.modules()}
    model.eval()
    seen = 0
    try:
        for x, y in (chunk for rank_chunks in every for chunk in rank_chunks):
            x, y = _to(x, device), y.to(device)
            for i in range(int(y.shape[0])):
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    _scalar(loss(_call(model, _rows(x, i, i + 1)), y[i : i + 1])).backward()
                with torch.no_grad():
                    for name, p in params.items():
                        if p.grad is not None:
                            fisher[name] += p.grad.square()
            seen += int(y.shape[0])
    finally:
        model.zero_grad(set_to_none=True)
        for module, flag in training.items():
            module.training = flag
    if seen == 0:
        raise ValueError("sharded_empirical_fisher: no rank's batches yielded a sample")
    return {name: f.full_tensor() if is_dtensor(f) else f for name, f in fisher.items()}  # type: ignore[attr-defined]

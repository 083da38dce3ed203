"""Operations on parameter / gradient lists shared by GAM and the SAM variants."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_info.optim.sharpness_aware import copy_tensors


def gradients(params: list[Tensor]) -> list[Tensor]:
    """The parameters' ``.grad`` (a zero gradient is materialised for a parameter the pass did not reach)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params]  # type: ignore[misc]


def all_reduce_mean(tensors: list[Tensor], group: Any) -> None:
    """Average ``tensors`` over the ranks of ``group`` in place (one all-reduce per dtype)."""
    import torch.distributed as dist

    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for same in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in same])
        dist.all_reduce(flat, group=group)
        flat /= dist.get_world_size(group)
        chunks = flat.split([t.numel() for t in same])
        copy_tensors(same, [c.view_as(t) for c, t in zip(chunks, same, strict=True)])


def split(tensors: list[Tensor], sizes: list[int]) -> list[list[Tensor]]:
    """``tensors`` cut into consecutive lists of ``sizes`` (one per parameter group)."""
    out, start = [], 0
    for size in sizes:
        out.append(tensors[start : start + size])
        start += size
    return out

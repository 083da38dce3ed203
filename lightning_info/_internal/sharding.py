"""Recognise sharded parameters and modules (FSDP2 DTensors, FSDP1 wrappers) without importing what is not in use."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

_DTensor: type | None
if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor as _DTensor
else:  # pragma: no cover - builds without torch.distributed
    _DTensor = None


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (FSDP2's and tensor parallelism's parameters)."""
    return _DTensor is not None and isinstance(tensor, _DTensor)


def sharded_world(params: list[Tensor]) -> int:
    """The largest device-mesh size over the parameters that are DTensors; 1 if none is."""
    return max((p.device_mesh.size() for p in params if is_dtensor(p)), default=1)  # type: ignore[attr-defined]


def shard_group(tensors: list[Tensor]) -> Any:
    """The process group over which ``tensors`` are split into disjoint local shards, if they are; else ``None``.

    That is: every tensor is a DTensor on one and the same 1-D device mesh with a ``Shard`` placement (FSDP2's
    ``fully_shard`` parameters, their gradients and copies). Then the local shards (``to_local()``, views) partition
    the tensors: elementwise work on them is exact and a sum over all entries is the local sums added over the group.
    """
    if not tensors or not all(is_dtensor(t) for t in tensors):
        return None
    mesh = tensors[0].device_mesh  # type: ignore[attr-defined]
    if mesh.ndim != 1 or any(
        (t.device_mesh is not mesh and t.device_mesh != mesh) or not t.placements[0].is_shard()  # type: ignore[attr-defined]
        for t in tensors
    ):
        return None
    return mesh.get_group()


def local_shard(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (``to_local()``, a view: writing to it writes the DTensor), else the tensor."""
    return tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


def local_shards(tensors: list[Tensor]) -> list[Tensor]:
    """:func:`local_shard` of each tensor."""
    return [local_shard(t) for t in tensors]


def sharding_engine(module: nn.Module) -> str | None:
    """Which sharding engine ``module`` runs under, if any.

    ``"FSDP2"`` if a parameter is a DTensor over more than one rank, ``"FSDP1"`` if a submodule is a
    ``FullyShardedDataParallel`` wrapper, else ``None``.
    """
    if sharded_world(list(module.parameters())) > 1:
        return "FSDP2"
    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    wrapper = getattr(fsdp, "FullyShardedDataParallel", None)
    if isinstance(wrapper, type) and any(isinstance(m, wrapper) for m in module.modules()):
        return "FSDP1"
    return None

"""Recognise sharded parameters and modules (FSDP2 DTensors, FSDP1 wrappers) without importing what is not in use."""

from __future__ import annotations

import sys

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

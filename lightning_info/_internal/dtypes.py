"""The one low-precision rule: float16/bfloat16 inputs are computed in float32."""

from __future__ import annotations

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``x`` in ``dtype`` if given, else in float32 when it is float16/bfloat16, else unchanged."""
    if dtype is not None:
        return x.to(dtype)
    return x.float() if x.dtype in LOW_PRECISION else x

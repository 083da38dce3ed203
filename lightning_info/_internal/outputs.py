"""Reading a tensor from a layer's output: a tensor, a Hugging Face ``ModelOutput``, a dict, tuple or list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def output_tensor(output: Any, key: str) -> Tensor | None:
    """The tensor of a layer's output (``None`` when it holds none).

    A tensor itself; else (duck-typed, no ``transformers`` import) the field ``key`` of a Hugging Face ``ModelOutput``
    (or dict), e.g. ``"logits"`` or ``"last_hidden_state"``; else the first tensor of a mapping, tuple or list,
    searched depth-first.
    """
    if isinstance(output, Tensor):
        return output
    field = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
    if isinstance(field, Tensor):
        return field
    items = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    for item in items:
        found = output_tensor(item, key)
        if found is not None:
            return found
    return None

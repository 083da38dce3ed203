r"""Make only the kept entries trainable, so gradients and optimizer state shrink with ``keep_ratio``.

:class:`~lightning_info.callbacks.FisherMask` keeps full-size gradients and Adam moments for every parameter tensor
with at least one kept entry. When that memory matters, compute the masks up front and call
:func:`train_kept_entries_only` before the optimizer is built (before ``trainer.fit``: Lightning calls
``configure_optimizers`` at fit time):

- a partially kept parameter becomes a ``torch.nn.utils.parametrize`` parametrization: its trainable tensor
  (``<module>.parametrizations.<name>.original``) is 1-D and holds only the kept entries; the frozen values are a
  buffer, so nothing (weight decay, momentum, Adam state) can move them, and ``parameters()`` yields k entries in all;
- a fully kept parameter is left as it is, a parameter with no kept entry gets ``requires_grad=False``.

The model's forward is unchanged (each access to the weight scatters the kept values into the frozen ones, one
``masked_scatter`` per parametrized tensor and forward). Checkpoints then hold the parametrized keys; after training,
``torch.nn.utils.parametrize.remove_parametrizations(module, name)`` turns a weight back into a plain parameter with
the trained values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


class KeptEntries(nn.Module):
    """Parametrization ``weight = frozen`` with the entries where ``mask`` is ``True`` taken from a 1-D tensor."""

    mask: Tensor
    frozen: Tensor

    def __init__(self, mask: Tensor, weight: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(device=weight.device, dtype=torch.bool).clone())
        self.register_buffer("frozen", weight.detach().clone())

    def forward(self, kept: Tensor) -> Tensor:
        return self.frozen.masked_scatter(self.mask, kept.to(self.frozen.dtype))

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight[self.mask]


def train_kept_entries_only(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Make only the entries where ``masks[name]`` is ``True`` trainable, in place (see the module docstring).

    Args:
        model: the network; parameters not named in ``masks`` are left as they are.
        masks: ``{parameter name: bool tensor of its shape}``, e.g. from :func:`~lightning_info.fisher.topk_masks`.

    Raises:
        ValueError: if a name is not a parameter of ``model`` or a mask's shape differs from its parameter's.
        TypeError: if a mask is not a bool tensor.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_info.fisher import train_kept_entries_only
        >>> model = nn.Linear(3, 2)
        >>> train_kept_entries_only(model, {"weight": torch.tensor([[True, False, False], [False, False, True]]),
        ...                                 "bias": torch.tensor([False, False])})
        >>> [(name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad]
        [('parametrizations.weight.original', (2,))]
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks names {name!r}, which is not a parameter of {type(model).__name__}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}] must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
        if mask.shape != params[name].shape:
            raise ValueError(
                f"masks[{name!r}] has shape {tuple(mask.shape)}, the parameter {tuple(params[name].shape)}"
            )
    for name, mask in masks.items():
        if bool(mask.all()):
            continue
        if not bool(mask.any()):
            params[name].requires_grad_(False)
            continue
        owner, _, attribute = name.rpartition(".")
        module = model.get_submodule(owner)
        parametrize.register_parametrization(module, attribute, KeptEntries(mask, params[name]), unsafe=True)

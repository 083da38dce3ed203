r"""Exact Fisher of ``nn.Linear`` parameters without per-sample parameter gradients (``empirical_fisher(mode="auto")``).

A linear layer that sees one row per sample, :math:`z_n = W a_n + b` with :math:`a_n \in \mathbb{R}^{d_{in}}`, has
per-sample gradients :math:`\partial_W \ell_n = \delta_n a_n^\top` and :math:`\partial_b \ell_n = \delta_n`, where
:math:`\delta_n = \partial \ell_n / \partial z_n`. So the Fisher sums need only the layer's inputs and output gradients:

.. math:: F_W = \sum_n (\delta_n a_n^\top)^{\odot 2} = (\delta^{\odot 2})^\top a^{\odot 2}, \qquad
    F_b = \sum_n \delta_n^{\odot 2},

with :math:`\delta, a` stacked over the N samples: :math:`O(N (d_{in} + d_{out}))` values instead of the
:math:`N d_{out} d_{in}` of per-sample gradients. :math:`\delta_n` is the gradient with respect to a zero "probe" added
to the layer's output, taken per sample under ``vmap`` together with the per-sample gradients of the other parameters.

It is exact only when the parameter's per-sample gradient **is** that outer product, which
:func:`find_exact_linears` checks on one sample, run as a batch of one as ``vmap`` runs every sample:

- the module is an ``nn.Linear`` (or a subclass that keeps ``nn.Linear.forward``) owning the parameter directly
  (not through a parametrization), and its forward runs exactly once;
- its input holds one row, ``in_features`` values (a ``(1, T, d)`` token sequence does not: its gradient is a sum
  over tokens, and squaring the sum is not the sum of squares);
- the parameter tensor is used by exactly one torch operation in the forward and the loss (the layer's own
  ``F.linear``): not shared with another module that runs, not read elsewhere (``x @ layer.weight``, a fused kernel
  reading it directly, as ``nn.MultiheadAttention`` does with ``out_proj``). Uses are counted with a
  ``TorchFunctionMode``, which sees every torch function, method and tensor attribute that touches it.

Every other trainable parameter keeps its per-sample gradient from ``vmap``. Because each sample runs on its own,
as a batch of one, the shortcut inherits the ``vmap`` path's independence of the other samples of the chunk.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.hooks import RemovableHandle


class ShortcutMismatchError(RuntimeError):
    """A shortcut layer did not run exactly once in a forward, although it did in the check."""


class ExactLinear(NamedTuple):
    """A linear layer whose trainable ``weight``/``bias`` take the shortcut.

    ``weight``/``bias`` are parameter names, ``None`` if frozen or not the layer's own (a parametrized weight).
    """

    module: nn.Linear
    weight: str | None
    bias: str | None
    probe: Tensor  # zeros of the shape of one sample's output, added to it to read its gradient

    @property
    def names(self) -> list[str]:
        return [name for name in (self.weight, self.bias) if name is not None]

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample of what the shortcut keeps: the layer's input and output gradient."""
        return (self.module.in_features + self.probe.numel()) * self.probe.element_size()


def _layer_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
    return args[0] if args else kwargs["input"]


class _CountUses(TorchFunctionMode):
    """Counts the torch functions (and tensor methods/attributes) that receive each watched tensor."""

    def __init__(self, watched: Mapping[int, str]) -> None:
        super().__init__()
        self.watched, self.uses = watched, Counter[str]()

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        for leaf in tree_leaves((args, kwargs)):
            name = self.watched.get(id(leaf)) if isinstance(leaf, Tensor) else None
            if name is not None:
                self.uses[name] += 1
        return func(*args, **kwargs)


def find_exact_linears(
    model: nn.Module, params: Mapping[str, Tensor], run_one_sample: Callable[[], object]
) -> dict[str, ExactLinear]:
    """The linear layers whose trainable parameters the shortcut handles exactly, by module name.

    Args:
        model: the network, in the mode of the estimate (``eval()``).
        params: the trainable parameters, ``{name: tensor}`` as in ``model.named_parameters()``.
        run_one_sample: runs the forward and the loss of one sample as a batch of one.
    """
    name_of = {id(p): name for name, p in params.items()}
    candidates: dict[str, tuple[nn.Linear, str | None, str | None]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
            # own parameters only: a parametrized weight lives in module.parametrizations, not module._parameters
            own = [module._parameters.get(key) for key in ("weight", "bias")]
            weight, bias = (None if p is None else name_of.get(id(p)) for p in own)
            if weight is not None or bias is not None:
                candidates[module_name] = (module, weight, bias)
    if not candidates:
        return {}
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in candidates}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor) -> None:
            seen[name].append((_layer_input(args, kwargs), output))

        return hook

    watched = {id(params[p]): p for _, *names in candidates.values() for p in names if p is not None}
    handles = [
        module.register_forward_hook(record(name), prepend=True, with_kwargs=True)
        for name, (module, _, _) in candidates.items()
    ]
    counter = _CountUses(watched)
    try:
        with torch.enable_grad(), counter:  # as under torch.func.grad: code paths that skip autograd are not taken
            run_one_sample()
    finally:
        for handle in handles:
            handle.remove()
    exact: dict[str, ExactLinear] = {}
    for name, (module, weight, bias) in candidates.items():
        calls = seen[name]
        if len(calls) != 1 or math.prod(calls[0][0].shape) != module.in_features:
            continue
        if all(counter.uses[p] == 1 for p in (weight, bias) if p is not None):  # its own F.linear only
            exact[name] = ExactLinear(module, weight, bias, torch.zeros_like(calls[0][1]))
    return exact


class LinearTaps:
    """Context manager: forward hooks that record each exact linear layer's input and add its probe to its output.

    Call :meth:`start` with the probes at the beginning of a forward and :meth:`inputs` at its end.
    """

    def __init__(self, linears: Mapping[str, ExactLinear]) -> None:
        self.linears = linears
        self._probes: Mapping[str, Tensor] = {}
        self._inputs: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> LinearTaps:
        # prepended: the probe sits on the layer's own output, before any user hook that would transform it
        self._handles = [
            lin.module.register_forward_hook(self._hook(name), prepend=True, with_kwargs=True)
            for name, lin in self.linears.items()
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable[..., Tensor]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor) -> Tensor:
            if name in self._inputs:
                raise ShortcutMismatchError(
                    f"the linear layer {name!r} ran twice in a forward but once when it was checked; use mode='vmap'"
                )
            self._inputs[name] = _layer_input(args, kwargs)
            return output + self._probes[name]

        return hook

    def start(self, probes: Mapping[str, Tensor]) -> None:
        self._probes, self._inputs = probes, {}

    def inputs(self) -> dict[str, Tensor]:
        missing = [name for name in self.linears if name not in self._inputs]
        if missing:
            raise ShortcutMismatchError(f"the linear layers {missing} did not run in this forward; use mode='vmap'")
        return self._inputs


def accumulate_linear_fisher(
    linears: Mapping[str, ExactLinear],
    output_grads: Mapping[str, Tensor],
    inputs: Mapping[str, Tensor],
    fisher: dict[str, Tensor],
) -> None:
    r"""Add a chunk's :math:`(\delta^{\odot 2})^\top a^{\odot 2}` and :math:`\sum_n \delta_n^{\odot 2}` to ``fisher``.

    Args:
        linears: the shortcut layers, by module name.
        output_grads: per-sample gradients with respect to each layer's probe, ``(N, *probe shape)``.
        inputs: each layer's per-sample inputs, ``(N, *one sample's input shape)``.
        fisher: ``{parameter name: running sum}``, updated in place.
    """
    for name, lin in linears.items():
        dtype = fisher[lin.names[0]].dtype
        rows = output_grads[name].shape[0]
        delta2 = output_grads[name].reshape(rows, lin.module.out_features).to(dtype).square()
        if lin.weight is not None:
            a2 = inputs[name].reshape(rows, lin.module.in_features).to(dtype).square()
            fisher[lin.weight] += delta2.T @ a2
        if lin.bias is not None:
            fisher[lin.bias] += delta2.sum(0)

r"""Exact Fisher of linear layers without per-sample parameter gradients (``empirical_fisher(mode="auto")``).

A linear layer :math:`z_r = W a_r + b` applied to the rows :math:`a_r \in \mathbb{R}^{d_{in}}` of one sample's input
(one row for an MLP layer or a classification head; one row per token, :math:`r = 1..T`, for the attention
projections and feed-forward layers of a transformer) has the per-sample gradients

.. math:: \partial_W \ell_n = \sum_r \delta_{n,r} a_{n,r}^\top = \delta_n^\top a_n, \qquad
    \partial_b \ell_n = \sum_r \delta_{n,r},

where :math:`\delta_{n,r} = \partial \ell_n / \partial z_{n,r}`, so the Fisher sums need only the layer's inputs and
output gradients:

.. math:: F_W = \sum_n (\delta_n^\top a_n)^{\odot 2}, \qquad F_b = \sum_n \Big(\sum_r \delta_{n,r}\Big)^{\odot 2}.

With one row per sample :math:`F_W = (\delta^{\odot 2})^\top a^{\odot 2}` (:math:`\delta, a` stacked over the
samples): :math:`O(N (d_{in} + d_{out}))` values instead of the :math:`N d_{out} d_{in}` of per-sample gradients.
With several rows (tokens) the square of the sum over rows is not the sum of the squares, so each sample's
:math:`\delta_n^\top a_n` is formed by a batched matrix product, squared and summed, a few samples at a time (at most
:data:`GRAD_BYTES` of them at once, at least one sample), never for the whole chunk. Rows a loss ignores (padding
tokens whose outputs do not reach it) have :math:`\delta_{n,r} = 0` and add nothing, as in the exact gradient.
:math:`\delta_n` is the gradient with respect to a zero "probe" added to the layer's output, taken per sample under
``vmap`` together with the per-sample gradients of the other parameters.

Layers: ``nn.Linear`` (or a subclass that keeps ``nn.Linear.forward``), and, duck-typed, Hugging Face's ``Conv1D``
(GPT-2's projections; a linear layer that stores its weight transposed, ``(d_in, nf)``, and computes
``x @ weight + bias``): a module with an ``int`` attribute ``nf``, a 2-D ``weight`` of shape ``(d_in, nf)`` and a
``bias`` of shape ``(nf,)`` or ``None``, whose output on the checked sample equals ``input @ weight + bias``.

``nn.Embedding`` (token, position and segment embeddings; without ``max_norm`` and ``scale_grad_by_freq``, which
change the weight or the gradient) is the linear layer of one-hot rows :math:`a_{n,r} = e_{v_{n,r}}` with its weight
stored ``(num_embeddings, embedding_dim)``: its per-sample gradient has in row :math:`v` the sum of the output
gradients of the sample's tokens with id :math:`v`, so

.. math:: F_{W,v} = \sum_n \Big(\sum_{r:\, v_{n,r} = v} \delta_{n,r}\Big)^{\odot 2},

computed exactly by summing the output gradients of equal ``(sample, id)`` pairs (``index_add``), squaring and adding
them into their rows: :math:`O(N T d)`, never the :math:`N \times` ``num_embeddings`` :math:`\times d` per-sample
gradients ``vmap`` would form. Tokens at ``padding_idx`` get no gradient, as in ``F.embedding``.

It is exact only when the parameter's per-sample gradient **is** that sum of outer products, which
:func:`find_exact_linears` checks on one sample, run as a batch of one as ``vmap`` runs every sample:

- the module is one of the layers above, owning the parameter directly (not through a parametrization), and its
  forward runs exactly once;
- its input ends in ``d_in`` values and its output in ``d_out``, with as many rows as the input;
- the parameter tensor is used by exactly one torch operation in the forward and the loss (the layer's own
  ``F.linear``/``addmm``): not shared with another module that runs, not read elsewhere (``x @ layer.weight``, a fused
  kernel reading it directly, as ``nn.MultiheadAttention`` does with ``out_proj``). Uses are counted with a
  ``TorchFunctionMode``, which sees every torch function, method and tensor attribute that touches it.

Every other trainable parameter keeps its per-sample gradient from ``vmap``. Because each sample runs on its own,
as a batch of one, the shortcut inherits the ``vmap`` path's independence of the other samples of the chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.hooks import RemovableHandle

GRAD_BYTES = 64 * 2**20
"""At most this many bytes of per-sample weight gradients of one token-wise layer are formed at once."""


class ShortcutMismatchError(RuntimeError):
    """A shortcut layer did not run exactly once in a forward, although it did in the check."""


Kind = Literal["linear", "conv1d", "embedding"]
"""``nn.Linear``; Hugging Face ``Conv1D`` (weight stored ``(in_features, out_features)``); ``nn.Embedding`` (weight
``(num_embeddings, embedding_dim)``, integer inputs: ids of one-hot rows)."""


class ExactLinear(NamedTuple):
    """A linear layer whose trainable ``weight``/``bias`` take the shortcut.

    ``weight``/``bias`` are parameter names, ``None`` if frozen or not the layer's own (a parametrized weight).
    ``in_features`` of an embedding is its number of embeddings (the size of the one-hot rows).
    """

    module: nn.Module
    weight: str | None
    bias: str | None
    in_features: int
    out_features: int
    kind: Kind
    probe: Tensor  # zeros of the shape of the checked sample's output, added to it to read its gradient

    @property
    def names(self) -> list[str]:
        return [name for name in (self.weight, self.bias) if name is not None]

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample of what the shortcut keeps: the layer's input and output gradient (all rows)."""
        rows = self.probe.numel() // self.out_features
        row_input = 8 if self.kind == "embedding" else self.in_features * self.probe.element_size()  # an int64 id
        return rows * (row_input + self.out_features * self.probe.element_size())


def _layer_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
    return args[0] if args else kwargs["input"]


def _conv1d_features(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a module shaped like Hugging Face's ``Conv1D``, else ``None``."""
    nf, weight, bias = getattr(module, "nf", None), module._parameters.get("weight"), module._parameters.get("bias")
    if not isinstance(nf, int) or isinstance(nf, bool) or weight is None or weight.dim() != 2:
        return None
    if weight.shape[1] != nf or (bias is not None and tuple(bias.shape) != (nf,)):
        return None
    return int(weight.shape[0]), nf


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


class _Candidate(NamedTuple):
    module: nn.Module
    weight: str | None
    bias: str | None
    in_features: int
    out_features: int
    kind: Kind


def _candidates(model: nn.Module, name_of: Mapping[int, str]) -> dict[str, _Candidate]:
    found: dict[str, _Candidate] = {}
    for module_name, module in model.named_modules():
        kind: Kind
        if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
            features, kind = (module.in_features, module.out_features), "linear"
        elif isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward:
            if module.max_norm is not None or module.scale_grad_by_freq:  # renormalised weight, rescaled gradient
                continue
            features, kind = (module.num_embeddings, module.embedding_dim), "embedding"
        else:
            conv1d = _conv1d_features(module)
            if conv1d is None:
                continue
            features, kind = conv1d, "conv1d"
        # own parameters only: a parametrized weight lives in module.parametrizations, not module._parameters
        own = [module._parameters.get(key) for key in ("weight", "bias")]
        weight, bias = (None if p is None else name_of.get(id(p)) for p in own)
        if weight is not None or bias is not None:
            found[module_name] = _Candidate(module, weight, bias, *features, kind)
    return found


def _is_linear_call(candidate: _Candidate, inputs: Tensor, output: Tensor) -> bool:
    """Whether the checked call is the layer's linear map.

    The input and output have matching rows; a ``Conv1D``'s output is ``input @ weight + bias``; an embedding maps
    integer ids to one row each.
    """
    if not isinstance(inputs, Tensor) or not isinstance(output, Tensor) or inputs.dim() == 0 or output.dim() == 0:
        return False
    if candidate.kind == "embedding":
        integer = not (inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool)
        return integer and tuple(output.shape) == (*inputs.shape, candidate.out_features)
    if inputs.shape[-1] != candidate.in_features or output.shape[-1] != candidate.out_features:
        return False
    if inputs.numel() // candidate.in_features != output.numel() // candidate.out_features:
        return False
    if candidate.kind == "linear":
        return True
    weight, bias = (candidate.module._parameters.get(key) for key in ("weight", "bias"))
    if weight is None:
        return False
    with torch.no_grad():
        expected = inputs.reshape(-1, candidate.in_features) @ weight
        if bias is not None:
            expected = expected + bias
        return bool(torch.allclose(output.reshape(expected.shape), expected, rtol=1e-4, atol=1e-5))


def find_exact_linears(
    model: nn.Module, params: Mapping[str, Tensor], run_one_sample: Callable[[], object]
) -> dict[str, ExactLinear]:
    """The linear layers whose trainable parameters the shortcut handles exactly, by module name.

    Args:
        model: the network, in the mode of the estimate (``eval()``).
        params: the trainable parameters, ``{name: tensor}`` as in ``model.named_parameters()``.
        run_one_sample: runs the forward and the loss of one sample as a batch of one.
    """
    candidates = _candidates(model, {id(p): name for name, p in params.items()})
    if not candidates:
        return {}
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in candidates}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor) -> None:
            seen[name].append((_layer_input(args, kwargs), output))

        return hook

    watched = {id(params[p]): p for c in candidates.values() for p in (c.weight, c.bias) if p is not None}
    handles = [
        c.module.register_forward_hook(record(name), prepend=True, with_kwargs=True) for name, c in candidates.items()
    ]
    counter = _CountUses(watched)
    try:
        with torch.enable_grad(), counter:  # as under torch.func.grad: code paths that skip autograd are not taken
            run_one_sample()
    finally:
        for handle in handles:
            handle.remove()
    exact: dict[str, ExactLinear] = {}
    for name, c in candidates.items():
        calls = seen[name]
        if len(calls) != 1 or not _is_linear_call(c, *calls[0]):
            continue
        if all(counter.uses[p] == 1 for p in (c.weight, c.bias) if p is not None):  # its own F.linear/addmm only
            exact[name] = ExactLinear(*c, probe=torch.zeros_like(calls[0][1]))
    return exact


def output_probes(linears: Mapping[str, ExactLinear], run_forward: Callable[[], object]) -> dict[str, Tensor]:
    """Zero probes of the shape of each layer's output in ``run_forward`` (one sample of a new shape).

    Raises:
        ShortcutMismatchError: if a layer does not run exactly once.
    """
    outputs: dict[str, list[Tensor]] = {name: [] for name in linears}
    handles = [
        lin.module.register_forward_hook(lambda module, args, output, name=name: outputs[name].append(output))
        for name, lin in linears.items()
    ]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    wrong = [name for name, seen in outputs.items() if len(seen) != 1]
    if wrong:
        raise ShortcutMismatchError(
            f"the linear layers {wrong} did not run exactly once on an input of a new shape; use mode='vmap'"
        )
    return {name: torch.zeros_like(seen[0]) for name, seen in outputs.items()}


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


def _weight_fisher(delta: Tensor, a: Tensor) -> Tensor:
    r""":math:`\sum_n (\delta_n^\top a_n)^{\odot 2}` for ``delta`` ``(N, R, d_out)`` and ``a`` ``(N, R, d_in)``."""
    if delta.shape[1] == 1:  # one row per sample: the square of an outer product is the outer product of squares
        return delta[:, 0].square().T @ a[:, 0].square()
    per_sample = delta.shape[2] * a.shape[2] * delta.element_size()
    step = max(1, GRAD_BYTES // per_sample)
    total = delta.new_zeros(delta.shape[2], a.shape[2])
    for start in range(0, delta.shape[0], step):
        grads = torch.bmm(delta[start : start + step].transpose(1, 2), a[start : start + step])
        total += grads.square_().sum(0)
    return total


def _embedding_fisher(delta: Tensor, ids: Tensor, num_embeddings: int, padding_idx: int | None) -> Tensor:
    r""":math:`F_{W,v} = \sum_n (\sum_{r: v_{n,r} = v} \delta_{n,r})^{\odot 2}` of an embedding's weight.

    For ``delta`` ``(N, R, d)`` and ``ids`` ``(N, R)``: the output gradients of equal ``(sample, id)`` pairs summed,
    squared, added into row ``id``.
    """
    keys = (torch.arange(ids.shape[0], device=ids.device)[:, None] * num_embeddings + ids).reshape(-1)
    rows = delta.reshape(-1, delta.shape[2])
    if padding_idx is not None:  # F.embedding gives the padding row no gradient
        kept = ids.reshape(-1) != padding_idx
        keys, rows = keys[kept], rows[kept]
    pairs, pair_of_row = torch.unique(keys, return_inverse=True)
    sums = rows.new_zeros(pairs.shape[0], rows.shape[1]).index_add_(0, pair_of_row, rows)
    return rows.new_zeros(num_embeddings, rows.shape[1]).index_add_(0, pairs % num_embeddings, sums.square_())


def accumulate_linear_fisher(
    linears: Mapping[str, ExactLinear],
    output_grads: Mapping[str, Tensor],
    inputs: Mapping[str, Tensor],
    fisher: dict[str, Tensor],
) -> None:
    r"""Add a chunk's :math:`\sum_n (\delta_n^\top a_n)^{\odot 2}` and :math:`\sum_n (\sum_r \delta_{n,r})^{\odot 2}`.

    Args:
        linears: the shortcut layers, by module name.
        output_grads: per-sample gradients with respect to each layer's probe, ``(N, *one sample's output shape)``.
        inputs: each layer's per-sample inputs, ``(N, *one sample's input shape)``.
        fisher: ``{parameter name: running sum}``, updated in place.
    """
    for name, lin in linears.items():
        dtype = fisher[lin.names[0]].dtype
        samples = output_grads[name].shape[0]
        delta = output_grads[name].reshape(samples, -1, lin.out_features).to(dtype)
        if lin.kind == "embedding" and lin.weight is not None:
            ids = inputs[name].reshape(samples, -1)
            padding_idx = cast(nn.Embedding, lin.module).padding_idx
            fisher[lin.weight] += _embedding_fisher(delta, ids, lin.in_features, padding_idx)
        elif lin.weight is not None:
            a = inputs[name].reshape(samples, -1, lin.in_features).to(dtype)
            weight = _weight_fisher(delta, a)
            fisher[lin.weight] += weight if lin.kind == "linear" else weight.T
        if lin.bias is not None:
            fisher[lin.bias] += delta.sum(1).square().sum(0)

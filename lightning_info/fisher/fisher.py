r"""Diagonal empirical Fisher information from per-sample gradients (FISH, Sung et al., NeurIPS 2021).

For parameters :math:`\theta` and samples :math:`(x_i, y_i)`, the diagonal Fisher estimate is

.. math:: F_j = \sum_{i=1}^{N} \left( \frac{\partial \log p_\theta(y_i \mid x_i)}{\partial \theta_j} \right)^2

computed **per sample**. The square of the batch-mean gradient,
:math:`\big(\tfrac{1}{N}\sum_i \partial_j \log p(y_i|x_i)\big)^2`, is a different quantity (it cancels opposite
gradients) and is not what this module returns. We return the **sum** over the N samples, as the FISH paper writes
it; divide by N for the mean :math:`\tfrac{1}{N}\sum_i` that other write-ups use. The two differ by a constant
factor, so the top-k masks are identical.

Three implementations give the same numbers:

- ``mode="auto"`` (default): the ``vmap`` path below, except that the ``weight``/``bias`` of each ``nn.Linear`` (or
  Hugging Face ``Conv1D``) whose parameters nothing else uses get their Fisher from the layer's inputs :math:`a` and
  output gradients :math:`\delta`, exactly: :math:`\sum_n (\delta_n^\top a_n)^{\odot 2}` and
  :math:`\sum_n (\sum_t \delta_{n,t})^{\odot 2}`, summed over the rows :math:`t` one sample gives the layer (one for
  an MLP layer or a classification head, one per token for a transformer's attention projections and feed-forward
  layers), without ``vmap``'s per-sample gradients (:mod:`lightning_info.fisher.linear_shortcut`; the conditions
  are checked on one sample at run time, and any other parameter keeps the ``vmap`` path). ``nn.Embedding`` layers
  (token and position embeddings, weights not tied to another layer) take the same shortcut as linear layers of
  one-hot rows: the output gradients of a sample's tokens with the same id are summed and squared. The extra memory
  of those layers is their inputs and output gradients, plus a bounded batch of per-sample weight gradients for
  token-wise layers.
- ``mode="vmap"``: ``torch.func.functional_call`` + ``vmap(grad(...))`` over chunks of ``chunk_size`` samples; the
  per-sample gradients of one chunk (``chunk_size x #params`` values, squared in place) and the chunk's activations
  are the peak extra memory, whatever the number of samples. By default a chunk holds at most 256 samples and at
  most 256 MiB of per-sample gradients.
- ``mode="loop"``: one forward/backward per sample (batch size 1), for models ``vmap`` cannot transform (in-place
  ops on inputs, custom autograd functions without vmap rules, data-dependent control flow).

**BatchNorm and dropout.** The model is put in ``eval()`` mode while the Fisher is estimated (and every submodule's
``training`` flag is restored afterwards): BatchNorm uses its running statistics and dropout is off, so each
sample's gradient does not depend on the other samples of its batch, ``vmap`` never updates running statistics in
place, and both modes agree. Buffers are not modified. (In train mode a batch of one would be normalised by its own
statistics, which ``BatchNorm1d`` refuses, and ``vmap`` cannot write running statistics in place.)
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_leaves, tree_map

from lightning_info._internal.validation import check_choice, check_int
from lightning_info.fisher.linear_shortcut import (
    ExactLinear,
    LinearTaps,
    ShortcutMismatchError,
    accumulate_linear_fisher,
    find_exact_linears,
    output_probes,
)

LossFn = Callable[[Any, Tensor], Tensor]
_Shapes = tuple[tuple[int, ...], ...]  # the shapes of one sample's input tensors
_MAX_CHUNK = 256  # default chunk: at most this many samples per vmap call ...
_CHUNK_BYTES = 256 * 2**20  # ... and at most this many bytes of per-sample gradients


def nll_from_logits(output: Tensor, target: Tensor) -> Tensor:
    """Default ``loss_fn``: the negative log-likelihood ``-log softmax(output)[target]``, summed over the batch."""
    return nn.functional.cross_entropy(output, target, reduction="sum")


def _split_batch(batch: Any) -> tuple[Any, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"each batch must be a tuple or list (inputs, targets, ...), got {type(batch).__name__}; "
            "map your batches to that form before calling empirical_fisher"
        )
    inputs, targets = batch[0], batch[1]
    if not isinstance(targets, Tensor):
        raise TypeError(f"batch targets must be a torch.Tensor, got {type(targets).__name__}")
    return inputs, targets


def _rows(inputs: Any, start: int, stop: int) -> Any:
    return tree_map(lambda t: t[start:stop] if isinstance(t, Tensor) else t, inputs)


def _num_rows(inputs: Any, targets: Tensor) -> int:
    first = inputs if isinstance(inputs, Tensor) else next((t for t in inputs if isinstance(t, Tensor)), None)
    if first is None:
        raise TypeError("batch inputs must be a tensor or a tuple/list holding tensors")
    if first.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs have {first.shape[0]} rows but targets have {targets.shape[0]}")
    return int(targets.shape[0])


def _cat(held: list[tuple[Any, Tensor]]) -> tuple[Any, Tensor]:
    if len(held) == 1:
        return held[0]
    inputs = [x for x, _ in held]
    joined = tree_map(lambda *ts: torch.cat(ts) if isinstance(ts[0], Tensor) else ts[0], inputs[0], *inputs[1:])
    return joined, torch.cat([y for _, y in held])


def _chunks(batches: Iterable[Any], num_samples: int, chunk_size: int) -> Iterator[tuple[Any, Tensor]]:
    """``(inputs, targets)`` of ``chunk_size`` rows (the last may be shorter) from the first ``num_samples`` rows.

    Consecutive batches are joined, so a loader with small batches still fills each ``vmap`` call; batches whose
    samples differ in shape (sequences padded to each batch's longest) are not joined.
    """
    held: list[tuple[Any, Tensor]] = []
    held_rows = seen = 0
    for batch in batches:
        inputs, targets = _split_batch(batch)
        rows = min(_num_rows(inputs, targets), num_samples - seen)
        if held_rows and _sample_shapes(held[0][0]) != _sample_shapes(inputs):
            yield _cat(held)
            held, held_rows = [], 0
        held.append((_rows(inputs, 0, rows), targets[:rows]))
        held_rows, seen = held_rows + rows, seen + rows
        while held_rows >= chunk_size:
            x, y = _cat(held)
            yield _rows(x, 0, chunk_size), y[:chunk_size]
            held, held_rows = [(_rows(x, chunk_size, held_rows), y[chunk_size:])], held_rows - chunk_size
        if not held_rows:
            held = []
        if seen >= num_samples:  # here, not at the top: no batch is drawn past the one that completes the count
            break
    if held_rows:
        yield _cat(held)


def _scalar(loss: object) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            "loss_fn must return one scalar per sample (the negative log-likelihood of that sample), "
            f"got shape {tuple(loss.shape)} for a batch of 1"
        )
    return loss.reshape(())


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)


def _sample_labels(model: nn.Module, inputs: Any, generator: torch.Generator | None) -> Tensor:
    """Draw ``y ~ p_theta(y | x)`` (categorical over the last dimension of the model's output)."""
    with torch.no_grad():
        logits = _call(model, inputs)
    probs = logits.detach().float().softmax(-1).cpu()
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return draws.reshape(probs.shape[:-1]).to(logits.device)


def empirical_fisher(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn | None = None,
    num_samples: int = 1024,
    mode: Literal["auto", "vmap", "loop"] = "auto",
    label: Literal["empirical", "sampled"] = "empirical",
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    r"""Diagonal Fisher :math:`F_j = \sum_i (\partial_j \log p(y_i \mid x_i))^2` of every trainable parameter.

    Args:
        model: the network; called as ``model(inputs)`` (or ``model(*inputs)`` for a tuple of input tensors).
            Only parameters with ``requires_grad=True`` get a Fisher value. Put in ``eval()`` during the estimate.
        batches: iterable of ``(inputs, targets, ...)`` batches, e.g. a ``DataLoader``, already on the model's device;
            consecutive batches are joined into chunks, so the loader's batch size does not limit ``vmap``.
        loss_fn: ``loss_fn(output, target) -> scalar`` giving the negative log-likelihood of one sample (it receives a
            batch of one). Default: cross-entropy of logits, ``-log softmax(output)[target]``.
        num_samples: N, the number of samples used (the first ``num_samples`` rows of ``batches``).
        mode: ``"auto"`` (``"vmap"`` with the exact shortcut for eligible ``nn.Linear``/``nn.Embedding`` layers, see
            the module docstring), ``"vmap"`` (per-sample gradients of every parameter with ``torch.func``, chunked) or
            ``"loop"`` (batch size 1).
        label: ``"empirical"`` uses the data's targets (empirical Fisher, as in FISH); ``"sampled"`` draws one
            :math:`y \sim p_\theta(\cdot \mid x)` per sample from the softmax of the model's output over its last
            dimension (a one-draw Monte-Carlo estimate of the true Fisher, for classifiers whose output is logits)
            and passes it to ``loss_fn`` instead of the data's target.
        chunk_size: samples per ``vmap`` call; peak extra memory is about ``chunk_size * #params`` values (in
            ``"auto"`` mode, the parameters of the shortcut layers count as their input and output sizes instead).
            ``None``: ``min(256, 256 MiB / bytes of one sample's gradients)``, at least 1.
        generator: random generator for ``label="sampled"`` (CPU), for reproducible draws.

    Returns:
        ``{parameter name: tensor of the parameter's shape}``: the Fisher summed over the samples (divide by N for
        the mean), in the order of ``model.named_parameters()``.

    Raises:
        TypeError: if a batch is not ``(inputs, targets, ...)`` or ``loss_fn`` does not return a tensor.
        ValueError: for ``num_samples``/``chunk_size`` < 1, a bad ``mode``/``label``, a model with no trainable
            parameters, empty ``batches``, or a ``loss_fn`` returning more than one value per sample.
        RuntimeError: if ``vmap`` cannot transform the model (the message suggests ``mode="loop"``), or in ``"auto"``
            mode if a shortcut layer does not run exactly once in a later forward (it suggests ``mode="vmap"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_info.fisher import empirical_fisher
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
        >>> fisher = empirical_fisher(model, batches, num_samples=16)
        >>> {name: tuple(f.shape) for name, f in fisher.items()}
        {'0.weight': (8, 4), '0.bias': (8,), '2.weight': (3, 8), '2.bias': (3,)}
        >>> loop = empirical_fisher(model, batches, num_samples=16, mode="loop")
        >>> all(torch.allclose(fisher[n], loop[n], atol=1e-6) for n in fisher)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    num_samples = check_int("num_samples", num_samples, min_value=1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    check_choice("mode", mode, ["auto", "vmap", "loop"])
    check_choice("label", label, ["empirical", "sampled"])
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    loss = loss_fn or nll_from_logits
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"model ({type(model).__name__}) has no trainable parameters (requires_grad=True)")
    fisher = {name: torch.zeros_like(p, memory_format=torch.contiguous_format) for name, p in params.items()}

    training = {module: module.training for module in model.modules()}
    model.eval()
    seen = 0
    try:
        linears: dict[str, ExactLinear] = {}
        probes: dict[_Shapes, dict[str, Tensor]] = {}  # by the shape of one sample's inputs
        if mode == "auto":
            linears, probes, batches = _exact_linears(model, params, loss, batches)
        if chunk_size is None:
            covered = {name for lin in linears.values() for name in lin.names}
            sample_bytes = sum(p.numel() * p.element_size() for name, p in params.items() if name not in covered)
            sample_bytes += sum(lin.sample_bytes for lin in linears.values())
            chunk_size = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(1, sample_bytes)))
        for x, y in _chunks(batches, num_samples, chunk_size):
            if label == "sampled":
                y = _sample_labels(model, x, generator)
            if mode == "loop":
                _accumulate_loop(model, params, loss, x, y, fisher)
            else:
                _accumulate_vmap(model, params, loss, x, y, fisher, linears, _chunk_probes(model, linears, x, probes))
            seen += int(y.shape[0])
    finally:
        for module, flag in training.items():
            module.training = flag
    if seen == 0:
        raise ValueError("batches yielded no samples")
    if seen < num_samples:
        warnings.warn(f"empirical_fisher: asked for num_samples={num_samples}, the batches held {seen}", stacklevel=2)
    return fisher


def _exact_linears(
    model: nn.Module, params: Mapping[str, Tensor], loss_fn: LossFn, batches: Iterable[Any]
) -> tuple[dict[str, ExactLinear], dict[_Shapes, dict[str, Tensor]], Iterable[Any]]:
    """The shortcut layers checked on the first sample of ``batches``, their probes, and ``batches`` as given.

    The probes are keyed by that sample's input shapes; the first batch is put back in front of the rest.
    """
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return {}, {}, ()
    inputs, targets = _split_batch(first)
    if _num_rows(inputs, targets) == 0:
        return {}, {}, itertools.chain([first], iterator)
    linears = find_exact_linears(
        model, params, lambda: _scalar(loss_fn(_call(model, _rows(inputs, 0, 1)), targets[:1]))
    )
    probes = {_sample_shapes(inputs): {name: lin.probe for name, lin in linears.items()}}
    return linears, probes, itertools.chain([first], iterator)


def _sample_shapes(inputs: Any) -> _Shapes:
    return tuple(tuple(t.shape[1:]) for t in tree_leaves(inputs) if isinstance(t, Tensor))


def _chunk_probes(
    model: nn.Module, linears: Mapping[str, ExactLinear], x: Any, cache: dict[_Shapes, dict[str, Tensor]]
) -> dict[str, Tensor]:
    """The shortcut layers' zero output probes for the samples of ``x`` (token counts may differ between chunks)."""
    if not linears:
        return {}
    key = _sample_shapes(x)
    if key not in cache:
        cache[key] = output_probes(linears, lambda: _call(model, _rows(x, 0, 1)))
    return cache[key]


def _accumulate_vmap(
    model: nn.Module,
    params: Mapping[str, Tensor],
    loss_fn: LossFn,
    x: Any,
    y: Tensor,
    fisher: dict[str, Tensor],
    linears: Mapping[str, ExactLinear],
    probes: dict[str, Tensor],
) -> None:
    """Per-sample gradients of the parameters outside ``linears``; output gradients and inputs of ``linears``."""
    covered = {name for lin in linears.values() for name in lin.names}
    detached = {name: p.detach() for name, p in params.items() if name not in covered}
    rest: dict[str, Tensor] = {
        name: p.detach() if name in covered else p for name, p in model.named_parameters() if name not in detached
    }
    rest.update(dict(model.named_buffers()))

    def sample_loss(
        diff: tuple[dict[str, Tensor], dict[str, Tensor]], xi: Any, yi: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        theta, sample_probes = diff
        one = tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, xi)
        args = tuple(one) if isinstance(one, (tuple, list)) else (one,)
        taps.start(sample_probes)
        output = functional_call(model, (theta, rest), args)
        return _scalar(loss_fn(output, yi.unsqueeze(0))), taps.inputs()

    try:
        # the math attention kernel decomposes into ops with batching rules (the fused CPU kernels have none)
        with sdpa_kernel([SDPBackend.MATH]), LinearTaps(linears) as taps:
            (per_sample, output_grads), inputs = vmap(grad(sample_loss, has_aux=True), in_dims=(None, 0, 0))(
                (detached, probes), x, y
            )
    except ShortcutMismatchError:
        raise
    except RuntimeError as err:
        raise RuntimeError(f"vmap could not compute per-sample gradients ({err}); use mode='loop'") from err
    accumulate_linear_fisher(linears, output_grads, inputs, fisher)
    for name, g in per_sample.items():
        if g.stride(0) == 0:  # a gradient that does not depend on the sample (e.g. of a parameter the output does
            fisher[name] += g[0].square() * g.shape[0]  # not use): vmap expands it, so it cannot be written in place
        else:
            fisher[name] += g.square_().sum(0)  # in place: no second chunk-sized tensor


def _accumulate_loop(
    model: nn.Module, params: Mapping[str, Tensor], loss_fn: LossFn, x: Any, y: Tensor, fisher: dict[str, Tensor]
) -> None:
    names, tensors = list(params), list(params.values())
    for i in range(int(y.shape[0])):
        with torch.enable_grad():  # the loop needs autograd even when called under no_grad (vmap does not)
            value = _scalar(loss_fn(_call(model, _rows(x, i, i + 1)), y[i : i + 1]))
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        for name, g in zip(names, grads, strict=True):
            if g is not None:
                fisher[name] += g.pow(2)


def fisher_importance(fisher: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    r"""Fisher pruning saliency :math:`s_j = \tfrac{1}{2} F_j \theta_j^2`.

    The second-order (Optimal Brain Damage) estimate of the loss increase when :math:`\theta_j` is set to zero,
    with the diagonal Fisher in place of the Hessian. Rank by it to prune; use ``fisher`` itself (importance of
    moving a weight) for masks (:func:`topk_masks`) or as per-parameter weights in Fisher-weighted model merging.

    Args:
        fisher: ``{name: F}`` as returned by :func:`empirical_fisher`.
        params: ``{name: tensor}``, e.g. ``dict(model.named_parameters())``; must hold every name of ``fisher``.

    Returns:
        ``{name: saliency}`` with the shapes of ``fisher``.

    Raises:
        ValueError: if a name of ``fisher`` is missing from ``params`` or shapes differ.

    Example:
        >>> import torch
        >>> fisher_importance({"w": torch.tensor([1.0, 4.0])}, {"w": torch.tensor([2.0, 0.5])})
        {'w': tensor([2.0000, 0.5000])}
    """
    out: dict[str, Tensor] = {}
    for name, f in fisher.items():
        if name not in params:
            raise ValueError(f"params has no entry {name!r} (fisher names: {list(fisher)[:5]}...)")
        theta = params[name].detach()
        if theta.shape != f.shape:
            raise ValueError(f"shape of params[{name!r}] {tuple(theta.shape)} != fisher shape {tuple(f.shape)}")
        out[name] = 0.5 * f * theta.to(f.dtype).pow(2)
    return out

"""The closure evaluations of one sharpness-aware step and what must differ between them.

A sharpness-aware step evaluates the training closure several times: once at the weights ``w`` (the *clean* pass)
and one or more times at moved weights (the *auxiliary* passes). :class:`ClosurePasses` runs them so that only the
clean pass has side effects outside the gradient:

- **RNG** (``reuse_rng=True``): every auxiliary pass starts from the CPU (and initialised CUDA) random state the clean
  pass started from, so dropout draws the same masks and the auxiliary gradients belong to the same function.
- **BatchNorm**: during an auxiliary pass each BatchNorm call updates copies of its running statistics and the
  original buffers are put back after the call, so the statistics are updated once per step, from the clean pass.
- **Lightning logging**: ``LightningModule.log`` (and therefore ``log_dict``) is a no-op during auxiliary passes, for
  the module's ``training_step`` and every callback hook; logged values are the clean pass's, once per step. Other
  side effects (a torchmetrics ``Metric`` updated by hand, counters) can be guarded with
  :func:`~lightning_info._internal.passes.in_auxiliary_pass`; detached activation captures (the monitors) skip them.
- **Lightning gradient clipping** (``defer_clipping=True``): Lightning clips after every closure call; the calls are
  recorded instead and replayed once by :meth:`ClosurePasses.clip_once`, on the final update direction.
- **DDP** (``local=True`` for a pass): every ``DistributedDataParallel`` module called in the pass skips its gradient
  all-reduce (what ``no_sync()`` does), so the gradient stays this rank's own.

All of this is done with scoped class-attribute swaps, undone when the pass ends: ``forward`` of the BatchNorm classes
and of ``DistributedDataParallel`` (no hook on other modules, so they pay nothing), and the public
``LightningModule.log`` / ``clip_gradients`` when Lightning is imported. No reference to the user's module, trainer
or DDP wrapper is needed, so the optimizers stay drop-in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from lightning_info._internal.passes import enter_pass, exit_pass

Closure = Callable[[], Any]

_LIGHTNING_MODULES = ("lightning.pytorch", "pytorch_lightning")
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_BATCHNORM_FORWARD = _BatchNorm.forward


def _lightning_module_classes() -> list[type]:
    classes = []
    for name in _LIGHTNING_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "LightningModule"):
            classes.append(module.LightningModule)
    return classes


def _silenced_log(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _swap(patches: list[tuple[type, str, Any]]) -> list[tuple[type, str, Any]]:
    """Set each ``(class, attribute, value)``; return the ``(class, attribute, previous value)`` that undo it."""
    originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
    for cls, name, value in patches:
        setattr(cls, name, value)
    return originals


@contextmanager
def _patched(classes: list[type], name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    originals = _swap([(cls, name, replacement) for cls in classes if name in cls.__dict__])
    try:
        yield
    finally:
        _swap(originals)


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _subclasses_defining(base: type, name: str) -> list[type]:
    """``base`` and its (recursive) subclasses that define ``name`` themselves."""
    found, stack = [], [base]
    while stack:
        cls = stack.pop()
        if name in cls.__dict__:
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _batch_statistics_only(self: _BatchNorm, input: Tensor) -> Tensor:
    """``_BatchNorm.forward`` in training mode without touching the running statistics.

    In training mode the output uses the batch's statistics only; the running ones are merely updated. Passing
    ``None`` for them gives the same output and gradient and updates nothing: no copy, no restore.
    """
    self._check_input_dim(input)
    return torch.nn.functional.batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _frozen_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """A BatchNorm ``forward`` that leaves the running statistics as they are.

    Plain ``_BatchNorm.forward`` (``BatchNorm1d/2d/3d``) computes the batch statistics without the running ones.
    Subclasses with their own ``forward`` (e.g. ``SyncBatchNorm``) update copies of the running statistics and the
    original buffers are put back afterwards (restoring values in place instead would bump the version of tensors
    autograd saved for backward).
    """
    plain = original is _BATCHNORM_FORWARD

    def forward(self: _BatchNorm, *args: Any, **kwargs: Any) -> Any:
        saved = [self._buffers.get(name) for name in _BN_BUFFERS]
        if not (self.training and self.track_running_stats and all(isinstance(b, Tensor) for b in saved)):
            return original(self, *args, **kwargs)
        if plain and len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
            return _batch_statistics_only(self, args[0])
        for name, buffer in zip(_BN_BUFFERS, saved, strict=True):
            self._buffers[name] = buffer.clone()  # type: ignore[union-attr]
        try:
            return original(self, *args, **kwargs)
        finally:
            self._buffers.update(zip(_BN_BUFFERS, saved, strict=True))

    return forward


def _auxiliary_patches() -> list[tuple[type, str, Any]]:
    """``(class, attribute, replacement)`` swapped in during an auxiliary pass.

    The ``forward`` of the BatchNorm classes (``_BatchNorm`` and subclasses with their own ``forward``) and
    ``LightningModule.log``: no other module pays anything.
    """
    patches: list[tuple[type, str, Any]] = []
    for cls in _subclasses_defining(_BatchNorm, "forward"):
        patches.append((cls, "forward", _frozen_forward(cls.__dict__["forward"])))
    patches += [(cls, "log", _silenced_log) for cls in _lightning_module_classes() if "log" in cls.__dict__]
    return patches


@contextmanager
def _local_ddp(seen: list[DistributedDataParallel]) -> Iterator[None]:
    """Every ``DistributedDataParallel`` forward of the pass skips the gradient all-reduce, as ``no_sync()`` does."""
    flags: dict[int, tuple[DistributedDataParallel, bool]] = {}
    original = DistributedDataParallel.forward

    def forward(self: DistributedDataParallel, *args: Any, **kwargs: Any) -> Any:
        if id(self) not in flags:
            flags[id(self)] = (self, self.require_backward_grad_sync)
            seen.append(self)
        self.require_backward_grad_sync = False  # read by DDP's forward to skip preparing the reducer
        return original(self, *args, **kwargs)

    try:
        with _patched([DistributedDataParallel], "forward", forward):
            yield
    finally:
        for module, flag in flags.values():
            module.require_backward_grad_sync = flag


class ClosurePasses:
    """Evaluate the closure of one sharpness-aware step: :meth:`clean` once, then :meth:`auxiliary` passes.

    Args:
        closure: re-evaluates the loss and its gradients (``zero_grad`` + forward + ``backward``) and returns the loss.
        reuse_rng: start every auxiliary pass from the random state the clean pass started from.
        defer_clipping: record Lightning's per-closure gradient clipping and replay it once in :meth:`clip_once`.
        after_pass: called after every pass with the gradients in place (e.g. to unscale AMP-scaled gradients).

    Use as a context manager around all the passes of one step.
    """

    def __init__(
        self,
        closure: Closure,
        *,
        reuse_rng: bool,
        defer_clipping: bool,
        after_pass: Callable[[], None] | None = None,
    ) -> None:
        self._closure = closure
        self._reuse_rng = reuse_rng
        self._defer_clipping = defer_clipping
        self._after_pass = after_pass
        self._rng: tuple[Tensor, list[Tensor] | None] | None = None
        self._clip_calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._stack = ExitStack()
        self._patches: list[tuple[type, str, Any]] | None = None
        #: ``DistributedDataParallel`` modules whose gradient sync a local pass skipped.
        self.ddp_seen: list[DistributedDataParallel] = []

    def __enter__(self) -> ClosurePasses:
        classes = _lightning_module_classes()
        if self._defer_clipping and classes:
            originals = {cls: cls.__dict__["clip_gradients"] for cls in classes if "clip_gradients" in cls.__dict__}

            def record(module: Any, *args: Any, **kwargs: Any) -> None:
                original = next(fn for cls, fn in originals.items() if isinstance(module, cls))
                self._clip_calls.append((original, (module, *args), kwargs))

            self._stack.enter_context(_patched(list(originals), "clip_gradients", record))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _run(self, local: bool, auxiliary: bool) -> Any:
        # _swap / try-finally rather than context managers: this runs between the passes, where every
        # microsecond is paid several times over (cold caches right after a backward)
        patches: list[tuple[type, str, Any]] = []
        if auxiliary:
            if self._patches is None:
                self._patches = _auxiliary_patches()  # once per step, however many auxiliary passes
            patches = self._patches
        originals = _swap(patches)
        token = enter_pass(auxiliary)
        try:
            with torch.enable_grad():
                if local and torch.distributed.is_available() and torch.distributed.is_initialized():
                    with _local_ddp(self.ddp_seen):  # DDP needs a process group: without one nothing to skip
                        loss = self._closure()
                else:
                    loss = self._closure()
        finally:
            _swap(originals)
            exit_pass(token)
        if self._after_pass is not None:
            self._after_pass()
        return loss

    def clean(self, local: bool = False) -> Any:
        """The pass at the current weights: its logging, BatchNorm updates and random draws are the step's."""
        if self._reuse_rng:
            self._rng = _rng_state()
        return self._run(local, auxiliary=False)

    def auxiliary(self, local: bool = False) -> Any:
        """A pass at moved weights: no logging, no BatchNorm update, the clean pass's random state."""
        if self._rng is not None:
            _set_rng_state(self._rng)
        return self._run(local, auxiliary=True)

    def clip_once(self) -> None:
        """Replay the last recorded Lightning gradient clipping call (all passes record the same arguments)."""
        if self._clip_calls:
            original, args, kwargs = self._clip_calls[-1]
            original(*args, **kwargs)
            self._clip_calls.clear()

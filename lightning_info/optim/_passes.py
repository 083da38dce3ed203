"""The closure evaluations of one sharpness-aware step and what must differ between them.

A sharpness-aware step evaluates the training closure several times: once at the weights ``w`` (the *clean* pass)
and one or more times at moved weights (the *auxiliary* passes). :class:`ClosurePasses` runs them so that only the
clean pass has side effects outside the gradient:

- **RNG** (``reuse_rng=True``): every auxiliary pass starts from the CPU (and initialised CUDA) random state the clean
  pass started from, so dropout draws the same masks and the auxiliary gradients belong to the same function.
- **BatchNorm**: during an auxiliary pass a BatchNorm call in training mode gives the same output and gradient but
  leaves its running statistics as they were, so they are updated once per step, from the clean pass (also in a
  ``torch.compile``d model).
- **Lightning logging**: ``LightningModule.log`` (and therefore ``log_dict``) is a no-op during auxiliary passes, for
  the module's ``training_step`` and every callback hook; logged values are the clean pass's, once per step. Other
  side effects (a torchmetrics ``Metric`` updated by hand, counters) can be guarded with
  :func:`~lightning_info._internal.passes.in_auxiliary_pass`; detached activation captures (the monitors) skip them.
- **Lightning gradient clipping** (``defer_clipping=True``): Lightning clips after every closure call; the calls are
  recorded instead and replayed once by :meth:`ClosurePasses.clip_once`, on the final update direction.
- **DDP** (``local=True`` for a pass): every ``DistributedDataParallel`` module called in the pass skips its gradient
  all-reduce (what ``no_sync()`` does), so the gradient stays this rank's own.
- **FSDP1**: every ``FullyShardedDataParallel`` module called in a pass is recorded (:attr:`ClosurePasses.fsdp1_seen`):
  the optimizer combines its norms over the modules' shards (each rank holds a shard of the flat parameters).

All of this is per thread and needs no reference to the user's module, trainer or DDP wrapper, so the optimizers stay
drop-in: ``forward`` of the BatchNorm classes and of ``DistributedDataParallel`` and the public
``LightningModule.log`` / ``clip_gradients`` are wrapped once (when the first sharpness-aware optimizer is created,
and for classes defined or imported later at the next step), and each wrapper reads this thread's pass state
(:func:`~lightning_info._internal.passes.in_auxiliary_pass` and the running :class:`ClosurePasses`). Outside a pass,
and in every other thread, the wrappers call the original at once: another model, a BatchNorm stepping in an
evaluator thread, a second ``Trainer`` are untouched. ``torch.compile`` guards on the thread-local flag the BatchNorm
wrapper reads, so a compiled model gets one graph for the clean pass and one for the extra passes (a class attribute
swapped during the pass would not be seen by a graph already compiled). No other module pays anything.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from lightning_info._internal.passes import enter_pass, exit_pass, in_auxiliary_pass

Closure = Callable[[], Any]

_LIGHTNING_MODULES = ("lightning.pytorch", "pytorch_lightning")
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_BATCHNORM_FORWARD = _BatchNorm.forward
_WRAPPER = "_lightning_info_pass_wrapper"  # set on the installed wrappers: install each class's once
_INSTALL = threading.Lock()
_RUNNING = threading.local()  # ``passes``: the ClosurePasses whose closure this thread is evaluating (else unset)


def _running() -> ClosurePasses | None:
    return getattr(_RUNNING, "passes", None)


def _lightning_module_classes() -> list[type]:
    classes = []
    for name in _LIGHTNING_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "LightningModule"):
            classes.append(module.LightningModule)
    return classes


def _imported_classes(module_name: str, class_name: str) -> list[type]:
    """``module_name.class_name`` if that module is imported already (no import cost for those who do not use it)."""
    module = sys.modules.get(module_name)
    cls = getattr(module, class_name, None)
    return [cls] if isinstance(cls, type) else []


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


def _frozen_in_auxiliary_passes(original: Callable[..., Any]) -> Callable[..., Any]:
    """A BatchNorm ``forward`` that leaves the running statistics as they are during this thread's auxiliary passes.

    Plain ``_BatchNorm.forward`` (``BatchNorm1d/2d/3d``) computes the batch statistics without the running ones.
    Subclasses with their own ``forward`` (e.g. ``SyncBatchNorm``) update copies of the running statistics and the
    original buffers are put back afterwards (restoring values in place instead would bump the version of tensors
    autograd saved for backward). Outside auxiliary passes it is ``original``.
    """
    plain = original is _BATCHNORM_FORWARD

    @functools.wraps(original)
    def forward(self: _BatchNorm, *args: Any, **kwargs: Any) -> Any:
        if not in_auxiliary_pass():
            return original(self, *args, **kwargs)
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


def _silenced_in_auxiliary_passes(original: Callable[..., Any]) -> Callable[..., Any]:
    """``LightningModule.log`` that does nothing during this thread's auxiliary passes."""

    @functools.wraps(original)
    def log(self: Any, *args: Any, **kwargs: Any) -> Any:
        if in_auxiliary_pass():
            return None
        return original(self, *args, **kwargs)

    return log


def _deferred_while_running(original: Callable[..., Any]) -> Callable[..., Any]:
    """``LightningModule.clip_gradients`` recorded (not run) while a deferring :class:`ClosurePasses` runs a pass."""

    @functools.wraps(original)
    def clip_gradients(self: Any, *args: Any, **kwargs: Any) -> Any:
        passes = _running()
        if passes is None or not passes.defer_clipping:
            return original(self, *args, **kwargs)
        passes.record_clipping(original, (self, *args), kwargs)
        return None

    return clip_gradients


def _local_while_running(original: Callable[..., Any]) -> Callable[..., Any]:
    """``DistributedDataParallel.forward`` that skips the gradient all-reduce in a local pass (as ``no_sync()``)."""

    @functools.wraps(original)
    def forward(self: DistributedDataParallel, *args: Any, **kwargs: Any) -> Any:
        passes = _running()
        if passes is not None and passes.local:
            passes.skip_sync(self)
        return original(self, *args, **kwargs)

    return forward


def _recorded_while_running(original: Callable[..., Any]) -> Callable[..., Any]:
    """FSDP1's ``FullyShardedDataParallel.forward`` that tells the running :class:`ClosurePasses` it was called."""

    @functools.wraps(original)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        passes = _running()
        if passes is not None and all(seen is not self for seen in passes.fsdp1_seen):
            passes.fsdp1_seen.append(self)
        return original(self, *args, **kwargs)

    return forward


def install() -> None:
    """Wrap, once per class, the methods whose behaviour an auxiliary pass changes (see the module docstring).

    Cheap when nothing is new (a walk over the BatchNorm subclasses); thread-safe.
    """
    targets: list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
        (cls, "forward", _frozen_in_auxiliary_passes) for cls in _subclasses_defining(_BatchNorm, "forward")
    ]
    targets.append((DistributedDataParallel, "forward", _local_while_running))
    for cls in _imported_classes("torch.distributed.fsdp.fully_sharded_data_parallel", "FullyShardedDataParallel"):
        targets.append((cls, "forward", _recorded_while_running))
    for cls in _lightning_module_classes():
        targets += [(cls, "log", _silenced_in_auxiliary_passes), (cls, "clip_gradients", _deferred_while_running)]
    pending = [t for t in targets if t[1] in t[0].__dict__ and not hasattr(t[0].__dict__[t[1]], _WRAPPER)]
    if not pending:
        return
    with _INSTALL:
        for cls, name, make in pending:
            original = cls.__dict__[name]
            if not hasattr(original, _WRAPPER):  # another thread may have installed it meanwhile
                wrapper = make(original)
                setattr(wrapper, _WRAPPER, True)
                setattr(cls, name, wrapper)


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
        self.defer_clipping = defer_clipping
        self._after_pass = after_pass
        self._rng: tuple[Tensor, list[Tensor] | None] | None = None
        self._clip_calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._sync_flags: dict[int, tuple[DistributedDataParallel, bool]] = {}
        #: whether the pass being evaluated skips DDP's gradient all-reduce
        self.local = False
        #: ``DistributedDataParallel`` modules whose gradient sync a local pass skipped.
        self.ddp_seen: list[DistributedDataParallel] = []
        #: the FSDP1 ``FullyShardedDataParallel`` modules that ran in a pass
        self.fsdp1_seen: list[Any] = []

    def __enter__(self) -> ClosurePasses:
        install()  # classes defined or imported since the optimizer was created (a user's BatchNorm, Lightning)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def record_clipping(self, clip: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Keep a Lightning ``clip_gradients`` call of a pass for :meth:`clip_once`."""
        self._clip_calls.append((clip, args, kwargs))

    def skip_sync(self, module: DistributedDataParallel) -> None:
        """Make ``module`` skip its gradient all-reduce for the rest of the pass (``no_sync()``'s flag)."""
        if id(module) not in self._sync_flags:
            self._sync_flags[id(module)] = (module, module.require_backward_grad_sync)
            if all(seen is not module for seen in self.ddp_seen):
                self.ddp_seen.append(module)
        module.require_backward_grad_sync = False  # read by DDP's forward to skip preparing the reducer

    def _run(self, local: bool, auxiliary: bool) -> Any:
        # thread-local flags rather than context managers: this runs between the passes, where every microsecond is
        # paid several times over (cold caches right after a backward)
        previous_pass, previous_running = enter_pass(auxiliary), _running()
        _RUNNING.passes = self
        # DDP needs a process group: without one there is nothing to skip
        self.local = local and torch.distributed.is_available() and torch.distributed.is_initialized()
        try:
            with torch.enable_grad():
                loss = self._closure()
        finally:
            _RUNNING.passes = previous_running
            exit_pass(previous_pass)
            self.local = False
            for module, flag in self._sync_flags.values():
                module.require_backward_grad_sync = flag
            self._sync_flags.clear()
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

"""Base class of the sharpness-aware optimizers: a base optimizer stepped with gradients from several closure passes."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_info._internal.dtypes import LOW_PRECISION
from lightning_info._internal.sharding import is_dtensor, local_shards, shard_group, sharded_world
from lightning_info._internal.validation import check_bool, check_int
from lightning_info.optim._passes import Closure, ClosurePasses, install

Groups = list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]  # (param group, its parameters, their gradients)


class NonFiniteGradientError(RuntimeError):
    """A gradient of the sharpness-aware step is NaN or Inf: a norm it needs, or the final update direction.

    The step did not change any weight (moved weights are restored) and the base optimizer did not step.
    """


def _foreach_norm(tensors: list[Tensor], ord: float) -> tuple[Tensor, ...]:
    """Per-tensor norms; float16/bfloat16 tensors are reduced in float32 (a float16 norm overflows above 65504)."""
    if any(t.dtype in LOW_PRECISION for t in tensors):
        wide = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
        return torch._foreach_norm(tensors, ord, dtype=wide)
    return torch._foreach_norm(tensors, ord)


def global_norm(tensor_lists: list[list[Tensor]], ord: float = 2.0, group: Any = None) -> Tensor:
    """Norm of all tensors of all lists together (one ``torch._foreach_norm`` per list), at least in float32.

    ``ord=2`` (default) is the L2 norm; ``ord=math.inf`` the largest absolute entry, NaN or Inf exactly when an entry
    is (no overflow of squares). ``group``: the process group over which the tensors are *shards* of the whole
    (FSDP1's flat-parameter shards): each rank's local norm is combined with one all-reduce (the sum of the squared
    norms, or the maximum for ``ord=math.inf``); every rank of ``group`` must call it. DTensors sharded over one 1-D
    mesh (FSDP2) are treated the same way, on their local shards, without a DTensor op.
    """
    if group is None:
        group = shard_group([t for tensors in tensor_lists for t in tensors])
        if group is not None:  # FSDP2: plain ops on the local shards and one all-reduce
            tensor_lists = [local_shards(tensors) for tensors in tensor_lists]
    tensor_lists = [[t for t in tensors if t.numel()] for tensors in tensor_lists]  # empty: no inf-norm identity
    norms = [n for tensors in tensor_lists if tensors for n in _foreach_norm(tensors, ord)]
    if len({(n.dtype, n.device) for n in norms}) > 1:  # mixed precision or devices: gather in float64
        norms = [n.to(device=norms[0].device, dtype=torch.float64) for n in norms]
    # float32/float64 (_foreach_norm widened half); no tensor here (e.g. an empty FSDP1 shard): 0, still combined
    norm = torch.linalg.vector_norm(torch.stack(norms), ord) if norms else torch.zeros(())
    if is_dtensor(norm):  # FSDP2 / tensor parallel: the norm is global already (a pending reduction): materialise it
        norm = norm.full_tensor()  # type: ignore[union-attr]
    if group is not None:
        norm = _combine_shard_norms(norm, ord, group)
    return norm


def _combine_shard_norms(norm: Tensor, ord: float, group: Any) -> Tensor:
    """The norm of the whole from each rank's ``norm`` of its shard (one all-reduce over ``group``)."""
    import torch.distributed as dist

    if ord == math.inf:
        norm = norm.clone()
        dist.all_reduce(norm, op=dist.ReduceOp.MAX, group=group)
        return norm
    if ord != 2:
        raise ValueError(f"ord must be 2 or math.inf to combine the norms of shards, got {ord}")
    squared = norm.square()
    dist.all_reduce(squared, group=group)
    return squared.sqrt()


def finiteness_norm(tensor_lists: list[list[Tensor]], group: Any = None) -> Tensor:
    """A norm of all the tensors that is NaN or Inf exactly when one of their entries is (one host sync).

    The L2 norm (:func:`global_norm`); only when that is not finite (a NaN/Inf entry, or squares that overflowed) the
    largest absolute entry, ``ord=inf``, which decides. ``ord=inf`` alone would do, but ``torch._foreach_norm`` with
    it is about 20 times slower than the L2 norm on CPU (0.9 ms for 0.1M float32 entries on one thread). ``group``: as
    in :func:`global_norm` (the shards' norms combined; every rank takes the same branch, as the combined L2 norm is
    the same on all of them).
    """
    norm = global_norm(tensor_lists, group=group)
    if math.isfinite(float(norm)):
        return norm
    return global_norm(tensor_lists, ord=math.inf, group=group)


def copy_tensors(targets: list[Tensor], sources: list[Tensor]) -> None:
    """``targets[i].copy_(sources[i])`` for all ``i``: one ``torch._foreach_copy_`` for plain tensors.

    DTensors (FSDP2's sharded parameters) have no sharding rule for ``_foreach_copy_``: those sharded alike over one
    1-D mesh are copied shard to shard (one ``_foreach_copy_`` of the local shards), others one by one.
    """
    if any(is_dtensor(t) for t in targets):
        if shard_group(targets + sources) is not None and all(
            t.placements == s.placements  # type: ignore[attr-defined]
            for t, s in zip(targets, sources, strict=True)
        ):
            torch._foreach_copy_(local_shards(targets), local_shards(sources))
            return
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)
    else:
        torch._foreach_copy_(targets, sources)


def finite_norm_value(name: str, norm: Tensor, optimizer: str) -> float:
    """``norm`` as a Python float (one host sync); :class:`NonFiniteGradientError` naming ``name`` if NaN or Inf."""
    value = float(norm)
    if not math.isfinite(value):
        raise NonFiniteGradientError(
            f"{optimizer}: {name} is {value} (non-finite); the weights were left unchanged. Check the loss for "
            "NaN/Inf, lower the learning rate, or train with precision='16-mixed' and SharpnessAwarePrecision, which "
            "skips such steps as GradScaler does."
        )
    return value


class SharpnessAwareOptimizer(Optimizer):
    """A base optimizer (any :class:`torch.optim.Optimizer` class) stepped with a sharpness-aware gradient.

    The base optimizer is built on this optimizer's ``param_groups`` and shares its ``state``, so learning-rate
    schedulers, ``ReduceLROnPlateau`` and checkpoints see one ordinary optimizer. :meth:`step` evaluates the closure
    :attr:`passes` times (see :mod:`lightning_info.optim._passes` for what the extra passes do and do not change),
    leaves the update direction in ``.grad`` and calls the base optimizer's ``step()``.

    Subclasses define their per-group hyper-parameters (``defaults``), validate them in :meth:`_check_group` and
    compute the update direction in :meth:`_update`. The copies a step needs (the weights, GAM's gradients) live in
    buffers kept from step to step (:meth:`_snapshot`): SAM holds one weight-sized copy between steps, GAM three
    (four with ``sam_rho``); they are not part of the ``state_dict``.

    Args:
        params: parameters or parameter groups, as for any optimizer.
        base_optimizer: the optimizer *class* (e.g. ``torch.optim.SGD``), built as
            ``base_optimizer(self.param_groups, **base_kwargs)``.
        defaults: the subclass's per-group hyper-parameters and their defaults.
        interval: do the sharpness-aware step every ``interval``-th ``step()`` (the first included) and a plain
            base-optimizer step with one closure call otherwise (``interval=k``: about ``1 + (passes - 1) / k`` times
            the cost of the base optimizer).
        reuse_rng: replay the clean pass's random state in every extra pass (same dropout masks).
        sync_perturbation: under DDP, all-reduce the gradients that only define the perturbation (``False``: each
            rank perturbs with its own gradient, the paper's m-sharpness; the update is always averaged).
        base_kwargs: keyword arguments of the base optimizer (``lr``, ``momentum``, ``weight_decay``, ...).

    Raises:
        TypeError: ``base_optimizer`` is not an optimizer class, or a flag is not a bool.
        ValueError: ``interval < 1``, a hyper-parameter out of range, or the base optimizer uses a hyper-parameter
            name of this optimizer (it would read this optimizer's value).
    """

    #: closure evaluations of one sharpness-aware step (subclasses set it)
    passes: int = 2

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        defaults: dict[str, Any],
        *,
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise TypeError(
                "base_optimizer must be a torch.optim.Optimizer subclass such as torch.optim.SGD (the class, not an "
                f"instance), got {base_optimizer!r}"
            )
        if issubclass(base_optimizer, SharpnessAwareOptimizer):
            raise TypeError(f"base_optimizer must not itself be sharpness-aware, got {base_optimizer.__name__}")
        self.interval = check_int("interval", interval, min_value=1)
        self.reuse_rng = check_bool("reuse_rng", reuse_rng)
        self.sync_perturbation = check_bool("sync_perturbation", sync_perturbation)
        self._own_defaults = dict(defaults)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        clash = sorted(set(self._own_defaults) & set(self.base_optimizer.defaults))
        if clash:
            raise ValueError(
                f"base_optimizer {base_optimizer.__name__} has hyper-parameters named {clash}, like "
                f"{type(self).__name__}; it would read {type(self).__name__}'s values. Use another base optimizer."
            )
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        # Mutable run state lives in containers (never rebound), so Lightning's LightningOptimizer wrapper and the
        # optimizer itself always see the same values.
        self._run: dict[str, Any] = {"step": 0, "zero_grad_calls": 0}
        #: statistics of the last sharpness-aware step (detached tensors; empty after a plain step)
        self.statistics: dict[str, Tensor] = {}
        # buffers of :meth:`_snapshot`, reused from step to step, with the (shape, dtype, device) of their sources
        self._snapshots: dict[str, tuple[list[tuple[torch.Size, torch.dtype, torch.device]], list[Tensor]]] = {}
        install()  # before any graph is compiled in training mode: torch.compile must see the pass-aware BatchNorm

    # ----------------------------------------------------------------------------------------------- subclass API
    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate the subclass's hyper-parameters of one parameter group."""

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        """Run the extra passes; leave the weights unchanged and the update direction in ``.grad``."""
        raise NotImplementedError

    def _unchecked_passes(self) -> str:
        """The passes whose gradient enters the update direction without a norm check (for error messages)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ optimizer protocol
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key, value in self._own_defaults.items():
            param_group.setdefault(key, value)
        self._check_group(param_group)
        base = getattr(self, "base_optimizer", None)  # None while Optimizer.__init__ adds the first groups
        if base is not None:
            base.add_param_group(param_group)  # appends to the shared ``param_groups``
        else:
            super().add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._run["zero_grad_calls"] += 1
        super().zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state = self.base_optimizer.state_dict()
        state["sharpness_aware"] = {"step": int(self._run["step"])}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("sharpness_aware", {"step": 0})
        base = self.base_optimizer
        groups, state = self.param_groups, self.state
        base.load_state_dict(state_dict)
        # the base optimizer rebinds its containers: refill ours in place and hand them back, so every holder of
        # ``param_groups``/``state`` (this optimizer, Lightning's wrapper, LR schedulers) keeps seeing the same objects
        groups[:] = base.param_groups
        state.clear()
        state.update(base.state)
        base.param_groups, base.state = groups, state
        self._run["step"] = int(own["step"])

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """One step: ``passes`` closure evaluations on sharpness-aware steps, one otherwise; returns the clean loss.

        Args:
            closure: re-evaluates the loss: zeroes the gradients, runs forward and ``backward``, returns the loss.
                Lightning's automatic optimization passes one.

        Raises:
            TypeError: no closure (e.g. Lightning's ``16-mixed`` GradScaler path: use ``SharpnessAwarePrecision``).
            RuntimeError: the closure accumulates gradients instead of recomputing them (gradient accumulation).
            NonFiniteGradientError: a gradient norm or the final update direction is NaN/Inf (moved weights are
                restored, the base optimizer does not step: the weights are never left non-finite).
        """
        closure = self._check_closure(closure)
        self.statistics.clear()
        if not self._due():
            with torch.enable_grad():
                loss = closure()
        else:
            with ClosurePasses(closure, reuse_rng=self.reuse_rng, defer_clipping=True) as passes:
                loss = self._clean_pass(passes)
                self._update(passes, loss)
                self._check_direction()
            passes.clip_once()
        self.base_optimizer.step()
        self._run["step"] += 1
        return loss

    @Optimizer.profile_hook_step  # step()'s pre/post hooks (e.g. FisherMask's): this path never calls step()
    @torch.no_grad()
    def scaled_step(
        self,
        closure: Closure,
        scaler: torch.amp.GradScaler,
        before_step: Callable[[], None] | None = None,
        after_pass: Callable[[], None] | None = None,
    ) -> Any:
        """:meth:`step` for float16 training with a ``GradScaler`` (what ``SharpnessAwarePrecision`` calls).

        The closure back-propagates the *scaled* loss. Each pass's gradients are unscaled (the scale is a power of
        two, so this is exact) and handed to ``after_pass()``; when a gradient norm is non-finite the perturbation is
        abandoned, the weights are left unchanged and the gradients are marked non-finite, so ``scaler.step`` skips
        the base step and ``scaler.update`` lowers the scale, as GradScaler intends. The update direction is handed
        to the scaler scaled again, then ``scaler.unscale_`` -> ``before_step()`` -> ``scaler.step`` ->
        ``scaler.update``; a non-finite final direction (e.g. the perturbed pass overflowed) is found by
        ``scaler.unscale_`` and skipped the same way, with the weights restored first. A plain step (every-k SAM) is
        one pass: closure, ``scaler.unscale_``, ``after_pass()``, ``before_step()``, ``scaler.step``.

        Like :meth:`step` it runs this optimizer's step pre- and post-hooks (``register_step_post_hook``), once per
        call, also when the scaler skips the base step.

        Args:
            closure: as for :meth:`step`, back-propagating ``scaler.scale(loss)``.
            scaler: the ``torch.amp.GradScaler``; its per-optimizer bookkeeping is done on :attr:`base_optimizer`.
            before_step: called once, with the final direction unscaled, before the base step (Lightning: gradient
                clipping).
            after_pass: called after every closure evaluation, with that pass's gradients unscaled (Lightning:
                ``on_before_optimizer_step``, which the unscaled precisions also run after every closure call, so
                that e.g. ``FisherMask`` masks the gradient that defines the perturbation).
        """
        closure = self._check_closure(closure)
        self.statistics.clear()
        loss: Any = None
        base = self.base_optimizer
        due = self._due()
        if not due:
            with torch.enable_grad():
                loss = closure()
        else:
            scale = float(scaler.get_scale())

            def unscaled_pass() -> None:
                self._scale_grads(1.0 / scale)
                if after_pass is not None:
                    after_pass()

            with ClosurePasses(closure, reuse_rng=self.reuse_rng, defer_clipping=False, after_pass=unscaled_pass) as p:
                try:
                    loss = self._clean_pass(p)
                    self._update(p, loss)
                except NonFiniteGradientError:
                    self.statistics.clear()
                    self._scale_grads(float("nan"))
                else:
                    self._scale_grads(scale)
        if not self._with_grads():  # the closure skipped backward: nothing for the scaler to check or step
            self._run["step"] += 1
            return loss
        scaler.unscale_(base)
        if not due and after_pass is not None:
            after_pass()
        if before_step is not None:
            before_step()
        scaler.step(base)
        scaler.update()
        self._run["step"] += 1
        self._opt_called = True  # what an LR scheduler's wrapper of ``step`` records (this path bypasses ``step``)
        return loss

    # ----------------------------------------------------------------------------------------------------- helpers
    def _due(self) -> bool:
        return int(self._run["step"]) % self.interval == 0

    def _check_closure(self, closure: Closure | None) -> Closure:
        name = type(self).__name__
        if closure is None and sys.modules.get("deepspeed") is not None:
            raise RuntimeError(
                f"{name}.step() was called without a closure while DeepSpeed is imported: DeepSpeed (Lightning's "
                "DeepSpeedStrategy) is not supported. Its precision plugin evaluates the training closure once and its "
                f"engine steps the optimizer without it, so the {self.passes} passes of a sharpness-aware step cannot "
                "run. Train with ModelParallelStrategy + fully_shard (FSDP2) and sync_perturbation=True, or with DDP. "
                "No weight was changed."
            )
        if closure is None:
            raise TypeError(
                f"{name}.step() needs `closure`: a function that zeroes the gradients, recomputes the loss with "
                f"backward() and returns it ({name} evaluates it {self.passes} times per step). Lightning's automatic "
                "optimization passes one, except with precision='16-mixed' and a GradScaler: add "
                "plugins=[SharpnessAwarePrecision('16-mixed', device)]. In manual optimization pass a closure to "
                "step() (SAM also has first_step()/second_step())."
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        return closure

    def _with_grads(self) -> Groups:
        """``(group, params, grads)`` of every group, keeping the parameters that have a gradient."""
        sharded = self._run.get("shard_group") is not None
        out = []
        for group in self.param_groups:
            if sharded:  # FSDP1: a parameter outside this rank's shard is empty, without .grad; the lists must align
                for p in group["params"]:
                    if p.grad is None and p.numel() == 0:
                        p.grad = torch.zeros_like(p)
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                out.append((group, params, [p.grad for p in params]))
        return out

    def _snapshot(self, key: str, tensors: list[Tensor]) -> list[Tensor]:
        """A copy of ``tensors`` in buffers kept from step to step (:func:`copy_tensors`, no allocation).

        The buffers are (re)allocated when the tensors' number, shapes, dtypes or devices change (one list
        comparison: this runs on every step, between the passes).
        """
        layout = [(t.shape, t.dtype, t.device) for t in tensors]
        kept = self._snapshots.get(key)
        if kept is None or kept[0] != layout:
            kept = self._snapshots[key] = (
                layout,
                [torch.empty_like(t, memory_format=torch.preserve_format) for t in tensors],
            )
        copy_tensors(kept[1], tensors)
        return kept[1]

    def _scale_grads(self, factor: float) -> None:
        grads = [g for _, _, gs in self._with_grads() for g in gs]
        if grads:
            torch._foreach_mul_(grads, factor)

    def _check_direction(self) -> None:
        """:class:`NonFiniteGradientError` if the update direction in ``.grad`` has a NaN/Inf entry (one host sync).

        The norms checked on the way only cover the gradients that define the perturbation; the last passes' ones
        reach the direction unchecked. Runs after the weights are restored, before the base step.
        """
        groups = self._with_grads()
        if not groups:
            return
        value = float(finiteness_norm([grads for _, _, grads in groups], group=self._run.get("shard_group")))
        if not math.isfinite(value):
            self.statistics.clear()
            raise NonFiniteGradientError(
                f"{type(self).__name__}: the update direction is non-finite (largest entry {value}): the gradient of "
                f"{self._unchecked_passes()} is NaN/Inf although the clean pass's was finite (the loss overflows "
                "or is undefined near w). The weights were restored to their values before the step and the base "
                "optimizer did not step. Lower rho, make the loss numerically safe, or train with "
                "precision='16-mixed' and SharpnessAwarePrecision, which skips such steps as GradScaler does."
            )

    def _check_engine(self, passes: ClosurePasses | None) -> None:
        """Refuse what the sharded engines cannot do (before any weight moves; ``passes=None``: manual first step).

        FSDP2 parameters are DTensors: their norms are global and their copies per tensor, so synchronised
        perturbations are exact. Under FSDP1 each rank holds a shard of the flattened parameters: the perturbation is
        elementwise on the shards (exact) and every norm and dot product is combined over the shards
        (:attr:`_shard_group`). A per-rank perturbation (m-sharpness) would need each rank's own full perturbed
        weights, which sharded parameters cannot hold: refused under both.
        """
        if passes is None:  # the step's first check; the parameter list is built only here and under FSDP1
            self._run["shard_group"] = None
            if not self.sync_perturbation and sharded_world(self._parameters()) > 1:
                raise ValueError(
                    f"{type(self).__name__}(sync_perturbation=False) cannot run with sharded (DTensor) parameters "
                    "(FSDP2's fully_shard or tensor parallelism): m-sharpness perturbs each rank's weights with its "
                    "own gradient, but a sharded parameter holds one shard of a single set of weights shared by all "
                    "ranks. Set sync_perturbation=True (the global-batch perturbation, exact under FSDP2), or train "
                    "with DDP for m-sharpness. No weight was changed."
                )
        elif passes.fsdp1_seen:
            self._run["shard_group"] = self._fsdp1_group(passes.fsdp1_seen)

    def _parameters(self) -> list[Tensor]:
        """Every parameter of every group."""
        return [p for group in self.param_groups for p in group["params"]]

    def _fsdp1_group(self, modules: list[Any]) -> Any:
        """The process group over which FSDP1 ``modules`` shard this optimizer's parameters (``None``: ``NO_SHARD``).

        Raises:
            ValueError: ``sync_perturbation=False`` (m-sharpness), or the modules shard over different groups.
            RuntimeError: a parameter of this optimizer is outside every FSDP1 module (its norm would be counted once
                per rank).
        """
        name = type(self).__name__
        if not self.sync_perturbation:
            raise ValueError(
                f"{name}(sync_perturbation=False) cannot run under FSDP1 (FullyShardedDataParallel, Lightning's "
                "FSDPStrategy): m-sharpness perturbs each rank's weights with its own gradient, but FSDP1 reduces "
                "every pass's gradient over the ranks and each rank holds one shard of a single set of weights. Set "
                "sync_perturbation=True (the global-batch perturbation, exact under FSDP1), or train with DDP for "
                "m-sharpness. No weight was changed."
            )
        managed = {id(p) for module in modules for p in module.parameters()}
        params = self._parameters()
        outside = sum(id(p) not in managed for p in params)
        if outside:
            raise RuntimeError(
                f"{name}: {outside} of its {len(params)} parameters are outside every FSDP1 FullyShardedDataParallel "
                "module that ran in the closure: their norms would be counted once per rank. Wrap the whole model "
                "(e.g. an FSDP1 root around the module), or give the optimizer only the wrapped parameters. No weight "
                "was changed."
            )
        groups = {id(m.process_group): m.process_group for m in modules if m.sharding_strategy.name != "NO_SHARD"}
        if len(groups) > 1:
            raise ValueError(
                f"{name}: the FSDP1 modules shard over {len(groups)} different process groups; one group is "
                "supported (wrap every module with the same process_group). No weight was changed."
            )
        return next(iter(groups.values()), None)

    def _local_groups(self, groups: Groups) -> tuple[Groups, Any]:
        """``groups`` with their parameters and gradients as this rank's shards, and the group completing their norms.

        FSDP1: the groups as they are (already shards) and the FSDP1 process group. FSDP2 (DTensors sharded over one
        1-D mesh): their local shards (views: moving them moves the parameters) and the mesh's group, so elementwise
        work runs as plain ``_foreach`` ops with no DTensor dispatch. Otherwise the groups and ``None``.
        """
        fsdp1 = self._run.get("shard_group")
        if fsdp1 is not None:
            return groups, fsdp1
        group = shard_group([t for _, params, grads in groups for t in (*params, *grads)])
        if group is None:
            return groups, None
        return [(g, local_shards(params), local_shards(grads)) for g, params, grads in groups], group

    def _global_norm(self, tensor_lists: list[list[Tensor]], ord: float = 2.0) -> Tensor:
        """:func:`global_norm` of the whole model: under FSDP1 the local shards' norms combined over the ranks."""
        return global_norm(tensor_lists, ord, group=self._run.get("shard_group"))

    def _clean_pass(self, passes: ClosurePasses) -> Any:
        self._check_engine(None)
        probe = next(((p, p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None), None)
        zero_grad_calls = self._run["zero_grad_calls"]
        loss = passes.clean(local=not self.sync_perturbation)
        if probe is not None and self._run["zero_grad_calls"] == zero_grad_calls and probe[0].grad is probe[1]:
            raise RuntimeError(
                f"{type(self).__name__}: the closure added its gradient to the existing one instead of replacing it "
                "(it neither called optimizer.zero_grad() nor reset .grad). With Lightning this is gradient "
                "accumulation (Trainer(accumulate_grad_batches>1)), which sharpness-aware steps do not support: the "
                "perturbed pass would see only the last micro-batch. Use accumulate_grad_batches=1 with a larger "
                "batch. Outside Lightning, call optimizer.zero_grad() inside the closure. No weight was changed."
            )
        self._check_engine(passes)
        return loss


def detached(value: Any) -> Tensor | None:
    """A loss returned by a closure as a detached float tensor (``None`` if it is not a number)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.detach().float().reshape(())
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    return None

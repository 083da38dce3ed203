"""What the two-pass SAM variants (GSAM, LookSAM, WSAM, FriendlySAM) share: the perturbed pass and deferred state.

:class:`TwoPassOptimizer` evaluates the closure at ``w + e`` with ``e = rho d / ||d||`` for a direction ``d`` the
subclass chooses (global norm, ``rho`` per group) and restores ``w`` exactly. State a variant keeps from step to step
(LookSAM's ``g_v``, FriendlySAM's gradient EMA) is committed only after the base optimizer actually stepped
(:meth:`TwoPassOptimizer._after_base_step`): a step that raises ``NonFiniteGradientError`` or that a ``GradScaler``
skips leaves the state as it was, like the weights and the base optimizer's momentum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_info._internal.sharding import is_dtensor, local_shards, shard_group
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim._tensor_lists import gradients, split
from lightning_info.optim.sharpness_aware import (
    Groups,
    SharpnessAwareOptimizer,
    copy_tensors,
    detached,
    finite_norm_value,
    global_norm,
)


def global_dot(a: list[Tensor], b: list[Tensor], group: Any = None) -> Tensor:
    """``sum_i <a_i, b_i>`` over all tensors, accumulated in float32 at least (float64 if any input is).

    ``group``: the process group over which the tensors are shards of the whole (FSDP1): the local sums are added
    with one all-reduce; every rank of ``group`` must call it. DTensors sharded over one 1-D mesh (FSDP2) are treated
    the same way, on their local shards.
    """
    # a DTensor (FSDP2) cannot be flattened when unevenly sharded: its product is summed instead (a pending reduction)
    if group is None:
        group = shard_group(a + b)
        if group is not None:  # FSDP2: plain ops on the local shards and one all-reduce
            a, b = local_shards(a), local_shards(b)
    pairs = zip(a, b, strict=True)
    dots = [(x * y).sum() if is_dtensor(x) else torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in pairs]
    if dots:
        dtype = torch.float64 if any(d.dtype == torch.float64 for d in dots) else torch.float32
        dot = torch.stack([d.to(device=dots[0].device, dtype=dtype) for d in dots]).sum()
    else:
        dot = torch.zeros(())
    if is_dtensor(dot):
        dot = dot.full_tensor()  # type: ignore[attr-defined]
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(dot, group=group)
    return dot


class TwoPassOptimizer(SharpnessAwareOptimizer):
    """A sharpness-aware optimizer whose step is a clean pass and (at most) one pass at ``w + rho d / ||d||``."""

    passes = 2

    def __init__(self, params: Any, base_optimizer: type[Optimizer], defaults: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(params, base_optimizer, defaults, **kwargs)
        self._deferred: dict[str, Any] = {}  # {"step": index, "commit": callable}, see _after_base_step
        self.base_optimizer.register_step_post_hook(self._base_stepped)

    def _unchecked_passes(self) -> str:
        return "the perturbed pass (pass 2 of 2, at w + e)"

    def _after_base_step(self, commit: Callable[[], None]) -> None:
        """Run ``commit`` right after this step's base-optimizer step, and never if that step does not happen."""
        self._deferred.update(step=int(self._run["step"]), commit=commit)

    def _store_state(self, key: str, params: list[Tensor], values: list[Tensor]) -> None:
        """``state[p][key] = value`` for each parameter, in place when the stored tensor fits."""
        for p, value in zip(params, values, strict=True):
            stored = self.state[p].get(key)
            if stored is None or stored.shape != value.shape:
                self.state[p][key] = value.clone()
            else:
                stored.copy_(value)

    def _base_stepped(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        commit, step = self._deferred.pop("commit", None), self._deferred.pop("step", None)
        if commit is not None and step == int(self._run["step"]):  # a skipped step's commit is stale: dropped
            commit()

    def _perturbed_pass(
        self,
        passes: ClosurePasses,
        loss: Any,
        groups: Groups,
        direction: list[Tensor],
        rhos: list[float],
        local: bool,
        what: str = "the gradient norm ||g||",
    ) -> tuple[list[Tensor], Tensor]:
        """Evaluate the closure at ``w + e``, ``e_group = rho_group d_group / ||d||``; restore ``w`` exactly.

        ``direction`` is flat over the groups' parameters (in order). A zero direction gives ``e = 0``. Records the
        statistics ``perturbation_norm`` and ``sharpness``; returns the perturbed pass's gradients (zeros where the
        pass reached no parameter) and ``||d||``.

        Raises:
            NonFiniteGradientError: ``||d||`` is NaN or Inf (the weights are unchanged).
        """
        params = [p for _, ps, _ in groups for p in ps]
        sizes = [len(ps) for _, ps, _ in groups]
        norm = self._global_norm([direction])
        value = finite_norm_value(what, norm, type(self).__name__)  # the step's one host sync
        scales = [rho / value if value > 0 else 0.0 for rho in rhos]
        saved = self._snapshot("weights", params)
        try:
            for p_g, d_g, scale in zip(split(params, sizes), split(direction, sizes), scales, strict=True):
                if scale:
                    torch._foreach_add_(p_g, d_g, alpha=scale)
            perturbed = passes.auxiliary(local)
        finally:
            copy_tensors(params, saved)
        if len(groups) == 1:  # ||e|| = rho ||d|| / ||d||
            self.statistics["perturbation_norm"] = norm.new_tensor(rhos[0] if value > 0 else 0.0)
        else:
            per_group = [self._global_norm([d_g]) * s for d_g, s in zip(split(direction, sizes), scales, strict=True)]
            self.statistics["perturbation_norm"] = global_norm([per_group])
        clean, worst = detached(loss), detached(perturbed)
        if clean is not None and worst is not None:
            self.statistics["sharpness"] = worst - clean
        return gradients(params), norm

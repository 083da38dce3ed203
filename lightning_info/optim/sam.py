r"""SAM (Foret et al., ICLR 2021), ASAM (Kwon et al., ICML 2021) and every-k SAM, correct inside Lightning."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_info._internal.validation import check_range
from lightning_info.optim._passes import ClosurePasses
from lightning_info.optim.sharpness_aware import (
    Groups,
    SharpnessAwareOptimizer,
    copy_tensors,
    detached,
    finite_norm_value,
    global_norm,
)


class SAM(SharpnessAwareOptimizer):
    r"""Sharpness-Aware Minimization around any base optimizer; ``adaptive=True`` is ASAM, ``interval=k`` every-k SAM.

    One sharpness-aware step (two forward/backward passes) with the gradient :math:`g = \nabla L(w)`:

    .. math::
        \epsilon = \rho\, \frac{T^2 g}{\lVert T g \rVert_2}, \qquad
        w \leftarrow \mathrm{base\_step}\big(w,\ \nabla L(w + \epsilon)\big)

    with :math:`T = 1` (SAM: :math:`\epsilon = \rho g / \lVert g \rVert`) or, for ASAM,
    :math:`T = \mathrm{diag}(|w| + \eta)` elementwise. The norm is global (all parameters of all groups); ``rho``,
    ``adaptive`` and ``eta`` may differ per parameter group. A zero gradient gives :math:`\epsilon = 0`.

    Use it in ``configure_optimizers`` like any optimizer (Lightning passes the closure)::

        return SAM(self.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    What runs twice per sharpness-aware step: ``training_step``, ``zero_grad`` (with ``on_before_zero_grad``),
    ``on_before_backward``, ``backward``, ``on_after_backward`` and ``on_before_optimizer_step``. What does not:
    ``self.log`` records the clean pass only; BatchNorm running statistics are updated by the clean pass only;
    gradient clipping is applied once, to the final (perturbed-point) gradient; with ``reuse_rng`` the perturbed pass
    draws the same dropout masks. ``outputs`` handed to ``on_train_batch_end`` are Lightning's last closure result,
    i.e. the perturbed pass's loss. Guard other once-per-step side effects of ``training_step`` (e.g. a torchmetrics
    ``Metric.update``) with :func:`~lightning_info.optim.in_auxiliary_pass`. ``precision="16-mixed"`` needs
    :class:`~lightning_info.optim.SharpnessAwarePrecision` (Lightning's GradScaler path calls ``step()`` without a
    closure). Gradient accumulation is refused with an error
    at the first step, before any weight changes.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer class, e.g. ``torch.optim.SGD``, ``torch.optim.AdamW``,
            ``lightning_info.optim.FAdam``.
        rho: neighbourhood radius :math:`\rho` > 0. Paper defaults: SAM 0.05 (CIFAR-10), 0.1 (CIFAR-100); ASAM
            0.5 to 2.0.
        adaptive: ASAM's scale-invariant neighbourhood :math:`T = |w| + \eta`.
        eta: ASAM's :math:`\eta` >= 0 (paper: 0.01).
        interval: sharpness-aware step every ``interval`` steps (every-k SAM), plain base steps in between.
        reuse_rng: same random state (dropout masks) in both passes.
        sync_perturbation: DDP: all-reduce the first pass's gradient (global-batch perturbation). Default ``False``:
            each rank perturbs with its own gradient (m-sharpness, as in the paper) and skips that all-reduce; the
            second pass is always all-reduced, so the weights stay identical across ranks.
        base_kwargs: the base optimizer's arguments (``lr``, ``momentum``, ...).

    Attributes:
        statistics: after a sharpness-aware step: ``grad_norm`` :math:`\lVert g \rVert`, ``perturbation_norm``
            :math:`\lVert \epsilon \rVert` and ``sharpness`` :math:`L(w + \epsilon) - L(w)` (log them with
            :class:`~lightning_info.callbacks.SharpnessMonitor`).

    Raises:
        ValueError: ``rho <= 0``, ``eta < 0``, ``interval < 1``.
        TypeError: ``base_optimizer`` is not an optimizer class; ``step()`` without a closure.
        NonFiniteGradientError: ``step()``: the clean gradient's norm or the perturbed pass's gradient is NaN/Inf
            (the weights are restored to :math:`w`, the base optimizer does not step).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = optimizer.step(closure)
        >>> sorted(optimizer.statistics)
        ['grad_norm', 'perturbation_norm', 'sharpness']
    """

    passes = 2

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        *,
        interval: int = 1,
        reuse_rng: bool = True,
        sync_perturbation: bool = False,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            base_optimizer,
            {"rho": rho, "adaptive": adaptive, "eta": eta},
            interval=interval,
            reuse_rng=reuse_rng,
            sync_perturbation=sync_perturbation,
            **base_kwargs,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0, low_inclusive=False)
        check_range("eta", group["eta"], 0)
        if not isinstance(group["adaptive"], bool):
            raise TypeError(f"adaptive must be a bool, got {type(group['adaptive']).__name__} ({group['adaptive']!r})")

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        r"""Move the weights to :math:`w + \epsilon` using the gradients in ``.grad`` (manual optimization).

        Raises:
            NonFiniteGradientError: the gradient norm is NaN or Inf (the weights are unchanged).
        """
        self.statistics.clear()
        self._perturb(self._with_grads())
        if zero_grad:
            self.zero_grad()

    def _perturb(self, groups: Groups) -> None:
        groups, shards = self._local_groups(groups)  # sharded: this rank's shards, norms completed over ``shards``
        scaled: list[list[Tensor]] = []  # T g per group (T = 1 for plain SAM)
        directions: list[list[Tensor]] = []  # T^2 g per group: the direction of the perturbation
        for group, params, grads in groups:
            if group["adaptive"]:
                t = list(torch._foreach_abs(params))
                torch._foreach_add_(t, group["eta"])
                tg = list(torch._foreach_mul(grads, t))
                scaled.append(tg)
                directions.append(list(torch._foreach_mul(tg, t)))
            else:
                scaled.append(grads)
                directions.append(grads)
        norm = global_norm(scaled, group=shards)
        value = finite_norm_value("the gradient norm ||T g||", norm, type(self).__name__)  # the step's one sync
        scales = [group["rho"] / value if value > 0 else 0.0 for group, _, _ in groups]  # zero gradient: e = 0
        every = [p for _, params, _ in groups for p in params]
        self._run["saved"] = (every, self._snapshot("weights", every))
        for (_, params, _), direction, scale in zip(groups, directions, scales, strict=True):
            if scale:
                torch._foreach_add_(params, direction, alpha=scale)  # w + e in one kernel per tensor
        plain = not any(group["adaptive"] for group, _, _ in groups)
        self.statistics["grad_norm"] = norm if plain else global_norm([grads for _, _, grads in groups], group=shards)
        if plain and len(groups) == 1:  # ||e|| = rho ||g|| / ||g||: no extra reduction
            self.statistics["perturbation_norm"] = norm.new_tensor(groups[0][0]["rho"] if value > 0 else 0.0)
        else:
            per_group = [global_norm([d], group=shards) * s for d, s in zip(directions, scales, strict=True)]
            self.statistics["perturbation_norm"] = global_norm([per_group])

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore :math:`w` exactly and step the base optimizer with the gradients in ``.grad`` (manual use).

        Raises:
            NonFiniteGradientError: a gradient in ``.grad`` is NaN or Inf (:math:`w` is restored, no base step).
        """
        self._restore()
        self._check_direction()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def _restore(self) -> None:
        saved = self._run.pop("saved", None)
        if saved is not None:
            copy_tensors(*saved)

    def _unchecked_passes(self) -> str:
        return "the perturbed pass (pass 2 of 2, at w + e)"

    def _update(self, passes: ClosurePasses, loss: Any) -> None:
        groups = self._with_grads()
        if not groups:  # the closure skipped backward (training_step returned None): nothing to do
            return
        self._perturb(groups)
        try:
            perturbed = passes.auxiliary(local=False)
        finally:
            self._restore()
        clean, worst = detached(loss), detached(perturbed)
        if clean is not None and worst is not None:
            self.statistics["sharpness"] = worst - clean

r"""Add a term to the training loss of any ``LightningModule`` from a callback, without editing the module.

A ``Callback`` cannot change the loss that ``training_step`` returns. :class:`LossTermCallback` wraps the module's
``training_step`` on the instance at ``setup("fit")`` and restores it at ``teardown("fit")`` (or when training
raises), so that the loss the optimizer sees is

.. math:: \mathcal{L}_{\text{total}} = \mathcal{L}_{\text{user}} + \sum_k w_k \, T_k

with one term :math:`T_k` and weight :math:`w_k` per loss-term callback. Several loss-term callbacks share one
wrapper (a dispatcher stored on the module), so they can be added and removed in any order.

- Automatic optimization: ``training_step`` returning a tensor or a dict with ``"loss"`` gets the terms added;
  a step that returns ``None`` (skip) is left alone and no term is computed.
- Manual optimization: the terms are added to the loss passed to ``self.manual_backward(loss)`` (each call, with
  the batch of the current ``training_step``).
- Each raw term is logged with ``pl_module.log(log_key, ...)`` on every step.
- Under FSDP2 a term computed from the sharded parameters (after the forward they are DTensors) is made global
  with ``full_tensor()`` (differentiable) before it is added; under FSDP1 such a term sees this rank's flat shard.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_info._internal.sharding import is_dtensor
from lightning_info._internal.validation import check_number

_DISPATCH_ATTR = "_lightning_info_loss_terms"


class _LossTermDispatcher:
    """Wraps ``training_step`` (and ``manual_backward``) of one module; sums the terms of every registered callback."""

    def __init__(self, pl_module: LightningModule) -> None:
        self.module = pl_module
        self.callbacks: list[LossTermCallback] = []
        self.trainer: Trainer | None = None
        self.batch: Any = None
        self.batch_idx: int = 0
        self._saved: dict[str, Any] = {}
        for method in ("training_step", "manual_backward"):
            # an instance-level attribute (rare) must be put back as it was; otherwise we delete ours
            self._saved[method] = pl_module.__dict__.get(method)
        original_step = pl_module.training_step
        original_backward = pl_module.manual_backward

        @functools.wraps(original_step)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            self.batch = args[0] if args else kwargs.get("batch")
            self.batch_idx = args[1] if len(args) > 1 else kwargs.get("batch_idx", 0)
            output = original_step(*args, **kwargs)
            if output is None or not self.module.automatic_optimization:
                return output
            if isinstance(output, Tensor):
                total = self.total()  # the terms are checked first: a NaN input is blamed on the part it reached
                return self._check_user_loss(output) + total
            if isinstance(output, dict) and "loss" in output:
                total = self.total()
                return {**output, "loss": self._check_user_loss(output["loss"]) + total}
            return output

        @functools.wraps(original_backward)
        def manual_backward(loss: Tensor, *args: Any, **kwargs: Any) -> None:
            total = self.total()
            original_backward(self._check_user_loss(loss) + total, *args, **kwargs)

        pl_module.__dict__["training_step"] = training_step
        pl_module.__dict__["manual_backward"] = manual_backward

    def _check_user_loss(self, loss: Tensor) -> Tensor:
        """Stop before the optimizer step when the user's own loss is NaN/Inf, naming it (not a term) as the source.

        Runs after the terms were computed and checked (a NaN that reached a term is reported by that term's callback);
        only when a registered callback checks its term (``check_finite=True``, the default): the total would be
        non-finite too, and the error would otherwise come one step later, from a term, with the weights already NaN.
        """
        checking = [c for c in self.callbacks if c.check_finite]
        if checking and isinstance(loss, Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            step = self.trainer.global_step if self.trainer is not None else "?"
            names = ", ".join(type(c).__name__ for c in checking)
            value = loss.detach().flatten()[0].item()
            raise RuntimeError(
                f"the loss returned by {type(self.module).__name__}.training_step is {value} at global step {step}, "
                f"before the loss terms ({names}) were added; training stopped before the optimizer saw it"
            )
        return loss

    def total(self) -> Tensor | float:
        """Sum of ``weight * term`` over the registered callbacks for the current batch (logs each term)."""
        if self.trainer is None:
            raise RuntimeError("loss-term dispatcher used outside Trainer.fit")
        total: Tensor | float = 0.0
        for callback in self.callbacks:
            term = callback.compute_loss_term(self.trainer, self.module, self.batch, self.batch_idx)
            if term is None:
                continue
            if is_dtensor(term):  # a term of FSDP2's sharded weights (e.g. a penalty): its global value, differentiable
                term = term.full_tensor()  # type: ignore[attr-defined]
            callback._check_term(term, self.trainer)
            if callback.log_key is not None:
                self.module.log(callback.log_key, term.detach().float(), on_step=True, on_epoch=False)
            total = total + callback.weight * term
        return total

    def restore(self) -> None:
        for method, saved in self._saved.items():
            if saved is None:
                self.module.__dict__.pop(method, None)
            else:
                self.module.__dict__[method] = saved


class LossTermCallback(Callback):
    r"""Base class of callbacks that add ``weight * term`` to the user's training loss.

    Subclasses implement :meth:`compute_loss_term`, which runs right after the user's ``training_step`` returned
    (so activations captured by forward hooks during that step are available) and returns a scalar tensor that is
    differentiable w.r.t. whatever it should train, or ``None`` to add nothing on this step.

    Args:
        weight: multiplier :math:`w` of the term (any finite float; negative values reward the term).
        log_key: key under which the raw (unweighted) term is logged every step, e.g. ``"mcmi/cmi"``; ``None``
            disables logging.
        check_finite: raise a ``RuntimeError`` naming the callback when the term is NaN or infinite instead of
            letting it reach the optimizer.

    Raises:
        TypeError: ``weight`` is not a real number.
        ValueError: ``weight`` is not finite.

    Example:
        >>> import torch
        >>> class L2Penalty(LossTermCallback):
        ...     def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
        ...         return sum(p.pow(2).sum() for p in pl_module.parameters())
        >>> penalty = L2Penalty(weight=1e-4, log_key="l2/penalty")
    """

    def __init__(self, weight: float, *, log_key: str | None = None, check_finite: bool = True) -> None:
        super().__init__()
        self.weight = check_number("weight", weight)
        if log_key is not None and not isinstance(log_key, str):
            raise TypeError(f"log_key must be a str or None, got {type(log_key).__name__}")
        self.log_key = log_key
        self.check_finite = check_finite

    def compute_loss_term(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> Tensor | None:
        """Return the scalar term for this batch, or ``None`` to add nothing."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss_term")

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_key=self.log_key)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dispatcher = pl_module.__dict__.get(_DISPATCH_ATTR)
        if dispatcher is None:
            dispatcher = _LossTermDispatcher(pl_module)
            pl_module.__dict__[_DISPATCH_ATTR] = dispatcher
        dispatcher.trainer = trainer
        if self not in dispatcher.callbacks:
            dispatcher.callbacks.append(self)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._unregister(pl_module)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._unregister(pl_module)

    def _unregister(self, pl_module: LightningModule) -> None:
        dispatcher = pl_module.__dict__.get(_DISPATCH_ATTR)
        if dispatcher is None or self not in dispatcher.callbacks:
            return
        dispatcher.callbacks.remove(self)
        if not dispatcher.callbacks:
            dispatcher.restore()
            del pl_module.__dict__[_DISPATCH_ATTR]

    def _check_term(self, term: object, trainer: Trainer) -> None:
        if not isinstance(term, Tensor) or term.numel() != 1:
            shape = tuple(term.shape) if isinstance(term, Tensor) else type(term).__name__
            raise TypeError(f"{type(self).__name__}.compute_loss_term must return a scalar tensor, got {shape}")
        if self.check_finite and not bool(torch.isfinite(term.detach()).all()):
            raise RuntimeError(
                f"{type(self).__name__}: the loss term ({self.log_key or 'unlogged'}) is {term.item()} at global step "
                f"{trainer.global_step}; training stopped before the optimizer saw it"
            )

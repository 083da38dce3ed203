r"""Add the CS-IB compression term :math:`\beta\,\hat I_{CS}(x; t)` to any regression ``LightningModule``'s loss."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info._internal.validation import check_range
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.functional.kernels import (
    Estimator,
    KernelWidth,
    as_samples,
    check_estimator,
    check_width,
    cs_qmi,
    ib_terms,
)
from lightning_info.losses.running_standardizer import RunningStandardizer
from lightning_info.utils import ActivationCapture


class CSIBCallback(LossTermCallback):
    r"""Adds :math:`\beta\,\hat I_{CS}(x; t)` (CS quadratic mutual information, Proposition 2 of Yu et al., ICLR 2024).

    For users who keep their own prediction loss (e.g. MSE): the callback captures, during each ``training_step``,
    the input of the module ``input_layer`` (default ``""``: the ``LightningModule``'s own ``forward`` input) and the
    output of the representation module ``layer`` (with the graph kept, through
    :class:`~lightning_info.utils.ActivationCapture`), and adds ``beta * I_CS(x; t)`` to the loss with the shared
    loss-term mechanism (:class:`~lightning_info.callbacks.LossTermCallback`). Logged every training step:

    - ``csib/compression``: :math:`\hat I_{CS}(x; t)` (the term added, before the factor :math:`\beta`);
    - ``csib/prediction``: the CS-IB prediction term :math:`\hat D_{CS}(p(y|x) \,\|\, q_\theta(\hat y|x))`
      (Proposition 1) between the targets ``batch[1]`` and the module's ``forward`` output, for monitoring only
      (detached, not added to the loss; use :class:`~lightning_info.losses.CSIBLoss` for the full objective). Targets
      and outputs are standardised with running target statistics, as in ``CSIBLoss``; those statistics are the
      callback's checkpointed state. When the batch or output does not fit (no ``forward`` call in
      ``training_step``, no tensor ``batch[1]``, other shapes) a warning is given once and only the compression is
      logged; ``log_prediction=False`` turns it off.

    The default widths are those of :class:`~lightning_info.losses.CSIBLoss` (``"silverman"`` on ``x``,
    ``"median"`` on ``t``, ``1.0`` on standardised targets). When the input kernel is close to the identity (many
    features, each input far from the others), the estimate of :math:`I_{CS}(x; t)` becomes the quadratic (Rényi)
    entropy of ``t``, the right value for a deterministic encoder of distinct inputs.

    The kernels use the local batch of each process under DDP (the target statistics are summed over processes).
    The captured tensors are dropped after each step.

    Args:
        layer: dotted name of the module whose output is the representation ``t`` (``model.named_modules()``).
        beta: :math:`\beta \ge 0`, weight of the compression term.
        sigma_x: kernel width on the flattened input: a float > 0, ``"median"`` or ``"silverman"``.
        sigma_t: kernel width on the flattened representation.
        input_layer: module whose first positional input is ``x`` (``""`` = the ``LightningModule``).
        log_prediction: also log ``csib/prediction`` (needs the module output and ``batch[1]``).
        sigma_y: kernel width on the (standardised) targets, for ``csib/prediction``.
        estimator: conditional estimator for ``csib/prediction``: ``"proposition"`` or ``"official"``.
        standardize_targets: standardise targets and outputs with running statistics for ``csib/prediction``.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: ``beta < 0``, a width <= 0 or unknown rule; at setup, a layer name that matches no module.
        RuntimeError: during training, the layers did not run in the ``training_step``.

    Example:
        >>> callback = CSIBCallback("encoder", beta=0.01)
        >>> callback.log_key
        'csib/compression'
    """

    def __init__(
        self,
        layer: str,
        beta: float = 0.01,
        sigma_x: KernelWidth = "silverman",
        sigma_t: KernelWidth = "median",
        *,
        input_layer: str = "",
        log_prediction: bool = True,
        sigma_y: KernelWidth = 1.0,
        estimator: Estimator = "proposition",
        standardize_targets: bool = True,
    ) -> None:
        super().__init__(check_range("beta", beta, 0.0), log_key="csib/compression")
        for name, value in (("layer", layer), ("input_layer", input_layer)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a module name (str), got {type(value).__name__} ({value!r})")
        for name, flag in (("log_prediction", log_prediction), ("standardize_targets", standardize_targets)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} ({flag!r})")
        self.layer = layer
        self.input_layer = input_layer
        self.sigma_x = check_width("sigma_x", sigma_x)
        self.sigma_t = check_width("sigma_t", sigma_t)
        self.sigma_y = check_width("sigma_y", sigma_y)
        self.estimator = check_estimator(estimator)
        self.log_prediction = log_prediction
        self.standardize_targets = standardize_targets
        self.target_stats: RunningStandardizer | None = None  # created from the first batch's targets
        self._captures: dict[str, ActivationCapture] = {}

    @property
    def beta(self) -> float:
        r""":math:`\beta`, the weight of the compression term."""
        return self.weight

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_key=self.log_key, layer=self.layer)

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.target_stats is None:
            return {}
        return {key: value.detach().cpu().clone() for key, value in self.target_stats.state_dict().items()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.target_stats = None
            return
        self.target_stats = RunningStandardizer(int(state_dict["mean"].numel()))
        self.target_stats.load_state_dict(state_dict)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._remove_captures()
        self._captures = {
            # the term needs x in SAM/GAM's extra passes too
            "x": ActivationCapture(pl_module, [self.input_layer], capture="input", every_pass=True).attach(),
            "t": ActivationCapture(pl_module, [self.layer], detach=False).attach(),
        }
        if self.log_prediction:
            self._captures["y_pred"] = ActivationCapture(pl_module, [""]).attach()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if stage == "fit":
            self._remove_captures()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._remove_captures()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        for capture in self._captures.values():  # forget validation/previous-step activations
            capture.clear()

    @override
    def compute_loss_term(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> Tensor | None:
        x = as_samples("captured input", self._take("x", self.input_layer))
        t = as_samples(f"output of {self.layer!r}", self._take("t", self.layer))
        if x.shape[0] != t.shape[0]:
            raise ValueError(
                f"the captured input has {x.shape[0]} samples but the output of {self.layer!r} has {t.shape[0]}"
            )
        # csib/prediction is monitoring: once per step, from the clean pass (its capture skips SAM/GAM's extra passes)
        monitor = "y_pred" in self._captures and not in_auxiliary_pass()
        targets = self._prediction_inputs(batch, x.shape[0]) if monitor else None
        with torch.autocast(device_type=x.device.type, enabled=False):
            if targets is None:
                return cs_qmi(x, t, self.sigma_x, self.sigma_t)
            y_pred, y = targets
            sigmas = (self.sigma_x, self.sigma_t, self.sigma_y)
            prediction, compression = ib_terms(x, t, y_pred, y, *sigmas, self.estimator)
        pl_module.log("csib/prediction", prediction.detach(), on_step=True, on_epoch=False)
        return compression

    def _prediction_inputs(self, batch: Any, n: int) -> tuple[Tensor, Tensor] | None:
        """Standardised ``(y_pred, y)`` for ``csib/prediction``, or ``None`` (warned once) when they do not fit."""
        output = self._captures["y_pred"].captured.pop("", None)
        target = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        problem = None
        if not isinstance(output, Tensor):
            problem = "the module's forward did not run in training_step"
        elif not isinstance(target, Tensor) or not target.is_floating_point():
            problem = "batch[1] is not a floating-point target tensor"
        elif output.shape[0] != n or target.shape[0] != n or output[0].numel() != target[0].numel():
            problem = f"the forward output {tuple(output.shape)} and batch[1] {tuple(target.shape)} do not pair up"
        if problem is not None or not isinstance(output, Tensor) or not isinstance(target, Tensor):  # (narrowing)
            rank_zero_warn(f"CSIBCallback: csib/prediction is not logged: {problem}; pass log_prediction=False")
            self._captures.pop("y_pred").remove()
            return None
        y_pred = as_samples("module output", output).detach()
        y = as_samples("batch[1] (targets)", target).to(y_pred.dtype)
        if not self.standardize_targets:
            return y_pred, y
        if self.target_stats is None:
            self.target_stats = RunningStandardizer(y.shape[1])
        stats = self.target_stats.to(y.device)
        stats.update(y)
        return stats(y_pred), stats(y)

    def _take(self, key: str, name: str) -> Tensor:
        captured = self._captures[key].captured.pop(name, None)
        if not isinstance(captured, Tensor):
            raise RuntimeError(
                f"CSIBCallback: module {name!r} did not run (or returned no tensor) during this training_step; "
                "call the model's forward inside training_step"
            )
        return captured

    def _remove_captures(self) -> None:
        for capture in self._captures.values():
            capture.remove()
        self._captures = {}

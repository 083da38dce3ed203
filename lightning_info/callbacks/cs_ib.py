r"""Add the CS-IB compression term :math:`\beta\,\hat I_{CS}(x; t)` to any regression ``LightningModule``'s loss."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_info._internal.validation import check_choice, check_range
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.losses.functional.cauchy_schwarz import (
    Estimator,
    KernelWidth,
    as_samples,
    check_width,
    conditional_from_kernel,
    cs_qmi_from_kernels,
    kernel_width,
    log_kernel,
    squared_distances,
)
from lightning_info.utils import ActivationCapture


class CSIBCallback(LossTermCallback):
    r"""Adds :math:`\beta\,\hat I_{CS}(x; t)` (CS quadratic mutual information, Proposition 2 of Yu et al., ICLR 2024).

    For users who keep their own prediction loss (e.g. MSE): the callback captures, during each ``training_step``,
    the input of the module ``input_layer`` (default ``""``: the ``LightningModule``'s own ``forward`` input) and the
    output of the representation module ``layer`` (with the graph kept, through
    :class:`~lightning_info.utils.ActivationCapture`), and adds ``beta * I_CS(x; t)`` to the loss with the shared
    loss-term mechanism. The term is logged under ``csib/compression`` every step.

    With ``log_prediction=True`` the conditional CS divergence between the targets ``batch[1]`` and the module's
    output (Proposition 1, detached, on targets standardised by the batch's own statistics) is logged as
    ``csib/prediction`` for monitoring; it is not added to the loss (use :class:`~lightning_info.losses.CSIBLoss`
    for the full objective).

    The kernels use the local batch of each process under DDP. The captured tensors are dropped after each step.

    Args:
        layer: dotted name of the module whose output is the representation ``t`` (``model.named_modules()``).
        beta: :math:`\beta \ge 0`, weight of the compression term.
        sigma_x: kernel width on the flattened input: a float > 0, ``"median"`` or ``"silverman"``.
        sigma_t: kernel width on the flattened representation.
        input_layer: module whose first positional input is ``x`` (``""`` = the ``LightningModule``).
        log_prediction: also log ``csib/prediction`` (needs the module output and ``batch[1]``).
        sigma_y: kernel width on the targets for ``log_prediction``.
        estimator: conditional estimator for ``log_prediction``: ``"proposition"`` or ``"official"``.

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
        sigma_x: KernelWidth = "median",
        sigma_t: KernelWidth = "median",
        *,
        input_layer: str = "",
        log_prediction: bool = False,
        sigma_y: KernelWidth = 1.0,
        estimator: Estimator = "proposition",
    ) -> None:
        super().__init__(check_range("beta", beta, 0.0), log_key="csib/compression")
        for name, value in (("layer", layer), ("input_layer", input_layer)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a module name (str), got {type(value).__name__} ({value!r})")
        if not isinstance(log_prediction, bool):
            raise TypeError(f"log_prediction must be a bool, got {type(log_prediction).__name__}")
        self.layer = layer
        self.input_layer = input_layer
        self.sigma_x = check_width("sigma_x", sigma_x)
        self.sigma_t = check_width("sigma_t", sigma_t)
        self.sigma_y = check_width("sigma_y", sigma_y)
        self.estimator: Estimator = check_choice("estimator", estimator, ("proposition", "official"))  # type: ignore[assignment]
        self.log_prediction = log_prediction
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
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._remove_captures()
        self._captures = {
            "x": ActivationCapture(pl_module, [self.input_layer], capture="input").attach(),
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
        x = self._take("x", self.input_layer)
        t = self._take("t", self.layer)
        x2, t2 = as_samples("captured input", x), as_samples(f"output of {self.layer!r}", t)
        if x2.shape[0] != t2.shape[0]:
            raise ValueError(
                f"the captured input has {x2.shape[0]} samples but the output of {self.layer!r} has {t2.shape[0]}"
            )
        with torch.autocast(device_type=x2.device.type, enabled=False):
            d_x = squared_distances(x2.detach())
            log_k = log_kernel(d_x, kernel_width(self.sigma_x, x2, d_x))
            d_t = squared_distances(t2)
            compression = cs_qmi_from_kernels(log_k.exp(), log_kernel(d_t, kernel_width(self.sigma_t, t2, d_t)).exp())
            if self.log_prediction:
                pl_module.log("csib/prediction", self._prediction(log_k, batch), on_step=True, on_epoch=False)
        return compression

    def _prediction(self, log_k: Tensor, batch: Any) -> Tensor:
        y_pred = as_samples("module output", self._take("y_pred", "")).detach()
        y = as_samples("batch[1] (targets)", batch[1]).to(y_pred.dtype)
        mean, std = y.mean(dim=0), y.std(dim=0, unbiased=False).clamp_min(1e-8)
        with torch.no_grad():
            return conditional_from_kernel(
                log_k.exp(), log_k, (y - mean) / std, (y_pred - mean) / std, self.sigma_y, self.estimator
            )

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

r"""Add the CS-IB compression term :math:`\beta\,\hat I_{CS}(x; t)` to any regression ``LightningModule``'s loss."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_info._internal.capture import ActivationCapture
from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info.callbacks.capture import CaptureCallback
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.functional.kernels import Estimator, KernelWidth, as_samples
from lightning_info.losses.cs_ib import CSIBLoss
from lightning_info.losses.running_standardizer import RunningStandardizer


class CSIBCallback(CaptureCallback, LossTermCallback):
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

    The math, its widths, estimator and target statistics are a :class:`~lightning_info.losses.CSIBLoss`: give one
    built (``CSIBCallback("encoder", loss=CSIBLoss(beta=0.01, sigma_x=1.0))``; its :math:`\beta` weights the term,
    its ``num_targets`` must match the targets) or its arguments (the short form ``CSIBCallback("encoder",
    beta=0.01)``, whose loss takes the number of target features from the first batch). The default widths are
    those of ``CSIBLoss`` (``"silverman"`` on ``x``, ``"median"`` on ``t``, ``1.0`` on standardised targets). When
    the input kernel is close to the identity (many features, each input far from the others), the estimate of
    :math:`I_{CS}(x; t)` becomes the quadratic (Rényi) entropy of ``t``, the right value for a deterministic encoder
    of distinct inputs.

    The kernels use the local batch of each process under DDP (the target statistics are summed over processes).
    The captured tensors are dropped after each step.

    Args:
        layer: dotted name of the module whose output is the representation ``t`` (``model.named_modules()``).
        beta: :math:`\beta \ge 0`, weight of the compression term (short form; default 0.01).
        sigma_x: kernel width on the flattened input: a float > 0, ``"median"`` or ``"silverman"`` (short form).
        sigma_t: kernel width on the flattened representation (short form).
        input_layer: module whose first positional input is ``x`` (``""`` = the ``LightningModule``).
        log_prediction: also log ``csib/prediction`` (needs the module output and ``batch[1]``).
        sigma_y: kernel width on the (standardised) targets, for ``csib/prediction`` (short form).
        estimator: conditional estimator for ``csib/prediction``: ``"proposition"`` or ``"official"`` (short form).
        standardize_targets: standardise targets and outputs with running statistics for ``csib/prediction``
            (short form).
        loss: a built :class:`~lightning_info.losses.CSIBLoss` holding all of the above marked "short form"
            (then none of them may be given).

    Raises:
        TypeError: an argument of the wrong type, or ``loss`` given together with a short-form argument.
        ValueError: ``beta < 0``, a width <= 0 or unknown rule; at setup, a layer name that matches no module.
        RuntimeError: during training, the layers did not run in the ``training_step``.

    Example:
        >>> callback = CSIBCallback("encoder", beta=0.01)
        >>> callback.log_key
        'csib/compression'
        >>> CSIBCallback("encoder", loss=CSIBLoss(beta=0.01, sigma_x=1.0)).loss.sigma_x
        1.0
    """

    def __init__(
        self,
        layer: str,
        beta: float | None = None,
        sigma_x: KernelWidth | None = None,
        sigma_t: KernelWidth | None = None,
        *,
        input_layer: str = "",
        log_prediction: bool = True,
        sigma_y: KernelWidth | None = None,
        estimator: Estimator | None = None,
        standardize_targets: bool | None = None,
        loss: CSIBLoss | None = None,
    ) -> None:
        short_form: dict[str, Any] = {
            "beta": beta, "sigma_x": sigma_x, "sigma_t": sigma_t, "sigma_y": sigma_y, "estimator": estimator,
            "standardize_targets": standardize_targets,
        }  # fmt: skip
        given = {name: value for name, value in short_form.items() if value is not None}
        # the short form's loss takes the number of target features from the first batch (``_adopt_targets``)
        self._make_loss: Callable[..., CSIBLoss] | None = None
        if loss is None:
            self._make_loss = functools.partial(CSIBLoss, **given)
            loss = self._make_loss()
        elif given:
            raise TypeError(f"CSIBCallback: give loss=CSIBLoss(...) or its arguments {sorted(given)}, not both")
        elif not isinstance(loss, CSIBLoss):
            raise TypeError(f"loss must be a CSIBLoss, got {type(loss).__name__}")
        super().__init__(loss.beta, log_key="csib/compression")
        for name, value in (("layer", layer), ("input_layer", input_layer)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a module name (str), got {type(value).__name__} ({value!r})")
        if not isinstance(log_prediction, bool):
            raise TypeError(f"log_prediction must be a bool, got {type(log_prediction).__name__} ({log_prediction!r})")
        self.layer = layer
        self.input_layer = input_layer
        self.log_prediction = log_prediction
        self.loss = loss

    @property
    def beta(self) -> float:
        r""":math:`\beta`, the weight of the compression term."""
        return self.weight

    @property
    def target_stats(self) -> RunningStandardizer:
        """The running target statistics of ``csib/prediction`` (the loss's; the callback's checkpointed state)."""
        return self.loss.target_stats

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_key=self.log_key, layer=self.layer)

    @override
    def state_dict(self) -> dict[str, Any]:
        if int(self.target_stats.count) == 0:
            return {}
        return {key: value.detach().cpu().clone() for key, value in self.target_stats.state_dict().items()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._adopt_targets(int(state_dict["mean"].numel()))
        self.target_stats.load_state_dict(state_dict)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        captures = {
            # the term needs x in SAM/GAM's extra passes too
            "x": ActivationCapture(pl_module, [self.input_layer], capture="input", every_pass=True),
            "t": ActivationCapture(pl_module, [self.layer], detach=False),
        }
        if self.log_prediction:
            captures["y_pred"] = ActivationCapture(pl_module, [""])
        self.attach_captures(**captures)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.clear_captures()  # forget validation/previous-step activations

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
        monitor = "y_pred" in self.captures and not in_auxiliary_pass()
        targets = self._prediction_inputs(batch, x.shape[0]) if monitor else None
        self.loss.to(x.device)
        if targets is None:
            return self.loss.compression(x, t)
        prediction, compression = self.loss.ib_terms(x, t, *targets)
        pl_module.log("csib/prediction", prediction.detach(), on_step=True, on_epoch=False)
        return compression

    def _prediction_inputs(self, batch: Any, n: int) -> tuple[Tensor, Tensor] | None:
        """Detached ``(y_pred, y)`` for ``csib/prediction``, or ``None`` (warned once) when they do not fit."""
        output = self.captures["y_pred"].captured.pop("", None)
        target = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        problem = None
        if not isinstance(output, Tensor):
            problem = "the module's forward did not run in training_step"
        elif not isinstance(target, Tensor) or not target.is_floating_point():
            problem = "batch[1] is not a floating-point target tensor"
        elif output.shape[0] != n or target.shape[0] != n or output[0].numel() != target[0].numel():
            problem = f"the forward output {tuple(output.shape)} and batch[1] {tuple(target.shape)} do not pair up"
        elif not self._adopt_targets(target[0].numel()):
            problem = f"batch[1] {tuple(target.shape)} does not have the loss's num_targets={self.loss.num_targets}"
        if problem is not None or not isinstance(output, Tensor) or not isinstance(target, Tensor):  # (narrowing)
            rank_zero_warn(f"CSIBCallback: csib/prediction is not logged: {problem}; pass log_prediction=False")
            self.remove_captures("y_pred")
            return None
        y_pred = as_samples("module output", output).detach()
        return y_pred, as_samples("batch[1] (targets)", target).to(y_pred.dtype)

    def _adopt_targets(self, num_targets: int) -> bool:
        """Whether the loss takes ``num_targets`` features; the short form's loss is rebuilt for them before use."""
        if num_targets == self.loss.num_targets:
            return True
        if self._make_loss is None or int(self.target_stats.count) > 0:
            return False
        self.loss = self._make_loss(num_targets=num_targets)
        return True

    def _take(self, key: str, name: str) -> Tensor:
        captured = self.captures[key].captured.pop(name, None)
        if not isinstance(captured, Tensor):
            raise RuntimeError(
                f"CSIBCallback: module {name!r} did not run (or returned no tensor) during this training_step; "
                "call the model's forward inside training_step"
            )
        return captured

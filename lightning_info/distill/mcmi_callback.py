r"""Turn any classifier ``LightningModule`` into an MCMI teacher: add :math:`-\lambda\,\mathrm{CMI}` to its loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_info._internal.outputs import output_tensor
from lightning_info.callbacks.capture import CaptureCallback
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.distill.mcmi_loss import MCMILoss
from lightning_info.metrics.conditional_mutual_information import ConditionalMutualInformation
from lightning_info.utils import ActivationCapture

TargetSpec = int | str | Callable[[Any], Tensor]


class MCMICallback(CaptureCallback, LossTermCallback):
    r"""Adds :math:`-\lambda\,\mathrm{CMI}` to a classifier's loss (MCMI teacher training, Ye et al., ICLR 2024).

    The user's module keeps its own cross-entropy; with this callback the optimised objective becomes
    :math:`\mathrm{CE} - \lambda\,\mathrm{CMI}` (see :class:`~lightning_info.distill.MCMILoss`), with no edit to the
    module. During each ``training_step`` the logits are captured (with their graph) as the output of the submodule
    ``layer`` (default ``""``: the module's own ``forward``, so ``training_step`` must call ``self(x)``; name the
    head, e.g. ``"head"``, if it calls submodules directly) and the labels are read from the batch; the term goes
    through the shared loss-term mechanism (:class:`~lightning_info.callbacks.LossTermCallback`).

    Logged: ``mcmi/cmi`` (the CMI of the batch, every step) and ``mcmi/ce`` (the cross-entropy of the captured
    logits, for monitoring). With ``log_validation``, ``mcmi/val_cmi`` is the
    :class:`~lightning_info.metrics.ConditionalMutualInformation` of ``softmax(logits / T)`` over the whole
    validation set (centroids over all validation samples, synced over processes), at each validation epoch end.

    With ``centroids="ema"`` the running centroids are the callback's state (``state_dict``: checkpointed,
    restored on resume, identical on every DDP rank); they are updated at every ``training_step`` (each micro-batch
    under gradient accumulation) except the extra passes of SAM/GAM, which reuse the step's centroids.

    The objective and its arguments are an :class:`~lightning_info.distill.MCMILoss`: give it built,
    ``MCMICallback(criterion=MCMILoss(10, lam=0.2, centroids="ema"))``, or give its arguments (the short form
    ``MCMICallback(num_classes=10, lam=0.2)``, with ``MCMILoss``'s defaults for the others), not both.

    Args:
        num_classes: number of classes :math:`C`; the captured logits must be ``(N, C)`` (short form).
        lam: :math:`\lambda \ge 0`, weight of the CMI (the paper fine-tunes with 0.1-0.25; default 0.2).
        temperature: :math:`T > 0` of the distributions in the CMI (short form; default 1).
        layer: dotted name of the submodule whose output are the logits (``""``: the module itself); an output that
            is a Hugging Face ``ModelOutput``, dict, tuple or list gives its ``logits`` (duck-typed) or first tensor.
        centroids: ``"batch"`` or ``"ema"`` (see :class:`~lightning_info.distill.MCMILoss`; default ``"batch"``).
        momentum: momentum of the running centroids (short form; default 0.9).
        eps: clamp inside the logarithms (short form).
        targets: where the labels are in the batch: an index (``1`` for ``(x, y)`` batches), a dict key, or a
            callable ``batch -> Tensor``.
        log_validation: log ``mcmi/val_cmi`` at each validation epoch end.
        criterion: a built :class:`~lightning_info.distill.MCMILoss` instead of the short-form arguments
            (``num_classes``, ``lam``, ``temperature``, ``centroids``, ``momentum``, ``eps``).

    Raises:
        TypeError / ValueError: bad arguments (``lam < 0``, ``temperature <= 0``, ...), neither ``num_classes``
            nor ``criterion``, or ``criterion`` together with a short-form argument (``TypeError``); at setup, a
            ``layer`` matching no module; in training, logits of the wrong shape or labels out of range.
        RuntimeError: ``layer`` did not run during the ``training_step``.

    Example:
        >>> callback = MCMICallback(num_classes=10, lam=0.2)
        >>> callback.log_key, callback.weight
        ('mcmi/cmi', -0.2)
        >>> MCMICallback(criterion=MCMILoss(10, lam=0.1, centroids="ema")).criterion.centroids
        'ema'
    """

    def __init__(
        self,
        num_classes: int | None = None,
        lam: float | None = None,
        temperature: float | None = None,
        layer: str = "",
        centroids: str | None = None,
        momentum: float | None = None,
        eps: float | None = None,
        targets: TargetSpec = 1,
        log_validation: bool = True,
        *,
        criterion: MCMILoss | None = None,
    ) -> None:
        short_form: dict[str, Any] = {
            "num_classes": num_classes, "lam": lam, "temperature": temperature, "centroids": centroids,
            "momentum": momentum, "eps": eps,
        }  # fmt: skip
        given = {name: value for name, value in short_form.items() if value is not None}
        if criterion is None:
            if num_classes is None:
                raise TypeError("MCMICallback needs num_classes (or criterion=MCMILoss(...)), got neither")
            criterion = MCMILoss(**given)
        elif given:
            raise TypeError(f"MCMICallback: give criterion=MCMILoss(...) or its arguments {sorted(given)}, not both")
        elif not isinstance(criterion, MCMILoss):
            raise TypeError(f"criterion must be an MCMILoss, got {type(criterion).__name__}")
        super().__init__(-criterion.lam, log_key="mcmi/cmi")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name (str), got {type(layer).__name__} ({layer!r})")
        if isinstance(targets, bool) or not (isinstance(targets, (int, str)) or callable(targets)):
            raise TypeError(f"targets must be an int index, a str key or a callable, got {type(targets).__name__}")
        if not isinstance(log_validation, bool):
            raise TypeError(f"log_validation must be a bool, got {type(log_validation).__name__}")
        self.criterion = criterion
        self.layer = layer
        self.targets = targets
        self.log_validation = log_validation
        self.val_cmi = ConditionalMutualInformation(criterion.num_classes, eps=criterion.eps)

    @property
    def lam(self) -> float:
        r""":math:`\lambda`, the weight of the CMI."""
        return self.criterion.lam

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_key=self.log_key, layer=self.layer, num_classes=self.criterion.num_classes)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self.attach_captures(logits=ActivationCapture(pl_module, [self.layer], extract=self._keep_logits, detach=False))
        self.criterion.to(pl_module.device)
        self.val_cmi.to(pl_module.device)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.clear_captures()  # forget validation/previous-step logits

    @override
    def compute_loss_term(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> Tensor | None:
        out = self.criterion(self._take_logits(), self._labels(batch))
        pl_module.log("mcmi/ce", out.ce.detach(), on_step=True, on_epoch=False)
        return out.cmi

    @override
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.clear_captures()

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.log_validation or "logits" not in self.captures or trainer.sanity_checking:
            return
        logits = self._take_logits().detach().float()
        self.val_cmi.update(torch.softmax(logits / self.criterion.temperature, dim=1), self._labels(batch))

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.log_validation and not trainer.sanity_checking and self.val_cmi.update_count:
            # compute() already synced the states over processes; sync_dist averages identical values (no warning)
            pl_module.log("mcmi/val_cmi", self.val_cmi.compute().float(), sync_dist=True)
        self.val_cmi.reset()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion.state_dict(), "centroids": self.criterion.centroids}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the centroid mode decides the criterion's buffers (checkpoints before 0.2 hold no mode: read it off them)
        written = state_dict.get("centroids", "ema" if "class_centroids" in state_dict["criterion"] else "batch")
        if written != self.criterion.centroids:
            rank_zero_warn(
                f"MCMICallback: the checkpoint was written with centroids={written!r} but this callback uses "
                f"centroids={self.criterion.centroids!r}: its criterion state is NOT restored (the running centroids "
                "start afresh); resume with the same centroids= to keep them"
            )
            return
        self.criterion.load_state_dict(state_dict["criterion"])

    def _keep_logits(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        # Under DDP, Lightning routes validation_step through the module's own forward (forward redirection): that
        # outer call's hook sees the step's output (None) after the inner ``self(x)``; keep the inner call's logits.
        # A Hugging Face ModelOutput / dict / tuple: its ``logits`` (duck-typed) or its first tensor.
        logits = output_tensor(output, "logits")
        if logits is not None or "logits" not in self.captures:
            return output if logits is None else logits
        return self.captures["logits"].captured.get(self.layer, output)

    def _take_logits(self) -> Tensor:
        capture = self.captures.get("logits")
        captured = None if capture is None else capture.captured.pop(self.layer, None)
        if not isinstance(captured, Tensor):
            where = f"submodule {self.layer!r}" if self.layer else "the module's forward"
            raise RuntimeError(
                f"MCMICallback: {where} did not run (or returned no tensor) during this step; call the model inside "
                "training_step/validation_step, or set layer= to the module that outputs the logits"
            )
        if captured.ndim != 2 or captured.shape[1] != self.criterion.num_classes:
            raise ValueError(
                f"MCMICallback: the output of {self.layer or 'the module'!r} must be logits of shape "
                f"(N, {self.criterion.num_classes}), got {tuple(captured.shape)}; set layer= to the classifier head"
            )
        return captured

    def _labels(self, batch: Any) -> Tensor:
        labels = self.targets(batch) if callable(self.targets) else batch[self.targets]
        if not isinstance(labels, Tensor):
            raise TypeError(f"MCMICallback: targets={self.targets!r} gave {type(labels).__name__}, not a Tensor")
        return labels

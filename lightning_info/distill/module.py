"""DistillationModule: train a student from a frozen teacher with a distillation loss, in any Lightning setup."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from typing_extensions import Self, override

from lightning_info.distill.kd_loss import KDLoss

OptimizerCallable = Callable[[Iterable[Any]], torch.optim.Optimizer]


def load_teacher_weights(teacher: nn.Module, path: str | Path) -> None:
    """Load a Lightning checkpoint (its ``"state_dict"``) or a plain ``state_dict`` file into ``teacher`` (strict)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    teacher.load_state_dict(state)


class DistillationModule(LightningModule):
    r"""Train ``student`` to match a frozen ``teacher`` with :class:`~lightning_info.distill.KDLoss` (or alike).

    Batches are ``(x, y)``. Each training step runs the teacher under ``torch.no_grad()`` and minimises
    ``loss(student(x), teacher(x), y)``; ``forward`` is the student's.

    The teacher is frozen for good: ``requires_grad_(False)`` on its parameters, always in eval mode (``train()`` of
    this module keeps it in eval, so dropout is off and BatchNorm statistics never move), and never passed to the
    optimizer (``configure_optimizers`` sees only ``student.parameters()``). It is a registered submodule, so Lightning
    moves it to the device and converts it for ``*-true`` precisions; under ``*-mixed`` precisions it runs under the
    same autocast as the student. **Checkpoints store the teacher once** (its weights under ``teacher.*`` in the
    ``state_dict``; it holds no optimizer state), so a checkpoint is self-contained and resuming restores both.
    Lightning's "Found N module(s) in eval mode at the start of training" warning names the teacher's modules: it is
    expected.

    Logged: ``distill/loss``, ``distill/kd`` (KL at temperature :math:`T`), ``distill/ce`` and
    ``distill/train_acc`` every step; ``distill/val_acc``, ``distill/val_ce``, ``distill/val_teacher_acc`` (and the
    ``test`` counterparts) per epoch.

    With ``LightningCLI`` give ``student``/``teacher`` as ``class_path``/``init_args``, the teacher's trained weights
    with ``teacher_checkpoint``, and the optimizer as ``model.optimizer`` (the CLI's top-level ``--optimizer`` would
    be built on every parameter of the module, the frozen teacher's included).

    Args:
        student: the network trained; outputs ``(N, C)`` logits.
        teacher: the trained network distilled; outputs logits of the same shape. Frozen in place.
        loss: called as ``loss(student_logits, teacher_logits, y)`` and returning ``(loss, kd, ce)``
            (default :class:`~lightning_info.distill.KDLoss` with :math:`T = 4`, :math:`\alpha = 0.9`).
        optimizer: ``params -> Optimizer`` for the student (default ``torch.optim.Adam`` with its defaults).
        teacher_checkpoint: optional path of the teacher's weights: a Lightning checkpoint of a module with the
            same ``state_dict`` keys as ``teacher``, or a plain ``state_dict`` file.

    Raises:
        TypeError: ``student``/``teacher`` not ``nn.Module``s, the same module, or ``loss``/``optimizer`` not callable.
        ValueError: in training, student and teacher outputs of different shapes (from the loss).

    Example:
        >>> from torch import nn
        >>> module = DistillationModule(nn.Linear(4, 3), nn.Linear(4, 3))
        >>> module.teacher.weight.requires_grad, module.train().teacher.training
        (False, False)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: KDLoss | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        teacher_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("student", student), ("teacher", teacher)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
        if student is teacher:
            raise TypeError("student and teacher must be different modules, got the same object twice")
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        if not callable(optimizer):
            raise TypeError(f"optimizer must be a callable params -> Optimizer, got {type(optimizer).__name__}")
        self.save_hyperparameters(ignore=["student", "teacher", "loss", "optimizer"])
        if teacher_checkpoint is not None:
            load_teacher_weights(teacher, teacher_checkpoint)
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.loss = loss if loss is not None else KDLoss()
        self.optimizer = optimizer

    @override
    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.teacher.eval()
        return self

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        student_logits = self.student(x)
        loss, kd, ce = self.loss(student_logits, teacher_logits, y)
        acc = (student_logits.argmax(dim=1) == y).float().mean()
        values = {"distill/loss": loss, "distill/kd": kd, "distill/ce": ce, "distill/train_acc": acc}
        self.log_dict({k: v.detach() for k, v in values.items()}, on_step=True, on_epoch=False, prog_bar=False)
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        student_logits, teacher_logits = self.student(x), self.teacher(x)
        values = {
            f"distill/{stage}_acc": (student_logits.argmax(dim=1) == y).float().mean(),
            f"distill/{stage}_ce": nn.functional.cross_entropy(student_logits.float(), y),
            f"distill/{stage}_teacher_acc": (teacher_logits.argmax(dim=1) == y).float().mean(),
        }
        self.log_dict(values, on_step=False, on_epoch=True, prog_bar=stage == "val", sync_dist=True)

    @override
    def configure_optimizers(self) -> Any:
        return self.optimizer(self.student.parameters())

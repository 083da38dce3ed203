"""CaptureCallback: every callback that hooks the model removes its hooks when a fit raises, and can be reused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import TensorDataset

from lightning_info.callbacks import AttentionEntropyMonitor, CSIBCallback, InformationMonitor
from lightning_info.callbacks.capture import CaptureCallback
from lightning_info.distill import MCMICallback
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import (
    MLPClassifier,
    MLPRegressor,
    TinyTransformer,
    classification_data,
    loader,
    regression_data,
)


def _failing(model_class: type[LightningModule]) -> type[LightningModule]:
    """``model_class`` whose ``training_step`` raises after its forward ran (the hooks have fired)."""

    def training_step(self: Any, batch: Any, batch_idx: int) -> Any:
        model_class.training_step(self, batch, batch_idx)
        raise RuntimeError("boom")

    return type(f"Failing{model_class.__name__}", (model_class,), {"training_step": training_step})


Case = tuple[Callable[[], CaptureCallback], Callable[..., LightningModule], Callable[[], TensorDataset]]
CASES: dict[str, Case] = {
    "information_monitor": (
        lambda: InformationMonitor(["net.2"], ["vendi"], every_n_steps=1),
        MLPClassifier,
        lambda: classification_data(n=32),
    ),
    "attention_entropy_monitor": (
        lambda: AttentionEntropyMonitor(every_n_steps=1),
        lambda: TinyTransformer(in_dim=2),
        lambda: classification_data(n=32, shape=(4, 2)),
    ),
    "csib": (lambda: CSIBCallback("encoder", beta=0.1), MLPRegressor, lambda: regression_data(n=32)),
    "mcmi": (lambda: MCMICallback(num_classes=3, log_validation=False), MLPClassifier, lambda: classification_data(32)),
}


def _hooked(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if module._forward_hooks]


@pytest.mark.parametrize("case", list(CASES))
def test_failed_fit_removes_the_hooks_and_the_callback_works_on_the_next_model(tmp_path: Path, case: str) -> None:
    make_callback, make_model, data = CASES[case]
    callback = make_callback()
    failing = make_model()
    failing.__class__ = _failing(type(failing))
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=2)).fit(failing, loader(data()))
    assert _hooked(failing) == [] and callback.captures == {}
    assert "training_step" not in failing.__dict__  # loss-term callbacks restored the step as well

    model = make_model()
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=2)).fit(model, loader(data()))
    assert _hooked(model) == [] and _hooked(failing) == []


def test_information_monitor_reused_after_a_failed_fit_logs_on_the_next_model(tmp_path: Path) -> None:
    """Regression (issue 14, item 5): InformationMonitor had no on_exception, and its setup kept an existing
    capture: after a fit that raised, its hooks stayed on the first model and, reused on a second model, it logged
    nothing, silently."""
    monitor = InformationMonitor(["net.2"], ["vendi"], every_n_steps=1)
    failing = MLPClassifier()
    failing.__class__ = _failing(MLPClassifier)
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=2)).fit(
            failing, loader(classification_data(32))
        )
    assert _hooked(failing) == []

    recorder = RecordingLogger()
    trainer = Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=2, logger=recorder))
    trainer.fit(MLPClassifier(), loader(classification_data(32)))
    assert [step for step, metrics in recorder.rows if "info/net.2/vendi" in metrics] == [0, 1]

"""Issue 14 item 12: callback order of the attention monitor and the swap; strict flags; threshold order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from lightning_info.attention import EntropyGuidedAttention
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import TinyTransformer, classification_data, loader


@pytest.mark.parametrize("monitor_first", [True, False])
def test_monitor_sees_the_swapped_attention_in_either_order(tmp_path: Path, monitor_first: bool) -> None:
    """Regression: listed before the swap, the monitor hooked the stale nn.MultiheadAttention and logged nothing."""
    torch.manual_seed(0)
    monitor = AttentionEntropyMonitor(every_n_steps=1, max_samples=4)
    swap = EntropyGuidedAttentionCallback(weight=0.1)
    logger = RecordingLogger()
    callbacks = [monitor, swap] if monitor_first else [swap, monitor]
    trainer = Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, max_steps=2, logger=logger, limit_val_batches=0))
    model = TinyTransformer(in_dim=2)
    trainer.fit(model, loader(classification_data(n=32, shape=(4, 2))))
    running = {name: m for name, m in model.named_modules() if isinstance(m, EntropyGuidedAttention)}
    assert len(running) == 2
    assert monitor._attention == running  # the modules that run, not the pre-swap ones
    assert len(logger.values("attn_entropy/layer0/head0")) >= 2  # the monitor's and the swap's own values


@pytest.mark.parametrize("name", ["replace", "learnable_temperature", "learnable_threshold"])
def test_entropy_guided_attention_flags_must_be_bools(name: str) -> None:
    """Regression: ``replace="no"`` was accepted (a non-empty string is true: the swap happened)."""
    with pytest.raises(TypeError, match=f"{name} must be a bool, got str"):
        EntropyGuidedAttentionCallback(**{name: "no"})


@pytest.mark.parametrize("make", [AttentionEntropyMonitor, EntropyGuidedAttentionCallback])
@pytest.mark.parametrize(("overload", "collapse"), [(0.3, 0.5), (0.5, 0.5)])
def test_collapse_threshold_must_be_below_overload(make: type, overload: float, collapse: float) -> None:
    """Regression: ``overload_threshold < collapse_threshold`` was accepted (a head could be both)."""
    with pytest.raises(ValueError, match="collapse_threshold must be < overload_threshold"):
        make(overload_threshold=overload, collapse_threshold=collapse)

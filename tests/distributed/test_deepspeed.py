"""DeepSpeed: SAM/GAM refuse a step without a closure, FisherMask refuses it at train start (stand-ins)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from lightning_info.callbacks import FisherMask
from lightning_info.optim import GAM, SAM


@pytest.mark.parametrize("optimizer_class", [SAM, GAM])
def test_a_step_without_closure_under_deepspeed_names_deepspeed(
    monkeypatch: pytest.MonkeyPatch, optimizer_class: type
) -> None:
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = optimizer_class(model.parameters(), torch.optim.SGD, lr=0.1)
    model(torch.randn(4, 3)).sum().backward()  # DeepSpeed's precision ran the closure, then its engine steps
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    with pytest.raises(RuntimeError, match=r"DeepSpeed \(Lightning's DeepSpeedStrategy\) is not supported") as info:
        optimizer.step()
    assert "ModelParallelStrategy" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_without_deepspeed_the_message_points_to_the_precision_plugin() -> None:
    assert sys.modules.get("deepspeed") is None
    optimizer = SAM(torch.nn.Linear(3, 1).parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="SharpnessAwarePrecision"):
        optimizer.step()


def test_fisher_mask_refuses_deepspeed_before_touching_the_model() -> None:
    module = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in module.parameters()]
    callback = FisherMask(keep_ratio=0.5)
    trainer = SimpleNamespace(strategy=DeepSpeedStrategy.__new__(DeepSpeedStrategy))  # no deepspeed needed
    with pytest.raises(RuntimeError, match=r"FisherMask does not support DeepSpeed") as info:
        callback.on_train_start(trainer, module)  # type: ignore[arg-type]
    assert "FSDP2" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    assert not any(p._backward_hooks for p in module.parameters())  # no mask hook installed

"""Every part at once: a run interrupted and resumed from its checkpoint equals the uninterrupted run, and a NaN in
one batch stops training with an error naming the part that saw it, leaving the last good checkpoint intact."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_info.callbacks import SharpnessMonitor
from tests.helpers.lightning import RecordingLogger
from tests.integration.all_parts import (
    BATCHES_PER_EPOCH,
    EpochEndStates,
    Snapshots,
    fit,
    make_model,
    params_of,
)

STEPS = 8
# Checkpoints at epoch ends: Lightning restarts a plain DataLoader from its first batch when resumed mid-epoch (only
# stateful loaders resume in place), so only an epoch-aligned checkpoint can give the batches of the uninterrupted
# run. It is written by every_n_train_steps on the epoch's last batch, the case where Lightning skips the next
# on_train_epoch_start on resume (EntropyGuidedAttentionCallback and FisherMask had to stop relying on it).
EVERY = BATCHES_PER_EPOCH
CRASH_AT = 5
INTERVAL = 2  # every-2 SAM: the SAM steps stay 0, 2, 4, 6 only if the optimizer's step counter is restored (3 is odd)


class Crash(Exception):
    """The simulated interruption (a preempted job)."""


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"interrupted at step {self.step}")


class InjectNaN(Callback):
    """Writes a NaN into one input of the batch of one step (the collated batch is a fresh tensor every step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            batch[0][3, 1, 0] = float("nan")


def _checkpoint(directory: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=directory, every_n_train_steps=EVERY, save_top_k=-1)


def _assert_equal_states(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    else:
        assert a == b, where


def _all_finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    straight_epochs, resumed_epochs = EpochEndStates(), EpochEndStates()
    straight_trainer, straight, straight_log, straight_parts = fit(
        tmp_path / "straight", max_steps=STEPS, model=make_model(interval=INTERVAL), callbacks=[straight_epochs]
    )
    interrupted_log = RecordingLogger()
    with pytest.raises(Crash):
        fit(tmp_path / "interrupted", max_steps=STEPS, model=make_model(interval=INTERVAL), logger=[interrupted_log],
            callbacks=[_checkpoint(tmp_path / "ckpt"), CrashAt(CRASH_AT)], enable_checkpointing=True)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch=0-step=3.ckpt"]
    path = tmp_path / "ckpt" / "epoch=0-step=3.ckpt"

    # everything needed to continue is in the checkpoint and loads under weights_only=True
    saved = torch.load(path, weights_only=True)
    for part in straight_parts:
        if not isinstance(part, SharpnessMonitor):  # stateless: it logs what the optimizer reports
            assert part.state_key in saved["callbacks"], part.state_key
    assert saved["optimizer_states"][0]["sharpness_aware"] == {"step": EVERY}
    assert any(k.startswith("fisher_mask.") for k in saved["state_dict"])
    assert any(k.endswith("self_attn.log_temperature") for k in saved["state_dict"])

    resumed_trainer, resumed, resumed_log, resumed_parts = fit(
        tmp_path / "resumed",
        max_steps=STEPS,
        model=make_model(interval=INTERVAL),
        ckpt_path=path,
        callbacks=[resumed_epochs],
    )
    assert resumed_trainer.global_step == STEPS
    # The same process, kernels and batches: the resumed run is bit-identical, not just close; any difference below
    # (parameters, logged values, states) is state that the checkpoint lost. Found this way: the info-plane critics'
    # random generator (mi_xt/mi_ty differed after the resume) and the attention heatmap's epoch sums.
    for name, value in params_of(straight).items():
        assert torch.equal(params_of(resumed)[name], value), name

    # logged values: the interrupted run's before the checkpoint, the resumed run's from it on, equal the straight run
    expected, before, after = straight_log.series(), interrupted_log.series(), resumed_log.series()
    assert set(expected) == set(before) | set(after)
    for key, values in expected.items():
        assert min(after.get(key, {STEPS: 0})) >= EVERY, f"{key} logged again for a step before the checkpoint"
        joined = {s: v for s, v in before.get(key, {}).items() if s < EVERY} | after.get(key, {})
        assert joined == values, key
    assert sorted(expected["sam/grad_norm"]) == [0, 2, 4, 6]  # every-2 SAM, also after the resume at step 3
    assert sorted(expected["info/head/mi_xt"]) == [0, 2, 4, 6]
    assert sorted(expected["fisher/num_kept"]) == [0]  # the masks come from the checkpoint, not recomputed

    # every part is in the same state at every epoch end after the resume (the attention heatmap is drawn from it)
    # and at the end
    assert sorted(resumed_epochs.states) == [1, 2]
    for epoch, states in resumed_epochs.states.items():
        _assert_equal_states(straight_epochs.states[epoch], states, f"epoch {epoch}")
    for part, other in zip(straight_parts, resumed_parts, strict=True):
        _assert_equal_states(part.state_dict(), other.state_dict(), type(part).__name__)
    _assert_equal_states(straight_trainer.optimizers[0].state_dict(), resumed_trainer.optimizers[0].state_dict())


def test_nan_in_one_batch_names_the_part_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    snapshots = Snapshots(steps=[EVERY, CRASH_AT])
    message = (
        rf"EntropyGuidedAttentionCallback: the loss term \(attn_entropy/reg\) is nan at global step {CRASH_AT}; "
        "training stopped before the optimizer saw it"
    )
    model = make_model()
    with pytest.raises(RuntimeError, match=message):
        fit(tmp_path, max_steps=STEPS, model=model, enable_checkpointing=True,
            callbacks=[_checkpoint(tmp_path / "ckpt"), snapshots, InjectNaN(CRASH_AT)])  # fmt: skip
    # the NaN never reached the weights, and the loss-term wrapper was taken off the module
    for name, value in params_of(model).items():
        assert torch.equal(value, snapshots.after[CRASH_AT][name]), name
    assert "training_step" not in model.__dict__

    last_name = f"epoch=0-step={EVERY}.ckpt"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [last_name]
    last = torch.load(tmp_path / "ckpt" / last_name, weights_only=True)
    parts = {k: v for k, v in last["callbacks"].items() if not k.startswith("ModelCheckpoint")}  # its kth_value: inf
    assert len(parts) == 4 and _all_finite(parts) and _all_finite(last["state_dict"])
    for name, value in snapshots.after[EVERY].items():
        assert torch.equal(last["state_dict"][name], value), name
    trainer, resumed, _, _ = fit(tmp_path / "resumed", max_steps=EVERY + 2, ckpt_path=tmp_path / "ckpt" / last_name)
    assert trainer.global_step == EVERY + 2 and all(bool(torch.isfinite(p).all()) for p in resumed.parameters())

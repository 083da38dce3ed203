from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_info.callbacks import LossTermCallback
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader


class ConstantTerm(LossTermCallback):
    """Term = a fixed tensor, so the added value is known exactly."""

    def __init__(self, value: float, weight: float, log_key: str | None = "test/const") -> None:
        super().__init__(weight, log_key=log_key)
        self.value = value

    def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
        return torch.tensor(self.value)


class WeightNormTerm(LossTermCallback):
    """Term = squared norm of the first layer's weight (differentiable)."""

    def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
        return pl_module.net[0].weight.pow(2).sum()


class RecordLosses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(model, callbacks, tmp_path: Path, **kw: Any) -> Trainer:
    trainer = Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model, loader(classification_data()))
    return trainer


def test_added_value_is_weight_times_term_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))  # lr 0: same loss every epoch
    plain, with_term = RecordLosses(), RecordLosses()
    _fit(model, [plain], tmp_path)
    _fit(model, [ConstantTerm(0.75, weight=2.5), with_term], tmp_path)
    assert len(plain.losses) == len(with_term.losses) == 4
    for a, b in zip(plain.losses, with_term.losses, strict=True):
        assert b - a == pytest.approx(2.5 * 0.75, abs=1e-6)


def test_gradient_flows_through_term(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1))
    before = model.net[0].weight.detach().norm().item()
    _fit(model, [WeightNormTerm(weight=2.5)], tmp_path, max_steps=3)
    # the term's gradient 2 * 2.5 * W with lr 0.1 halves W every step (plus a small CE gradient): after 3 steps
    # the norm is ~1/8 of the CE-only run's
    torch.manual_seed(0)
    reference = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1))
    _fit(reference, [], tmp_path, max_steps=3)
    assert model.net[0].weight.norm().item() < 0.25 * reference.net[0].weight.norm().item()
    assert reference.net[0].weight.norm().item() == pytest.approx(before, rel=0.2)


def test_dict_output_and_none_skip(tmp_path: Path) -> None:
    class DictModel(MLPClassifier):
        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                return None
            x, y = batch
            return {"loss": self.loss(self(x), y), "extra": 1}

    recorded: list[Any] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            recorded.append(outputs)

    calls: list[int] = []

    class Counting(ConstantTerm):
        def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
            calls.append(batch_idx)
            return super().compute_loss_term(trainer, pl_module, batch, batch_idx)

    model = DictModel(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
    _fit(model, [Counting(1.0, weight=3.0), Record()], tmp_path, max_epochs=1, max_steps=-1, limit_train_batches=3)
    assert calls == [0, 2]  # the skipped step computes no term
    assert recorded[0]["extra"] == 1 and recorded[1] in (None, {})
    x, y = next(iter(loader(classification_data())))
    assert float(recorded[0]["loss"]) == pytest.approx(float(model.loss(model(x), y)) + 3.0, abs=1e-5)


def test_teardown_restores_and_fit_twice(tmp_path: Path) -> None:
    model = MLPClassifier()
    original = model.training_step
    callback = ConstantTerm(1.0, weight=1.0)
    trainer = _fit(model, [callback], tmp_path)
    assert "training_step" not in model.__dict__ and "manual_backward" not in model.__dict__
    assert model.training_step.__func__ is original.__func__
    trainer.fit_loop.epoch_loop.max_steps = 8
    trainer.fit(model, loader(classification_data()))  # a second fit installs the wrapper again
    assert trainer.global_step == 8
    assert "training_step" not in model.__dict__


def test_two_callbacks_sum_and_log(tmp_path: Path, wandb_offline) -> None:
    logger = wandb_offline()
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
    plain = RecordLosses()
    _fit(model, [plain], tmp_path)
    both = RecordLosses()
    callbacks = [ConstantTerm(0.5, 2.0, "a/term"), ConstantTerm(-1.0, 0.25, "b/term"), both]
    _fit(model, callbacks, tmp_path, logger=logger, log_every_n_steps=1)
    for a, b in zip(plain.losses, both.losses, strict=True):
        assert b - a == pytest.approx(2.0 * 0.5 + 0.25 * -1.0, abs=1e-6)
    rows = wandb_offline.history()
    assert [r["a/term"] for r in rows if "a/term" in r] == [0.5] * 4
    assert [r["b/term"] for r in rows if "b/term" in r] == [-1.0] * 4
    assert "training_step" not in model.__dict__


def test_manual_optimization(tmp_path: Path) -> None:
    seen: list[float] = []

    class Manual(MLPClassifier):
        def __init__(self) -> None:
            super().__init__(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            loss = self.loss(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            return loss

    class Spy(Callback):
        def on_before_backward(self, trainer, pl_module, loss: Tensor) -> None:
            seen.append(float(loss))

    model = Manual()
    x, y = next(iter(loader(classification_data())))
    expected = float(model.loss(model(x), y)) + 4.0 * 2.0
    _fit(model, [ConstantTerm(2.0, 4.0), Spy()], tmp_path, max_steps=1)
    assert seen[0] == pytest.approx(expected, abs=1e-5)


def test_non_finite_term_raises_and_restores(tmp_path: Path) -> None:
    model = MLPClassifier()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    nan_term = ConstantTerm(float("nan"), weight=1.0)
    trainer = Trainer(callbacks=[nan_term, checkpoint], **trainer_kwargs(tmp_path, enable_checkpointing=True))
    with pytest.raises(RuntimeError, match=r"ConstantTerm: the loss term \(test/const\) is nan at global step 0"):
        trainer.fit(model, loader(classification_data()))
    assert "training_step" not in model.__dict__
    assert all(torch.isfinite(p).all() for p in model.parameters())


class NaNAtStep(MLPClassifier):
    """The user's own loss becomes NaN at one step (the loss terms stay finite)."""

    def __init__(self, nan_step: int) -> None:
        super().__init__()
        self.nan_step = nan_step

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == self.nan_step else loss


@pytest.mark.parametrize("manual", [False, True])
def test_non_finite_user_loss_is_blamed_on_the_user_before_the_step(tmp_path: Path, manual: bool) -> None:
    model = NaNAtStep(nan_step=1)
    if manual:
        model.automatic_optimization = False

        def manual_step(batch: Any, batch_idx: int) -> None:
            optimizer = model.optimizers()
            optimizer.zero_grad()
            loss = MLPClassifier.training_step(model, batch, batch_idx)
            model.manual_backward(loss * float("nan") if model.global_step == model.nan_step else loss)
            optimizer.step()

        model.training_step = manual_step  # type: ignore[method-assign]
    before: dict[str, Tensor] = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            before.update({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    trainer = Trainer(callbacks=[Snapshot(), ConstantTerm(1.0, weight=1.0)], **trainer_kwargs(tmp_path))
    with pytest.raises(
        RuntimeError, match=r"loss returned by NaNAtStep.training_step is nan at global step 1.*ConstantTerm"
    ):
        trainer.fit(model, loader(classification_data()))
    for name, value in model.state_dict().items():  # the NaN step changed nothing
        assert torch.equal(value, before[name]), name
    assert "training_step" not in model.__dict__ or manual


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="weight must be a real number"):
        ConstantTerm(1.0, weight="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight must be finite, got inf"):
        ConstantTerm(1.0, weight=float("inf"))


def test_non_scalar_term_is_a_type_error(tmp_path: Path) -> None:
    class Vector(LossTermCallback):
        def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
            return torch.ones(3)

    with pytest.raises(TypeError, match=r"must return a scalar tensor, got \(3,\)"):
        _fit(MLPClassifier(), [Vector(1.0)], tmp_path)


def test_state_key_distinguishes_instances() -> None:
    assert ConstantTerm(1.0, 1.0, "a").state_key != ConstantTerm(1.0, 1.0, "b").state_key


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes(tmp_path: Path) -> None:
    run_ddp(
        tmp_path,
        """
        import torch
        from lightning.pytorch import Trainer
        from tests.callbacks.test_loss_term import WeightNormTerm
        from tests.helpers.lightning import trainer_kwargs
        from tests.helpers.models import MLPClassifier, classification_data, loader

        torch.manual_seed(0)
        model = MLPClassifier()
        trainer = Trainer(callbacks=[WeightNormTerm(weight=0.1)],
                          **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3))
        trainer.fit(model, loader(classification_data()))
        assert "training_step" not in model.__dict__
        torch.save(model.net[0].weight.detach().clone(), OUT / f"w{trainer.global_rank}.pt")
        """,
    )
    w0, w1 = torch.load(tmp_path / "w0.pt"), torch.load(tmp_path / "w1.pt")
    torch.testing.assert_close(w0, w1, rtol=0, atol=0)


class CountingTerm(ConstantTerm):
    def __init__(self, value: float, weight: float, log_key: str | None = "test/const") -> None:
        super().__init__(value, weight, log_key)
        self.calls = 0

    def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
        self.calls += 1
        return super().compute_loss_term(trainer, pl_module, batch, batch_idx)


def test_manual_optimization_computes_the_term_once_per_step(tmp_path: Path) -> None:
    class Manual(MLPClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.returned: list[float] = []

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            loss = self.loss(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            return loss

    term = CountingTerm(2.0, 4.0)
    returned: list[float] = []

    class Outputs(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            returned.append(float(outputs["loss"]))

    model = Manual()
    _fit(model, [term, Outputs()], tmp_path, max_steps=3)
    assert term.calls == 3  # once per manual_backward, never again on the returned loss
    assert all(math.isfinite(v) and v < 4.0 for v in returned)  # the returned loss is the user's, no term added


def test_a_skipped_term_does_not_hide_the_next_callbacks_term(tmp_path: Path) -> None:
    class Skip(LossTermCallback):
        def compute_loss_term(self, trainer, pl_module, batch, batch_idx):
            return None

    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
    plain, both = RecordLosses(), RecordLosses()
    _fit(model, [plain], tmp_path)
    _fit(model, [Skip(1.0), ConstantTerm(0.5, 2.0), both], tmp_path)
    for a, b in zip(plain.losses, both.losses, strict=True):
        assert b - a == pytest.approx(1.0, abs=1e-6)


def test_validate_leaves_training_step_unwrapped(tmp_path: Path) -> None:
    model = MLPClassifier()
    term = CountingTerm(1.0, 1.0)
    trainer = Trainer(callbacks=[term], **trainer_kwargs(tmp_path))
    trainer.validate(model, loader(classification_data()), verbose=False)
    assert "training_step" not in model.__dict__ and "manual_backward" not in model.__dict__
    assert term.calls == 0


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinite_term_raises_like_a_nan(tmp_path: Path, value: float) -> None:
    model = MLPClassifier()
    trainer = Trainer(callbacks=[ConstantTerm(value, weight=1.0)], **trainer_kwargs(tmp_path))
    with pytest.raises(RuntimeError, match=r"ConstantTerm: the loss term \(test/const\) is -?inf at global step 0"):
        trainer.fit(model, loader(classification_data()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_callback_listed_twice_adds_its_term_once(tmp_path: Path) -> None:
    # setup registers an instance once (Lightning calls setup for every entry of the callback list)
    torch.manual_seed(0)
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
    plain, with_term = RecordLosses(), RecordLosses()
    _fit(model, [plain], tmp_path, max_steps=2)
    term = ConstantTerm(0.75, weight=2.5, log_key=None)
    _fit(model, [term, term, with_term], tmp_path, max_steps=2)
    assert len(plain.losses) == len(with_term.losses) == 2
    for a, b in zip(plain.losses, with_term.losses, strict=True):
        assert b - a == pytest.approx(2.5 * 0.75, abs=1e-6)

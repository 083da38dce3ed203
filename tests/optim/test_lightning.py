"""SAM and GAM inside a real ``Trainer.fit``: exact updates, logging, hooks, clipping, AMP, accumulation, BatchNorm,
dropout, checkpoints, schedulers and manual optimization."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lightning_info.callbacks import SharpnessMonitor
from lightning_info.optim import GAM, SAM, NonFiniteGradientError, SharpnessAwarePrecision, in_auxiliary_pass
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyCNN, classification_data, loader
from tests.optim.reference import SGDReference, clip, loss_and_grad, params_of, sam_perturbation, sam_trajectory
from tests.optim.reference import global_norm as reference_norm

ce = nn.functional.cross_entropy


class Classifier(MLPClassifier):
    """MLPClassifier that counts ``training_step`` calls (all, and clean ones) and logs an epoch mean of the loss."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(in_dim=4, hidden=5, num_classes=3, **kwargs)
        self.training_steps = 0
        self.clean_training_steps = 0

    def training_step(self, batch, batch_idx):
        self.training_steps += 1
        self.clean_training_steps += not in_auxiliary_pass()
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss_mean", loss, on_step=False, on_epoch=True)
        return loss


def _data(n: int = 48, dtype: torch.dtype = torch.float32):
    dataset = classification_data(n=n, in_dim=4)
    dataset.tensors = (dataset.tensors[0].to(dtype), dataset.tensors[1])
    return dataset


def _batches(dataset, batch_size: int = 16):
    return list(loader(dataset, batch_size))


def _fit(model, tmp_path: Path, dataset=None, **kwargs: Any) -> Trainer:
    trainer = Trainer(**trainer_kwargs(tmp_path, **{"max_epochs": 2, **kwargs}))
    trainer.fit(model, loader(dataset if dataset is not None else _data()))
    return trainer


def _assert_params(model: nn.Module, expected: dict[str, torch.Tensor], atol: float) -> None:
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach().to(expected[name].dtype), expected[name], atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("clip_value", "algorithm"), [(None, "norm"), (0.05, "norm"), (0.01, "value")], ids=["no-clip", "norm", "value"]
)
def test_fit_equals_the_float64_reference_and_logs_the_clean_loss_once(tmp_path, clip_value, algorithm) -> None:
    dataset = _data(dtype=torch.float64)
    model = Classifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9))
    reference = copy.deepcopy(model).double()
    expected, clean_losses = sam_trajectory(
        reference, ce, _batches(dataset), SGDReference(lr=0.1, momentum=0.9), 0.05,
        clip_value=clip_value, clip_algorithm=algorithm,
    )  # fmt: skip
    logger = RecordingLogger()
    trainer = _fit(
        model, tmp_path, dataset, precision="64-true", max_steps=3, logger=logger, log_every_n_steps=1,
        gradient_clip_val=clip_value, gradient_clip_algorithm=algorithm,
    )  # fmt: skip
    _assert_params(model, expected[-1], atol=1e-10)
    assert model.training_steps == 6 and model.clean_training_steps == 3  # two passes per step, one of them clean
    assert logger.values("train_loss") == pytest.approx(clean_losses, abs=1e-10)  # clean, once per step
    mean = float(trainer.callback_metrics["train_loss_mean"])
    assert mean == pytest.approx(sum(clean_losses) / 3, abs=1e-10)  # the epoch mean saw only the clean passes


class HookCounter(Callback):
    """Counts backward hooks per step and logs the gradient norm seen in ``on_after_backward``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0}
        self.clean_grad_norms: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _, grads = loss_and_grad(pl_module, ce, params_of(pl_module), batch)
        self.clean_grad_norms.append(float(torch.cat([g.reshape(-1) for g in grads.values()]).norm()))

    def on_before_backward(self, trainer, pl_module, loss):
        self.counts["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module):
        self.counts["on_after_backward"] += 1
        norm = torch.cat([p.grad.reshape(-1) for p in pl_module.parameters()]).norm()
        pl_module.log("hook_grad_norm", norm, on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.counts["on_before_optimizer_step"] += 1


@pytest.mark.parametrize(
    ("factory", "passes"),
    [(lambda p: SAM(p, torch.optim.SGD, lr=0.1), 2), (lambda p: GAM(p, torch.optim.SGD, lr=0.1), 4)],
    ids=["sam", "gam"],
)
def test_hooks_run_once_per_pass_and_their_logs_are_the_clean_pass(tmp_path, factory, passes) -> None:
    hooks, logger = HookCounter(), RecordingLogger()
    _fit(Classifier(optimizer_factory=factory), tmp_path, max_steps=3, callbacks=[hooks], logger=logger,
         log_every_n_steps=1)  # fmt: skip
    assert hooks.counts == dict.fromkeys(hooks.counts, 3 * passes)
    assert logger.values("hook_grad_norm") == pytest.approx(hooks.clean_grad_norms, rel=1e-5)


def _amp_reference(model, batches, dtype, scale: float | None):
    """SAM + SGD by hand under CPU autocast; with ``scale`` the loss is scaled and the gradients unscaled."""
    params = list(model.parameters())
    for x, y in batches:
        grads = []
        for e in (None, "perturb"):
            for p in params:
                p.grad = None
            with torch.autocast("cpu", dtype=dtype):
                loss = ce(model(x), y)
            (loss * scale if scale else loss).backward()
            g = [p.grad / scale if scale else p.grad for p in params]
            if e is None:
                norm = torch.cat([t.reshape(-1) for t in g]).norm()
                eps = [0.05 * t / norm for t in g]
                with torch.no_grad():
                    for p, t in zip(params, eps, strict=True):
                        p.add_(t)
            else:
                with torch.no_grad():
                    for p, t in zip(params, eps, strict=True):
                        p.sub_(t)
                grads = g
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(0.1 * g)
    return params_of(model)


def test_bf16_mixed_passes_the_closure_through(tmp_path) -> None:
    model = Classifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1))
    expected = _amp_reference(copy.deepcopy(model), _batches(_data())[:3], torch.bfloat16, None)
    _fit(model, tmp_path, precision="bf16-mixed", max_steps=3)
    assert model.training_steps == 6
    _assert_params(model, expected, atol=1e-5)


def _scaler_plugin() -> SharpnessAwarePrecision:
    return SharpnessAwarePrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


def test_precision_plugin_refuses_a_device_autocast_does_not_know() -> None:
    """Regression: ``SharpnessAwarePrecision(device="tpu")`` was accepted and failed only inside ``fit``."""
    with pytest.raises(ValueError, match=r"device must be a device type torch.autocast supports.*got 'tpu'"):
        SharpnessAwarePrecision("16-mixed", "tpu")
    with pytest.raises(TypeError, match="device must be a str"):
        SharpnessAwarePrecision("16-mixed", torch.device("cpu"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Precision must be '16-mixed' or 'bf16-mixed'"):
        SharpnessAwarePrecision("16", "cpu")
    assert SharpnessAwarePrecision("bf16-mixed", "cpu").device == "cpu"


def test_16_mixed_with_a_grad_scaler_needs_the_plugin_and_then_matches_the_reference(tmp_path) -> None:
    def factory(p):
        return SAM(p, torch.optim.SGD, rho=0.05, lr=0.1)

    with pytest.raises(TypeError, match="SharpnessAwarePrecision"):
        _fit(Classifier(optimizer_factory=factory), tmp_path, max_steps=1,
             plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])  # fmt: skip
    model = Classifier(optimizer_factory=factory)
    expected = _amp_reference(copy.deepcopy(model), _batches(_data())[:3], torch.float16, 2.0**16)
    trainer = _fit(model, tmp_path, max_steps=3, plugins=[_scaler_plugin()])
    assert model.training_steps == 6
    _assert_params(model, expected, atol=1e-5)
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**16  # no overflow, no skipped step


class MaskFirstLayer(Callback):
    """Zeroes ``net.0``'s gradient in ``on_before_optimizer_step``, as FisherMask masks frozen entries there."""

    def __init__(self) -> None:
        self.seen_norms: list[float] = []  # the gradient norm the hook saw, at every call
        self.full_norms: list[float] = []  # reference, every step: the clean pass's gradient norm
        self.masked_norms: list[float] = []  # and the same without net.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _, grads = loss_and_grad(pl_module, ce, params_of(pl_module), batch)
        self.full_norms.append(float(torch.cat([g.reshape(-1) for g in grads.values()]).norm()))
        self.masked_norms.append(float(torch.cat([g.reshape(-1) for k, g in grads.items() if "net.0" not in k]).norm()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen_norms.append(float(torch.cat([p.grad.reshape(-1) for p in pl_module.parameters()]).norm()))
        for p in pl_module.net[0].parameters():
            p.grad.zero_()


@pytest.mark.parametrize("scaler", [False, True], ids=["32", "16-mixed-scaler"])
def test_on_before_optimizer_step_runs_after_every_pass_on_unscaled_gradients(tmp_path, scaler) -> None:
    """Regression: with SharpnessAwarePrecision the hook ran once, after the last pass, so a gradient mask applied
    there (FisherMask) did not reach the perturbation, unlike in 32/bf16 (16-mixed and 32 then trained differently)."""
    masker, logger = MaskFirstLayer(), RecordingLogger()
    model = Classifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1))
    _fit(model, tmp_path, max_steps=3, callbacks=[masker, SharpnessMonitor()], logger=logger, log_every_n_steps=1,
         plugins=[_scaler_plugin()] if scaler else None)  # fmt: skip
    assert len(masker.seen_norms) == 6  # after both passes of the 3 steps
    rel = 1e-2 if scaler else 1e-5  # float16 autocast
    assert masker.seen_norms[::2] == pytest.approx(masker.full_norms, rel=rel)  # clean pass, unscaled
    assert logger.values("sam/grad_norm") == pytest.approx(masker.masked_norms, rel=rel)  # the masked perturbation


class Exploding(Classifier):
    """Returns an infinite loss at one chosen ``training_step`` call."""

    def __init__(self, explode_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.explode_at = explode_at
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, batch, batch_idx):
        self.snapshots.append(params_of(self))

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.training_steps == self.explode_at else loss


@pytest.mark.parametrize(
    ("optimizer", "explode_at"), [("sam", 3), ("sam", 4), ("gam", 7)], ids=["sam-clean", "sam-perturbed", "gam-adv"]
)
def test_16_mixed_skips_a_step_with_non_finite_gradients(tmp_path, optimizer, explode_at) -> None:
    """Step 2 (index 1) overflows in one of its passes: the weights and momentum stay, the scale halves."""

    def factory(p):
        if optimizer == "sam":
            return SAM(p, torch.optim.SGD, lr=0.1, momentum=0.9)
        return GAM(p, torch.optim.SGD, lr=0.1, momentum=0.9)

    model = Exploding(explode_at=explode_at, optimizer_factory=factory)
    trainer = _fit(model, tmp_path, max_steps=3, plugins=[_scaler_plugin()])
    snapshots = [*model.snapshots, params_of(model)]
    _assert_params_equal = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert not _assert_params_equal(snapshots[0], snapshots[1])  # step 1 moved
    assert _assert_params_equal(snapshots[1], snapshots[2])  # step 2 skipped
    assert not _assert_params_equal(snapshots[2], snapshots[3])  # step 3 moved again
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**15
    assert all(torch.isfinite(p).all() for p in model.parameters())


class OverflowsNearby(Classifier):
    """Cross-entropy + ``exp(1000 a)``, ``a = 0.345``: finite loss, gradient and gradient norm at ``w`` in float64,
    ``exp`` overflows at SAM's perturbed point (``a + e_a ~ a + rho``, rho 0.5)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.a = nn.Parameter(torch.tensor(0.345))
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, batch, batch_idx):
        self.snapshots.append(params_of(self))

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) + torch.exp(1000.0 * self.a)


def test_fit_stops_with_w_restored_when_only_the_perturbed_gradient_is_non_finite(tmp_path) -> None:
    """Regression: the base step applied the perturbed pass's Inf gradient; every weight became NaN in ``fit``."""
    model = OverflowsNearby(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9))
    with pytest.raises(NonFiniteGradientError, match=r"perturbed pass \(pass 2 of 2\b.*weights were restored"):
        _fit(model, tmp_path, _data(dtype=torch.float64), precision="64-true", max_steps=3)
    assert model.training_steps == 2 and len(model.snapshots) == 1  # failed in the first step, after both passes
    _assert_params(model, model.snapshots[0], atol=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradient_accumulation_is_a_clear_error_before_any_update(tmp_path) -> None:
    model = Classifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, lr=0.1))
    before = params_of(model)
    with pytest.raises(RuntimeError, match=r"accumulate_grad_batches.*No weight was changed"):
        _fit(model, tmp_path, max_steps=2, accumulate_grad_batches=2)
    _assert_params(model, before, atol=0)


class BatchNormCheck(Callback):
    """Predicts BatchNorm's running statistics after each step from the clean pass's batch statistics."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        bn = pl_module.features[1]
        with torch.no_grad():
            h = pl_module.features[0](batch[0])  # the conv output at the step's clean weights
        mean, var = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=True)
        self.expected = (
            (1 - bn.momentum) * bn.running_mean + bn.momentum * mean,
            (1 - bn.momentum) * bn.running_var + bn.momentum * var,
            int(bn.num_batches_tracked) + 1,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bn = pl_module.features[1]
        torch.testing.assert_close(bn.running_mean, self.expected[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(bn.running_var, self.expected[1], atol=1e-6, rtol=0)
        assert int(bn.num_batches_tracked) == self.expected[2]
        self.checked += 1


@pytest.mark.parametrize("optimizer", [SAM, GAM], ids=["sam", "gam"])
def test_batchnorm_statistics_update_once_per_step_from_the_clean_pass(tmp_path, optimizer) -> None:
    check = BatchNormCheck()
    dataset = classification_data(n=48, in_dim=64, shape=(1, 8, 8))
    model = TinyCNN(optimizer_factory=lambda p: optimizer(p, torch.optim.SGD, lr=0.1))
    _fit(model, tmp_path, dataset, max_steps=3, callbacks=[check])
    assert check.checked == 3


class DropoutClassifier(Classifier):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net.insert(1, nn.Dropout(0.5))
        self.masks: list[torch.Tensor] = []
        self.net[1].register_forward_hook(lambda module, args, out: self.masks.append(out == 0))


@pytest.mark.parametrize(("optimizer", "passes"), [(SAM, 2), (GAM, 4)], ids=["sam", "gam"])
@pytest.mark.parametrize("reuse_rng", [True, False])
def test_dropout_masks_are_reused_across_passes_by_default(tmp_path, optimizer, passes, reuse_rng) -> None:
    model = DropoutClassifier(optimizer_factory=lambda p: optimizer(p, torch.optim.SGD, lr=0.1, reuse_rng=reuse_rng))
    _fit(model, tmp_path, max_steps=2)
    assert len(model.masks) == 2 * passes
    for step in range(2):
        first, *others = model.masks[step * passes : (step + 1) * passes]
        assert all(torch.equal(first, other) == reuse_rng for other in others)


def _resumable(tmp_path: Path):
    def factory(p):
        optimizer = SAM(p, torch.optim.SGD, rho=0.05, interval=2, lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    torch.manual_seed(0)
    return Classifier(optimizer_factory=factory)


def test_checkpoint_resume_equals_the_uninterrupted_run(tmp_path) -> None:
    straight = _resumable(tmp_path)
    _fit(straight, tmp_path / "a", max_steps=6)
    first = _resumable(tmp_path)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3)
    _fit(first, tmp_path / "b", max_steps=3, enable_checkpointing=True, callbacks=[checkpoint])
    path = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(path, weights_only=True)
    assert saved["optimizer_states"][0]["sharpness_aware"] == {"step": 3}
    resumed = _resumable(tmp_path)
    trainer = Trainer(**trainer_kwargs(tmp_path / "c", max_steps=6, max_epochs=2))
    trainer.fit(resumed, loader(_data()), ckpt_path=str(path))
    _assert_params(resumed, params_of(straight), atol=1e-6)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_one_cycle_schedule_drives_the_base_optimizer(tmp_path) -> None:
    def factory(p):
        optimizer = SAM(p, torch.optim.SGD, lr=0.1, momentum=0.9)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=10)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    trainer = _fit(Classifier(optimizer_factory=factory), tmp_path, max_steps=4)
    plain = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.OneCycleLR(plain, max_lr=0.5, total_steps=10)
    for _ in range(4):
        plain.step()
        schedule.step()
    base = trainer.optimizers[0].base_optimizer
    assert base.param_groups[0]["lr"] == pytest.approx(plain.param_groups[0]["lr"])
    assert base.param_groups[0]["momentum"] == pytest.approx(plain.param_groups[0]["momentum"])


class ManualSAM(Classifier):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        x, y = batch

        def closure():
            optimizer.zero_grad()
            loss = ce(self(x), y)
            self.manual_backward(loss)
            return loss

        optimizer.step(closure=closure)  # LightningOptimizer.step counts the step (first/second_step would not)


def test_manual_optimization_steps_with_a_closure(tmp_path) -> None:
    def factory(p):
        return SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    automatic, manual = Classifier(optimizer_factory=factory), ManualSAM(optimizer_factory=factory)
    manual.load_state_dict(automatic.state_dict())
    _fit(automatic, tmp_path, max_steps=3)
    _fit(manual, tmp_path, max_steps=3)
    _assert_params(manual, params_of(automatic), atol=1e-6)


def test_sharpness_monitor_logs_only_sharpness_aware_steps(tmp_path) -> None:
    logger = RecordingLogger()
    model = Classifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, lr=0.1, interval=2))
    _fit(model, tmp_path, max_steps=4, logger=logger, log_every_n_steps=1, callbacks=[SharpnessMonitor()])
    steps = [step for step, m in logger.rows if "sam/perturbation_norm" in m]
    assert steps == [0, 2]
    assert logger.values("sam/perturbation_norm") == pytest.approx([0.05, 0.05])
    assert all("sam/sharpness" in m and "sam/grad_norm" in m for _, m in logger.rows if "sam/perturbation_norm" in m)
    with pytest.raises(TypeError, match="prefix"):
        SharpnessMonitor(prefix="")
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        SharpnessMonitor(every_n_steps=0)


class AdaptiveClipping(Classifier):
    """Clips to half the norm of the gradient present when Lightning asks for clipping (adaptive clipping)."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        norm = float(torch.cat([p.grad.reshape(-1) for p in self.parameters() if p.grad is not None]).norm())
        self.clip_gradients(optimizer, gradient_clip_val=0.5 * norm, gradient_clip_algorithm="norm")


def test_clipping_computed_per_pass_is_replayed_from_the_last_pass(tmp_path) -> None:
    # each pass asks for clipping with arguments computed from its own gradient; the one replayed on the final
    # direction is the last pass's (mutant: the clean pass's, whose gradient is not the one clipped)
    dataset = _data(dtype=torch.float64)
    model = AdaptiveClipping(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1))
    reference = copy.deepcopy(model).double()
    batch = _batches(dataset)[0]
    start = params_of(reference)
    _, grads = loss_and_grad(reference, ce, start, batch)
    e = sam_perturbation(start, grads, rho=0.05)
    _, perturbed = loss_and_grad(reference, ce, {k: start[k] + e[k] for k in start}, batch)
    expected = SGDReference(lr=0.1).step(start, clip(perturbed, 0.5 * reference_norm(perturbed)))
    _fit(model, tmp_path, dataset, precision="64-true", max_steps=1)
    _assert_params(model, expected, atol=1e-10)

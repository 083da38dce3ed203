"""CSIBLoss (module) and CSIBCallback: values, running target statistics, real Trainer runs, checkpoints, DDP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_info.callbacks import CSIBCallback
from lightning_info.losses import CSIBLoss
from lightning_info.losses.functional import cs_conditional_divergence, cs_qmi
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import MLPRegressor, loader, regression_data
from tests.helpers.wandb_reader import series


class CSIBRegressor(MLPRegressor):
    """MLPRegressor trained with the full CS-IB objective on its encoder output."""

    def __init__(self, beta: float = 0.01, scale: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.csib = CSIBLoss(beta=beta)
        self.scale = scale

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        t = self.encoder(x)
        y_pred = self.head(t).squeeze(-1) * self.scale
        loss = self.csib(x, t, y_pred, y * self.scale)
        self.log("csib/prediction", self.csib.last_prediction, on_step=True, on_epoch=False)
        self.log("csib/compression", self.csib.last_compression, on_step=True, on_epoch=False)
        return loss


# ---------------------------------------------------------------- the module


def test_loss_equals_functional_terms() -> None:
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(40, 6, generator=g), torch.randn(40, 4, generator=g, requires_grad=True)
    y = torch.randn(40, generator=g)
    p = (y + 0.3 * torch.randn(40, generator=g)).requires_grad_()
    loss_fn = CSIBLoss(beta=0.5, sigma_x=1.5, sigma_t="median", sigma_y=0.7, standardize_targets=False)
    total = loss_fn(x, t, p, y)
    prediction = cs_conditional_divergence(x, y, p, 1.5, 0.7)
    compression = cs_qmi(x, t, 1.5, "median")
    torch.testing.assert_close(total, prediction + 0.5 * compression)
    torch.testing.assert_close(loss_fn.last_prediction, prediction.detach())
    torch.testing.assert_close(loss_fn.last_compression, compression.detach())
    total.backward()
    assert torch.isfinite(t.grad).all() and torch.isfinite(p.grad).all() and t.grad.abs().sum() > 0
    official = CSIBLoss(beta=0.0, sigma_x=1.5, sigma_y=0.7, standardize_targets=False, estimator="official")
    torch.testing.assert_close(official(x, t, p, y), cs_conditional_divergence(x, y, p, 1.5, 0.7, "official"))


def test_running_statistics_cumulative_and_frozen_in_eval() -> None:
    g = torch.Generator().manual_seed(1)
    loss_fn = CSIBLoss(num_targets=2)
    batches = [torch.randn(n, 2, generator=g, dtype=torch.float64) * 30 + 1e4 for n in (8, 13, 5)]
    x = torch.randn(13, 3, generator=g)
    for y in batches:
        loss_fn(x[: y.shape[0]], x[: y.shape[0]], y.float(), y.float())
    seen = torch.cat(batches)
    stats = loss_fn.target_stats
    torch.testing.assert_close(stats.mean.double(), seen.mean(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(stats.var.double(), seen.var(0, unbiased=False), rtol=1e-4, atol=0)
    assert int(stats.count) == 26
    assert set(loss_fn.state_dict()) == {"target_stats.mean", "target_stats.var", "target_stats.count"}
    loss_fn.eval()
    loss_fn(x[:4], x[:4], batches[0][:4].float(), batches[0][:4].float())
    assert int(stats.count) == 26


def test_standardised_loss_is_scale_invariant_and_uses_running_stats() -> None:
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(32, 5, generator=g), torch.randn(32, 3, generator=g)
    y = torch.randn(32, generator=g)
    p = y + 0.4 * torch.randn(32, generator=g)
    plain = CSIBLoss(beta=0.1)(x, t, p, y)
    scaled = CSIBLoss(beta=0.1)(x, t, 1e4 * p + 3e4, 1e4 * y + 3e4)
    torch.testing.assert_close(plain, scaled, rtol=1e-4, atol=1e-5)
    # the second batch is standardised with the statistics of both batches, not its own
    loss_fn = CSIBLoss(beta=0.0, sigma_x=1.0)
    loss_fn(x, t, p, y)
    y2, p2 = 5 * y + 2, 5 * p + 2
    value = loss_fn(x, t, p2, y2)
    both = torch.cat([y, y2])
    mean, std = both.mean(), both.std(unbiased=False)
    expected = cs_conditional_divergence(x, (y2 - mean) / std, (p2 - mean) / std, 1.0, 1.0)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def test_unstandardised_large_targets_float32_finite() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 5, generator=g), 1e4 * torch.randn(64, generator=g)
    t = torch.randn(64, 8, generator=g, requires_grad=True)
    p = (y + 300 * torch.randn(64, generator=g)).requires_grad_()
    loss = CSIBLoss(beta=0.1, sigma_x=1.0, sigma_t=1.0, standardize_targets=False)(x, t, p, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all() and torch.isfinite(t.grad).all()


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, inf\], got -0.1"):
        CSIBLoss(beta=-0.1)
    with pytest.raises(ValueError, match=r"sigma_y must be in \(0, inf\], got 0"):
        CSIBLoss(sigma_y=0)
    with pytest.raises(ValueError, match="sigma_t must be one of"):
        CSIBLoss(sigma_t="scott")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimator must be one of"):
        CSIBLoss(estimator="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_targets must be >= 1, got 0"):
        CSIBLoss(num_targets=0)
    with pytest.raises(TypeError, match="standardize_targets must be a bool"):
        CSIBLoss(standardize_targets=1)  # type: ignore[arg-type]
    loss_fn = CSIBLoss()
    x, y = torch.randn(8, 3), torch.randn(8)
    with pytest.raises(ValueError, match="same number of samples"):
        loss_fn(x, x, y[:7], y[:7])
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss_fn(x[:1], x[:1], y[:1], y[:1])
    with pytest.raises(ValueError, match=r"y_pred must have num_targets=1 feature\(s\), got shape \(8, 2\)"):
        loss_fn(x, x, torch.randn(8, 2), y)
    with pytest.raises(ValueError, match="y contains NaN"):
        loss_fn(x, x, y, torch.full((8,), float("nan")))
    assert int(loss_fn.target_stats.count) == 0  # nothing was recorded by failed calls


# ---------------------------------------------------------------- Lightning


def test_fit_with_csib_loss_accumulate_and_checkpoint_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = regression_data(n=96)
    model = CSIBRegressor(beta=0.05, scale=1e4, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-2))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    kw = trainer_kwargs(tmp_path, max_steps=6, enable_checkpointing=True, accumulate_grad_batches=2)
    trainer = Trainer(callbacks=[ckpt], **kw)
    trainer.fit(model, loader(data, batch_size=16))
    assert trainer.global_step == 6
    assert int(model.csib.target_stats.count) == 96 + 96  # 12 batches (accumulation: 2 per optimizer step)
    scaled = data.tensors[1].double() * 1e4
    torch.testing.assert_close(model.csib.target_stats.mean.double(), scaled.mean().reshape(1), rtol=1e-5, atol=1e-2)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    stats = {k: v.clone() for k, v in model.csib.state_dict().items()}
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in stats.items():
        torch.testing.assert_close(saved[f"csib.{key}"], value, rtol=0, atol=0)

    restored = CSIBRegressor.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt", beta=0.05, scale=1e4)
    for key, value in stats.items():
        torch.testing.assert_close(restored.csib.state_dict()[key], value, rtol=0, atol=0)
    resumed = CSIBRegressor(beta=0.05, scale=1e4, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-2))
    trainer2 = Trainer(**trainer_kwargs(tmp_path, max_steps=8))
    trainer2.fit(resumed, loader(data, batch_size=16), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert int(resumed.csib.target_stats.count) == 192 + 2 * 16  # continued from the checkpoint, not from zero


def test_fit_bf16_mixed(tmp_path: Path) -> None:
    model = CSIBRegressor(beta=0.05)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=3, precision="bf16-mixed"))
    trainer.fit(model, loader(regression_data()))
    assert model.csib.last_prediction.dtype == torch.float32
    assert torch.isfinite(model.csib.last_prediction) and torch.isfinite(model.csib.last_compression)


@pytest.mark.wandb
def test_callback_adds_beta_times_qmi_and_logs_both_terms_to_wandb(
    tmp_path: Path, wandb_offline: Callable[..., Any]
) -> None:
    torch.manual_seed(0)
    model = MLPRegressor(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))  # lr 0: every step sees one model
    batches = list(loader(regression_data()))
    with torch.no_grad():
        x, y = batches[0]
        expected_term = cs_qmi(x, model.encoder(x), "silverman", "median").item()
        mse = torch.nn.functional.mse_loss(model(x), y).item()
        # csib/prediction at step 2 uses the running statistics of both batches' targets
        both = torch.cat([b[1] for b in batches[:2]])
        mean, std = both.mean(), both.std(unbiased=False)
        x2, y2 = batches[1]
        expected_prediction = cs_conditional_divergence(x2, (y2 - mean) / std, (model(x2) - mean) / std, "silverman")
    losses: list[float] = []

    class Record(CSIBCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    callback = Record("encoder", beta=0.5)
    logger = wandb_offline()
    trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=2, logger=logger, log_every_n_steps=1))
    trainer.fit(model, loader(regression_data()))
    assert losses[0] == pytest.approx(mse + 0.5 * expected_term, rel=1e-5)
    rows = wandb_offline.history()
    compression, prediction = series(rows, "csib/compression"), series(rows, "csib/prediction")
    assert [step for step, _ in compression] == [step for step, _ in prediction] == [0, 1]
    assert compression[0][1] == pytest.approx(expected_term, rel=1e-5)
    assert prediction[1][1] == pytest.approx(expected_prediction.item(), rel=1e-5)
    assert int(callback.target_stats.count) == 32  # type: ignore[union-attr]
    assert "training_step" not in model.__dict__


def test_callback_state_checkpointed_and_resumed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = regression_data(n=64)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    callback = CSIBCallback("encoder", beta=0.1)
    trainer = Trainer(callbacks=[callback, ckpt], **trainer_kwargs(tmp_path, max_steps=4, enable_checkpointing=True))
    trainer.fit(MLPRegressor(), loader(data))
    assert callback.target_stats is not None and int(callback.target_stats.count) == 64
    y = data.tensors[1]
    torch.testing.assert_close(callback.target_stats.mean, y.mean().reshape(1), rtol=1e-5, atol=1e-6)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"][callback.state_key]
    torch.testing.assert_close(saved["mean"], callback.target_stats.mean, rtol=0, atol=0)
    resumed = CSIBCallback("encoder", beta=0.1)
    Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path, max_steps=6)).fit(
        MLPRegressor(), loader(data), ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert resumed.target_stats is not None and int(resumed.target_stats.count) == 64 + 2 * 16


def test_callback_without_forward_warns_once_and_still_adds_the_term(tmp_path: Path) -> None:
    class NoForward(MLPRegressor):  # the training_step calls the layers, not forward
        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.head(self.encoder(x)).squeeze(-1), y)

    logged: list[float] = []

    class Record(CSIBCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(float(trainer.callback_metrics["csib/compression"]))
            assert "csib/prediction" not in trainer.callback_metrics

    callback = Record("encoder", input_layer="encoder")
    with pytest.warns(UserWarning, match="csib/prediction is not logged: the module's forward did not run") as seen:
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3))
        trainer.fit(NoForward(), loader(regression_data()))
    assert sum("csib/prediction" in str(w.message) for w in seen) == 1
    assert len(logged) == 3 and all(v > 0 for v in logged)


def test_callback_gradient_reaches_encoder_only_through_term(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = MLPRegressor(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1))
    with_term = MLPRegressor(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1))
    with_term.load_state_dict(base.state_dict())
    Trainer(**trainer_kwargs(tmp_path, max_steps=1)).fit(base, loader(regression_data()))
    Trainer(callbacks=[CSIBCallback("encoder", beta=1.0)], **trainer_kwargs(tmp_path, max_steps=1)).fit(
        with_term, loader(regression_data())
    )
    # the compression term depends on the encoder, not on the head
    torch.testing.assert_close(base.head.weight, with_term.head.weight, rtol=0, atol=0)
    assert not torch.allclose(base.encoder[0].weight, with_term.encoder[0].weight)


def test_loss_and_callback_under_sam_see_each_batch_once(tmp_path: Path) -> None:
    """Regression: under SAM the callback's perturbed pass found no captured input (detached captures skip the extra
    passes) and stopped training with a RuntimeError; the running target statistics counted each batch twice."""
    import warnings

    from lightning_info.optim import SAM

    def sam(params: Any) -> torch.optim.Optimizer:
        return SAM(params, torch.optim.SGD, rho=0.05, lr=0.1)

    data = loader(regression_data(n=48), batch_size=16)
    model = CSIBRegressor(beta=0.05, optimizer_factory=sam)
    Trainer(**trainer_kwargs(tmp_path, max_steps=3)).fit(model, data)
    assert int(model.csib.target_stats.count) == 48
    callback = CSIBCallback("encoder", beta=0.05)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CSIBCallback")  # csib/prediction stays on
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3))
        trainer.fit(MLPRegressor(optimizer_factory=sam), data)
    assert callback.target_stats is not None and int(callback.target_stats.count) == 48
    assert {"csib/prediction", "csib/compression"} <= set(trainer.callback_metrics)


def test_callback_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, inf\], got -1"):
        CSIBCallback("encoder", beta=-1.0)
    with pytest.raises(TypeError, match="layer must be a module name"):
        CSIBCallback(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_x must be one of"):
        CSIBCallback("encoder", sigma_x="auto")  # type: ignore[arg-type]
    assert CSIBCallback("encoder").state_key != CSIBCallback("head").state_key
    with pytest.raises(ValueError, match="no submodule of MLPRegressor matches 'encodr'"):
        Trainer(callbacks=[CSIBCallback("encodr")], **trainer_kwargs(tmp_path)).fit(
            MLPRegressor(), loader(regression_data())
        )

    class Bypass(MLPRegressor):  # the representation module never runs
        def forward(self, x):
            return self.head(torch.zeros(x.shape[0], 16)).squeeze(-1)

    model = Bypass()
    with pytest.raises(RuntimeError, match="module 'encoder' did not run"):
        Trainer(callbacks=[CSIBCallback("encoder")], **trainer_kwargs(tmp_path)).fit(model, loader(regression_data()))
    assert "training_step" not in model.__dict__


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_loss_and_callback(tmp_path: Path) -> None:
    run_ddp(
        tmp_path,
        """
        import torch
        from lightning.pytorch import Trainer
        from lightning_info.callbacks import CSIBCallback
        from tests.losses.test_cs_ib import CSIBRegressor
        from tests.helpers.lightning import trainer_kwargs
        from tests.helpers.models import loader, regression_data

        class Both(CSIBRegressor):  # CSIBLoss on (encoder, head) + CSIBCallback on the forward pass
            def training_step(self, batch, batch_idx):
                x, y = batch
                y_pred = self(x)
                t = self.encoder(x)
                loss = self.csib(x, t, y_pred, y)
                self.local = (x.detach(), t.detach(), self.csib.last_compression)
                return loss

        torch.manual_seed(0)
        model = Both(beta=0.05)
        callback = CSIBCallback("encoder", beta=0.01)
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3))
        trainer.fit(model, loader(regression_data(n=96), batch_size=16))
        torch.save({"loss": model.csib.state_dict(), "callback": callback.state_dict(), "local": model.local,
                    "w": model.encoder[0].weight.detach().clone()}, OUT / f"r{trainer.global_rank}.pt")
        """,
    )
    r0, r1 = (torch.load(tmp_path / f"r{rank}.pt", weights_only=True) for rank in (0, 1))
    y = regression_data(n=96).tensors[1]
    for state in ("loss", "callback"):
        prefix = "target_stats." if state == "loss" else ""
        for key in ("mean", "var", "count"):
            torch.testing.assert_close(r0[state][prefix + key], r1[state][prefix + key], rtol=0, atol=0)
        assert int(r0[state][prefix + "count"]) == 3 * 2 * 16  # 3 steps x 2 ranks x local batch 16
        torch.testing.assert_close(r0[state][prefix + "mean"], y.mean().reshape(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r0["w"], r1["w"], rtol=0, atol=0)
    # the kernel terms are computed on each rank's local batch (16 samples), not on a gathered one
    for r in (r0, r1):
        x, t, compression = r["local"]
        assert x.shape[0] == 16
        torch.testing.assert_close(compression, cs_qmi(x, t, "silverman", "median"), rtol=1e-5, atol=1e-7)
    assert not torch.equal(r0["local"][0], r1["local"][0])


def test_callback_takes_a_built_loss_and_trains_as_the_short_form(tmp_path: Path) -> None:
    loss = CSIBLoss(beta=0.3, sigma_x=1.5, sigma_y=0.7, estimator="official")
    built = CSIBCallback("encoder", loss=loss)
    assert built.loss is loss and built.beta == built.weight == 0.3
    short = CSIBCallback("encoder", 0.3, 1.5, sigma_y=0.7, estimator="official")
    torch.manual_seed(0)
    first = MLPRegressor()
    second = MLPRegressor()
    second.load_state_dict(first.state_dict())
    metrics = []
    for model, callback in ((first, built), (second, short)):
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3))
        trainer.fit(model, loader(regression_data()))
        metrics.append({k: float(trainer.callback_metrics[k]) for k in ("csib/prediction", "csib/compression")})
    assert metrics[0] == metrics[1]
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert int(loss.target_stats.count) == 48 and built.target_stats is loss.target_stats
    torch.testing.assert_close(loss.target_stats.mean, short.target_stats.mean, rtol=0, atol=0)


def test_callback_loss_and_short_form_arguments_exclude_each_other() -> None:
    loss = CSIBLoss()
    with pytest.raises(TypeError, match=r"give loss=CSIBLoss\(...\) or its arguments \['beta', 'sigma_y'\], not both"):
        CSIBCallback("encoder", beta=0.1, sigma_y=2.0, loss=loss)
    with pytest.raises(TypeError, match="loss must be a CSIBLoss, got MSELoss"):
        CSIBCallback("encoder", loss=torch.nn.MSELoss())  # type: ignore[arg-type]


class TwoTargets(MLPRegressor):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def _two_targets(n: int = 32) -> torch.utils.data.TensorDataset:
    x, y = regression_data(n=n).tensors
    return torch.utils.data.TensorDataset(x, torch.stack([y, -2.0 * y + 1.0], dim=1))


def test_short_form_callback_takes_the_number_of_targets_from_the_first_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoTargets()
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.0)  # type: ignore[method-assign]
    data = _two_targets()
    x, y = data.tensors[0][:16], data.tensors[1][:16]
    with torch.no_grad():  # batch 0's statistics, column by column (population std)
        mean, std = y.mean(0), y.std(0, unbiased=False)
        expected = cs_conditional_divergence(x, (y - mean) / std, (model(x) - mean) / std, "silverman")
    callback = CSIBCallback("encoder", beta=0.1)
    trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=1))
    trainer.fit(model, loader(data))
    assert callback.loss.num_targets == 2 and int(callback.target_stats.count) == 16
    assert float(trainer.callback_metrics["csib/prediction"]) == pytest.approx(expected.item(), rel=1e-5)
    state = callback.state_dict()
    resumed = CSIBCallback("encoder", beta=0.1)
    resumed.load_state_dict(state)  # sized from the checkpoint
    torch.testing.assert_close(resumed.target_stats.mean, state["mean"], rtol=0, atol=0)


def test_built_loss_with_other_num_targets_warns_and_keeps_the_term(tmp_path: Path) -> None:
    callback = CSIBCallback("encoder", loss=CSIBLoss(beta=0.1))  # num_targets=1, the batches have 2
    trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=2))
    with pytest.warns(UserWarning, match=r"batch\[1\] \(16, 2\) does not have the loss's num_targets=1"):
        trainer.fit(TwoTargets(), loader(_two_targets()))
    assert "csib/prediction" not in trainer.callback_metrics and "csib/compression" in trainer.callback_metrics


def test_constant_first_batch_of_targets_gives_a_moderate_loss() -> None:
    # issue 14.8: the std floor of 1e-8 turned a constant first batch into a loss of ~1e10-1e12
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(32, 5, generator=g), torch.randn(32, 3, generator=g)
    y = torch.full((32,), 3.0)
    p = 3.0 + 0.5 * torch.randn(32, generator=g)
    loss_fn = CSIBLoss(beta=0.1, sigma_x=1.0, sigma_t=1.0, sigma_y=1.0)
    loss = loss_fn(x, t, p, y)
    assert bool(torch.isfinite(loss)) and float(loss) < 100.0
    # the constant targets are only centred: the same as the unstandardised loss on y - 3, y_pred - 3
    reference = CSIBLoss(beta=0.1, sigma_x=1.0, sigma_t=1.0, sigma_y=1.0, standardize_targets=False)
    torch.testing.assert_close(loss, reference(x, t, p - 3.0, y - 3.0))

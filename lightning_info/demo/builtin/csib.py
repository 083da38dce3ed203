"""Demo part ``csib``: an extra stage that trains a small MLP regressor on diabetes with the CS-IB loss.

The digits transformer is a classifier, so CS-IB (a regression objective) gets its own stage: an MLP on
scikit-learn's diabetes data (features standardised on the training split) trained with
:class:`~lightning_info.losses.CSIBLoss`, beside the same MLP trained with MSE from the same initialisation. The
CS-IB run logs ``csib/prediction`` and ``csib/compression`` every step; each run is its own demo stage (its own W&B
run) and records its test RMSE (target units) and R^2, which the part returns.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import Tensor, nn

from lightning_info.demo.data import load_diabetes_standardized
from lightning_info.demo.parts import DemoContext, register_part
from lightning_info.losses import CSIBLoss

_BETA = 0.01


class _DiabetesRegressor(LightningModule):
    """``10 -> 32 -> 32 (representation t) -> 1``; the output is de-standardised with the training targets' scale."""

    def __init__(self, csib: bool, y_mean: float, y_std: float, beta: float = _BETA, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 1)
        self.csib = CSIBLoss(beta=beta) if csib else None
        self.y_mean, self.y_std = y_mean, y_std

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)).squeeze(-1) * self.y_std + self.y_mean

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        t = self.encoder(x)
        y_pred = self.head(t).squeeze(-1) * self.y_std + self.y_mean
        if self.csib is None:
            return nn.functional.mse_loss(y_pred, y) / self.y_std**2
        loss = self.csib(x, t, y_pred, y)
        self.log_dict(self.csib.terms, on_step=True, on_epoch=False)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        error = self(x) - y
        self.log("diabetes/test_rmse", error.square().mean().sqrt())
        self.log("diabetes/test_r2", 1 - error.square().sum() / (y - y.mean()).square().sum())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


_STAGES = {"csib": "CS-IB regressor (diabetes)", "mse": "MSE regressor (diabetes)"}


def _stage(ctx: DemoContext) -> dict[str, float]:
    data = load_diabetes_standardized(seed=ctx.seed)
    y_train = data.train[1]
    summary: dict[str, float] = {}
    epochs = 2 if ctx.fast else 60
    for name, csib in (("csib", True), ("mse", False)):
        with ctx.stage(_STAGES[name], epochs) as stage:
            seed_everything(ctx.seed, workers=True, verbose=False)  # the same initialisation and batches for both
            model = _DiabetesRegressor(csib, float(y_train.mean()), float(y_train.std()))
            trainer = Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=epochs,
                logger=stage.loggers,
                log_every_n_steps=1,
                enable_checkpointing=False,
                callbacks=[stage.progress_bar()],
                enable_model_summary=False,
                default_root_dir=str(ctx.out),
            )
            trainer.fit(model, data.loader("train", 64, shuffle=True, seed=ctx.seed))
            tested = trainer.test(model, data.loader("test", len(data.test[1])), verbose=False)[0]
            stage.summary[f"diabetes_{name}_test_rmse"] = float(tested["diabetes/test_rmse"])
            stage.summary[f"diabetes_{name}_test_r2"] = float(tested["diabetes/test_r2"])
        summary.update(stage.summary)
    return summary


@register_part("csib", help=f"CS-IB loss (beta={_BETA}): an extra stage, an MLP regressor on diabetes vs MSE")
def configure(ctx: DemoContext) -> None:
    """Add the diabetes CS-IB and MSE stages (a few seconds with ``--fast``, about 10 s otherwise on 2 cores)."""
    ctx.plan(*_STAGES.values())
    ctx.extra_stages.append(_stage)

"""MSE vs the CS-IB loss (Yu et al., ICLR 2024) for an MLP on scikit-learn's diabetes data, over several seeds.

Run: ``python examples/cs_ib_regression.py --out runs/cs_ib`` (``--fast`` for a seconds-long smoke run).
Prints test RMSE and R^2 (mean ± std over seeds) per loss and writes ``results.json`` and ``results.md`` under
``--out``. Both CS-IB terms (``csib/prediction``, ``csib/compression``) are logged every step, also for the MSE runs
(computed without gradient, for comparison), to W&B offline when wandb is importable, else to CSV. Each seed draws
its own 70/15/15 split and initialisation; the reported metrics are those of the last epoch on the test split (no
selection on it). With LightningCLI:
``python examples/cs_ib_regression.py fit --config examples/configs/cs_ib_regression.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_info.demo.data import load_diabetes_standardized
from lightning_info.losses import CSIBLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: the shared _report module
from _report import mean_std, write_results


class DiabetesData(LightningDataModule):
    """scikit-learn's diabetes data (442 x 10), a seeded 70/15/15 split, features standardised on the train split."""

    def __init__(self, seed: int = 0, batch_size: int = 64) -> None:
        super().__init__()
        self.seed, self.batch_size = seed, batch_size
        self.split = load_diabetes_standardized(seed=seed)  # tiny: loaded here so y_mean/y_std exist for the CLI
        y_train = self.split.train[1]
        self.y_mean, self.y_std = float(y_train.mean()), float(y_train.std())

    def train_dataloader(self) -> DataLoader:
        return self.split.loader("train", self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        return self.split.loader("val", len(self.split.val[1]))

    def test_dataloader(self) -> DataLoader:
        return self.split.loader("test", len(self.split.test[1]))


class Regressor(LightningModule):
    """MLP ``10 -> 64 -> 64 (representation t) -> 1``; output de-standardised with the training targets' scale."""

    def __init__(
        self, loss: str = "cs-ib", beta: float = 0.01, lr: float = 1e-3, y_mean: float = 0.0, y_std: float = 1.0
    ) -> None:
        super().__init__()
        if loss not in ("mse", "cs-ib"):
            raise ValueError(f"loss must be 'mse' or 'cs-ib', got {loss!r}")
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 1)
        # the library defaults: sigma_x="silverman", sigma_t="median", sigma_y=1.0 (targets standardised with
        # running statistics kept in the loss's buffers)
        self.csib = CSIBLoss(beta=beta)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)).squeeze(-1) * self.hparams["y_std"] + self.hparams["y_mean"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        t = self.encoder(x)
        y_pred = self.head(t).squeeze(-1) * self.hparams["y_std"] + self.hparams["y_mean"]
        mse = nn.functional.mse_loss(y_pred, y) / self.hparams["y_std"] ** 2  # standardised units
        if self.hparams["loss"] == "cs-ib":
            loss = self.csib(x, t, y_pred, y)
        else:
            with torch.no_grad():  # the terms are still logged, for comparison
                self.csib(x, t, y_pred, y)
            loss = mse
        self.log("train/mse_std", mse, on_step=True, on_epoch=False)
        self.log_dict(self.csib.terms, on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        error = self(x) - y
        self.log(f"{stage}/rmse", error.square().mean().sqrt())
        self.log(f"{stage}/r2", 1 - error.square().sum() / (y - y.mean()).square().sum())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def _logger(out: Path, name: str) -> Logger:
    try:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-cs-ib", name=name)
    except (ImportError, ModuleNotFoundError):
        return CSVLogger(str(out), name=name)


def run_one(loss: str, beta: float, seed: int, epochs: int, out: Path) -> dict[str, float]:
    """Train one model and return its test metrics."""
    seed_everything(seed, workers=True, verbose=False)
    data = DiabetesData(seed=seed)
    model = Regressor(loss=loss, beta=beta, y_mean=data.y_mean, y_std=data.y_std)
    logger = _logger(out, f"{loss}-beta{beta:g}-seed{seed}")
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)
    metrics = trainer.test(model, datamodule=data, verbose=False)[0]
    finish = getattr(getattr(logger, "experiment", None), "finish", None)  # close the W&B run before the next one
    if finish is not None:
        finish()
    return {"rmse": float(metrics["test/rmse"]), "r2": float(metrics["test/r2"])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every (loss, beta) over the seeds; print and save mean ± std of the test RMSE and R^2."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/cs_ib_regression"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--fast", action="store_true", help="1 seed, 1 beta, 2 epochs")
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.betas, args.epochs = 1, [0.01], 2
    args.out.mkdir(parents=True, exist_ok=True)
    configs = [("mse", 0.0)] + [("cs-ib", beta) for beta in args.betas]
    results: dict[str, Any] = {}
    for loss, beta in configs:
        runs = [run_one(loss, beta, args.seed + s, args.epochs, args.out) for s in range(args.seeds)]
        key = "MSE" if loss == "mse" else f"CS-IB beta={beta:g}"
        results[key] = {m: [r[m] for r in runs] for m in ("rmse", "r2")}
    lines = [
        f"Diabetes, MLP, {args.epochs} epochs, {args.seeds} seed(s) (test RMSE and R^2, mean ± std)",
        "",
        "| loss | test RMSE | test R^2 |",
        "|---|---|---|",
    ]
    for key, res in results.items():
        cells = [mean_std(res[m]) for m in ("rmse", "r2")]
        lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines)
    write_results(args.out, table, results)
    return results


class RegressionCLI(LightningCLI):
    """``LightningCLI`` whose model takes the target scale from the data module (no numbers in the YAML)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.y_mean", "model.y_mean", apply_on="instantiate")
        parser.link_arguments("data.y_std", "model.y_std", apply_on="instantiate")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        RegressionCLI(Regressor, DiabetesData)
    else:
        main()

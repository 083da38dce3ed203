"""SGD vs the SAM family (SAM, ASAM, GAM, GSAM, WSAM, FriendlySAM, LookSAM) for a small CNN on scikit-learn's digits.

With optional label noise. Run: ``python examples/sam_compare.py --out runs/sam_compare`` (``--fast`` for a seconds-long
smoke run). Every optimizer wraps the same SGD (momentum 0.9, cosine schedule) on the same seeded 70/15/15 split. Logged
to W&B offline when wandb is importable (else CSV): ``train_loss``, ``val_acc``, the optimizer's
``sam/perturbation_norm``, ``sam/grad_norm``, ``sam/sharpness`` / ``sam/first_order_flatness`` every step
(``SharpnessMonitor``), and after every epoch two sharpness estimates measured the same way for all optimizers on a
fixed training batch, in eval mode (``SharpnessEstimate``): ``sharpness/worst_case_gap`` = L(w + rho g/||g||) - L(w) at
rho = 0.05 and ``sharpness/hessian_top_eig`` (power iteration on Hessian-vector products). Prints test accuracy (mean ±
std over seeds, last epoch, no selection on the test split) and the final sharpness, and writes ``results.json`` and
``results.md`` under ``--out``. With LightningCLI: ``python examples/sam_compare.py fit --config
examples/configs/sam_compare.yaml``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import SharpnessMonitor
from lightning_info.demo.data import load_digits_tokens
from lightning_info.optim import GAM, GSAM, SAM, WSAM, FriendlySAM, LookSAM

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: the shared _report module
from _report import mean_std, write_results

OPTIMIZERS = ("sgd", "sam", "asam", "gam", "gsam", "wsam", "fsam", "looksam")


class DigitsImages(LightningDataModule):
    """Digits as ``(1, 8, 8)`` images in [0, 1]; ``label_noise`` replaces that fraction of training labels at random."""

    def __init__(self, seed: int = 0, batch_size: int = 64, label_noise: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_noise < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
        self.seed, self.batch_size, self.label_noise = seed, batch_size, label_noise

    def setup(self, stage: str | None = None) -> None:
        split = load_digits_tokens(seed=self.seed)
        (x, y), self.val, self.test = split.train, split.val, split.test
        g = torch.Generator().manual_seed(self.seed + 1)
        noisy = torch.rand(len(y), generator=g) < self.label_noise
        shift = torch.randint(1, 10, (len(y),), generator=g)  # a different class, uniformly
        self.train = (x, torch.where(noisy, (y + shift) % 10, y))

    def _loader(self, tensors: tuple[Tensor, Tensor], shuffle: bool = False) -> DataLoader:
        x, y = tensors
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(x[:, None], y), batch_size=self.batch_size, shuffle=shuffle, generator=g)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test)


class SmallCNN(LightningModule):
    """conv(16)-BN-ReLU-conv(32)-BN-ReLU-pool-linear on 8x8 digits, trained with ``optimizer`` around SGD."""

    def __init__(
        self,
        optimizer: str = "sam",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        rho: float = 0.05,
        alpha: float = 0.1,
        epochs: int = 30,
        sharpness_samples: int = 128,
        power_iterations: int = 10,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True)
        self.log(f"{stage}_acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_callbacks(self) -> list[Callback]:
        """The optimizer's statistics every step and the sharpness estimates every epoch (also under LightningCLI)."""
        h = self.hparams
        estimate = SharpnessEstimate(samples=h["sharpness_samples"], power_iterations=h["power_iterations"])
        return [SharpnessMonitor(), estimate, StepTimer()]

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        sgd = {"lr": h["lr"], "momentum": h["momentum"], "weight_decay": h["weight_decay"]}
        optimizer: torch.optim.Optimizer
        if h["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), **sgd)
        elif h["optimizer"] == "sam":
            optimizer = SAM(self.parameters(), torch.optim.SGD, rho=h["rho"], **sgd)
        elif h["optimizer"] == "asam":
            optimizer = SAM(self.parameters(), torch.optim.SGD, rho=10 * h["rho"], adaptive=True, **sgd)
        elif h["optimizer"] == "gam":
            optimizer = GAM(self.parameters(), torch.optim.SGD, rho=h["rho"], alpha=h["alpha"], **sgd)
        elif h["optimizer"] == "gsam":  # the paper's rho schedule: rho_t from rho down to rho / 10 with the lr
            optimizer = GSAM(self.parameters(), torch.optim.SGD, rho=h["rho"], alpha=h["alpha"], rho_min=h["rho"] / 10,
                             **sgd)  # fmt: skip
        elif h["optimizer"] == "wsam":
            optimizer = WSAM(self.parameters(), torch.optim.SGD, rho=h["rho"], gamma=0.9, **sgd)
        elif h["optimizer"] == "fsam":
            optimizer = FriendlySAM(self.parameters(), torch.optim.SGD, rho=h["rho"], sigma=1.0, lmbda=0.9, **sgd)
        else:
            optimizer = LookSAM(self.parameters(), torch.optim.SGD, rho=h["rho"], k=5, alpha=0.7, **sgd)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, h["epochs"]))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class SharpnessEstimate(Callback):
    """After each training epoch: worst-case loss gap at radius ``rho`` and top Hessian eigenvalue, on one batch.

    The same measurement for every optimizer: the first ``samples`` training examples, eval mode (BatchNorm running
    statistics, no dropout), gradients by ``torch.autograd.grad`` (the model's ``.grad`` is left alone).
    """

    def __init__(self, rho: float = 0.05, samples: int = 256, power_iterations: int = 20) -> None:
        if rho <= 0 or samples < 1 or power_iterations < 1:
            raise ValueError(f"need rho > 0, samples, power_iterations >= 1; got {rho}, {samples}, {power_iterations}")
        self.rho, self.samples, self.power_iterations = rho, samples, power_iterations
        self.latest: dict[str, float] = {}

    def _batch(self, trainer: Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        x, y = trainer.train_dataloader.dataset.tensors  # type: ignore[union-attr]
        return x[: self.samples].to(device), y[: self.samples].to(device)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        x, y = self._batch(trainer, pl_module.device)
        params = [p for p in pl_module.parameters() if p.requires_grad]
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(pl_module(x), y)
                grads = torch.autograd.grad(loss, params, create_graph=True)
                flat = torch.cat([g.reshape(-1) for g in grads])
                v = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0)).to(flat)
                eigenvalue = torch.zeros(())
                for _ in range(self.power_iterations):
                    v = v / v.norm()
                    hv = torch.autograd.grad(grads, params, grad_outputs=_unflatten(v, params), retain_graph=True)
                    hv_flat = torch.cat([h.reshape(-1) for h in hv])
                    eigenvalue = (v @ hv_flat).detach()
                    v = hv_flat.detach()
            with torch.no_grad():
                g = flat.detach()
                e = _unflatten(self.rho * g / g.norm().clamp_min(1e-12), params)
                torch._foreach_add_(params, e)
                perturbed = nn.functional.cross_entropy(pl_module(x), y)
                torch._foreach_sub_(params, e)
        finally:
            pl_module.train(was_training)
        self.latest = {
            "sharpness/worst_case_gap": float(perturbed - loss.detach()),
            "sharpness/hessian_top_eig": float(eigenvalue),
        }
        pl_module.log_dict(self.latest, on_step=False, on_epoch=True)


class StepTimer(Callback):
    """Median wall time of a training batch (forward, backward(s) and optimizer step), in milliseconds."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.times.append(1e3 * (time.perf_counter() - self._started))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def _unflatten(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in like]), like, strict=True)]


def _logger(out: Path, name: str, wandb: bool) -> Logger:
    if wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-sam", name=name)
        except (ImportError, ModuleNotFoundError):
            pass
    return CSVLogger(str(out), name=name)


def run_one(
    optimizer: str, seed: int, epochs: int, label_noise: float, out: Path, wandb: bool, limit_batches: int | None
) -> dict[str, float]:
    """Train one model; return its test accuracy, final train loss, sharpness estimates and median ms per step."""
    seed_everything(seed, workers=True, verbose=False)
    data = DigitsImages(seed=seed, label_noise=label_noise)
    fast = limit_batches is not None
    model = SmallCNN(optimizer=optimizer, epochs=epochs, sharpness_samples=32 if fast else 128,
                     power_iterations=3 if fast else 10)  # fmt: skip
    logger = _logger(out, f"{optimizer}-noise{label_noise:g}-seed{seed}", wandb)
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        limit_train_batches=limit_batches,
        limit_val_batches=1 if fast else None,
    )
    trainer.fit(model, datamodule=data)
    train_loss = float(trainer.callback_metrics["train_loss_epoch"])
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    estimate = next(c for c in callbacks if isinstance(c, SharpnessEstimate))
    timer = next(c for c in callbacks if isinstance(c, StepTimer))
    tested = trainer.test(model, datamodule=data, verbose=False)[0]  # (test re-creates the model's callbacks)
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "finish"):
        experiment.finish()
    return {
        "test_acc": float(tested["test_acc"]),
        "train_loss": train_loss,
        "worst_case_gap": estimate.latest["sharpness/worst_case_gap"],
        "hessian_top_eig": estimate.latest["sharpness/hessian_top_eig"],
        "ms_per_step": timer.median_ms,
    }


METRICS = ("test_acc", "train_loss", "worst_case_gap", "hessian_top_eig", "ms_per_step")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train every optimizer over the seeds; print and save mean ± std of each metric."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/sam_compare"))
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=["sgd", "sam", "gam"])
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--label-noise", type=float, default=0.2, help="fraction of training labels replaced")
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of W&B offline")
    parser.add_argument("--fast", action="store_true", help="1 seed, 1 epoch of 3 batches")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 is faster on a busy CPU)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _compare(args)
    finally:
        torch.set_num_threads(threads)


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    limit = None
    if args.fast:
        args.seeds, args.epochs, limit = 1, 1, 3
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.optimizers:
        runs = [
            run_one(name, args.seed + s, args.epochs, args.label_noise, args.out, not args.no_wandb, limit)
            for s in range(args.seeds)
        ]
        results[name] = {m: [r[m] for r in runs] for m in METRICS}
    lines = [
        f"Digits CNN, {args.epochs} epochs, label noise {args.label_noise:g}, {args.seeds} seed(s) (mean ± std)",
        "",
        "| optimizer | test acc | train loss | worst-case gap (rho 0.05) | top Hessian eigenvalue | ms / step |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        lines.append(f"| {name} | " + " | ".join(mean_std(res[m]) for m in METRICS) + " |")
    table = "\n".join(lines)
    write_results(args.out, table, results)
    return results


def cli_main() -> None:
    """``LightningCLI`` entry point (``fit``/``test`` with ``--config examples/configs/sam_compare.yaml``)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(SmallCNN, DigitsImages)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        cli_main()
    else:
        main()

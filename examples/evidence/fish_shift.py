"""Evidence: FISH (Sung et al., NeurIPS 2021) in its regime -- a large pretrained model, few labels, a small shift.

FISH claims that training only the 0.5% of parameters with the largest Fisher information matches full fine-tuning
when a *pretrained* model is adapted with few labels to a task close to its pretraining. This script builds that
regime at CPU size: a wide MLP ``64 -> 1024 -> 1024 -> 10`` (1,126,410 parameters) pretrained on part of
scikit-learn's digits (all ten classes, clean images), then fine-tuned on the same classes under a small input shift
(every 8x8 image translated one pixel to the right, plus Gaussian pixel noise of sd ``--noise`` on [0, 1] pixels)
with ``--labels`` labelled shifted images. Methods: no fine-tuning, head only (``model.body.requires_grad_(False)``),
full fine-tuning, ``FisherMask(keep_ratio=0.005)`` (the library's defaults otherwise) and a random 0.5% mask (same
budget, entries drawn uniformly: ``FisherMask`` with ``compute_scores`` overridden).

Protocol per seed: the seed draws the pretraining / fine-tuning / validation / test partition of the 1,797 images,
the pixel noise, the pretraining and the fine-tuning order; every method starts from the same pretrained weights.
Adam, batch 32, trained with ``Trainer.fit``. For each method the learning rate (``--lrs``) and the number of
fine-tuning epochs (``--checkpoints``) are chosen by the mean over seeds of the accuracy on the shifted *validation*
split; the test split is never used for selection. Reported: shifted test accuracy (mean ± std over seeds) and paired
differences to full fine-tuning and to FISH (same seed = same data and pretrained weights).

Run: ``python examples/evidence/fish_shift.py --out runs/evidence/fish_shift`` (``--fast`` for a smoke run). Writes
``results.md``, ``results.json`` and ``accuracy.png`` under ``--out``; fine-tuning runs log ``train/loss`` and the
``fisher/*`` keys to W&B offline when wandb is importable (else CSV). One model with LightningCLI: ``python
examples/evidence/fish_shift.py fit --config examples/configs/evidence_fish_shift.yaml``.
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

from lightning_info.callbacks import FisherMask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared _report module
from _report import mean_std, paired, write_results

METHODS = ("none", "head only", "full fine-tuning", "FISH 0.5%", "random 0.5%")


def make_data(seed: int, labels: int, noise: float) -> dict[str, tuple[Tensor, Tensor]]:
    """Clean pretraining split; shifted (1-pixel right translation + pixel noise) fine-tune / val / test splits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=gen)
    n_pre, n_val = 900, 200
    parts = {
        "pretrain": idx[:n_pre],
        "finetune": idx[n_pre : n_pre + labels],
        "val": idx[n_pre + labels : n_pre + labels + n_val],
        "test": idx[n_pre + labels + n_val :],
    }
    images = x.view(-1, 8, 8)
    shifted = torch.zeros_like(images)
    shifted[:, :, 1:] = images[:, :, :-1]  # one pixel to the right, zero fill
    shifted = shifted.reshape(-1, 64) + noise * torch.randn(len(y), 64, generator=gen)
    return {name: ((x if name == "pretrain" else shifted)[i], y[i]) for name, i in parts.items()}


class ShiftedDigits(LightningDataModule):
    """One split of :func:`make_data` (``pretrain``: clean; ``finetune``: ``labels`` shifted images), for the CLI."""

    def __init__(
        self, split: str = "finetune", seed: int = 0, labels: int = 300, noise: float = 0.1, batch_size: int = 32
    ) -> None:
        super().__init__()
        if split not in ("pretrain", "finetune"):
            raise ValueError(f"split must be 'pretrain' or 'finetune', got {split!r}")
        self.split, self.seed, self.labels, self.noise, self.batch_size = split, seed, labels, noise, batch_size

    def train_dataloader(self) -> DataLoader:
        data = make_data(self.seed, self.labels, self.noise)[self.split]
        return DataLoader(TensorDataset(*data), batch_size=self.batch_size, shuffle=True)


class WideMLP(LightningModule):
    """``64 -> hidden -> hidden -> 10`` MLP (``body``, ``head``), cross-entropy, Adam."""

    def __init__(self, hidden: int = 1024, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams["lr"])


class RandomMask(FisherMask):
    """Control: the FISH budget with the kept entries drawn uniformly at random (seeded)."""

    def __init__(self, keep_ratio: float, seed: int) -> None:
        super().__init__(keep_ratio)
        self.seed = seed

    def compute_scores(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(p.shape, generator=gen) for n, p in pl_module.named_parameters() if p.requires_grad}


def accuracy(model: nn.Module, split: tuple[Tensor, Tensor]) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (evaluated in ``eval`` mode without gradients)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        acc = float((model(split[0]).argmax(-1) == split[1]).float().mean())
    model.train(was_training)
    return acc


class Snapshots(Callback):
    """At the end of the listed epochs, record the shifted validation and test accuracies."""

    def __init__(self, data: dict[str, tuple[Tensor, Tensor]], epochs: list[int]) -> None:
        self.data, self.epochs = data, set(epochs)
        self.records: dict[int, dict[str, float]] = {}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs:
            val, test = accuracy(pl_module, self.data["val"]), accuracy(pl_module, self.data["test"])
            self.records[epoch] = {"val_acc": val, "test_acc": test}
            pl_module.log("val/acc", val, on_step=False, on_epoch=True)


def _trainer(epochs: int, logger: Logger | bool, callbacks: list[Callback]) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
    )


def _logger(out: Path, name: str, wandb: bool) -> Logger:
    if wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-evidence", name=name)
        except (ImportError, ModuleNotFoundError):
            pass
    return CSVLogger(str(out), name=name)


def pretrain(data: dict[str, tuple[Tensor, Tensor]], seed: int, epochs: int, hidden: int) -> dict[str, Tensor]:
    """Train a :class:`WideMLP` on the clean pretraining split; return its state dict."""
    seed_everything(seed, workers=True, verbose=False)
    model = WideMLP(hidden=hidden, lr=1e-3)
    loader = DataLoader(TensorDataset(*data["pretrain"]), batch_size=32, shuffle=True)
    _trainer(epochs, False, []).fit(model, train_dataloaders=loader)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def finetune(
    method: str, lr: float, seed: int, data: dict[str, tuple[Tensor, Tensor]], state: dict[str, Tensor], args: Any
) -> dict[int, dict[str, float]]:
    """Fine-tune the pretrained weights with ``method``; return val/test accuracy per checkpoint epoch."""
    seed_everything(seed, workers=True, verbose=False)
    model = WideMLP(hidden=args.hidden, lr=lr)
    model.load_state_dict(state)
    callbacks: list[Callback] = []
    if method == "head only":
        model.body.requires_grad_(False)
    elif method == "FISH 0.5%":
        callbacks.append(FisherMask(keep_ratio=0.005))
    elif method == "random 0.5%":
        callbacks.append(RandomMask(0.005, seed=seed))
    snapshots = Snapshots(data, args.checkpoints)
    logger = _logger(args.out, f"{method.replace(' ', '_').replace('%', 'pct')}-lr{lr:g}-seed{seed}", not args.no_wandb)
    loader = DataLoader(TensorDataset(*data["finetune"]), batch_size=32, shuffle=True)
    _trainer(max(args.checkpoints), logger, [*callbacks, snapshots]).fit(model, train_dataloaders=loader)
    finish = getattr(getattr(logger, "experiment", None), "finish", None)  # close the W&B run before the next one
    if finish is not None:
        finish()
    return snapshots.records


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Pretrain per seed, fine-tune with every method, select on validation, write the table, JSON and figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/evidence/fish_shift"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels", type=int, default=300, help="labelled shifted images for fine-tuning")
    parser.add_argument("--noise", type=float, default=0.1, help="sd of the Gaussian pixel noise (pixels in [0, 1])")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 20, 40], help="candidate epoch counts")
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of W&B offline")
    parser.add_argument("--fast", action="store_true", help="2 seeds, hidden 64, 1 lr, 1-2 epochs")
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.hidden, args.pretrain_epochs, args.lrs, args.checkpoints = 2, 64, 1, [1e-3], [1, 2]
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed + s for s in range(args.seeds)]
    start, wall_start = time.process_time(), time.perf_counter()
    runs: dict[str, dict[float, list[dict[int, dict[str, float]]]]] = {m: {} for m in METHODS[1:]}
    none: list[dict[str, float]] = []
    for seed in seeds:
        data = make_data(seed, args.labels, args.noise)
        state = pretrain(data, seed, args.pretrain_epochs, args.hidden)
        base = WideMLP(hidden=args.hidden)
        base.load_state_dict(state)
        none.append({"val_acc": accuracy(base, data["val"]), "test_acc": accuracy(base, data["test"])})
        for method in METHODS[1:]:
            for lr in args.lrs:
                runs[method].setdefault(lr, []).append(finetune(method, lr, seed, data, state, args))
    results: dict[str, Any] = {"none": {"lr": None, "epochs": 0, **{k: [r[k] for r in none] for k in none[0]}}}
    for method, by_lr in runs.items():
        lr, epochs = max(
            ((lr, e) for lr in args.lrs for e in args.checkpoints),
            key=lambda c: statistics.mean(r[c[1]]["val_acc"] for r in by_lr[c[0]]),
        )
        chosen = [r[epochs] for r in by_lr[lr]]
        results[method] = {"lr": lr, "epochs": epochs, **{k: [c[k] for c in chosen] for k in chosen[0]}}
    cpu_minutes = (time.process_time() - start) / 60
    wall_minutes = (time.perf_counter() - wall_start) / 60
    parameters = sum(p.numel() for p in WideMLP(hidden=args.hidden).parameters())
    table = _table(results, args, parameters, cpu_minutes, wall_minutes)
    summary = {"parameters": parameters, "cpu_minutes": cpu_minutes, "wall_minutes": wall_minutes, "results": results}
    write_results(args.out, table, summary)
    _figure(results, args.out / "accuracy.png")
    return results


def _table(results: dict[str, Any], args: Any, parameters: int, cpu_minutes: float, wall_minutes: float) -> str:
    lines = [
        f"Digits, MLP 64-{args.hidden}-{args.hidden}-10 ({parameters:,} parameters) pretrained on 900 clean images, "
        f"fine-tuned with {args.labels} labels under a 1-pixel shift + pixel noise sd {args.noise:g}; {args.seeds} "
        f"seeds; (lr, epochs) chosen on shifted-validation accuracy. Shifted test accuracy, mean ± std; Δ = paired "
        f"difference. Process CPU time {cpu_minutes:.1f} min (wall {wall_minutes:.1f} min).",
        "",
        "| method | lr, epochs | test accuracy | Δ vs full fine-tuning | Δ vs FISH 0.5% |",
        "|---|---|---|---|---|",
    ]
    full, fish = results["full fine-tuning"]["test_acc"], results["FISH 0.5%"]["test_acc"]
    for method, res in results.items():
        hp = "—" if res["lr"] is None else f"{res['lr']:g}, {res['epochs']}"
        d_full = "—" if method == "full fine-tuning" else paired(res["test_acc"], full)
        d_fish = "—" if method == "FISH 0.5%" else paired(res["test_acc"], fish)
        lines.append(f"| {method} | {hp} | {mean_std(res['test_acc'])} | {d_full} | {d_fish} |")
    return "\n".join(lines)


def _figure(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, res in enumerate(results.values()):
        values = res["test_acc"]
        ax.scatter([i] * len(values), values, s=12, alpha=0.6)
        ax.errorbar(i + 0.15, statistics.mean(values), yerr=statistics.stdev(values) if len(values) > 1 else 0, fmt="o")
    ax.set_xticks(range(len(results)), list(results), rotation=20)
    ax.set_ylabel("shifted test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cli_main() -> None:
    """``LightningCLI`` entry point (``fit --config examples/configs/evidence_fish_shift.yaml``)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(WideMLP, ShiftedDigits)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "fit":
        cli_main()
    else:
        main()

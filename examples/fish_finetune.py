"""FISH on sklearn digits: pretrain on classes 0-4, fine-tune on 5-9 training only a Fisher-selected sparse mask.

Compares full fine-tuning, FISH masks at keep_ratio 0.5% / 2% / 10% of the 26k parameters and random masks of the
same size. The 10-way head alone (1,290 entries) exceeds the 0.5% and 2% budgets, so it competes in the global
ranking instead of being ``always_train``. Prints test accuracy on 5-9 and trained counts.

    python examples/fish_finetune.py --out runs/fish [--seed 0] [--fast]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import FisherMask
from lightning_info.fisher import topk_masks


class DigitsMLP(LightningModule):
    def __init__(self, hidden: int = 128, lr: float = 1e-3, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class RandomMask(FisherMask):
    """Control: the same budget as FISH, kept entries drawn uniformly at random."""

    def _compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(1234)
        scores = {n: torch.rand(p.shape, generator=g) for n, p in pl_module.named_parameters() if p.requires_grad}
        return topk_masks(scores, self.keep_ratio, self.include, self.exclude, self.always_train)


def split(classes: range, seed: int) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    idx = torch.nonzero(torch.isin(y, torch.tensor(list(classes)))).squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    cut = int(0.7 * len(idx))
    return TensorDataset(x[idx[:cut]], y[idx[:cut]]), TensorDataset(x[idx[cut:]], y[idx[cut:]])


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(data.tensors[0]).argmax(-1) == data.tensors[1]).float().mean())


def make_logger(out: Path, name: str) -> Logger:
    try:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(offline=True, save_dir=str(out), project="fish-finetune", name=name)
    except ImportError:  # wandb not installed
        return CSVLogger(str(out), name=name)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/fish_finetune"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="a few steps only (smoke run)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = 1 if args.fast else 30
    limit = 2 if args.fast else None
    common: dict[str, Any] = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_train_batches": limit,
        "max_epochs": epochs,
    }
    seed_everything(args.seed)
    pre_train, _ = split(range(5), args.seed)
    ft_train, ft_test = split(range(5, 10), args.seed)
    base = DigitsMLP()
    Trainer(logger=make_logger(args.out, "pretrain"), **common).fit(base, DataLoader(pre_train, 32, shuffle=True))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    total = sum(p.numel() for p in base.parameters())
    runs: dict[str, Any] = {"full": None}
    for ratio in (0.005, 0.02, 0.1):
        runs[f"fish_{ratio:g}"] = FisherMask(ratio, num_samples=1024)
        runs[f"random_{ratio:g}"] = RandomMask(ratio)
    results: dict[str, Any] = {}
    for name, callback in runs.items():
        seed_everything(args.seed)
        model = DigitsMLP()
        model.load_state_dict(state)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = Trainer(logger=make_logger(args.out, name), callbacks=[callback] if callback else [], **common)
        trainer.fit(model, DataLoader(ft_train, 32, shuffle=True))
        changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
        results[name] = {"accuracy": accuracy(model, ft_test), "trained_params": changed, "total_params": total}
        print(f"{name:14s} acc {results[name]['accuracy']:.3f}  trained {changed:6d} / {total}")
        if trainer.logger is not None and hasattr(trainer.logger, "experiment"):
            finish = getattr(trainer.logger.experiment, "finish", None)
            if callable(finish):
                finish()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

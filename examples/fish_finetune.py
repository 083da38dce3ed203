"""FISH on sklearn digits: pretrain on classes 0-4, fine-tune on 5-9 training only a Fisher-selected sparse mask.

Compares full fine-tuning, FISH masks at keep_ratio 0.5% / 2% / 10% of the MLP's 26,122 parameters and random masks
of the same size, over several seeds. The 10-way head alone (1,290 entries) exceeds the 0.5% and 2% budgets, so it
competes in the global ranking instead of being ``always_train``. Prints (and writes to ``results.md`` and
``results.json`` under ``--out``) the test accuracy on classes 5-9, the accuracy left on 0-4, and the number of
parameters that moved; logs to W&B offline (``fisher/kept_frac/<layer>``, ``fisher/histogram``) or CSV.

    python examples/fish_finetune.py --out runs/fish_finetune [--seeds 3] [--fast]

The same fine-tuning with LightningCLI (FisherMask configured by class path; starts from the ``pretrained.pt`` the
script writes, and pretrains it first, seed 0, when the file is missing):

    python examples/fish_finetune.py fit --config examples/configs/fish_finetune.yaml
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import FisherMask

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: the shared _report module
from _report import mean_std, write_results

RATIOS = (0.005, 0.02, 0.1)


class DigitsTask(LightningDataModule):
    """scikit-learn's 8x8 digits restricted to ``classes``: a seeded 70/30 train/test split, pixels in [0, 1]."""

    def __init__(self, classes: list[int] | None = None, seed: int = 0, batch_size: int = 32) -> None:
        super().__init__()
        self.classes = list(range(5, 10)) if classes is None else classes
        self.seed, self.batch_size = seed, batch_size

    def setup(self, stage: str | None = None) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target)
        idx = torch.nonzero(torch.isin(y, torch.tensor(self.classes))).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(self.seed))]
        cut = int(0.7 * len(idx))
        self.train_set = TensorDataset(x[idx[:cut]], y[idx[:cut]])
        self.test_set = TensorDataset(x[idx[cut:]], y[idx[cut:]])

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=len(self.test_set))


class DigitsMLP(LightningModule):
    """``64 -> hidden -> hidden -> 10`` MLP (``body``, ``head``) with AdamW; ``pretrained``: a state-dict file."""

    def __init__(
        self, hidden: int = 128, lr: float = 1e-3, weight_decay: float = 0.01, pretrained: str | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)
        if pretrained is not None:
            if not Path(pretrained).is_file():
                print(f"[fish_finetune] {pretrained} does not exist: pretraining on classes 0-4 first (seed 0)")
                pretrain(Path(pretrained), seed=0, hidden=hidden, lr=lr, weight_decay=weight_decay)
            self.load_state_dict(torch.load(pretrained, weights_only=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("test_acc", (self(batch[0]).argmax(-1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])


class RandomMask(FisherMask):
    """Control: the same budget as FISH, the kept entries drawn uniformly at random (seeded)."""

    def __init__(self, keep_ratio: float, seed: int = 0) -> None:
        super().__init__(keep_ratio)
        self.seed = seed

    def compute_scores(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(p.shape, generator=g) for n, p in pl_module.named_parameters() if p.requires_grad}


def _logger(out: Path, name: str) -> Logger:
    try:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-fish", name=name)
    except ImportError:  # wandb not installed
        return CSVLogger(str(out), name=name)


def _accuracy(model: nn.Module, data: DigitsTask) -> float:
    x, y = data.test_set.tensors
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def _trainer_options(fast: bool) -> dict[str, Any]:
    return {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 5,
        "limit_train_batches": 2 if fast else None,
        "max_epochs": 1 if fast else 30,
    }


def pretrain(path: Path, seed: int, fast: bool = False, **hparams: Any) -> DigitsMLP:
    """Train a :class:`DigitsMLP` (``hparams``: its arguments) on classes 0-4 and save its state dict to ``path``."""
    seed_everything(seed, verbose=False)
    model = DigitsMLP(**hparams)
    Trainer(logger=False, **_trainer_options(fast)).fit(model, DigitsTask(list(range(5)), seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def run(seed: int, out: Path, fast: bool, lr: float) -> dict[str, dict[str, float]]:
    """Pretrain on 0-4 (seed ``seed``), then fine-tune on 5-9 once per method; returns metrics per method."""
    common = _trainer_options(fast)
    old, new = DigitsTask(list(range(5)), seed), DigitsTask(list(range(5, 10)), seed)
    old.setup()
    new.setup()
    pretrained = out / f"pretrained_seed{seed}.pt"
    base = pretrain(pretrained, seed, fast, lr=lr)
    if seed == 0:
        torch.save(base.state_dict(), out / "pretrained.pt")  # the LightningCLI config starts from this one
    runs: dict[str, FisherMask | None] = {"full fine-tuning": None}
    for ratio in RATIOS:
        runs[f"FISH {100 * ratio:g}%"] = FisherMask(ratio, num_samples=512)
        runs[f"random {100 * ratio:g}%"] = RandomMask(ratio, seed=seed)
    results: dict[str, dict[str, float]] = {}
    for name, callback in runs.items():
        seed_everything(seed, verbose=False)
        model = DigitsMLP(lr=lr, pretrained=str(pretrained))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        logger = _logger(out, f"{name.replace(' ', '_').replace('%', 'pct')}-seed{seed}")
        trainer = Trainer(logger=logger, callbacks=[callback] if callback else [], **common)
        trainer.fit(model, new)
        moved = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
        results[name] = {"acc_new": _accuracy(model, new), "acc_old": _accuracy(model, old), "trained": moved}
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
        print(
            f"seed {seed}  {name:18s} acc 5-9 {results[name]['acc_new']:.3f}  acc 0-4 "
            f"{results[name]['acc_old']:.3f}  trained {moved}"
        )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/fish_finetune"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds-1 (data split, init, order)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, the same for every method")
    parser.add_argument("--fast", action="store_true", help="1 seed, 1 epoch of 2 batches (smoke run)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [0] if args.fast else list(range(args.seeds))
    per_seed = [run(seed, args.out, args.fast, args.lr) for seed in seeds]
    total = sum(p.numel() for p in DigitsMLP().parameters())
    results: dict[str, Any] = {
        name: {key: [r[name][key] for r in per_seed] for key in per_seed[0][name]} for name in per_seed[0]
    }
    lines = [
        f"Digits MLP ({total} parameters), pretrained on 0-4, fine-tuned on 5-9; {len(seeds)} seed(s), "
        f"AdamW lr {args.lr:g}, {1 if args.fast else 30} epochs (test accuracy, mean ± std)",
        "",
        "| method | trained parameters | accuracy on 5-9 | accuracy left on 0-4 |",
        "|---|---|---|---|",
    ]
    for name, res in results.items():
        trained = f"{statistics.mean(res['trained']):,.0f} ({100 * statistics.mean(res['trained']) / total:.1f}%)"
        lines.append(f"| {name} | {trained} | {mean_std(res['acc_new'])} | {mean_std(res['acc_old'])} |")
    table = "\n".join(lines)
    write_results(args.out, table, {"total_params": total, "methods": results})
    return {"total_params": total, "methods": results}


def cli_main() -> None:
    """``LightningCLI`` entry point: ``fit``/``test`` with ``--config examples/configs/fish_finetune.yaml``."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(DigitsMLP, DigitsTask)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        cli_main()
    else:
        main()

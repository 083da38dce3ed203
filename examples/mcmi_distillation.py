"""Few-label distillation on scikit-learn digits from a CE teacher vs MCMI teachers (Ye et al., ICLR 2024).

Protocol, per seed: a teacher MLP (64-128-128-10) is trained with cross-entropy, then fine-tuned for a few more
epochs either with cross-entropy again (the "CE teacher") or with ``MCMICallback`` (CE - lambda * CMI, warm start as
in the paper) for each lambda. A smaller student MLP (64-32-10) is then trained with ``DistillationModule`` (Hinton KD,
T = 4, alpha = 0.9) on only a small labelled fraction of the training set (5% and 10%), from each teacher, and
without a teacher (CE on the few labels) for reference. Reported: test accuracy of teachers and students and the
teachers' test CMI (``ConditionalMutualInformation``), mean ± std over seeds.

Run: ``python examples/mcmi_distillation.py --out runs/mcmi_distillation`` (``--fast``: a seconds-long smoke run).
Writes ``results.json`` and ``results.md`` under ``--out``, the seed-0 teachers' weights (``teacher_ce.pt``,
``teacher_mcmi.pt``) and logs every result to W&B offline when wandb is importable (else CSV).
With LightningCLI (student distillation only):
``python examples/mcmi_distillation.py fit --config examples/configs/mcmi_distillation.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.distill import DistillationModule, KDLoss, MCMICallback
from lightning_info.metrics import ConditionalMutualInformation

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: the shared _report module
from _report import mean_std, write_results


class MLP(nn.Module):
    """``in_dim -> hidden[0] -> ... -> num_classes`` with ReLU (and dropout after each hidden layer)."""

    def __init__(
        self, in_dim: int = 64, hidden: tuple[int, ...] = (32,), num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        self.net = nn.Sequential(*layers, nn.Linear(in_dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Classifier(LightningModule):
    """A plain cross-entropy classifier around a network; MCMI is added from outside by ``MCMICallback``."""

    def __init__(self, net: nn.Module, lr: float = 1e-3) -> None:
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class DigitsData(LightningDataModule):
    """Digits (1797 x 64, scaled to [0, 1]): seeded 60/20/20 train/val/test split; ``label_fraction`` keeps that
    fraction of each class of the training split (at least one sample per class) as the labelled training set."""

    def __init__(self, seed: int = 0, label_fraction: float = 1.0, batch_size: int = 64) -> None:
        super().__init__()
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        self.seed, self.label_fraction, self.batch_size = seed, label_fraction, batch_size

    def setup(self, stage: str | None = None) -> None:
        from sklearn.datasets import load_digits

        x_np, y_np = load_digits(return_X_y=True)
        x, y = torch.tensor(x_np, dtype=torch.float32) / 16.0, torch.tensor(y_np)
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(y), generator=g)
        n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
        train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
        if self.label_fraction < 1.0:
            keep = []
            for c in range(10):
                members = train[y[train] == c]
                count = max(1, round(self.label_fraction * len(members)))
                keep.append(members[torch.randperm(len(members), generator=g)[:count]])
            train = torch.cat(keep)
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set, self.test_set = TensorDataset(x[val], y[val]), TensorDataset(x[test], y[test])

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        batch = min(self.batch_size, len(self.train_set))
        return DataLoader(self.train_set, batch_size=batch, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=len(self.test_set))


def _fit(module: LightningModule, data: DigitsData, epochs: int, callbacks: list[Callback] | None = None) -> None:
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=callbacks or [],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())


@torch.no_grad()
def evaluate(net: nn.Module, data: DigitsData) -> dict[str, float]:
    """Test accuracy and test CMI (of ``softmax(net(x))``) of a network."""
    net.eval()
    x, y = data.test_set.tensors
    logits = net(x)
    cmi = ConditionalMutualInformation(num_classes=10)
    cmi.update(torch.softmax(logits, dim=1), y)
    return {"acc": float((logits.argmax(1) == y).float().mean()), "cmi": float(cmi.compute())}


def teachers_for_seed(seed: int, lams: list[float], epochs: int, finetune_epochs: int) -> dict[str, nn.Module]:
    """The CE teacher and one MCMI teacher per lambda, all warm-started from the same CE-trained network."""
    data = DigitsData(seed=seed)
    data.setup()
    seed_everything(seed, verbose=False)
    base = Classifier(MLP(hidden=(128, 128), dropout=0.1))
    _fit(base, data, epochs)
    teachers: dict[str, nn.Module] = {}
    for name, lam in [("CE", None), *((f"MCMI lam={lam:g}", lam) for lam in lams)]:
        seed_everything(seed + 1, verbose=False)
        module = copy.deepcopy(base)
        callbacks: list[Callback] = [] if lam is None else [MCMICallback(num_classes=10, lam=lam)]
        _fit(module, data, finetune_epochs, callbacks)
        teachers[name] = module.net.eval()
    return teachers


def student_accuracy(teacher: nn.Module | None, seed: int, fraction: float, epochs: int) -> float:
    """Test accuracy of a 64-32-10 student trained on ``fraction`` of the labels (KD from ``teacher`` if given)."""
    data = DigitsData(seed=seed, label_fraction=fraction, batch_size=256)  # full batch
    data.setup()
    seed_everything(seed + 2, verbose=False)
    student = MLP(hidden=(32,))
    module: LightningModule
    if teacher is None:
        module = Classifier(student, lr=1e-2)
    else:
        opt = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
        module = DistillationModule(student, copy.deepcopy(teacher), KDLoss(temperature=4.0, alpha=0.9), opt)
    _fit(module, data, epochs)
    return evaluate(student, data)["acc"]


def _logger(out: Path, wandb: bool) -> Logger:
    if wandb and importlib.util.find_spec("wandb") is not None:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-mcmi", name="mcmi-distillation")
    return CSVLogger(str(out), name="mcmi-distillation")


def _key(name: str) -> str:
    """Logged-key form of a teacher name: ``"MCMI lam=0.1"`` -> ``"mcmi_lam0.1"``."""
    return name.lower().replace(" ", "_").replace("=", "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the protocol over the seeds; print and save the table of mean ± std."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/mcmi_distillation"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lams", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 1.0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1], help="labelled fractions")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=100)
    parser.add_argument("--fast", action="store_true", help="1 seed, 1 lambda, 1 fraction, 1-2 epochs each")
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of a W&B offline run")
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.lams, args.fractions = 1, [0.1], [0.05]
        args.teacher_epochs, args.finetune_epochs, args.student_epochs = 1, 1, 2
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # tiny MLPs: more threads only add overhead (and thrash on a shared machine)
    started = time.perf_counter()
    logger = _logger(args.out, wandb=not args.no_wandb)
    names = ["no teacher", "CE", *(f"MCMI lam={lam:g}" for lam in args.lams)]
    results: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for index in range(args.seeds):
        seed = args.seed + index
        teachers = teachers_for_seed(seed, args.lams, args.teacher_epochs, args.finetune_epochs)
        if index == 0:
            torch.save(teachers["CE"].state_dict(), args.out / "teacher_ce.pt")
            torch.save(teachers[names[-1]].state_dict(), args.out / "teacher_mcmi.pt")
        data = DigitsData(seed=seed)
        data.setup()
        for name in names:
            teacher = teachers.get(name)
            row: dict[str, float] = {}
            if teacher is not None:
                scores = evaluate(teacher, data)
                row.update({"teacher_acc": scores["acc"], "teacher_cmi": scores["cmi"]})
            for fraction in args.fractions:
                row[f"student_acc_frac{fraction:g}"] = student_accuracy(teacher, seed, fraction, args.student_epochs)
            for key, value in row.items():
                results[name].setdefault(key, []).append(value)
            logger.log_metrics({f"{_key(name)}/{key}": value for key, value in row.items()}, step=index)
    columns = ["teacher_acc", "teacher_cmi", *(f"student_acc_frac{f:g}" for f in args.fractions)]
    header = ["teacher", "teacher test acc (%)", "teacher test CMI (nats)"]
    header += [f"student test acc (%), {100 * f:g}% labels" for f in args.fractions]
    lines = [
        f"Digits, {args.seeds} seed(s): teacher {args.teacher_epochs} CE epochs + {args.finetune_epochs} fine-tune "
        f"epochs, student {args.student_epochs} epochs (mean ± std)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name in names:
        cells = [
            "—"
            if column not in results[name]
            else mean_std(results[name][column])
            if column == "teacher_cmi"
            else mean_std(results[name][column], 100.0, 1)
            for column in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"wall time: {time.perf_counter() - started:.0f} s"]
    table = "\n".join(lines)
    write_results(args.out, table, results)
    logger.save()
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "finish"):
        experiment.finish()
    return results


def cli_main() -> None:
    """``LightningCLI`` entry point (``fit``/``test`` with ``--config examples/configs/mcmi_distillation.yaml``)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(DistillationModule, DigitsData)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        cli_main()
    else:
        main()

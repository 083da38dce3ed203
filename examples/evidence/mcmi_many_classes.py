"""Evidence: MCMI teachers (Ye et al., ICLR 2024) with many confusable classes, where the Bayes posterior is known.

Ye et al. report that fine-tuning a teacher with ``CE - lambda * CMI`` makes its soft labels a better estimate of the
Bayes conditional distribution ``P(y | x)``, and that a student distilled from it with few labels is more accurate
(+5.72 points with 5% of CIFAR-100's labels). With 10 classes the CMI term cannot matter much (``docs/mcmi.md``), so
this script uses a regime with many confusable classes and a *known* generative model, so the paper's mechanism --
the teacher's distance to the Bayes posterior -- is measured directly, not guessed:

- data: a 100-class Gaussian mixture in 32-D, 20 superclasses x 5 subclasses, equal priors, identity covariance.
  Superclass centres ~ N(0, I), subclass centres = superclass centre + N(0, 0.3^2 I) (fixed, generator seed 1234),
  so the classes of a superclass overlap: the Bayes classifier is right ~70% of the time (and finds the superclass
  ~99.7% of the time). The exact Bayes posterior is ``softmax(x . mu_c - |mu_c|^2 / 2)``, a linear layer, which is
  also the *oracle teacher*.
- teacher: MLP 32-256-256-100 pre-trained with cross-entropy until it over-fits (``--teacher-epochs``), then
  fine-tuned ``--finetune-epochs`` more epochs, warm-started from the same weights, with cross-entropy (the "CE
  teacher") or with ``lightning_info.distill.MCMILoss(100, lam, centroids=...)`` for ``lam`` in ``--lams`` and both
  centroid kinds (``"ema"`` with ``momentum=0.99``, and ``"batch"``).
- student: MLP 32-64-100 trained with ``DistillationModule`` and ``KDLoss(temperature=4, alpha=0.9)`` on 5% of the
  training labels (the labelled samples only), from each teacher, from the oracle, and without a teacher (CE).

Selection (never on the test split): for each centroid kind, ``lam`` is the one with the best mean (over seeds)
*validation* accuracy of its student. Reported on the test split, mean ± std over seeds and paired differences to the
CE teacher (same seed = same data sample, teacher pre-training and student initialisation): teacher accuracy, the
teacher's mean KL(Bayes posterior || teacher) (nats), the teacher's CMI (``ConditionalMutualInformation``) and the
student's accuracy.

Run: ``python examples/evidence/mcmi_many_classes.py --out runs/evidence/mcmi_many_classes`` (``--fast`` for a
seconds-long smoke run). Writes ``results.md``, ``results.json`` and ``mcmi.png`` under ``--out``; logs every seed's
numbers to one W&B offline run when wandb is importable (else CSV). With LightningCLI (one MCMI teacher trained on the
mixture from scratch, no warm start): ``python examples/evidence/mcmi_many_classes.py fit --config
examples/configs/mcmi_many_classes.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.distill import DistillationModule, KDLoss, MCMILoss
from lightning_info.metrics import ConditionalMutualInformation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared _report module
from _report import mean_std, paired, write_results

DIM, SUPER, SUB = 32, 20, 5
CLASSES = SUPER * SUB
CENTROIDS = ("ema", "batch")


def class_means() -> Tensor:
    """The fixed ``(100, 32)`` class centres: superclass centre ~ N(0, I) plus a subclass offset ~ N(0, 0.3^2 I)."""
    gen = torch.Generator().manual_seed(1234)
    superclass = torch.randn(SUPER, DIM, generator=gen)
    offset = 0.3 * torch.randn(SUPER, SUB, DIM, generator=gen)
    return (superclass[:, None] + offset).reshape(CLASSES, DIM)


def bayes_oracle() -> nn.Linear:
    """The exact Bayes posterior's logits ``x . mu_c - |mu_c|^2 / 2`` (equal priors, identity covariance)."""
    means = class_means()
    oracle = nn.Linear(DIM, CLASSES)
    with torch.no_grad():
        oracle.weight.copy_(means)
        oracle.bias.copy_(-0.5 * means.square().sum(1))
    return oracle.requires_grad_(False).eval()


def make_data(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, TensorDataset]:
    """Train/val/test samples of the mixture (uniform labels, ``x = mu_y + N(0, I)``), drawn from ``seed``."""
    gen, means = torch.Generator().manual_seed(seed), class_means()
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = torch.randint(0, CLASSES, (n,), generator=gen)
        splits[name] = TensorDataset(means[y] + torch.randn(n, DIM, generator=gen), y)
    return splits


def labelled_subset(train: TensorDataset, fraction: float, seed: int) -> TensorDataset:
    """``fraction`` of each class of ``train`` (at least one sample per class present), drawn from ``seed``."""
    x, y = train.tensors
    gen, keep = torch.Generator().manual_seed(seed), []
    for c in range(CLASSES):
        members = (y == c).nonzero().squeeze(1)
        if len(members):
            count = max(1, round(fraction * len(members)))
            keep.append(members[torch.randperm(len(members), generator=gen)[:count]])
    index = torch.cat(keep)
    return TensorDataset(x[index], y[index])


class MLP(nn.Sequential):
    """``32 -> hidden... -> 100`` with ReLU."""

    def __init__(self, hidden: tuple[int, ...] = (256, 256)) -> None:
        layers: list[nn.Module] = []
        width = DIM
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        super().__init__(*layers, nn.Linear(width, CLASSES))


class MixtureData(LightningDataModule):
    """The mixture's seeded train/val/test splits for ``LightningCLI``; ``label_fraction`` keeps that fraction of
    each class of the training split."""

    def __init__(
        self, seed: int = 0, n_train: int = 10_000, n_val: int = 2_000, label_fraction: float = 1.0,
        batch_size: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        self.seed, self.n_train, self.n_val = seed, n_train, n_val
        self.label_fraction, self.batch_size = label_fraction, batch_size

    def setup(self, stage: str | None = None) -> None:
        self.splits = make_data(self.seed, self.n_train, self.n_val, self.n_val)
        if self.label_fraction < 1.0:
            self.splits["train"] = labelled_subset(self.splits["train"], self.label_fraction, self.seed)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=len(self.splits["val"]))


class Teacher(LightningModule):
    """Cross-entropy classifier, or ``MCMILoss`` (CE - lambda * CMI) when ``criterion`` is given."""

    def __init__(self, net: nn.Module, criterion: MCMILoss | None = None, lr: float = 1e-3) -> None:
        super().__init__()
        self.net, self.criterion, self.lr = net, criterion, lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        if self.criterion is None:
            return nn.functional.cross_entropy(logits, y)
        return self.criterion(logits, y).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _fit(module: LightningModule, data: TensorDataset, epochs: int, batch_size: int, seed: int) -> None:
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(
        data, batch_size=min(batch_size, len(data)), shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    trainer.fit(module, train_dataloaders=loader)


@torch.no_grad()
def teacher_scores(net: nn.Module, data: TensorDataset, oracle: nn.Module) -> dict[str, float]:
    """Accuracy, mean KL(Bayes posterior || teacher) in nats, and CMI of ``net`` on ``data``."""
    net.eval()
    x, y = data.tensors
    log_p = torch.log_softmax(net(x), dim=1)
    log_bayes = torch.log_softmax(oracle(x), dim=1)
    kl = (log_bayes.exp() * (log_bayes - log_p)).sum(1).mean()
    cmi = ConditionalMutualInformation(num_classes=CLASSES)
    cmi.update(log_p.exp(), y)
    return {"acc": float((log_p.argmax(1) == y).float().mean()), "kl_bayes": float(kl), "cmi": float(cmi.compute())}


@torch.no_grad()
def accuracy(net: nn.Module, data: TensorDataset) -> float:
    net.eval()
    x, y = data.tensors
    return float((net(x).argmax(1) == y).float().mean())


def teachers_for_seed(seed: int, data: dict[str, TensorDataset], args: argparse.Namespace) -> dict[str, nn.Module]:
    """CE teacher and one MCMI teacher per (centroids, lambda), all fine-tuned from the same pre-trained network."""
    seed_everything(seed, verbose=False)
    base = Teacher(MLP((256, 256)))
    _fit(base, data["train"], args.teacher_epochs, 128, seed)
    variants: list[tuple[str, MCMILoss | None]] = [("CE", None)]
    for centroids in CENTROIDS:
        for lam in args.lams:
            momentum = 0.99 if centroids == "ema" else 0.9  # momentum is unused by batch centroids
            mcmi = MCMILoss(CLASSES, lam, centroids=centroids, momentum=momentum)
            variants.append((f"MCMI {centroids} lam={lam:g}", mcmi))
    teachers: dict[str, nn.Module] = {}
    for name, criterion in variants:
        seed_everything(seed + 1, verbose=False)
        module = Teacher(copy.deepcopy(base.net), criterion)
        _fit(module, data["train"], args.finetune_epochs, 128, seed + 1)
        teachers[name] = module.net.eval()
    return teachers


def student_accuracies(
    teacher: nn.Module | None, seed: int, data: dict[str, TensorDataset], args: argparse.Namespace
) -> dict[str, float]:
    """Validation and test accuracy of a 32-64-100 student on ``--label-fraction`` of the training labels."""
    labelled = labelled_subset(data["train"], args.label_fraction, seed)
    seed_everything(seed + 2, verbose=False)
    student = MLP((64,))

    def opt(params: Iterable[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1e-2)

    module: LightningModule
    if teacher is None:
        module = Teacher(student, lr=1e-2)
    else:
        module = DistillationModule(student, copy.deepcopy(teacher), KDLoss(temperature=4.0, alpha=0.9), opt)
    _fit(module, labelled, args.student_epochs, len(labelled), seed + 2)  # full batch
    return {"val": accuracy(student, data["val"]), "test": accuracy(student, data["test"])}


def _logger(out: Path, wandb: bool) -> Logger:
    if wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(
                offline=True, save_dir=str(out), project="lightning-info-evidence", name="mcmi-many-classes"
            )
        except (ImportError, ModuleNotFoundError):
            pass
    return CSVLogger(str(out), name="mcmi-many-classes")


def _key(name: str) -> str:
    """Logged-key form of a teacher name: ``"MCMI ema lam=0.25"`` -> ``"mcmi_ema_lam0.25"``."""
    return name.lower().replace(" ", "_").replace("=", "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every seed, choose lambda on validation, print and save the table, the JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/evidence/mcmi_many_classes"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--lams", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--label-fraction", type=float, default=0.05)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-val", type=int, default=2_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=150)
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of a W&B offline run")
    parser.add_argument("--fast", action="store_true", help="2 seeds, 1 lambda, small splits, 1-5 epochs")
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.lams = 2, [0.25]
        args.n_train, args.n_val, args.n_test = 2_000, 500, 500
        args.teacher_epochs, args.finetune_epochs, args.student_epochs = 2, 1, 5
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small MLPs: more threads only add overhead on a shared machine
    start, wall_start = time.process_time(), time.perf_counter()
    logger = _logger(args.out, wandb=not args.no_wandb)
    oracle = bayes_oracle()
    names = ["no teacher", "CE", *(f"MCMI {c} lam={lam:g}" for c in CENTROIDS for lam in args.lams), "Bayes oracle"]
    rows: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    bayes_acc: list[float] = []
    for index in range(args.seeds):
        seed = args.seed + index
        data = make_data(seed, args.n_train, args.n_val, args.n_test)
        bayes_acc.append(accuracy(oracle, data["test"]))
        teachers: dict[str, nn.Module] = {**teachers_for_seed(seed, data, args), "Bayes oracle": oracle}
        for name in names:
            teacher = teachers.get(name)
            row: dict[str, float] = {}
            if teacher is not None:
                row.update({f"teacher_{k}": v for k, v in teacher_scores(teacher, data["test"], oracle).items()})
            row.update({f"student_{k}": v for k, v in student_accuracies(teacher, seed, data, args).items()})
            for key, value in row.items():
                rows[name].setdefault(key, []).append(value)
            logger.log_metrics({f"{_key(name)}/{key}": value for key, value in row.items()}, step=index)

    def student_val(centroids: str, lam: float) -> float:
        return statistics.mean(rows[f"MCMI {centroids} lam={lam:g}"]["student_val"])

    chosen: dict[str, float] = {}
    for centroids in CENTROIDS:
        chosen[centroids] = max(args.lams, key=lambda lam: student_val(centroids, lam))
    cpu_minutes = (time.process_time() - start) / 60
    wall_minutes = (time.perf_counter() - wall_start) / 60
    results = {"rows": rows, "chosen_lam": chosen, "bayes_test_acc": bayes_acc}
    table = _table(results, args, cpu_minutes, wall_minutes)
    write_results(args.out, table, {"cpu_minutes": cpu_minutes, "wall_minutes": wall_minutes, **results})
    logger.log_metrics({f"chosen_lam/{c}": lam for c, lam in chosen.items()}, step=args.seeds)
    logger.save()
    finish = getattr(getattr(logger, "experiment", None), "finish", None)
    if finish is not None:
        finish()
    _figure(results, args.lams, args.out / "mcmi.png")
    return results


def _table(results: dict[str, Any], args: argparse.Namespace, cpu_minutes: float, wall_minutes: float) -> str:
    rows, chosen = results["rows"], results["chosen_lam"]
    ce = rows["CE"]
    lines = [
        f"100-class Gaussian mixture in 32-D (20 superclasses x 5), {args.seeds} seeds, n_train={args.n_train}; "
        f"Bayes classifier test accuracy {mean_std(results['bayes_test_acc'], 100.0, 1)}%. Teacher 32-256-256-100: "
        f"{args.teacher_epochs} CE epochs + {args.finetune_epochs} fine-tuning epochs; student 32-64-100 on "
        f"{100 * args.label_fraction:g}% of the labels, KD T=4, alpha=0.9, {args.student_epochs} epochs. Lambda "
        f"chosen per centroid kind on mean student validation accuracy (*). Mean ± std over seeds; Δ = paired "
        f"difference to the CE teacher. KL = mean KL(Bayes posterior || teacher) on test, nats. Process CPU time "
        f"{cpu_minutes:.1f} min (wall {wall_minutes:.1f} min).",
        "",
        "| teacher | teacher test acc (%) | KL to Bayes | Δ KL | teacher CMI | student val acc (%) "
        "| student test acc (%) | Δ student |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        mark = " *" if any(name == f"MCMI {c} lam={lam:g}" for c, lam in chosen.items()) else ""
        if "teacher_acc" in row:
            teacher = [mean_std(row["teacher_acc"], 100.0, 1), mean_std(row["teacher_kl_bayes"])]
            teacher.append("—" if name == "CE" else paired(row["teacher_kl_bayes"], ce["teacher_kl_bayes"]))
            teacher.append(mean_std(row["teacher_cmi"]))
        else:
            teacher = ["—"] * 4
        delta = "—" if name == "CE" else paired(row["student_test"], ce["student_test"], 100.0, 1)
        cells = [*teacher, mean_std(row["student_val"], 100.0, 1), mean_std(row["student_test"], 100.0, 1), delta]
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(results: dict[str, Any], lams: list[float], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = (
        ("teacher_kl_bayes", "teacher KL(Bayes || teacher), nats", 1.0),
        ("student_test", "student test acc", 100.0),
    )
    for ax, (metric, title, scale) in zip(axes, panels, strict=True):
        for reference, style in (("CE", "k--"), ("Bayes oracle", "g:")):
            if metric in rows[reference] and (reference == "CE" or metric != "teacher_kl_bayes"):
                ax.axhline(scale * statistics.mean(rows[reference][metric]), color=style[0], ls=style[1:],
                           label=f"{reference} teacher")  # fmt: skip
        for centroids in CENTROIDS:
            values = [[scale * v for v in rows[f"MCMI {centroids} lam={lam:g}"][metric]] for lam in lams]
            means = [statistics.mean(v) for v in values]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar(lams, means, yerr=stds, marker="o", capsize=3, label=f"MCMI, {centroids} centroids")
        ax.set_xscale("log")
        ax.set_xlabel("lambda")
        ax.set_title(title)
    axes[1].axhline(100 * statistics.mean(rows["no teacher"]["student_test"]), color="0.6", label="no teacher")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cli_main() -> None:
    """``LightningCLI`` entry point (``fit --config examples/configs/mcmi_many_classes.yaml``)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(Teacher, MixtureData)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate"):
        cli_main()
    else:
        main()

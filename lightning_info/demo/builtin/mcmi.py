"""Demo part ``mcmi``: an extra stage distilling a small student on 10% of the digits labels from an MCMI teacher.

Recipe of Ye et al. (ICLR 2024) on a small scale: an MLP teacher on the flattened digits is trained with
cross-entropy, then fine-tuned with :class:`~lightning_info.distill.MCMICallback` (CE - lambda * CMI, warm start; the
fine-tune logs ``mcmi/cmi``, ``mcmi/ce`` and ``mcmi/val_cmi``) and, for comparison, with
cross-entropy alone for as many epochs. A smaller student is distilled from each teacher with
:class:`~lightning_info.distill.DistillationModule` on 10% of the training labels. The stage returns the teachers'
test accuracy and test CMI and the two students' test accuracy (one seed: see ``examples/mcmi_distillation.py`` for
mean ± std over seeds). Each of the five fits is a demo stage (its own W&B run) that records its results.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from lightning_info.demo.data import Split, load_digits_tokens
from lightning_info.demo.parts import DemoContext, Stage, register_part
from lightning_info.distill import DistillationModule, MCMICallback
from lightning_info.metrics import ConditionalMutualInformation

_LAM = 0.2
_LABEL_FRACTION = 0.1


def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths[:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


class _Classifier(LightningModule):
    """Cross-entropy on ``net``; MCMI is added from outside by the callback."""

    def __init__(self, net: nn.Module, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self(batch[0])  # MCMICallback measures the validation CMI on the captured logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def _fit(
    ctx: DemoContext,
    stage: Stage,
    module: LightningModule,
    data: Split,
    *,
    train: tuple[Tensor, Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
) -> None:
    x, y = train if train is not None else data.train
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=64 if train is None else len(y),
        shuffle=True,
        generator=torch.Generator().manual_seed(ctx.seed),
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=stage.epochs,
        limit_train_batches=3 if ctx.fast else None,
        logger=stage.loggers,
        log_every_n_steps=1 if ctx.fast else 5,
        callbacks=[*callbacks, stage.progress_bar()],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(ctx.out),
    )
    with warnings.catch_warnings():
        # DistillationModule keeps its frozen teacher in eval mode on purpose
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, loader, data.loader("val", 512))


@torch.no_grad()
def _scores(net: nn.Module, data: Split) -> tuple[float, float]:
    net.eval()
    x, y = data.test
    logits = net(x)
    cmi = ConditionalMutualInformation(num_classes=10)
    cmi.update(torch.softmax(logits, dim=1), y)
    return float((logits.argmax(1) == y).float().mean()), float(cmi.compute())


def _labelled_subset(data: Split, seed: int) -> tuple[Tensor, Tensor]:
    x, y = data.train
    g = torch.Generator().manual_seed(seed)
    keep = [
        idx[torch.randperm(len(idx), generator=g)[: max(1, round(_LABEL_FRACTION * len(idx)))]]
        for idx in (torch.nonzero(y == c).flatten() for c in range(10))
    ]
    index = torch.cat(keep)
    return x[index], y[index]


_BASE = "base teacher (CE)"
_EPOCHS = {"base": 15, "teacher": 5, "student": 80}
_TEACHERS = {"ce": "CE", "mcmi": "MCMI"}


def _stage(ctx: DemoContext) -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: threads only add overhead
    epochs = {name: 1 if ctx.fast else n for name, n in _EPOCHS.items()}
    summary: dict[str, float] = {}
    try:
        data = load_digits_tokens(seed=ctx.seed)
        with ctx.stage(_BASE, epochs["base"]) as stage:
            seed_everything(ctx.seed, workers=True, verbose=False)
            base = _Classifier(_mlp(64, 128, 10))
            _fit(ctx, stage, base, data)
        teachers: dict[str, nn.Module] = {}
        for name, label in _TEACHERS.items():
            with ctx.stage(
                f"{label} teacher fine-tune", epochs["teacher"], lam=_LAM if name == "mcmi" else 0.0
            ) as stage:
                seed_everything(ctx.seed + 1, workers=True, verbose=False)
                module = copy.deepcopy(base)
                callbacks = [MCMICallback(num_classes=10, lam=_LAM)] if name == "mcmi" else []
                _fit(ctx, stage, module, data, callbacks=callbacks)
                teachers[name] = module.net
                acc, cmi = _scores(module.net, data)
                stage.record({f"mcmi/teacher_{name}_test_acc": acc, f"mcmi/teacher_{name}_test_cmi": cmi})
            summary.update(stage.summary)
        subset = _labelled_subset(data, ctx.seed)
        for name, label in _TEACHERS.items():
            with ctx.stage(f"student from {label} teacher", epochs["student"], label_fraction=_LABEL_FRACTION) as stage:
                seed_everything(ctx.seed + 2, workers=True, verbose=False)  # the same student initialisation for both
                student = _mlp(64, 16, 10)
                optimizer = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
                _fit(ctx, stage, DistillationModule(student, teachers[name], optimizer=optimizer), data, train=subset)
                stage.record({f"mcmi/student_from_{name}_test_acc": _scores(student, data)[0]})
            summary.update(stage.summary)
    finally:
        torch.set_num_threads(threads)
    return summary


@register_part("mcmi", help=f"MCMI distillation (lambda={_LAM}): CE vs MCMI teacher, student on 10% of the labels")
def configure(ctx: DemoContext) -> None:
    """Add the MCMI distillation stages (seconds with ``--fast``, about 15 s otherwise on 2 cores)."""
    ctx.plan(_BASE, *(f"{label} teacher fine-tune" for label in _TEACHERS.values()))
    ctx.plan(*(f"student from {label} teacher" for label in _TEACHERS.values()))
    ctx.extra_stages.append(_stage)

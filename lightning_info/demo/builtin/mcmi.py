"""Demo part ``mcmi``: an extra stage distilling a small student on 10% of the digits labels from an MCMI teacher.

Recipe of Ye et al. (ICLR 2024) on a small scale: an MLP teacher on the flattened digits is trained with
cross-entropy, then fine-tuned with :class:`~lightning_info.distill.MCMICallback` (CE - lambda * CMI, warm start; the
fine-tune logs ``mcmi/cmi``, ``mcmi/ce`` and ``mcmi/val_cmi`` into the demo's loggers) and, for comparison, with
cross-entropy alone for as many epochs. A smaller student is distilled from each teacher with
:class:`~lightning_info.distill.DistillationModule` on 10% of the training labels. The stage returns the teachers'
test accuracy and test CMI and the two students' test accuracy (one seed: see ``examples/mcmi_distillation.py`` for
mean ± std over seeds).
"""

from __future__ import annotations

import copy
import itertools

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn

from lightning_info.demo.data import Split, load_digits_tokens
from lightning_info.demo.parts import DemoContext, register_part
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

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self(batch[0])  # MCMICallback measures the validation CMI on the captured logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _fit(
    ctx: DemoContext,
    module: LightningModule,
    data: Split,
    epochs: int,
    *,
    train: tuple[Tensor, Tensor] | None = None,
    callbacks: list[Callback] | None = None,
    loggers: list[Logger] | bool = False,
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
        max_epochs=1 if ctx.fast else epochs,
        limit_train_batches=3 if ctx.fast else 1.0,
        logger=loggers,
        log_every_n_steps=1 if ctx.fast else 5,
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(ctx.out),
    )
    trainer.fit(module, loader, data.loader("val", 512) if callbacks else None)


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


def _stage(ctx: DemoContext) -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: threads only add overhead
    try:
        data = load_digits_tokens(seed=ctx.seed)
        seed_everything(ctx.seed, workers=True, verbose=False)
        base = _Classifier(_mlp(64, 128, 10))
        _fit(ctx, base, data, epochs=15)
        teachers: dict[str, nn.Module] = {}
        for name in ("ce", "mcmi"):
            seed_everything(ctx.seed + 1, workers=True, verbose=False)
            module = copy.deepcopy(base)
            if name == "mcmi":
                callback = MCMICallback(num_classes=10, lam=_LAM)
                _fit(ctx, module, data, epochs=5, callbacks=[callback], loggers=ctx.loggers)
            else:
                _fit(ctx, module, data, epochs=5)
            teachers[name] = module.net
        summary: dict[str, float] = {}
        subset = _labelled_subset(data, ctx.seed)
        for name, teacher in teachers.items():
            summary[f"mcmi/teacher_{name}_test_acc"], summary[f"mcmi/teacher_{name}_test_cmi"] = _scores(teacher, data)
            seed_everything(ctx.seed + 2, workers=True, verbose=False)  # the same student initialisation for both
            student = _mlp(64, 16, 10)
            optimizer = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
            _fit(ctx, DistillationModule(student, teacher, optimizer=optimizer), data, epochs=80, train=subset)
            summary[f"mcmi/student_from_{name}_test_acc"] = _scores(student, data)[0]
    finally:
        torch.set_num_threads(threads)
    for logger in ctx.loggers:
        logger.log_metrics(summary)
    return summary


@register_part("mcmi", help=f"MCMI distillation (lambda={_LAM}): CE vs MCMI teacher, student on 10% of the labels")
def configure(ctx: DemoContext) -> None:
    """Add the MCMI distillation stage (seconds with ``--fast``, about 15 s otherwise on 2 cores)."""
    ctx.extra_stages.append(_stage)

"""The integration matrix's shared setup: one tiny transformer classifier trained with every part at once.

``TinyTransformer`` (tests/helpers/models.py: 2 encoder layers of ``nn.MultiheadAttention``, 2 heads, d=16) on
3-class Gaussian blobs shaped as 4 tokens of 2 features, with

- ``EntropyGuidedAttentionCallback`` (swaps the attention, adds the entropy penalty, per-head logs every step),
- ``InformationMonitor`` on ``encoder.layers.1`` and ``head`` with every built-in metric and the info plane,
- ``FisherMask`` (keep 25%, the head and the attention's new temperatures/thresholds always trained),
- ``MCMICallback`` (running ``"ema"`` centroids by default: the stateful, DDP-synced variant),
- ``SharpnessMonitor``,

optimised by ``SAM`` around SGD with momentum *and* weight decay, so that an entry frozen by ``FisherMask`` would
move if its restore hook were skipped. The DDP scripts of ``test_ddp.py`` import this module too (``run_ddp`` puts
the repository root on ``PYTHONPATH``), so both sides train exactly the same thing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from lightning_info.callbacks import EntropyGuidedAttentionCallback, FisherMask, InformationMonitor, SharpnessMonitor
from lightning_info.distill import MCMICallback
from lightning_info.optim import SAM
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import TinyTransformer, classification_data, loader

NUM_CLASSES = 3
BATCH_SIZE = 16
BATCHES_PER_EPOCH = 3
RHO = 0.05
KEEP_RATIO = 0.25
INFO_LAYERS = ("encoder.layers.1", "head")
INFO_METRICS = ("matrix_entropy", "matrix_nuclear_norm", "vendi", "dse", "dsmi", "prediction_entropy", "cmi")
INFO_EVERY = 2
ALWAYS_TRAIN = ["head.*", "encoder.layers.*.self_attn.log_temperature", "encoder.layers.*.self_attn.entropy_threshold"]


def dataset(seed: int = 0) -> TensorDataset:
    """``BATCHES_PER_EPOCH * BATCH_SIZE`` samples with ``(4, 2)`` inputs (4 tokens of 2 features)."""
    return classification_data(BATCHES_PER_EPOCH * BATCH_SIZE, in_dim=8, num_classes=NUM_CLASSES, seed=seed,
                               shape=(4, 2))  # fmt: skip


def make_model(*, sync_perturbation: bool = True, interval: int = 1) -> TinyTransformer:
    """The classifier, seeded, with a SAM(SGD + momentum + weight decay) factory."""

    def optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return SAM(params, torch.optim.SGD, rho=RHO, lr=0.1, momentum=0.9, weight_decay=1e-2,
                   sync_perturbation=sync_perturbation, interval=interval)  # fmt: skip

    torch.manual_seed(0)
    return TinyTransformer(in_dim=2, d_model=16, nhead=2, num_layers=2, num_classes=NUM_CLASSES,
                           optimizer_factory=optimizer)  # fmt: skip


def make_callbacks(*, centroids: str = "ema", fisher_samples: int = 32) -> list[Callback]:
    """All the parts, in the order a user would list them."""
    monitor = InformationMonitor(
        list(INFO_LAYERS),
        list(INFO_METRICS),
        every_n_steps=INFO_EVERY,
        info_plane=True,
        num_classes=NUM_CLASSES,
        mi_steps=3,
    )
    return [
        EntropyGuidedAttentionCallback(weight=0.1, target_fraction=0.5, tolerance=0.1, log_every_n_steps=1),
        monitor,
        FisherMask(keep_ratio=KEEP_RATIO, num_samples=fisher_samples, always_train=ALWAYS_TRAIN),
        MCMICallback(num_classes=NUM_CLASSES, lam=0.2, centroids=centroids, momentum=0.5),
        SharpnessMonitor(),
    ]


def params_of(module: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def masks_of(module: torch.nn.Module) -> dict[str, Tensor]:
    """FisherMask's masks by parameter name (buffers ``fisher_mask.<name with __ for .>``)."""
    return {name: getattr(module.fisher_mask, name.replace(".", "__")).clone() for name, _ in module.named_parameters()}


class Snapshots(Callback):
    """Parameters when training starts (after FisherMask set its masks) and after chosen optimizer steps."""

    def __init__(self, steps: Sequence[int] = ()) -> None:
        self.steps = set(steps)
        self.initial: dict[str, Tensor] = {}
        self.after: dict[int, dict[str, Tensor]] = {}
        self.masks: dict[str, Tensor] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.initial = params_of(pl_module)
        self.masks = masks_of(pl_module)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step in self.steps:
            self.after[trainer.global_step] = params_of(pl_module)


class EpochEndStates(Callback):
    """The ``state_dict()`` of every lightning_info callback at every training epoch end (what a heatmap is made of)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Any]] = {}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        self.states[trainer.current_epoch] = {
            type(cb).__name__: copy.deepcopy(cb.state_dict())
            for cb in callbacks
            if type(cb).__module__.startswith("lightning_info.")
        }


def outcome(model: torch.nn.Module, recorder: RecordingLogger, parts: Sequence[Callback]) -> dict[str, Any]:
    """What the runs are compared on: parameters, masks, logged values, MCMI's running centroids."""
    [mcmi] = [p for p in parts if isinstance(p, MCMICallback)]
    return {
        "params": params_of(model),
        "masks": masks_of(model),
        "series": recorder.series(),
        "centroids": mcmi.criterion.class_centroids.clone(),
    }


def fit(
    root: Path,
    *,
    max_steps: int,
    model: TinyTransformer | None = None,
    callbacks: Sequence[Callback] = (),
    parts: Sequence[Callback] | None = None,
    data: TensorDataset | None = None,
    batch_size: int = BATCH_SIZE,
    shard: bool = False,
    val_data: TensorDataset | None = None,
    ckpt_path: str | Path | None = None,
    **trainer_overrides: Any,
) -> tuple[Trainer, TinyTransformer, RecordingLogger, list[Callback]]:
    """Train the model with all parts (``parts``, default :func:`make_callbacks`) plus ``callbacks``.

    The recording logger comes first in ``trainer.loggers`` (``logger=[...]`` in ``trainer_overrides`` adds more).
    ``shard=True`` (DDP): rank ``r`` of ``W`` trains on samples ``r, r + W, ...`` in order (Lightning's own
    ``DistributedSampler`` always shuffles training data), so with ``batch_size = B / W`` its step-``k`` batch is
    rank ``r``'s part of the single-process step-``k`` batch of size ``B``.
    """
    model = model or make_model()
    parts = list(parts) if parts is not None else make_callbacks()
    recorder = RecordingLogger()
    extra_loggers = trainer_overrides.pop("logger", [])
    kwargs = trainer_kwargs(root, max_steps=max_steps, log_every_n_steps=1, logger=[recorder, *extra_loggers],
                            limit_val_batches=0 if val_data is None else None, **trainer_overrides)  # fmt: skip
    if shard:
        kwargs["use_distributed_sampler"] = False
    trainer = Trainer(callbacks=[*parts, *callbacks], **kwargs)
    train: Dataset = data or dataset()
    if shard:
        train = Subset(train, range(trainer.global_rank, len(train), trainer.world_size))  # type: ignore[arg-type]
    val = None if val_data is None else loader(val_data, batch_size=batch_size)
    trainer.fit(model, loader(train, batch_size=batch_size), val, ckpt_path=ckpt_path)
    return trainer, model, recorder, parts

"""Run a tiny model for 4 steps on Lightning's distributed engines (2 CPU processes, gloo) and on one process.

Imported by the scripts that :func:`tests.helpers.lightning.run_ddp` launches (rank 0 and 1) and by the tests (the
single-process global-batch reference). Rank ``r`` trains on samples ``r, r + 2, ...`` with batches of 8, so its
step-``t`` batch and the other rank's together are samples ``16 t ... 16 t + 15``, the reference's step-``t`` batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from torch import Tensor, nn
from torch.utils.data import Subset

from lightning_info.callbacks import (
    AttentionEntropyMonitor,
    CSIBCallback,
    EntropyGuidedAttentionCallback,
    InformationMonitor,
    LossTermCallback,
)
from lightning_info.distill import MCMICallback
from lightning_info.optim import GAM, GSAM, SAM, WSAM, FriendlySAM, LookSAM
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyTransformer, classification_data, loader

STEPS, LOCAL_BATCH, IN_DIM = 4, 8, 4
ENGINES = ("ddp", "fsdp2", "fsdp1")
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
SGD = {"lr": 0.5, "momentum": 0.9}
#: the optimizers every engine is checked with (SAM/GAM with the global-batch perturbation)
CASES: dict[str, OptimizerFactory] = {
    "sgd": lambda p: torch.optim.SGD(p, **SGD),
    "sam": lambda p: SAM(p, torch.optim.SGD, rho=0.05, sync_perturbation=True, **SGD),
    "asam": lambda p: SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, sync_perturbation=True, **SGD),
    "sam_every2": lambda p: SAM(p, torch.optim.SGD, rho=0.05, interval=2, sync_perturbation=True, **SGD),
    "gam": lambda p: GAM(p, torch.optim.SGD, rho=0.05, alpha=0.1, sync_perturbation=True, **SGD),
    "gsam": lambda p: GSAM(p, torch.optim.SGD, rho=0.05, alpha=0.3, sync_perturbation=True, **SGD),
    "looksam": lambda p: LookSAM(p, torch.optim.SGD, rho=0.05, k=2, sync_perturbation=True, **SGD),
    "wsam": lambda p: WSAM(p, torch.optim.SGD, rho=0.05, sync_perturbation=True, **SGD),
    "friendly_sam": lambda p: FriendlySAM(p, torch.optim.SGD, rho=0.05, sync_perturbation=True, **SGD),
}


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP1 strategy without its GPU check: the module wraps its layers itself (``device_id=cpu``)."""


class ShardedMLP(MLPClassifier):
    """The test MLP, sharded layer by layer in ``configure_model`` for FSDP2 or FSDP1 (``engine``).

    ``"fsdp1"`` wraps with ``use_orig_params=True`` (the optimizer sees the original parameters' shards),
    ``"fsdp1_flat"`` with ``use_orig_params=False`` (it sees the padded flat-parameter shards).
    """

    def __init__(self, engine: str, **kwargs: Any) -> None:
        super().__init__(in_dim=IN_DIM, hidden=6, num_classes=3, **kwargs)
        self.engine = engine

    def configure_model(self) -> None:
        if self.engine == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(self.net, mesh=mesh)
        elif self.engine in ("fsdp1", "fsdp1_flat"):
            from torch.distributed.fsdp import FullyShardedDataParallel

            if not isinstance(self.net, FullyShardedDataParallel):
                orig = self.engine == "fsdp1"
                self.net = FullyShardedDataParallel(self.net, device_id=torch.device("cpu"), use_orig_params=orig)


def strategy(engine: str) -> Strategy:
    """The Lightning strategy of ``engine`` on 2 CPU processes."""
    if engine == "ddp":
        return DDPStrategy()
    if engine == "fsdp2":
        return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    if engine in ("fsdp1", "fsdp1_flat"):
        return CPUFSDPStrategy()
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def full_weights(model: nn.Module) -> dict[str, Tensor]:
    """The model's weights, unsharded (DTensors gathered; FSDP1 parameters summoned), as plain float tensors."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    fsdp1 = [m for m in model.modules() if isinstance(m, FullyShardedDataParallel)]
    if fsdp1:
        with contextlib.ExitStack() as stack:  # the models here wrap disjoint submodules (no nesting)
            for module in fsdp1:
                stack.enter_context(FullyShardedDataParallel.summon_full_params(module))
            return {k.replace("_fsdp_wrapped_module.", ""): v.detach().clone() for k, v in model.named_parameters()}
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in model.named_parameters()}


def fit(engine: str, factory: OptimizerFactory, root: Any) -> dict[str, Tensor]:
    """Train :class:`ShardedMLP` for 4 steps under ``engine`` (2 processes); return the final unsharded weights."""
    seed_everything(0, verbose=False)
    model = ShardedMLP(engine, optimizer_factory=factory)
    trainer = Trainer(
        **trainer_kwargs(
            root, devices=2, strategy=strategy(engine), max_steps=STEPS, max_epochs=1, use_distributed_sampler=False
        )
    )
    data = classification_data(n=2 * LOCAL_BATCH * STEPS, in_dim=IN_DIM)
    shard = Subset(data, range(trainer.global_rank, len(data), 2))
    trainer.fit(model, loader(shard, batch_size=LOCAL_BATCH))  # type: ignore[arg-type]
    return full_weights(model)


def reference(factory: OptimizerFactory) -> dict[str, Tensor]:
    """The same 4 steps on one process with the global batch (16 samples), outside Lightning."""
    seed_everything(0, verbose=False)
    model = ShardedMLP("none")
    optimizer = factory(model.parameters())
    x, y = classification_data(n=2 * LOCAL_BATCH * STEPS, in_dim=IN_DIM).tensors
    for t in range(STEPS):
        batch = slice(2 * LOCAL_BATCH * t, 2 * LOCAL_BATCH * (t + 1))

        def closure(batch: slice = batch) -> Tensor:
            optimizer.zero_grad()
            loss = model.loss(model(x[batch]), y[batch])
            loss.backward()
            return loss

        optimizer.step(closure)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


class ShardedTransformer(TinyTransformer):
    """The test transformer (``(batch, 4, IN_DIM)`` tokens), each encoder layer sharded in ``configure_model``."""

    def __init__(self, engine: str, **kwargs: Any) -> None:
        super().__init__(in_dim=IN_DIM, d_model=8, nhead=2, num_layers=1, num_classes=3, **kwargs)
        self.engine = engine

    def configure_model(self) -> None:
        if self.engine == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]  # type: ignore[index]
            for module in (self.embed, *self.encoder.layers, self.head):
                fully_shard(module, mesh=mesh)
            fully_shard(self.encoder, mesh=mesh)  # a root above the layers: they reshard after their forward
        elif self.engine == "fsdp1":
            from torch.distributed.fsdp import FullyShardedDataParallel

            for name in ("embed", "encoder", "head"):  # three FSDP1 roots (every parameter in one)
                if not isinstance(getattr(self, name), FullyShardedDataParallel):
                    wrapped = FullyShardedDataParallel(
                        getattr(self, name), device_id=torch.device("cpu"), use_orig_params=True
                    )
                    setattr(self, name, wrapped)


def fit_part(engine: str, part: str, root: Any) -> tuple[dict[str, Tensor], dict[str, dict[int, float]]]:
    """Train the model of ``PARTS[part]`` with its callbacks for 4 steps under ``engine`` (``"none"``: one process,
    the global batch).

    Returns the final unsharded weights and every value this rank logged (``{key: {step: value}}``).
    """
    build_model, build_callbacks, tokens = PARTS[part]
    seed_everything(0, verbose=False)
    model, callbacks = build_model(engine), build_callbacks()
    logger = RecordingLogger()
    distributed = engine != "none"
    trainer = Trainer(
        **trainer_kwargs(
            root,
            devices=2 if distributed else 1,
            strategy=strategy(engine) if distributed else "auto",
            max_steps=STEPS,
            max_epochs=1,
            use_distributed_sampler=False,
            logger=logger,
            log_every_n_steps=1,
            callbacks=callbacks,
        )
    )
    data = classification_data(
        n=2 * LOCAL_BATCH * STEPS, in_dim=IN_DIM * (4 if tokens else 1), shape=(4, IN_DIM) if tokens else None
    )
    shard = Subset(data, range(trainer.global_rank, len(data), 2)) if distributed else data
    trainer.fit(model, loader(shard, batch_size=LOCAL_BATCH * (1 if distributed else 2)))  # type: ignore[arg-type]
    return full_weights(model), logger.series()


class L2Penalty(LossTermCallback):
    """A plain loss term: the squared norm of the weights (DTensors under FSDP2 after the forward)."""

    def compute_loss_term(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> Tensor:
        return sum(p.pow(2).sum() for p in pl_module.parameters())  # type: ignore[return-value]


#: the parts checked on every engine: a model (given the engine), its callbacks, and whether its inputs are tokens
PARTS: dict[str, tuple[Callable[[str], LightningModule], Callable[[], list[Callback]], bool]] = {
    "loss_term": (ShardedMLP, lambda: [L2Penalty(0.01, log_key="l2/penalty")], False),
    "mcmi_ema": (ShardedMLP, lambda: [MCMICallback(3, lam=0.2, centroids="ema", log_validation=False)], False),
    "csib": (ShardedMLP, lambda: [CSIBCallback("net.1", beta=0.1, log_prediction=False)], False),
    "info_monitor": (
        ShardedMLP,
        lambda: [InformationMonitor(["net.3"], metrics=("matrix_entropy",), every_n_steps=1, log_figures=False)],
        False,
    ),
    "ega": (ShardedTransformer, lambda: [EntropyGuidedAttentionCallback(weight=0.1)], True),
    "attn_monitor": (ShardedTransformer, lambda: [AttentionEntropyMonitor(every_n_steps=1)], True),
}

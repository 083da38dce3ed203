"""SAM on a model sharded with FSDP2 (Lightning's ``ModelParallelStrategy`` + ``fully_shard``).

GPUs: ``python examples/fsdp_sam.py`` (every visible GPU, NCCL) or with LightningCLI
``python examples/fsdp_sam.py fit --config examples/configs/fsdp_sam.yaml``. ``--fast``: 2 CPU processes (gloo),
4 steps, a smoke run. The parameters are DTensors: SAM's gradient norm is global over the shards and the
perturbation is the global batch's, so ``sync_perturbation=True`` is required (m-sharpness, a per-rank perturbation,
cannot be held by sharded weights: SAM refuses it at the first step). Lightning's ``strategy="fsdp"`` (FSDP1)
works as well with ``sync_perturbation=True``: SAM combines the norms of its flat-parameter shards over the ranks.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import SharpnessMonitor
from lightning_info.optim import SAM


class ShardedClassifier(LightningModule):
    """An MLP classifier whose blocks ``fully_shard`` over the data-parallel mesh; trained with SAM + AdamW."""

    def __init__(self, in_dim: int = 32, hidden: int = 128, depth: int = 4, num_classes: int = 10, lr: float = 1e-3,
                 rho: float = 0.05, samples: int = 4096, batch_size: int = 64) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.inp = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
                                    for _ in range(depth))  # fmt: skip
        self.head = nn.Linear(hidden, num_classes)

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # sync_perturbation=True: the only perturbation sharded weights can hold (the global batch's)
        return SAM(self.parameters(), torch.optim.AdamW, rho=self.hparams.rho, sync_perturbation=True,
                   lr=self.hparams.lr)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return synthetic_loader(hp.samples, hp.in_dim, hp.num_classes, hp.batch_size)

    def configure_callbacks(self) -> list[Any]:
        return [SharpnessMonitor()]


def synthetic_loader(n: int = 4096, in_dim: int = 32, num_classes: int = 10, batch_size: int = 64,
                     seed: int = 0) -> DataLoader:  # fmt: skip
    """Gaussian inputs labelled by a fixed random linear teacher (the same data on every rank; Lightning shards it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g)
    y = (x @ torch.randn(in_dim, num_classes, generator=g)).argmax(1)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train; returns the last ``train_loss`` and SAM's last statistics (``--fast``: 2 CPU processes, 4 steps)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="2 CPU processes (gloo), 4 steps of a tiny model")
    parser.add_argument("--max-steps", type=int, default=2000)
    args = parser.parse_args(argv)
    seed_everything(0, verbose=False)
    if args.fast:
        torch.set_num_threads(1)
        model = ShardedClassifier(in_dim=8, hidden=16, depth=2, num_classes=3, samples=64, batch_size=8)
        hardware: dict[str, Any] = {"accelerator": "cpu", "devices": 2}
        shards = 2
    else:
        model, hardware = ShardedClassifier(), {"accelerator": "gpu", "devices": -1}
        shards = torch.cuda.device_count()  # one node: every GPU is a data-parallel shard
    trainer = Trainer(**hardware, strategy=ModelParallelStrategy(data_parallel_size=shards, tensor_parallel_size=1),
                      max_steps=4 if args.fast else args.max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=not args.fast, enable_model_summary=False)  # fmt: skip
    trainer.fit(model)
    results = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.global_rank == 0:
        print(results)
    return results


def cli() -> None:
    """``LightningCLI`` entry point (``fit --config examples/configs/fsdp_sam.yaml``)."""
    LightningCLI(ShardedClassifier, seed_everything_default=0, save_config_kwargs={"overwrite": True},
                 trainer_defaults={"strategy": ModelParallelStrategy(data_parallel_size=torch.cuda.device_count(),
                                                                     tensor_parallel_size=1)})  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        cli()
    else:
        main()

"""The demo's model: a small vision transformer on digits (8 row-tokens of 8 pixels)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class DigitsTransformer(LightningModule):
    """Row tokens -> linear embedding + learned positions -> ``nn.TransformerEncoder`` -> mean pool -> classes.

    Attention modules are named ``encoder.layers.{i}.self_attn``; the pooled representation is the output of
    ``pool`` and the logits the output of ``head``.
    """

    def __init__(
        self,
        optimizer_factory: OptimizerFactory | None = None,
        d_model: int = 32,
        nhead: int = 4,
        num_layers: int = 2,
        num_classes: int = 10,
        tokens: int = 8,
        token_dim: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer_factory"])
        self.optimizer_factory = optimizer_factory or (lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4))
        self.embed = nn.Linear(token_dim, d_model)
        self.position = nn.Parameter(torch.zeros(1, tokens, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pool = nn.Identity()
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.encoder(self.embed(x) + self.position)
        return self.head(self.pool(tokens.mean(dim=1)))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test")
        self.log(f"{stage}_acc", acc, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

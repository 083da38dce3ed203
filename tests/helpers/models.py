"""Tiny models and data shared by every test: fast on CPU, deterministic, generated data only.

Each ``LightningModule`` logs ``train_loss`` and takes an ``optimizer_factory`` so optimizer tests can swap in
SAM/GAM without subclassing. ``batch`` is always ``(inputs, targets)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)


class _Base(LightningModule):
    def __init__(self, optimizer_factory: OptimizerFactory | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer_factory or _sgd

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", self.loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


class MLPClassifier(_Base):
    """``in_dim -> hidden -> hidden -> num_classes`` with ReLU; layers named ``net.0``, ``net.2``, ``net.4``."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, num_classes: int = 3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)


class MLPRegressor(_Base):
    """``in_dim -> hidden (encoder) -> 1``; the representation is the output of ``encoder``."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)).squeeze(-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.mse_loss(output, target)


class TinyTransformer(_Base):
    """Token classifier: embedding -> ``nn.TransformerEncoder`` (``nn.MultiheadAttention`` inside) -> mean -> head.

    Inputs are ``(batch, seq_len, in_dim)`` float tensors; attention modules are ``encoder.layers.{i}.self_attn``.
    """

    def __init__(
        self,
        in_dim: int = 8,
        d_model: int = 16,
        nhead: int = 2,
        num_layers: int = 2,
        num_classes: int = 3,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.embed = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)


class TinyCNN(_Base):
    """``conv -> BatchNorm -> ReLU -> pool -> linear`` on ``(batch, 1, 8, 8)`` images."""

    def __init__(self, channels: int = 4, num_classes: int = 3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.head = nn.Linear(4 * channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)


def classification_data(
    n: int = 64, in_dim: int = 8, num_classes: int = 3, seed: int = 0, shape: tuple[int, ...] | None = None
) -> TensorDataset:
    """Gaussian blobs, one per class; ``shape`` reshapes each input (e.g. ``(4, 2)`` tokens or ``(1, 8, 8)``)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centers = torch.randn(num_classes, in_dim, generator=g) * 2
    x = centers[y] + torch.randn(n, in_dim, generator=g)
    if shape is not None:
        x = x.reshape(n, *shape)
    return TensorDataset(x, y)


def regression_data(n: int = 64, in_dim: int = 8, seed: int = 0, noise: float = 0.1) -> TensorDataset:
    """``y = sin(x @ w) + noise``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g)
    w = torch.randn(in_dim, generator=g) / in_dim**0.5
    y = torch.sin(x @ w) + noise * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def loader(dataset: TensorDataset, batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    """A deterministic single-process loader."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)

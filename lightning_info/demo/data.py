"""Data sets that ship with scikit-learn, as tensors: digits as 8 row-tokens of 8 pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class Split:
    """Train/validation/test tensors ``(x, y)``."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]

    def loader(self, name: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A single-process loader over one split."""
        x, y = getattr(self, name)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


def _split(x: Tensor, y: Tensor, seed: int, fractions: tuple[float, float] = (0.7, 0.15)) -> Split:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(fractions[0] * len(x))
    n_val = int(fractions[1] * len(x))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return Split(*((x[i], y[i]) for i in parts))


def load_digits_tokens(seed: int = 0) -> Split:
    """scikit-learn's 1797 8x8 digits as ``(N, 8, 8)`` float tokens (rows), scaled to [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    return _split(x, y, seed)


def load_diabetes_standardized(seed: int = 0) -> Split:
    """scikit-learn's diabetes regression set (442 x 10), features standardised on the training split."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)
    split = _split(x, y, seed)
    mean, std = split.train[0].mean(0), split.train[0].std(0)
    return Split(*(((xs - mean) / std, ys) for xs, ys in (split.train, split.val, split.test)))

"""Losses: CS-IB for regression, the attention entropy regularizer, running target standardisation."""

from lightning_info.losses.cs_ib import CSIBLoss
from lightning_info.losses.entropy_regularizer import EntropyRegularizer
from lightning_info.losses.running_standardizer import RunningStandardizer

__all__ = [
    "CSIBLoss",
    "EntropyRegularizer",
    "RunningStandardizer",
]

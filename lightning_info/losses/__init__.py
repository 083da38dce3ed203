"""lightning_info.losses."""

from lightning_info.losses.cs_ib import CSIBLoss
from lightning_info.losses.entropy_regularizer import EntropyRegularizer

__all__: list[str] = []
__all__ += ["CSIBLoss"]
__all__ += ["EntropyRegularizer"]

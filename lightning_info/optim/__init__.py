"""lightning_info.optim: sharpness-aware optimizers that are correct inside Lightning.

SAM, ASAM, every-k SAM, GAM and the SAM variants GSAM, LookSAM, WSAM and FriendlySAM, all on one base class.

``FAdam`` (pytorch-optimizer's, checked against the paper) is imported lazily: ``from lightning_info.optim import
FAdam`` needs the ``fadam`` extra. ``SharpnessAwarePrecision`` (a Lightning plugin) is loaded on first access, so the
optimizers themselves do not import Lightning.
"""

from typing import Any

from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info.optim.fadam import fadam_class
from lightning_info.optim.friendly_sam import FriendlySAM
from lightning_info.optim.gam import GAM
from lightning_info.optim.gsam import GSAM
from lightning_info.optim.looksam import LookSAM
from lightning_info.optim.sam import SAM
from lightning_info.optim.sharpness_aware import NonFiniteGradientError, SharpnessAwareOptimizer
from lightning_info.optim.wsam import WSAM

__all__ = [
    "GAM",
    "GSAM",
    "SAM",
    "WSAM",
    "FriendlySAM",
    "LookSAM",
    "NonFiniteGradientError",
    "SharpnessAwareOptimizer",
    "SharpnessAwarePrecision",
    "fadam_class",
    "in_auxiliary_pass",
]


def __getattr__(name: str) -> Any:
    if name == "FAdam":
        return fadam_class()
    if name == "SharpnessAwarePrecision":  # the Lightning plugin: loads Lightning on first access only
        from lightning_info.optim.precision import SharpnessAwarePrecision

        return SharpnessAwarePrecision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

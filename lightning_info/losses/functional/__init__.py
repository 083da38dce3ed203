"""Pure tensor math of the losses (no Lightning, no state)."""

from lightning_info.losses.functional.cauchy_schwarz import (
    cs_conditional_divergence,
    cs_divergence,
    cs_qmi,
    median_width,
    silverman_width,
)
from lightning_info.losses.functional.conditional_mutual_information import conditional_mutual_information
from lightning_info.losses.functional.entropy_regularizer import entropy_band_penalty, entropy_regularizer

__all__ = [
    "conditional_mutual_information",
    "cs_conditional_divergence",
    "cs_divergence",
    "cs_qmi",
    "entropy_band_penalty",
    "entropy_regularizer",
    "median_width",
    "silverman_width",
]
